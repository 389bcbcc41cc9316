"""Domains and the extra anomaly kinds of the DCASE layouts (:mod:`humwatch.data.synth.dcase`).

**Domains**: a DCASE source domain and target domain differ by an operating condition or by the
surroundings. Here each machine type has its own shift (:data:`CONDITIONS`): the fan runs faster in
another factory hall, the pump's drive runs slower and its microphone is moved, the slide travels
faster, the valve runs another open/close program. A condition changes the product's parameters
(speeds move every fundamental and harmonic), its level (sound power grows with speed), and for a moved
microphone the level and the high-frequency balance; it never changes the product itself.

**Anomaly kinds**: the three MIMII kinds of each machine plus three generic ones added to the normal
machine sound: a ``whine`` (tonal: a new bearing/whistle tone), a ``rub`` (broadband: band noise in
bursts at the rotation or a rubbing rate) and a short transient, ``knock`` (impacts for 0.1-0.3 s) or
for the valve ``stuck`` (the plunger sticks and chatters for 0.1-0.3 s, then slams).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from humwatch.data.synth.products import _machine_key, _product
from humwatch.data.synth.room import _factories
from humwatch.data.synth.signals import (
    _add_at,
    _boxcar,
    _db,
    _drift,
    _filt,
    _harmonics,
    _loguniform,
    _modal_ir,
    _onepole_lowpass,
    _phase,
    _rms,
    _sos_band,
    _white,
)

_SALT_PATTERN = 0x5EED_0007

GENERIC_KINDS = {
    "fan": ("whine", "rub", "knock"),
    "pump": ("whine", "rub", "knock"),
    "slider": ("whine", "rub", "knock"),
    "valve": ("whine", "rub", "stuck"),
}
"""The generic anomaly kinds the DCASE layouts add to each machine type's three MIMII kinds."""

ANOMALY_FAMILY = {
    "whine": "tonal",
    "unbalance": "tonal",
    "voltage_change": "tonal",
    "loose_belt": "tonal",
    "rub": "broadband",
    "clogging": "broadband",
    "leakage": "broadband",
    "no_grease": "broadband",
    "knock": "transient",
    "stuck": "transient",
    "contamination": "transient",
    "rail_damage": "transient",
    "timing_jitter": "transient",
    "missing_clicks": "transient",
    "click_spectrum": "transient",
}
"""tonal, broadband or transient: what an anomaly kind mainly changes (recorded in ground_truth.csv)."""


@dataclass(frozen=True)
class Condition:
    """An operating condition: ``speed`` re the product's nominal speed, the valve's ``pattern``
    (0: the product's own program), ``mic`` (0: the usual position, 1: moved farther and off axis) and
    ``hall_shift`` (0: the product's hall, k: the k-th next hall)."""

    speed: float = 1.0
    pattern: int = 0
    mic: int = 0
    hall_shift: int = 0


CONDITIONS: dict[str, dict[str, tuple[Condition, ...]]] = {
    "fan": {"source": (Condition(1.0), Condition(0.92)), "target": (Condition(1.2, hall_shift=1),)},
    "pump": {"source": (Condition(1.0), Condition(0.9)), "target": (Condition(0.8, mic=1),)},
    "slider": {"source": (Condition(1.0), Condition(0.85)), "target": (Condition(1.3),)},
    "valve": {"source": (Condition(pattern=0), Condition(pattern=1)), "target": (Condition(pattern=2),)},
}
"""Per machine type and domain, the conditions its clips cycle through (clip index modulo their number):
the source domain has two, the target domain a third one the source never shows."""

NO_ATTRIBUTE_2024 = ("pump", "slider")
"""Machine types whose DCASE 2024 file names say ``noAttribute`` (DCASE 2024 hid the attributes of some
machine types; the domain shift is still there)."""

MIC_DISTANCE = 1.25
"""A moved microphone is this many times farther away (level 1/r) and off axis (duller)."""


def condition(machine: str, domain: str, index: int) -> Condition:
    conds = CONDITIONS[machine][domain]
    return conds[index % len(conds)]


def attributes(machine: str, section: int, sr: int, cond: Condition) -> tuple[tuple[str, str], ...]:
    """The (name, value) attribute pairs of a condition, as written in names and attribute CSVs."""
    p = _product(machine, section, sr).p
    if machine == "fan":
        hall = (_product(machine, section, sr).hall + cond.hall_shift) % len(_factories())
        return (("vel", str(int(round(p["rot"] * cond.speed * 60)))), ("noise", "ABCD"[hall % 4]))
    if machine == "pump":
        return (("vfd", str(int(round(p["line"] * cond.speed)))), ("mic", str(cond.mic + 1)))
    if machine == "slider":
        return (("vel", str(int(round(100 * cond.speed)))),)
    return (("pat", f"{cond.pattern:02d}"),)


