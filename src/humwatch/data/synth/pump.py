"""Pump: a centrifugal water pump on an induction motor and its anomalies: leakage, contamination,
clogging. The model is described in ``docs/synthetic-data.md``."""

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
    _impulse_train,
    _loguniform,
    _modal_ir,
    _phase,
    _rms,
    _sin,
    _sos_band,
    _white,
    _wrap,
)

if TYPE_CHECKING:
    from humwatch.data.synth.products import _Product


def _pump_product(r: np.random.Generator, sr: int) -> dict:
    """Centrifugal water pump on an induction motor: shaft speed = 2*line/poles*(1-slip), 5-7 impeller
    vanes (vane-pass tone and harmonics), motor magnetic hum (2x line) and rotor-slot tones
    (bars * f_rot +- 2 line), turbulent fluid noise through pipe modes; casing modes for impacts."""
    p = {}
    p["line"] = float(r.choice([50.0, 60.0]))
    poles = int(r.choice([2, 4]))
    p["slip"] = r.uniform(0.02, 0.05)
    p["sync"] = 2.0 * p["line"] / poles
    p["vanes"] = int(r.choice([5, 6, 7]))
    nh = 6
    p["vane_h"] = np.arange(1, nh + 1) ** -r.uniform(0.7, 1.3) * 10 ** (r.normal(0, 3, nh) / 20)
    p["vane_ph"] = r.uniform(0, _TWO_PI, nh)
    p["bars"] = int(r.integers(28, 45))
    p["slot"] = _db(r.uniform(-22, -12))
    p["hum"] = _db(r.uniform(-20, -10))
    p["tonal"] = _db(r.uniform(-4, 5))
    p["corner"] = r.uniform(600, 2500)
    p["hf"] = _db(r.uniform(-26, -16))  # weak high-frequency flow hiss
    nm = int(r.integers(4, 7))
    p["pipe"] = _modal_ir(_loguniform(r, 80, 1500, nm), r.uniform(10, 40, nm), r.uniform(0.5, 3.0, nm), sr, 4096, 1.0)
    nc = int(r.integers(3, 6))
    p["casing"] = _modal_ir(_loguniform(r, 1500, 6500, nc), r.uniform(20, 60, nc), r.uniform(0.5, 1.5, nc), sr, 1024, 0.3)
    p["casing"] /= np.float32(np.max(np.abs(p["casing"])))
    return p


def _pump(prod: _Product, r: np.random.Generator, n: int, sr: int, kind: str, sev: float) -> np.ndarray:
    p = prod.p
    load = math.exp(0.06 * r.standard_normal()) * (1.0 + _drift(r, n, sr, 0.03, 1.0))
    slip = p["slip"] * load  # slip grows with load
    f_rot = p["sync"] * (1.0 - slip) * (1.0 + _drift(r, n, sr, 0.001, 0.5))
    level = _db(0.5 * r.standard_normal()) * (1.0 + _drift(r, n, sr, 0.03, 1.0))
    vane_gain, pulsation = 1.0, None
    if kind == "clogging":
        # Partly blocked suction: recirculation raises the vane-pass tone, flow pulsates (surging at
        # 1-4 Hz) and cavitation bursts appear.
        vane_gain = _db(0.5 + 4.0 * sev)
        fp = r.uniform(1.0, 4.0)
        pulsation = 1.0 + np.float32(0.04 + 0.25 * sev) * _sin(_phase(fp, n, sr, r.uniform(0, _TWO_PI)))
    ph_rot = _phase(f_rot, n, sr, r.uniform(0, _TWO_PI))
    ph_vane = _wrap(ph_rot, p["vanes"])
    tones = _harmonics(ph_vane, p["vane_h"] * p["tonal"] * vane_gain, p["vane_ph"])
    tones *= (load**0.5).astype(np.float32)
    tones += _harmonics(_phase(2 * p["line"], n, sr), [p["hum"], 0.5 * p["hum"], 0.25 * p["hum"]], [0.0, 1.0, 2.0])
    f_bar = p["bars"] * f_rot
    tones += np.float32(p["slot"]) * (_sin(_phase(f_bar + 2 * p["line"], n, sr)) + _sin(_phase(f_bar - 2 * p["line"], n, sr)))
    w = _white(r, n)
    flow = _filt(_sos_band(sr, 30.0, p["corner"], 1), w)
    flow += np.float32(p["hf"]) * _filt(_sos_band(sr, 2000.0, None, 1), w)
    flow *= (load**1.5).astype(np.float32)
    x = tones + flow
    if pulsation is not None:
        x *= pulsation
    x = _convolve(x, p["pipe"])
    if kind == "leakage":
        # A leak: jet hiss in a band (2-6 kHz), fluttering, relative to the pump's own level.
        fc = r.uniform(2000.0, min(6000.0, 0.38 * sr))
        hiss = _filt(_sos_band(sr, fc / 2**0.25, fc * 2**0.25, 2), _white(r, n))
        hiss *= (1.0 + _drift(r, n, sr, 0.2, 0.1)).clip(0.2, None).astype(np.float32)
        x += np.float32(_db(-24.0 + 20.0 * sev) * _rms(x) / _rms(hiss)) * hiss
    elif kind == "contamination":
        # Solid particles: random impacts (Poisson, 2-30 per s) ringing the casing modes: crackle.
        rate = 2.0 + 28.0 * sev
        cnt = r.poisson(rate * n / sr)
        idx = r.integers(0, n, cnt)
        amps = np.minimum(r.lognormal(0.0, 0.4, cnt), 2.0) * r.choice([-1.0, 1.0], cnt)
        imp = _convolve(_impulse_train(n, idx, amps), p["casing"])
        x += np.float32((2.0 + 9.0 * sev) * _rms(x)) * imp
    elif kind == "clogging":
        # Cavitation: broadband bursts above 1.5 kHz, once per revolution with probability 0.1-0.6.
        revs = np.flatnonzero(np.diff(ph_rot) < 0)
        hit = revs[r.uniform(size=len(revs)) < (0.1 + 0.5 * sev)]
        gate = _impulse_train(n, hit, np.ones(len(hit)))
        burst = int(0.02 * sr)
        gate = _convolve(gate, np.hanning(burst).astype(np.float32))
        hp = _filt(_sos_band(sr, 1500.0, None, 2), _white(r, n))
        cav = hp * (gate / np.float32(_rms(hp)))
        x += np.float32(_db(-14.0 + 14.0 * sev) * _rms(x)) * cav
    x *= level.astype(np.float32)
    return x
