"""Domains and the extra anomaly kinds of the DCASE layouts (:mod:`humwatch.data.synth.dcase`).

**Domains**: a DCASE source domain and target domain differ by an operating condition or by the
surroundings (:func:`conditions`). The source domain alternates between two speeds (the valve: two
open/close programs), as before. The target domain, drawn from ``(seed, machine type, section)``, runs
at a speed 12-30 % away from both (every fundamental, harmonic and speed-dependent resonance moves by
that ratio; the valve: a third program), each clip within +-5 % of that set point, and changes one
second factor chosen by the seed per machine type (:func:`second_factor`): another ``load`` (the
tonal/broadband balance, the slip), a moved ``mic`` (1.6-2.5 times farther, through a transfer function
with band gains of several dB) or another hall (``noise``: a louder background of another colour). A
condition changes the product's parameters, its level and colour, and the background; it never changes
the product itself. The attributes name the set point and the second factor.

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
    (0: the product's own program), ``load`` re the nominal load, ``mic`` (0: the usual position, 1:
    moved: ``mic_distance`` times farther, through the transfer function ``mic_db``, gains in dB at
    :data:`EQ_BANDS_HZ`), ``hall_shift`` (0: the product's hall, k: the k-th next hall) with the other
    hall's background colour ``hall_db`` (gains in dB at :data:`EQ_BANDS_HZ`) and level ``hall_level_db``
    (re the source halls' level at the same SNR setting), ``speed_spread`` (each clip runs at its own
    speed within this fraction of ``speed``, the set point its attribute names), and ``extra``: which
    second attribute the machine type's names carry (``load``, ``mic`` or ``noise``, see
    :data:`SECOND_FACTORS`)."""

    speed: float = 1.0
    pattern: int = 0
    mic: int = 0
    hall_shift: int = 0
    load: float = 1.0
    mic_distance: float = 1.0
    mic_db: tuple[float, ...] = ()
    hall_db: tuple[float, ...] = ()
    hall_level_db: float = 0.0
    speed_spread: float = 0.0
    extra: str = ""


SOURCE_SPEEDS = {"fan": (1.0, 0.92), "pump": (1.0, 0.9), "slider": (1.0, 0.85)}
"""The source domain's two speeds (the valve's source domain: programs 00 and 01)."""

SECOND_FACTORS = {"fan": ("load", "mic", "noise"), "pump": ("load", "mic", "noise"), "slider": ("mic", "noise"), "valve": ("mic", "noise")}
"""What else the target domain changes, besides the speed (the valve: its program): one of these per
machine type, chosen by the seed: ``load`` (another load: the tonal/broadband balance and the slip),
``mic`` (another microphone position: farther, through another transfer function) or ``noise``
(another factory hall, whose background has another colour)."""

EQ_BANDS_HZ = (63.0, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)
"""Octave centres of the transfer functions (``mic_db``, ``hall_db``), interpolated in log frequency."""

SPEED_CHANGE = (0.12, 0.3)
"""The target speed is this much (a fraction) faster than the nominal speed or slower than the source's
slower speed: every harmonic and speed-dependent resonance moves by a real ratio."""
LOAD_CHANGE = ((1.3, 1.6), (0.55, 0.75))
"""The target load re nominal: heavier or lighter (chosen by the seed)."""
TARGET_SPEED_SPREAD = 0.05
"""The target domain's clips each run at their own speed within +-5 % of the target set point (a drive
under changing load: the few recordings made after a change of condition are less alike than the many
of the usual one, whose speed varies by about 0.4 %)."""
MIC_DB_STD, HALL_DB_STD, EQ_DB_LIMIT = 5.0, 6.0, 10.0
"""Spread of a moved microphone's and another hall's band gains (dB, normal, clipped at the limit)."""
HALL_LEVEL_DB = (3.0, 8.0)
"""Another hall is this much louder (dB, uniform) at the same ``--snr``: a busier factory."""
MIC_DISTANCES = (1.6, 2.5)
"""A moved microphone is this many times farther away (level 1/r)."""

_SALT_TARGET = 0x5EED_0008


def _eq(r: np.random.Generator, std: float) -> tuple[float, ...]:
    g = np.clip(r.normal(0.0, std, len(EQ_BANDS_HZ)), -EQ_DB_LIMIT, EQ_DB_LIMIT)
    return tuple(round(float(v), 2) for v in g)


def second_factor(machine: str, seed: int = 0) -> str:
    """The second attribute the target domain of ``machine`` changes under ``seed``: the seed picks an
    offset and the machine types take the factors in turn from it, so one data set mixes kinds."""
    r = np.random.default_rng(np.random.SeedSequence([_SALT_TARGET, int(seed)]))
    factors = SECOND_FACTORS[machine]
    return factors[(int(r.integers(6)) + tuple(SECOND_FACTORS).index(machine)) % len(factors)]