@lru_cache(maxsize=256)
def domain_product(machine: str, section: int, sr: int, cond: Condition):
    """The product running under ``cond``: a copy with its speeds, program or hall changed."""
    prod = _product(machine, section, sr)
    p = dict(prod.p)
    f = cond.speed
    if machine == "fan":
        p["rot"] = p["rot"] * f
    elif machine == "pump":
        # a variable-frequency drive: the motor's supply (and so its hum and slot tones) and speed scale
        p["sync"], p["line"] = p["sync"] * f, p["line"] * f
    elif machine == "slider":
        p["travel"] = p["travel"] / f
        for k in ("whine_f", "mesh_f", "ball_f"):
            p[k] = p[k] * f
    elif machine == "valve" and cond.pattern:
        r = np.random.default_rng(np.random.SeedSequence([_SALT_PATTERN, _machine_key(machine), section, cond.pattern]))
        ns = int(r.choice([1, 2, 3]))
        durs, gaps, rest = r.uniform(0.08, 0.3, ns), r.uniform(0.08, 0.4, ns), r.uniform(0.2, 0.8)
        starts = np.concatenate([[0.0], np.cumsum(durs + gaps)[:-1]])
        p["period"] = float(np.sum(durs + gaps) + rest)
        p["open_t"], p["close_t"] = starts, starts + durs
    hall = (prod.hall + cond.hall_shift) % len(_factories())
    return replace(prod, p=p, hall=hall)


def condition_effect(x: np.ndarray, machine: str, cond: Condition, sr: int) -> np.ndarray:
    """Level and colour a condition gives the source signal: amplitude ~ speed for the fan and the
    slide, whose models do not change level with their nominal speed (the pump's does, through its
    tones), and a moved microphone: 1/r and an off-axis high-frequency loss (60 % of the signal through
    a 2 kHz low-pass)."""
    g = cond.speed if machine in ("fan", "slider") else 1.0
    if cond.mic:
        x = 0.4 * x + 0.6 * _onepole_lowpass(x, 2000.0, sr)
        g /= MIC_DISTANCE
    return (x * np.float32(g)).astype(np.float32, copy=False)


def add_generic(x: np.ndarray, kind: str, sev: float, prod, r: np.random.Generator, sr: int) -> np.ndarray:
    """The normal source ``x`` (mono) with a generic anomaly ``kind`` of severity ``sev`` added."""
    n = len(x)
    ref = _rms(x)
    out = x.copy()
    if kind == "whine":
        # a new tone (a dry bearing, a whistling gap): 1.2-6 kHz with a weak 2nd harmonic, slow wander
        f0 = float(_loguniform(r, 1200.0, min(6000.0, 0.4 * sr)))
        freq = f0 * (1.0 + _drift(r, n, sr, 0.003, 0.5))
        tone = _harmonics(_phase(freq, n, sr), [1.0, 0.3], [0.0, r.uniform(0, 6.28)])
        tone *= (1.0 + _drift(r, n, sr, 0.1, 1.0)).astype(np.float32)
        out += np.float32(ref * _db(-24.0 + 20.0 * sev)) * tone
    elif kind == "rub":
        # something rubbing: an octave of noise at 1.5-5 kHz in bursts at the rubbing rate
        fc = float(_loguniform(r, 1500.0, min(5000.0, 0.4 * sr)))
        band = _filt(_sos_band(sr, fc / 2**0.5, fc * 2**0.5, 2), _white(r, n))
        band /= np.float32(_rms(band))
        pp = prod.p
        rate = pp["rot"] if "rot" in pp else pp["sync"] * (1 - pp["slip"]) if "sync" in pp else r.uniform(3.0, 9.0)
        duty = 0.3
        gate = (_phase(float(rate), n, sr) < duty).astype(np.float32)
        gate = _boxcar(gate, max(1, int(0.004 * sr)))
        out += np.float32(ref * _db(-16.0 + 14.0 * sev) / math.sqrt(duty)) * band * gate
    elif kind in ("knock", "stuck"):
        out = _add_transients(out, kind, sev, prod, r, sr, ref)
    else:
        raise ValueError(kind)
    return out


def _add_transients(out, kind, sev, prod, r, sr, ref):
    """1-3 events of 0.1-0.3 s: 4-10 impacts through structural modes with rattling noise between them
    (``knock``); for the valve (``stuck``) its own closing click chattering, then a hard slam."""
    n = len(out)
    if kind == "stuck":
        ir = prod.p["ir_close"]
        peak = float(np.max(np.abs(out))) + 1e-9  # the normal clicks
        amp, fill = peak * _db(-3.0 + 6.0 * sev), peak * _db(-30.0 + 10.0 * sev)
    else:
        ir = _modal_ir(_loguniform(r, 700.0, min(5000.0, 0.4 * sr), 4), r.uniform(10, 30, 4), [1.0, 0.8, 0.6, 0.5], sr, 2048)
        ir = ir / np.float32(np.max(np.abs(ir)))
        amp, fill = ref * _db(22.0 + 12.0 * sev), ref * _db(-3.0 + 10.0 * sev)
    margin = int(0.35 * sr)
    for _ in range(int(r.integers(1, 4))):
        start = int(r.integers(0, max(1, n - margin)))
        dur = int(r.uniform(0.1, 0.3) * sr)
        hits = np.sort(r.integers(0, dur, int(r.integers(4, 11))))
        for h in hits:
            _add_at(out, start + int(h), ir, amp * float(r.uniform(0.4, 1.0)))
        if kind == "stuck":
            _add_at(out, start + dur, ir, amp * _db(3.0 + 6.0 * sev))
        noise = _filt(_sos_band(sr, 800.0, min(6000.0, 0.4 * sr), 2), _white(r, dur))
        noise /= np.float32(_rms(noise))
        env = np.hanning(dur).astype(np.float32)
        _add_at(out, start, noise * env, fill)
    return out
