"""Slider: a belt-driven linear slide rail and its anomalies: rail damage, loose belt, no grease. The
model is described in ``docs/synthetic-data.md``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from humwatch.data.synth.signals import (
    _TWO_PI,
    _add_at,
    _boxcar,
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
)

if TYPE_CHECKING:
    from humwatch.data.synth.products import _Product


def _slider_product(r: np.random.Generator, sr: int) -> dict:
    """Belt-driven linear slide: travels one way in 0.5-1.4 s with a trapezoidal speed profile, dwells
    0.15-0.6 s at each end, returns. Servo whine at a frequency proportional to speed (commutation,
    300-1200 Hz at full speed, 4 harmonics), constant PWM tone from the drive, belt-tooth meshing,
    carriage rolling noise through rail modes, and a soft clunk at each end stop."""
    p = {}
    p["travel"] = r.uniform(0.5, 1.4)
    p["dwell"] = r.uniform(0.15, 0.6)
    p["ramp"] = r.uniform(0.15, 0.3)  # fraction of the travel time spent accelerating
    p["whine_f"] = r.uniform(300, 1200)
    p["whine_h"] = np.arange(1, 5) ** -r.uniform(0.5, 1.2) * 10 ** (r.normal(0, 3, 4) / 20)
    p["whine"] = _db(r.uniform(-10, 0))
    p["pwm_f"] = r.uniform(2500, min(7000.0, 0.42 * sr))
    p["pwm"] = _db(r.uniform(-34, -24))
    p["mesh_f"] = r.uniform(80, 300)
    p["mesh"] = _db(r.uniform(-20, -10))
    nm = int(r.integers(4, 7))
    p["rail"] = _modal_ir(_loguniform(r, 600, 5000, nm), r.uniform(10, 30, nm), r.uniform(0.5, 2.0, nm), sr, 2048, 0.7)
    p["roll"] = _db(r.uniform(-6, 2))
    p["clunk_ir"] = _modal_ir([r.uniform(120, 400), r.uniform(800, 2000)], [4, 10], [1.0, 0.5], sr, 2048)
    p["clunk_ir"] /= np.float32(np.max(np.abs(p["clunk_ir"])))
    p["clunk"] = _db(r.uniform(-4, 4))
    p["ball_f"] = r.uniform(40, 120)  # balls of the carriage passing a point at full speed, per s
    # a ball knocking on a damaged spot rings the carriage body (modes 0.4-3 kHz) after a sharp click
    p["hit_ir"] = _modal_ir(_loguniform(r, 400, 3000, 4), r.uniform(15, 40, 4), [1.0, 0.8, 0.6, 0.5], sr, 2048, 0.5)
    p["hit_ir"] /= np.float32(np.max(np.abs(p["hit_ir"])))
    p["slap_ir"] = _modal_ir([r.uniform(80, 250), r.uniform(400, 900)], [3, 6], [1.0, 0.4], sr, 2048)
    p["slap_ir"] /= np.float32(np.max(np.abs(p["slap_ir"])))
    return p


def _slider_motion(p: dict, r: np.random.Generator, n: int, sr: int):
    """Normalised speed v (0..1), position x (0..1) and a moving flag, all per sample."""
    T = p["travel"] * (1.0 + 0.002 * r.standard_normal())  # servo-driven: repeats closely
    dwell = p["dwell"] * (1.0 + 0.02 * r.standard_normal())
    ramp = p["ramp"] * T
    cycle = 2.0 * (T + dwell)
    t = np.arange(n, dtype=np.float64) / sr + r.uniform(0, cycle) + _drift(r, n, sr, 0.004, 1.0)
    u = np.mod(t, cycle)
    fwd = u < T
    back = (u >= T + dwell) & (u < 2 * T + dwell)
    tau = np.where(fwd, u, np.where(back, u - (T + dwell), 0.0))
    moving = fwd | back
    v = np.minimum(np.minimum(tau / ramp, (T - tau) / ramp), 1.0).clip(0.0, 1.0) * moving
    # position along the trapezoid (integral of v), normalised to 0..1
    pos = np.where(
        tau < ramp, 0.5 * tau**2 / ramp, np.where(tau <= T - ramp, tau - 0.5 * ramp, (T - ramp) - 0.5 * (T - tau) ** 2 / ramp)
    ) / (T - ramp)
    x = np.where(fwd, pos, np.where(back, 1.0 - pos, np.where(u < T + dwell, 1.0, 0.0)))
    return v, x, moving


def _slider(prod: _Product, r: np.random.Generator, n: int, sr: int, kind: str, sev: float) -> np.ndarray:
    p = prod.p
    v, pos, moving = _slider_motion(p, r, n, sr)
    level = _db(0.5 * r.standard_normal())
    speed_irr = None
    flutter = None
    if kind == "loose_belt":
        # A slack belt: the carriage speed wobbles (3-11 %), the belt flutters (amplitude modulation at
        # its transverse frequency, 12-35 Hz) and slaps at every start and stop.
        speed_irr = 1.0 + _drift(r, n, sr, 0.03 + 0.08 * sev, 0.05, rho=0.3)
        f_fl = r.uniform(12.0, 35.0)
        flutter = 1.0 + np.float32(0.1 + 0.4 * sev) * _sin(_phase(f_fl, n, sr, r.uniform(0, _TWO_PI)))
    vv = v * speed_irr if speed_irr is not None else v
    mv = moving.astype(np.float32)
    ph_w = _phase(p["whine_f"] * vv, n, sr, r.uniform(0, _TWO_PI))
    accel = np.abs(np.diff(v, prepend=v[0])) * sr  # |dv/dt| in 1/s: torque current
    env_w = (0.25 + 0.75 * vv + 0.15 * np.minimum(accel / 3.0, 1.0)) * mv
    x = _harmonics(ph_w, p["whine_h"] * p["whine"], np.zeros(4)) * env_w.astype(np.float32)
    x += np.float32(p["mesh"]) * _sin(_phase(p["mesh_f"] * vv, n, sr)) * vv.astype(np.float32)
    x += np.float32(p["pwm"]) * _sin(_phase(p["pwm_f"], n, sr)) * (0.5 + 0.5 * mv)
    roll_env = (vv**1.2).astype(np.float32)
    roll = _convolve(_white(r, n) * roll_env, p["rail"])
    x += np.float32(p["roll"] * 0.5) * roll
    if kind == "rail_damage":
        # A dent in the rail (2-10 % of the stroke long): each time the carriage passes it, its balls
        # knock on it one after another (a burst of impacts at the ball-pass rate, louder at speed).
        xd = r.uniform(0.2, 0.8)
        width = 0.01 + 0.04 * sev
        zone = np.abs(pos - xd) < width
        ball = _phase(p["ball_f"] * v, n, sr)
        knocks = np.flatnonzero((np.diff(ball) < 0) & zone[1:])
        amps = (2.0 + 10.0 * sev) * v[knocks] * np.minimum(r.lognormal(0.0, 0.4, len(knocks)), 2.0)
    elif kind == "no_grease":
        # Dry contact: scraping friction noise (0.8-5 kHz) growing with speed.
        scrape = _filt(_sos_band(sr, 800.0, 5000.0, 2), _white(r, n)) * roll_env
        x += np.float32(p["roll"] * 0.5 * _db(-6.0 + 12.0 * sev) * (0.3 + 0.4 * sev)) * scrape
    if flutter is not None:
        x *= flutter
    base = _rms(x)
    # End stops: a soft clunk at each arrival.
    stops = np.flatnonzero(np.diff(moving.astype(np.int8)) == -1)
    starts = np.flatnonzero(np.diff(moving.astype(np.int8)) == 1)
    for i in stops:
        _add_at(x, int(i), p["clunk_ir"], p["clunk"] * base * 0.8 * _db(r.normal(0, 1.5)))
    if kind == "rail_damage":
        x += np.float32(base) * _convolve(_impulse_train(n, knocks, amps), p["hit_ir"])
    elif kind == "loose_belt":
        for i in np.concatenate([starts, stops]):
            lag = int(r.integers(0, int(0.03 * sr)))
            _add_at(x, int(i) + lag, p["slap_ir"], (1.0 + 4.0 * sev) * base * _db(r.normal(0, 2)))
    elif kind == "no_grease":
        # Stick-slip squeal: an intermittent tone (0.6-2.5 kHz, 4 harmonics) while moving fast enough;
        # it sounds for about 35-85 % of the fast motion, more with severity.
        f_sq = r.uniform(600.0, min(2500.0, 0.25 * sr))
        f_inst = f_sq * (1.0 + _drift(r, n, sr, 0.01, 0.1)) * (0.97 + 0.03 * vv)
        sq = _harmonics(_phase(f_inst, n, sr), [1.0, 0.6, 0.4, 0.25], [0.0, 1.0, 2.0, 3.0])
        on = (_drift(r, n, sr, 1.0, 0.08, rho=0.5) > (0.5 - 1.5 * sev)).astype(np.float32)
        on = _boxcar(on * (v > 0.3), int(0.01 * sr))
        x += np.float32(_db(-16.0 + 18.0 * sev) * base * 1.41) * sq * on
    x *= np.float32(level)
    return x
