"""Signal helpers shared by the machine models and the factory background: slow drifts, running
phases, sums of harmonics, modal (resonator) impulse responses, filters, noise and levels. Every
random draw comes from the generator passed in."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import signal as sps

_TWO_PI = 2.0 * math.pi


def _power(x: np.ndarray) -> float:
    """Mean square over all samples and channels (BLAS dot in float32 blocks, summed in float64)."""
    v = x.reshape(-1)
    return sum(float(np.dot(v[i : i + 65536], v[i : i + 65536])) for i in range(0, len(v), 65536)) / len(v)


_DRIFT_HOP = 16  # samples: drifts are interpolated on this grid and held in between (1 ms at 16 kHz)


def _drift(rng: np.random.Generator, n: int, sr: int, std: float, step_s: float = 0.5, rho: float = 0.7) -> np.ndarray:
    """A slow random signal (float64, std about ``std``): AR(1) knots every ``step_s`` seconds,
    linearly interpolated (on a 1 ms grid, held in between: far finer than any drift here)."""
    k = int(n / (sr * step_s)) + 3
    e = rng.standard_normal(k)
    v = np.empty(k)
    v[0] = e[0]
    c = math.sqrt(1.0 - rho * rho)
    for i in range(1, k):
        v[i] = rho * v[i - 1] + c * e[i]
    m = -(-n // _DRIFT_HOP)
    x = np.arange(m, dtype=np.float64) * (_DRIFT_HOP / (sr * step_s))
    coarse = np.interp(x, np.arange(k, dtype=np.float64), v)
    return std * np.repeat(coarse, _DRIFT_HOP)[:n]


@lru_cache(maxsize=4)
def _ramp(n: int) -> np.ndarray:
    r = np.arange(n, dtype=np.float64)
    r.flags.writeable = False
    return r


def _wrap(c: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """frac(scale * c), float64 (a new array)."""
    c = c * scale if scale != 1.0 else c.copy()
    c -= np.floor(c)
    return c


def _phase(freq: np.ndarray | float, n: int, sr: int, phase0: float = 0.0) -> np.ndarray:
    """Running phase of an instantaneous frequency in Hz, in cycles wrapped to [0, 1) (float64);
    ``phase0`` in radians."""
    if np.ndim(freq) == 0:
        c = _ramp(n) * (float(freq) / sr)
    else:
        c = np.cumsum(np.asarray(freq, dtype=np.float64))
        c *= 1.0 / sr
    c += phase0 / _TWO_PI
    c -= np.floor(c)
    return c


def _radians32(cycles: np.ndarray) -> np.ndarray:
    out = np.empty(len(cycles), dtype=np.float32)
    np.multiply(cycles, _TWO_PI, out=out, casting="same_kind")
    return out


def _sin(cycles: np.ndarray, phase0: float = 0.0) -> np.ndarray:
    """sin(2 pi cycles + phase0) in float32."""
    x = _radians32(cycles)
    if phase0:
        x += np.float32(phase0)
    return np.sin(x, out=x)


def _harmonics(cycles: np.ndarray, amps, phases, mult=None) -> np.ndarray:
    """sum_k amps[k] sin(2 pi mult[k] cycles + phases[k]) in float32 (mult defaults to 1, 2, 3...)."""
    ph = _radians32(cycles)
    out = np.zeros(len(ph), dtype=np.float32)
    tmp = np.empty_like(ph)
    for k, (a, p0) in enumerate(zip(amps, phases)):
        if a == 0.0:
            continue
        np.multiply(ph, np.float32(k + 1 if mult is None else mult[k]), out=tmp)
        tmp += np.float32(p0)
        np.sin(tmp, out=tmp)
        tmp *= np.float32(a)
        out += tmp
    return out


def _modal_ir(freqs, qs, gains, sr: int, length: int, direct: float = 0.0) -> np.ndarray:
    """Impulse response of parallel damped resonators (structural / acoustic modes).

    Mode i rings at freqs[i] with bandwidth freqs[i]/qs[i]; its amplitude is set so its peak
    frequency-response magnitude is gains[i] (for a decay rate a = pi*bw the peak of
    A e^(-a t) sin(2 pi f t) sampled at sr is about A sr / (2 a)). Modes at or above 0.45 sr are
    dropped. ``direct`` adds a unit impulse (the direct, unfiltered path). The tail is faded out.
    """
    f = np.asarray(freqs, dtype=np.float64)
    q = np.asarray(qs, dtype=np.float64)
    g = np.asarray(gains, dtype=np.float64)
    keep = f < 0.45 * sr
    f, q, g = f[keep], q[keep], g[keep]
    t = np.arange(length, dtype=np.float64) / sr
    h = np.zeros(length, dtype=np.float64)
    for fi, qi, gi in zip(f, q, g):
        a = math.pi * fi / qi
        h += gi * (2.0 * a / sr) * np.exp(-a * t) * np.sin(_TWO_PI * fi * t)
    fade = min(length // 8, 256)
    if fade:
        h[-fade:] *= np.linspace(1.0, 0.0, fade)
    h[0] += direct
    return h.astype(np.float32)


def _convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Causal convolution cut to len(x) (overlap-add FFT), float32."""
    return sps.oaconvolve(x, h)[: len(x)].astype(np.float32, copy=False)


