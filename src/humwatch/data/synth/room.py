"""The microphones and the factory around the machine.

**The microphones**: the source is placed at MIMII's distance (50 cm; 10 cm for valves) in a
product-specific direction from a circular array; every channel gets the exact near-field delay
(fractional, 4-tap Lagrange interpolation), the 1/r gain and a fixed sensitivity mismatch.

**The factory**: each product stands in one of four halls. Pink and brown noise, mains hum, distant
machines with reverberant fluctuation and occasional bangs with reverberant tails, arriving from a
random direction (integer delays per channel), plus a partly independent diffuse part per channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal as sps

from humwatch.data.synth.signals import (
    _TWO_PI,
    _add_at,
    _db,
    _drift,
    _filt,
    _harmonics,
    _loguniform,
    _onepole_lowpass,
    _phase,
    _rms,
    _sos_band,
    _white,
)

if TYPE_CHECKING:
    from humwatch.data.synth.products import _Product

SPEED_OF_SOUND = 343.0
"""m/s, air at about 20 degrees C."""
ARRAY_RADIUS = 0.0465
"""m. Radius of our circular microphone array (our choice: MIMII used an 8-microphone circular array,
whose exact geometry is not needed here). Inter-channel delays are then up to 4.3 samples at 16 kHz;
averaging the channels (as the study does) attenuates a point source above about 2.8 kHz, the first
zero of J0(2 pi f r / c)."""
SOURCE_DISTANCE = {"fan": 0.5, "pump": 0.5, "slider": 0.5, "valve": 0.1}
"""m. MIMII recorded at 50 cm from the machine, 10 cm for valves."""

_SALT_ARRAY = 0x5EED_0003
_SALT_FACTORY = 0x5EED_0004


def _pad(sr: int) -> int:
    """Extra source samples on each side of the clip: room for the largest microphone delay
    (1 + array diameter / speed of sound) and the 4-tap interpolator."""
    return int(math.ceil(1.0 + 2.0 * ARRAY_RADIUS / SPEED_OF_SOUND * sr)) + 3


# 1/f ("pink") noise filter: three poles and zeros placed so the response falls 10 dB per decade
# over the audio band. Coefficients from J. O. Smith, "Spectral Audio Signal Processing",
# section "Example: Synthesis of 1/F Noise (Pink Noise)" (published constants, not code).
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])


# ----------------------------------------------------------------------------------------------------
# Microphone array
# ----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _array_sensitivity(max_channels: int = 32) -> np.ndarray:
    """Fixed microphone sensitivity mismatch of our array (std 0.4 dB; MEMS capsules are typically
    specified to +-1 dB)."""
    r = np.random.default_rng(np.random.SeedSequence([_SALT_ARRAY]))
    return 10.0 ** (0.4 * r.standard_normal(max_channels) / 20.0)


class _Geometry:
    """A point source seen by circular arrays of any size: per-channel delays (samples, the earliest
    channel at 1) and 1/r spreading gains (the nearest channel at 1), cached per channel count."""

    def __init__(self, src: np.ndarray, sr: int):
        self.src, self.sr = src, sr
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def for_channels(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        if channels not in self._cache:
            mics = _mic_positions(channels)
            dist = np.linalg.norm(mics - self.src[None, :], axis=1)
            delay = dist / SPEED_OF_SOUND * self.sr
            self._cache[channels] = (1.0 + delay - delay.min(), dist.min() / dist)
        return self._cache[channels]


def _mic_positions(channels: int) -> np.ndarray:
    """Microphones equally spaced on a horizontal circle of radius ARRAY_RADIUS (one: the centre)."""
    if channels == 1:
        return np.zeros((1, 3))
    ang = _TWO_PI * np.arange(channels) / channels
    return np.stack([ARRAY_RADIUS * np.cos(ang), ARRAY_RADIUS * np.sin(ang), np.zeros(channels)], axis=1)


def _to_array(src: np.ndarray, n: int, channels: int, prod: _Product) -> np.ndarray:
    """Machine source (n + 2*_pad(sr) samples, the clip starting at _pad(sr)) to ``channels`` microphones
    (channels x n, float32): fractional delays by 4-tap Lagrange interpolation, 1/r gains and the
    array's sensitivities."""
    out = np.empty((channels, n), dtype=np.float32)
    sens = _array_sensitivity()[:channels]
    pad = _pad(prod.sr)
    if channels == 1:
        out[0] = src[pad : pad + n] * np.float32(sens[0])
        return out
    delays, spread = prod.geometry.for_channels(channels)
    for c in range(channels):
        d = float(delays[c])
        i = int(math.floor(d))
        s = -(d - i)  # read the source at offset s from sample pad + t - i
        w = (
            s * (s + 1) * (s + 2) / 6.0,  # tap +1
            -(s - 1) * (s + 1) * (s + 2) / 2.0,  # tap 0
            (s - 1) * s * (s + 2) / 2.0,  # tap -1
            -(s - 1) * s * (s + 1) / 6.0,  # tap -2
        )
        b = pad - i
        g = float(spread[c] * sens[c])
        y = out[c]
        np.multiply(src[b + 1 : b + 1 + n], np.float32(w[0] * g), out=y)
        y += np.float32(w[1] * g) * src[b : b + n]
        y += np.float32(w[2] * g) * src[b - 1 : b - 1 + n]
        y += np.float32(w[3] * g) * src[b - 2 : b - 2 + n]
    return out


