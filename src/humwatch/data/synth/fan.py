"""Fan: an industrial fan (blade-pass tones, turbulence, housing modes) and its anomalies: unbalance,
voltage change, clogging. The model is described in ``docs/synthetic-data.md``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from humwatch.data.synth.signals import (
    _TWO_PI,
    _convolve,
    _db,
    _drift,
    _filt,
    _harmonics,
    _loguniform,
    _modal_ir,
    _phase,
    _sin,
    _sos_band,
    _white,
    _wrap,
)

if TYPE_CHECKING:
    from humwatch.data.synth.products import _Product


def _fan_product(r: np.random.Generator, sr: int) -> dict:
    """Industrial fan: rotation 16-45 Hz (960-2700 rpm), 5-12 blades; blade-pass tone with decaying
    harmonics; broadband turbulence with a vortex-shedding hump; housing/duct modes."""
    p = {}
    p["rot"] = r.uniform(16.0, 45.0)
    p["blades"] = int(r.choice([5, 6, 7, 8, 9, 11, 12]))
    nh = 10
    k = np.arange(1, nh + 1)
    p["harm"] = k ** -r.uniform(0.8, 1.5) * 10 ** (r.normal(0, 3, nh) / 20)
    p["harm_ph"] = r.uniform(0, _TWO_PI, nh)
    p["x1"] = _db(r.uniform(-34, -26))  # residual unbalance tone (1x rotation) re the BPF tone
    p["line"] = float(r.choice([50.0, 60.0]))
    p["hum"] = _db(r.uniform(-30, -20))  # motor magnetic hum at 2x line frequency
    p["tonal"] = _db(r.uniform(-4, 6))  # tonal vs broadband balance
    p["corner"] = r.uniform(1500, 4500)  # broadband low-pass corner
    p["vortex_f"] = r.uniform(500, 2200)
    p["vortex_g"] = _db(r.uniform(-3, 6))
    nm = int(r.integers(4, 7))
    p["modes"] = (_loguniform(r, 150, 4000, nm), r.uniform(8, 30, nm), r.uniform(0.5, 2.5, nm))
    p["ir"] = _modal_ir(*p["modes"], sr, 4096, direct=1.0)
    return p


def _fan(prod: _Product, r: np.random.Generator, n: int, sr: int, kind: str, sev: float) -> np.ndarray:
    p = prod.p
    speed = 1.0 + 0.004 * r.standard_normal() + _drift(r, n, sr, 0.0015, 0.5)
    load = math.exp(0.08 * r.standard_normal()) * (1.0 + _drift(r, n, sr, 0.03, 1.0))
    level = _db(0.5 * r.standard_normal()) * (1.0 + _drift(r, n, sr, 0.035, 1.0))
    hum, x1, tonal_gain, corner, am = p["hum"], p["x1"], 1.0, p["corner"], None
    rumble = 0.0
    if kind == "voltage_change":
        # Supply voltage off by 5-25 %: the motor's slip and so the speed change (2-10 %; fan motors
        # have high slip), the speed is less steady, and the magnetic hum goes with V^2.
        sign = 1.0 if r.uniform() < 0.5 else -1.0
        dv = sign * (0.05 + 0.2 * sev)
        speed = speed * (1.0 + sign * (0.02 + 0.08 * sev)) + _drift(r, n, sr, 0.004 * sev, 0.25)
        hum = hum * (1.0 + dv) ** 2
    elif kind == "clogging":
        # Blocked airflow: the fan unloads (speed up slightly), the BPF tone drops, high-frequency
        # turbulence falls, and a low-frequency stall rumble appears.
        speed = speed * (1.0 + 0.006 * sev)
        tonal_gain = _db(-(2.0 + 8.0 * sev))
        corner = corner * (1.0 - 0.45 * sev)
        rumble = _db(-22.0 + 14.0 * sev)
    f_rot = p["rot"] * speed
    ph_rot = _phase(f_rot, n, sr, r.uniform(0, _TWO_PI))
    x1_h = [x1 * p["tonal"], 0.3 * x1 * p["tonal"]]
    if kind == "unbalance":
        # Mass unbalance: strong 1x vibration with harmonics (the housing and mounts respond
        # non-linearly), 1x amplitude modulation of everything (sidebands at BPF +- f_rot).
        x1 = max(x1, _db(-24.0 + 24.0 * sev))
        x1_h = list(x1 * p["tonal"] * np.arange(1, 9) ** -1.0 * 10 ** (r.normal(0, 3, 8) / 20))
        am = 1.0 + np.float32(0.1 + 0.35 * sev) * _sin(ph_rot, r.uniform(0, _TWO_PI))
    ph_bpf = _wrap(ph_rot, p["blades"])
    tones = _harmonics(ph_bpf, p["harm"] * p["tonal"] * tonal_gain, p["harm_ph"])
    tones *= (speed**2 * load**0.5).astype(np.float32)  # tone ~ pressure rise ~ speed^2
    tones += _harmonics(ph_rot, x1_h, np.arange(len(x1_h), dtype=float))
    tones += _harmonics(_phase(2 * p["line"], n, sr), [hum, 0.3 * hum], [0.0, 0.5])
    w = _white(r, n)
    bb = _filt(_sos_band(sr, None, corner, 2), w) + np.float32(p["vortex_g"] * 0.5) * _filt(
        _sos_band(sr, p["vortex_f"] / 1.5, p["vortex_f"] * 1.5, 1), w
    )
    bb *= (speed**2.5 * load**0.3).astype(np.float32)  # fan law: sound power ~ speed^5
    if rumble:
        rb = _filt(_sos_band(sr, 20.0, 200.0, 2), _white(r, n))
        rb *= (1.0 + 0.6 * _drift(r, n, sr, 1.0, 0.3)).clip(0, None).astype(np.float32)
        bb += np.float32(rumble * 3.0) * rb
    x = tones + bb
    if am is not None:
        x *= am
    x = _convolve(x, p["ir"])
    x *= level.astype(np.float32)
    return x