@lru_cache(maxsize=512)
def _sos_band(sr: int, lo: float | None, hi: float | None, order: int = 2) -> np.ndarray:
    """Butterworth band-pass (or low/high-pass when one edge is None) as second-order sections."""
    nyq = 0.5 * sr
    if lo is not None:
        lo = min(max(lo, 1.0), 0.95 * nyq)
    if hi is not None:
        hi = min(hi, 0.95 * nyq)
    if lo is not None and hi is not None:
        if hi <= lo * 1.05:
            lo = hi / 1.2
        sos = sps.butter(order, [lo, hi], btype="bandpass", fs=sr, output="sos")
    elif hi is not None:
        sos = sps.butter(order, hi, btype="lowpass", fs=sr, output="sos")
    else:
        sos = sps.butter(order, lo, btype="highpass", fs=sr, output="sos")
    return sos


def _onepole_lowpass(x: np.ndarray, fc: float, sr: int) -> np.ndarray:
    """First-order low-pass y[t] = (1-a) x[t] + a y[t-1], a = exp(-2 pi fc / sr)."""
    a = math.exp(-_TWO_PI * fc / sr)
    return sps.lfilter([1.0 - a], [1.0, -a], x).astype(np.float32, copy=False)


def _filt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Filter with (a copy of) cached second-order sections: sosfilt needs writable coefficients."""
    return sps.sosfilt(sos.copy(), x).astype(np.float32, copy=False)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12


_UNIFORM_SCALE = np.float32(math.sqrt(12.0))


def _white(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance white noise (uniform samples: 5x cheaper than Gaussian ones; every use here is
    filtered or enveloped, where the sample distribution is inaudible)."""
    x = rng.random(n, dtype=np.float32)
    x -= np.float32(0.5)
    x *= _UNIFORM_SCALE
    return x


def _boxcar(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average over ``width`` samples (cumulative-sum form, O(n)); smooths gates into ramps."""
    if width <= 1:
        return x.astype(np.float32)
    c = np.cumsum(np.concatenate([np.zeros(width, dtype=np.float64), x.astype(np.float64)]))
    return ((c[width:] - c[:-width]) / width).astype(np.float32)


def _add_at(out: np.ndarray, start: int, h: np.ndarray, scale: float) -> None:
    """out[start:start+len(h)] += scale * h, cut at both ends."""
    n = len(out)
    if start >= n or start + len(h) <= 0:
        return
    a, b = max(start, 0), min(start + len(h), n)
    out[a:b] += np.float32(scale) * h[a - start : b - start]


def _impulse_train(n: int, idx: np.ndarray, amps: np.ndarray) -> np.ndarray:
    x = np.zeros(n, dtype=np.float32)
    ok = (idx >= 0) & (idx < n)
    np.add.at(x, idx[ok], amps[ok].astype(np.float32))
    return x


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size=None):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def _db(x: float) -> float:
    return 10.0 ** (x / 20.0)