# ----------------------------------------------------------------------------------------------------
# Factory background
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Factory:
    line: float
    brown: float  # level of the brown (1/f^2) rumble re the pink noise
    hum: tuple  # mains hum harmonic amplitudes
    machines: tuple  # distant machines: (fundamental Hz, level)
    bang_rate: float  # per second
    rt60: float  # s, reverberation time of the hall
    diffuse: float  # power fraction of the background that is independent per microphone


@lru_cache(maxsize=1)
def _factories() -> tuple[_Factory, ...]:
    """Four fixed factory halls (MIMII mixed background recorded in several real factories)."""
    r = np.random.default_rng(np.random.SeedSequence([_SALT_FACTORY]))
    out = []
    for _ in range(4):
        out.append(
            _Factory(
                line=float(r.choice([50.0, 60.0])),
                brown=_db(r.uniform(-3, 3)),
                hum=tuple(_db(r.uniform(-24, -16)) * np.arange(1, 7) ** -r.uniform(0.5, 1.5)),
                machines=tuple((float(f), _db(r.uniform(-18, -10))) for f in _loguniform(r, 60, 700, int(r.integers(1, 4)))),
                bang_rate=r.uniform(0.02, 0.12),
                rt60=r.uniform(0.4, 1.2),
                diffuse=r.uniform(0.2, 0.45),
            )
        )
    return tuple(out)


def _bed_seconds(seconds: float) -> float:
    """Length of the cached tonal recording of a hall: 60 s, or more in 30 s steps for long clips."""
    return 60.0 + 30.0 * max(0, math.ceil((seconds + 1.0 - 60.0) / 30.0))


