"""Valve: a solenoid valve on a water line, driven by a controller program, and its anomalies
(contamination showing as timing jitter, missing clicks or a changed click spectrum). The model is
described in ``docs/synthetic-data.md``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from humwatch.data.synth.signals import (
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


def _valve_product(r: np.random.Generator, sr: int) -> dict:
    """Solenoid valve on a water line, opened and closed by a controller program: a cycle of 1-3
    strokes (open 80-300 ms, closed 80-400 ms between them) and a 0.2-0.8 s rest. Opening: the plunger
    hits its stop (click through body modes 1.5-7 kHz and a low thud). Closing: the plunger seats (a
    different, louder click) and a water-hammer knock rings a pipe mode (60-200 Hz). Flow noise while
    open; AC coils buzz at 2x line frequency while energised (half of the products)."""
    p = {}
    ns = int(r.choice([1, 2, 3]))
    durs = r.uniform(0.08, 0.3, ns)  # open time of each stroke
    gaps = r.uniform(0.08, 0.4, ns)  # closed time after each stroke (the last one: before the rest)
    rest = r.uniform(0.2, 0.8)
    starts = np.concatenate([[0.0], np.cumsum(durs + gaps)[:-1]])
    p["period"] = float(np.sum(durs + gaps) + rest)
    p["open_t"], p["close_t"] = starts, starts + durs
    p["jitter"] = 0.003  # s: normal timing jitter of the controller and the plunger
    body_f = _loguniform(r, 1500, 7000, 5)
    body_q = r.uniform(15, 40, 5)
    p["body"] = (body_f, body_q)
    p["open_g"] = r.uniform(0.3, 1.5, 5)
    p["close_g"] = r.uniform(0.3, 1.5, 5)
    p["thud"] = (r.uniform(200, 600), r.uniform(3, 6), r.uniform(0.5, 1.5))
    p["hammer"] = (r.uniform(60, 200), r.uniform(8, 20), r.uniform(0.3, 1.0))
    p["close_amp"] = _db(r.uniform(2, 6))
    p["ir_open"] = _valve_click(p, sr, "open")
    p["ir_close"] = _valve_click(p, sr, "close")
    p["ir_var"] = _modal_ir(body_f * 1.02, body_q, r.uniform(0.2, 0.8, 5), sr, 2048)
    p["flow_band"] = (r.uniform(600, 1500), r.uniform(2500, 5000))
    p["flow"] = _db(r.uniform(-30, -20))
    p["ac_coil"] = bool(r.uniform() < 0.5)
    p["line"] = float(r.choice([50.0, 60.0]))
    p["buzz"] = _db(r.uniform(-40, -30))
    return p


def _valve_click(p: dict, sr: int, which: str, shift: float = 1.0, damp: float = 1.0, thud_gain: float = 1.0) -> np.ndarray:
    """The opening or closing click (peak 1): body modes (scaled in frequency by ``shift``, in damping
    by ``damp``), the thud, and for closing the water-hammer knock."""
    f, q = p["body"]
    g = p["open_g"] if which == "open" else p["close_g"]
    tf, tq, tg = p["thud"]
    freqs = np.concatenate([f * shift, [tf]])
    qs = np.concatenate([q / damp, [tq]])
    gains = np.concatenate([g, [tg * thud_gain]])
    length = 2048
    if which == "close":
        hf, hq, hg = p["hammer"]
        freqs, qs, gains = np.append(freqs, hf), np.append(qs, hq), np.append(gains, hg)
        length = 4096
    h = _modal_ir(freqs, qs, gains, sr, length)
    return h / np.float32(np.max(np.abs(h)))


def _valve(prod: _Product, r: np.random.Generator, n: int, sr: int, kind: str, sev: float) -> np.ndarray:
    p = prod.p
    period = p["period"] * (1.0 + 0.004 * r.standard_normal())
    t0 = r.uniform(0.0, period)
    cycles = np.arange(-1, int(n / sr / period) + 2)
    opens = (cycles[:, None] * period + p["open_t"][None, :] - t0).ravel()
    closes = (cycles[:, None] * period + p["close_t"][None, :] - t0).ravel()
    m = len(opens)
    opens = opens + r.normal(0.0, p["jitter"], m)
    closes = closes + r.normal(0.0, p["jitter"], m)
    a_open = _db(1.2 * r.standard_normal(m))
    a_close = p["close_amp"] * _db(1.2 * r.standard_normal(m))
    stroke_ok = np.ones(m, dtype=bool)  # the plunger moved
    ir_close = p["ir_close"]
    bounce, chatter, leak, rattle = 0.0, 0.0, 0.0, 0.0
    if kind == "timing_jitter":
        # Contamination makes the plunger stick: strokes come late and irregularly, the released
        # plunger hits harder, and some strokes chatter (the plunger re-strikes 2-4 times).
        sd = 0.005 + 0.04 * sev
        opens = opens + np.abs(r.normal(0.0, sd, m)) + r.exponential(0.03 * sev + 1e-6, m) * (r.uniform(size=m) < 0.5)
        closes = closes + np.abs(r.normal(0.0, sd, m)) + r.exponential(0.03 * sev + 1e-6, m) * (r.uniform(size=m) < 0.5)
        a_open = a_open * _db(6.0 * sev * r.uniform(size=m))
        a_close = a_close * _db(6.0 * sev * r.uniform(size=m))
        chatter = 0.3 + 0.6 * sev  # probability that a stroke chatters
    elif kind == "missing_clicks":
        # A jammed plunger: some strokes do not happen (no clicks, no flow; the coil still buzzes),
        # and debris holds the seat slightly open: a leak jet hisses and whistles while closed.
        stroke_ok = r.uniform(size=m) >= (0.1 + 0.4 * sev)
        leak = _db(-24.0 + 18.0 * sev)
    elif kind == "click_spectrum":
        # Debris on the seat: the plunger closes on particles, so the closing click's body modes shift
        # and damp, a crushing crackle (1.5-3.5 kHz) joins it, the plunger bounces (a second,
        # smaller click 4-15 ms later), and particles carried by the flow rattle while open.
        ir_close = _valve_click(p, sr, "close", shift=1.0 - (0.03 + 0.12 * sev), damp=1.0 + 2.0 * sev, thud_gain=1.0 + 2.0 * sev)
        crush = _modal_ir(_loguniform(r, 1500, 3500, 4), [8, 10, 12, 14], np.ones(4), sr, 1024)
        crush = np.pad(crush / np.float32(np.max(np.abs(crush))), (0, len(ir_close) - len(crush)))
        ir_close = ir_close + np.float32(0.3 + 0.7 * sev) * crush
        bounce = 0.2 + 0.5 * sev
        rattle = 0.1 + 0.4 * sev
    x = np.zeros(n, dtype=np.float32)
    io = np.round(opens * sr).astype(np.int64)
    ic = np.round(closes * sr).astype(np.int64)
    var = r.normal(0.0, 0.3, (m, 2)).astype(np.float32)
    for j in range(m):
        if not stroke_ok[j]:
            continue
        _add_at(x, int(io[j]), p["ir_open"], a_open[j])
        _add_at(x, int(io[j]), p["ir_var"], a_open[j] * var[j, 0])
        _add_at(x, int(ic[j]), ir_close, a_close[j])
        _add_at(x, int(ic[j]), p["ir_var"], a_close[j] * var[j, 1])
        if bounce:
            _add_at(x, int(ic[j] + r.uniform(0.004, 0.015) * sr), ir_close, a_close[j] * bounce * r.uniform(0.5, 1.0))
        if chatter and r.uniform() < chatter:
            at, a, ir = (io[j], a_open[j], p["ir_open"]) if r.uniform() < 0.5 else (ic[j], a_close[j], ir_close)
            for _ in range(int(r.integers(2, 5))):
                at = at + int(r.uniform(0.006, 0.025) * sr)
                a = a * r.uniform(0.4, 0.8)
                _add_at(x, int(at), ir, a)
    # Flow while open (and coil energised), ramps of ~10 ms.
    gate = np.zeros(n + 1, dtype=np.float32)
    coil = np.zeros(n + 1, dtype=np.float32)
    for j in range(m):
        a, b = int(np.clip(io[j], 0, n)), int(np.clip(ic[j], 0, n))
        if b > a:
            coil[a] += 1.0
            coil[b] -= 1.0
            if stroke_ok[j]:
                gate[a] += 1.0
                gate[b] -= 1.0
    ramp = int(0.01 * sr)
    gate = _boxcar(np.cumsum(gate)[:n].clip(0, 1), ramp)
    coil = _boxcar(np.cumsum(coil)[:n].clip(0, 1), ramp)
    flow = _filt(_sos_band(sr, *p["flow_band"], 2), _white(r, n)) * gate
    flow *= (1.0 + _drift(r, n, sr, 0.1, 0.2)).astype(np.float32)
    x += np.float32(p["flow"] * 3.0) * flow
    if p["ac_coil"]:
        buzz = _harmonics(_phase(2 * p["line"], n, sr), [1.0, 0.6, 0.4, 0.2], [0.0, 0.3, 0.6, 0.9])
        x += np.float32(p["buzz"] * 4.0) * buzz * coil
    if leak:
        # jet through the gap: a band of hiss above the normal flow band plus a whistle
        closed = 1.0 - gate
        fc = r.uniform(3000.0, min(7000.0, 0.42 * sr))
        hiss = _filt(_sos_band(sr, fc / 2**0.35, fc * 2**0.35, 2), _white(r, n))
        hiss /= np.float32(_rms(hiss))
        fw = r.uniform(1800.0, min(5000.0, 0.3 * sr)) * (1.0 + _drift(r, n, sr, 0.01, 0.1))
        whistle = _sin(_phase(fw, n, sr)) * np.float32(1.41 * r.uniform(0.3, 1.0))
        x += np.float32(p["flow"] * 3.0 * leak) * (hiss + whistle) * closed
    if rattle:
        # particles carried by the flow hit the body: sparse small clicks while open
        cnt = r.poisson(60.0 * n / sr)
        idx = r.integers(0, n, cnt)
        amps = r.lognormal(0.0, 0.5, cnt) * gate[np.clip(idx, 0, n - 1)]
        ring = p["ir_var"] / np.float32(np.max(np.abs(p["ir_var"])))
        x += np.float32(rattle) * _convolve(_impulse_train(n, idx, amps), ring)
    return x