@lru_cache(maxsize=1024)
def conditions(machine: str, section: int, seed: int = 0) -> dict[str, tuple[Condition, ...]]:
    """Per domain, the conditions the clips of ``machine`` section ``section`` cycle through (clip index
    modulo their number): the source domain has two (two speeds; the valve: two programs), the target
    domain a third one the source never shows, drawn from ``(seed, machine type, section)``: a speed
    12-30 % away (the valve: a third program) and the machine type's second factor
    (:func:`second_factor`) at another value."""
    extra = second_factor(machine, seed)
    r = np.random.default_rng(np.random.SeedSequence([_SALT_TARGET, int(seed), _machine_key(machine), int(section)]))
    if machine == "valve":
        source = (Condition(pattern=0, extra=extra), Condition(pattern=1, extra=extra))
        target = dict(pattern=2)
    else:
        fast, slow = SOURCE_SPEEDS[machine]
        change = float(r.uniform(*SPEED_CHANGE))
        speed = fast * (1.0 + change) if r.uniform() < 0.5 else slow * (1.0 - change)
        source = tuple(Condition(s, extra=extra) for s in SOURCE_SPEEDS[machine])
        target = dict(speed=round(speed, 3), speed_spread=TARGET_SPEED_SPREAD)
    if extra == "load":
        target["load"] = round(float(r.uniform(*LOAD_CHANGE[int(r.integers(2))])), 2)
    elif extra == "mic":
        target.update(mic=1, mic_distance=round(float(r.uniform(*MIC_DISTANCES)), 2), mic_db=_eq(r, MIC_DB_STD))
    else:
        target.update(hall_shift=int(r.integers(1, len(_factories()))), hall_db=_eq(r, HALL_DB_STD))
        target["hall_level_db"] = round(float(r.uniform(*HALL_LEVEL_DB)), 2)
    return {"source": source, "target": (Condition(extra=extra, **target),)}


NO_ATTRIBUTE_2024 = ("pump", "slider")
"""Machine types whose DCASE 2024 file names say ``noAttribute`` (DCASE 2024 hid the attributes of some
machine types; the domain shift is still there)."""


def condition(machine: str, domain: str, index: int, section: int = 0, seed: int = 0) -> Condition:
    conds = conditions(machine, section, seed)[domain]
    return conds[index % len(conds)]


def clip_condition(cond: Condition, r: np.random.Generator) -> Condition:
    """The condition one clip runs under: ``cond`` at its own speed when it has a ``speed_spread``."""
    if not cond.speed_spread:
        return cond
    return replace(cond, speed=round(cond.speed * (1.0 + cond.speed_spread * float(r.uniform(-1.0, 1.0))), 4), speed_spread=0.0)


def attributes(machine: str, section: int, sr: int, cond: Condition) -> tuple[tuple[str, str], ...]:
    """The (name, value) attribute pairs of a condition, as written in names and attribute CSVs: the
    speed (fan ``vel`` in rpm, pump ``vfd`` drive Hz, slider ``vel`` % of rated speed; the valve's
    program ``pat``) and the second factor (``load`` %, ``mic`` position 1 or 2, ``noise`` hall A-D)."""
    prod = _product(machine, section, sr)
    p = prod.p
    if machine == "fan":
        first = ("vel", str(int(round(p["rot"] * cond.speed * 60))))
    elif machine == "pump":
        first = ("vfd", str(int(round(p["line"] * cond.speed))))
    elif machine == "slider":
        first = ("vel", str(int(round(100 * cond.speed))))
    else:
        first = ("pat", f"{cond.pattern:02d}")
    if cond.extra == "load":
        second = ("load", str(int(round(100 * cond.load))))
    elif cond.extra == "mic":
        second = ("mic", str(cond.mic + 1))
    elif cond.extra == "noise":
        second = ("noise", "ABCD"[(prod.hall + cond.hall_shift) % len(_factories()) % 4])
    else:
        return (first,)
    return (first, second)


@lru_cache(maxsize=256)
def domain_product(machine: str, section: int, sr: int, cond: Condition):
    """The product running under ``cond``: a copy with its speeds, load, program or hall changed."""
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
    if cond.load != 1.0:
        L = cond.load
        if machine == "fan":
            # another pressure rise (a damper's position): the blade-pass tones and the vortex hump follow
            # it steeply (L 1.4: +9 dB), the turbulence gets brighter (heavier) or duller (lighter)
            p["tonal"], p["vortex_g"], p["corner"] = p["tonal"] * L**3, p["vortex_g"] * L**2, min(p["corner"] * L, 0.45 * sr)
        elif machine == "pump":
            # more flow: the motor slips more (a lower shaft speed), stronger vane-pass and flow hiss
            p["slip"], p["tonal"], p["hf"] = p["slip"] * L, p["tonal"] * L**0.5, p["hf"] * L**1.5
            p["corner"] = min(p["corner"] * L**0.5, 0.45 * sr)
    hall = (prod.hall + cond.hall_shift) % len(_factories())
    return replace(prod, p=p, hall=hall)


def band_gains(x: np.ndarray, gains_db: tuple[float, ...], sr: int) -> np.ndarray:
    """``x`` through a zero-phase transfer function with ``gains_db`` at :data:`EQ_BANDS_HZ`
    (interpolated in log frequency, held below the first and above the last band)."""
    if not gains_db:
        return x
    n = len(x)
    f = np.fft.rfftfreq(n, 1.0 / sr)
    g = np.interp(np.log2(np.maximum(f, 1.0)), np.log2(EQ_BANDS_HZ), gains_db)
    return np.fft.irfft(np.fft.rfft(x) * 10.0 ** (g / 20.0), n).astype(np.float32)


def condition_effect(x: np.ndarray, machine: str, cond: Condition, sr: int) -> np.ndarray:
    """Level and colour a condition gives the source signal: amplitude ~ speed for the fan and the
    slide, whose models do not change level with their nominal speed (the pump's does, through its
    tones), the pump's flow ~ load, and a moved microphone: 1/r and its transfer function ``mic_db``."""
    g = cond.speed if machine in ("fan", "slider") else 1.0
    if machine == "pump" and cond.load != 1.0:
        g *= cond.load**0.75
    if cond.mic:
        x = band_gains(x, cond.mic_db, sr)
        g /= cond.mic_distance
    return (x * np.float32(g)).astype(np.float32, copy=False)


def hall_effect(bg: np.ndarray, cond: Condition, sr: int) -> np.ndarray:
    """The background of another kind of hall: the other hall's noise through ``hall_db``."""
    return band_gains(bg, cond.hall_db, sr) if cond.hall_db else bg


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