@lru_cache(maxsize=8)
def _factory_tones(index: int, sr: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """The tonal part of hall ``index``'s background, ``seconds`` long (made once, cut per clip as
    real background recordings are): mains hum whose grid frequency wanders a little, and distant
    machines (harmonic tones, low-passed by distance) fluctuating as in a reverberant hall."""
    fac = _factories()[index]
    r = np.random.default_rng(np.random.SeedSequence([_SALT_FACTORY, index, sr, int(seconds)]))
    m = int(seconds * sr)
    line = fac.line * (1.0 + _drift(r, m, sr, 0.0005, 2.0))
    hum = _harmonics(_phase(line, m, sr, r.uniform(0, _TWO_PI)), fac.hum, r.uniform(0, _TWO_PI, len(fac.hum)))
    dist = np.zeros(m, dtype=np.float32)
    for f0, lvl in fac.machines:
        f = f0 * (1.0 + _drift(r, m, sr, 0.002, 1.0))
        tone = _harmonics(_phase(f, m, sr, r.uniform(0, _TWO_PI)), [1.0, 0.5, 0.3, 0.15], r.uniform(0, _TWO_PI, 4))
        fluct = (1.0 + _drift(r, m, sr, 0.35, 0.15, rho=0.5)).clip(0.05, None).astype(np.float32)
        dist += np.float32(lvl) * tone * fluct
    hum.flags.writeable = False
    dist.flags.writeable = False
    return hum, dist


def _background(r: np.random.Generator, n: int, sr: int, channels: int, hall: int) -> np.ndarray:
    """Factory noise at the microphones (channels x n, float32, arbitrary level)."""
    fac_i = hall
    fac = _factories()[fac_i]
    pad = _pad(sr)
    m = n + 2 * pad
    pink = sps.lfilter(_PINK_B, _PINK_A, _white(r, m)).astype(np.float32)
    pink /= np.float32(_rms(pink))
    brown = sps.lfilter([1.0], [1.0, -0.995], _white(r, m)).astype(np.float32)
    brown = _filt(_sos_band(sr, 20.0, None, 1), brown)
    brown /= np.float32(_rms(brown))
    stationary = pink + np.float32(fac.brown * _db(r.normal(0, 1))) * brown
    activity = (1.0 + _drift(r, m, sr, 0.15, 1.0)).clip(0.3, None).astype(np.float32)
    shared = stationary * activity
    # mains hum and distant machines: a clip-long excerpt of the hall's long "tonal" recording
    hum, dist = _factory_tones(fac_i, sr, _bed_seconds(m / sr))
    o = int(r.integers(0, len(hum) - m + 1))
    shared += np.float32(_db(r.normal(0, 1))) * hum[o : o + m]
    shared += np.float32(_db(r.normal(0, 1.5))) * dist[o : o + m]
    # occasional bangs with reverberant tails (exponential decay at the hall's rt60, darker later)
    cnt = r.poisson(fac.bang_rate * m / sr)
    if cnt:
        L = int(fac.rt60 * sr)
        tt = np.arange(L, dtype=np.float32) / sr
        env = np.exp(-6.91 * tt / fac.rt60).astype(np.float32) * np.minimum(tt / 0.002, 1.0)
        for _ in range(cnt):
            start = int(r.integers(-L // 2, m))
            burst = _onepole_lowpass(_white(r, L), r.uniform(1500, 6000), sr) * env
            burst /= np.float32(_rms(burst[: max(L // 10, 1)]))
            _add_at(shared, start, burst, _db(r.uniform(0, 8)))
    out = np.empty((channels, n), dtype=np.float32)
    sens = _array_sensitivity()[:channels].astype(np.float32)
    az = r.uniform(0, _TWO_PI)
    mics = _mic_positions(channels)
    delay = np.rint(-(mics[:, 0] * math.cos(az) + mics[:, 1] * math.sin(az)) / SPEED_OF_SOUND * sr).astype(int)
    q = fac.diffuse * (1.0 + 0.2 * r.standard_normal())
    q = min(max(q, 0.1), 0.6)
    a_sh, a_ind = np.float32(math.sqrt(1 - q)), np.float32(math.sqrt(q))
    offs = r.integers(m // 4, 3 * m // 4, channels) if channels > 1 else np.zeros(1, dtype=int)
    for c in range(channels):
        s = pad - int(delay[c])
        y = out[c]
        np.multiply(shared[s : s + n], a_sh * sens[c], out=y)
        if channels > 1:
            # The independent part: the stationary noise read from a distant offset (circularly), so
            # it is uncorrelated with the shared part and with the other channels.
            o = int(offs[c]) % m
            seg = stationary[o : o + n]
            y[: len(seg)] += (a_ind * sens[c]) * seg
            if len(seg) < n:
                y[len(seg) :] += (a_ind * sens[c]) * stationary[: n - len(seg)]
    return out
