"""Physically motivated MIMII-like machine sounds: asdkit's built-in data (no downloads).

:func:`synthesize` writes the MIMII layout (Purohit et al., DCASE 2019)::

    OUT/6dB_fan/fan/id_00/normal/00000000.wav
    OUT/6dB_fan/fan/id_00/abnormal/00000000.wav
    OUT/manifest.csv   path,machine_type,machine_id,label,snr,anomaly_kind,severity

Every clip is 16-bit PCM, ``channels`` microphones (8 as MIMII's circular array), ``sample_rate``
(16 kHz) and ``seconds`` (10 s) long. How each clip is made:

1. **The machine** (one mono source signal). Every machine id is its own product with fixed
   parameters (rotation speed, blade/vane count, harmonic weights, structural modes...) drawn from a
   product seed that depends only on the machine type and id, so ``id_00`` is the same fan in every
   data set. Each clip draws an operating condition (speed, load, level, slow drifts within the clip)
   and, for anomalous clips, one anomaly kind of :data:`ANOMALY_KINDS` with a severity in [0.1, 1].
   The per-machine models are described in ``docs/synthetic-data.md``.
2. **The microphones**: the source is placed at MIMII's distance (50 cm; 10 cm for valves) in a
   product-specific direction from a circular array; every channel gets the exact near-field delay
   (fractional, 4-tap Lagrange interpolation), the 1/r gain and a fixed sensitivity mismatch.
3. **The factory**: each product stands in one of four halls. Pink and brown noise, mains hum, distant
   machines with reverberant fluctuation and occasional bangs with reverberant tails, arriving from a
   random direction (integer delays per channel), plus a partly independent diffuse part per channel.
4. **Mixing** at ``snr_db`` as MIMII: machine power / background power over all channels. The machine
   is calibrated per product (its nominal normal power is 1) and the background is scaled to exactly
   ``10**(-snr_db/10)`` of that, so normal clips have the asked SNR within their own level variation,
   and anomalies keep their physical level changes without changing the factory's level.

Randomness: each clip's generator is derived from ``(seed, machine type, machine id, label, index)``
only, so a clip's bytes do not depend on which other machines/ids/counts are generated, on the order,
or on ``snr_db`` (as in MIMII, the 6 dB, 0 dB and -6 dB sets hold the same recordings mixed at other
levels). The same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import math
import numbers
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
from scipy import signal as sps

from asdkit.audio import write_audio
from asdkit.data.clips import Clip
from asdkit.errors import ConfigError
from asdkit.io import write_csv

MACHINES = ("fan", "pump", "valve", "slider")
"""The four MIMII machine types."""

ANOMALY_KINDS: dict[str, tuple[str, ...]] = {
    "fan": ("unbalance", "voltage_change", "clogging"),
    "pump": ("leakage", "contamination", "clogging"),
    "valve": ("timing_jitter", "missing_clicks", "click_spectrum"),
    "slider": ("rail_damage", "loose_belt", "no_grease"),
}
"""Anomaly kinds per machine type. Fan, pump and slider follow MIMII's Table I (fan: unbalance,
voltage change, clogging; pump: leakage, contamination, clogging; slider: rail damage, loose belt,
no grease). MIMII lists valve anomalies as contamination; here contamination shows as a sticking
plunger (late, irregular, chattering strokes), a jammed plunger with a leaking seat (missing strokes,
hiss and whistle while closed), or debris on the seat (a changed closing click, bounce, rattle)."""

MANIFEST_NAME = "manifest.csv"
MANIFEST_FIELDS = ("path", "machine_type", "machine_id", "label", "snr", "anomaly_kind", "severity")

SPEED_OF_SOUND = 343.0
"""m/s, air at about 20 degrees C."""
ARRAY_RADIUS = 0.0465
"""m. Radius of our circular microphone array (our choice: MIMII used an 8-microphone circular array,
whose exact geometry is not needed here). Inter-channel delays are then up to 4.3 samples at 16 kHz;
averaging the channels (as the study does) attenuates a point source above about 2.8 kHz, the first
zero of J0(2 pi f r / c)."""
SOURCE_DISTANCE = {"fan": 0.5, "pump": 0.5, "slider": 0.5, "valve": 0.1}
"""m. MIMII recorded at 50 cm from the machine, 10 cm for valves."""
NOMINAL_DBFS = {"fan": -26.0, "pump": -32.0, "slider": -31.0, "valve": -44.0}
"""RMS level (dBFS, over all channels) of a nominal normal clip's machine + background mix. Our choice:
normal clips peak below -8 dBFS and even strong impacts (pump contamination, rail damage, valve chatter)
rarely reach the limiter; valves sit lowest because their clicks have a 35-40 dB crest factor."""
PEAK_LIMIT = 0.98
"""A clip whose peak would exceed this (full scale 1.0) is scaled down to it (rare; never clips)."""
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 96000
MAX_CLIPS_PER_FOLDER = 10**8  # file names have 8 digits, as MIMII's

_SALT_PRODUCT = 0x5EED_0001
_SALT_CLIP = 0x5EED_0002
_SALT_ARRAY = 0x5EED_0003
_SALT_FACTORY = 0x5EED_0004
_SALT_REFERENCE = 0x5EED_0005
_TWO_PI = 2.0 * math.pi


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
# Public API
# ----------------------------------------------------------------------------------------------------


def snr_folder_name(snr_db: float) -> str:
    """MIMII's spelling of a noise level: ``6dB``, ``0dB``, ``-6dB``; ``2.5dB`` for non-integers."""
    v = float(snr_db) + 0.0  # -0.0 -> 0.0
    if v == int(v):
        return f"{int(v)}dB"
    return f"{round(v, 3):g}dB"


def synthesize(
    out_dir,
    machines: Iterable[str] | str = MACHINES,
    ids: Iterable[str | int] | str = ("00", "02", "04", "06"),
    n_normal: int = 60,
    n_anomalous: int = 20,
    snr_db: float = 6.0,
    seed: int = 0,
    seconds: float = 10.0,
    sample_rate: int = 16000,
    channels: int = 8,
    progress: bool = True,
) -> list[Clip]:
    """Write MIMII-layout clips under ``out_dir`` and return their :class:`Clip` records.

    ``machines``: types from :data:`MACHINES`; ``ids``: ``"00"``, ``"id_00"`` or ``0`` (0-99), each a
    different product; ``n_normal`` / ``n_anomalous``: clips per machine id; ``snr_db``: machine to
    background power ratio (MIMII: 6, 0, -6). Also writes (or updates) ``out_dir/manifest.csv`` with
    each clip's anomaly kind and severity. A 10 s 8-channel clip takes 2.56 MB on disk.
    Raises :class:`~asdkit.errors.ConfigError` for a wrong argument.
    """
    machines, id_nums = _check_args(
        machines, ids, n_normal, n_anomalous, snr_db, seed, seconds, sample_rate, channels
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    snr = snr_folder_name(snr_db)
    jobs = [
        (m, i, label, k)
        for m in machines
        for i in id_nums
        for label, count in ((0, n_normal), (1, n_anomalous))
        for k in range(count)
    ]

    from asdkit.progress import make_progress, progress_enabled

    clips: list[Clip] = []
    rows: dict[str, list] = {}
    bar = make_progress() if progress_enabled(progress) else None
    task = bar.add_task(f"synthesizing {snr} clips", total=len(jobs)) if bar else None
    if bar:
        bar.start()
    try:
        for m, i, label, k in jobs:
            rel = f"{snr}_{m}/{m}/id_{i:02d}/{'abnormal' if label else 'normal'}/{k:08d}.wav"
            y, info = render_clip(m, i, label, k, seed=seed, snr_db=snr_db, seconds=seconds,
                                  sample_rate=sample_rate, channels=channels)
            path = out / rel
            write_audio(path, _to_pcm16(y), sample_rate)
            clips.append(Clip(str(path.resolve()), m, f"id_{i:02d}", label, snr=snr))
            rows[rel] = [rel, m, f"id_{i:02d}", label, snr, info.kind, f"{info.severity:.4f}"]
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
    _write_manifest(out, rows)
    return clips


@dataclass(frozen=True)
class ClipInfo:
    """What a clip holds: its anomaly kind (``"normal"`` for normal clips) and severity (0 normal)."""

    kind: str
    severity: float
    gain: float  # the output gain applied to machine and background


def render_clip(
    machine: str,
    machine_id: int,
    label: int,
    index: int,
    *,
    seed: int = 0,
    snr_db: float = 6.0,
    seconds: float = 10.0,
    sample_rate: int = 16000,
    channels: int = 8,
) -> tuple[np.ndarray, ClipInfo]:
    """One clip as float32 (samples x channels), exactly what :func:`synthesize` writes (before the
    16-bit rounding). No argument checks: :func:`synthesize` is the checked entry point."""
    m, b, info = render_clip_parts(machine, machine_id, label, index, seed=seed, snr_db=snr_db,
                                   seconds=seconds, sample_rate=sample_rate, channels=channels)
    y = m + b
    peak = float(np.max(np.abs(y)))
    if peak > PEAK_LIMIT:
        y *= np.float32(PEAK_LIMIT / peak)
    return y, info


def render_clip_parts(
    machine: str,
    machine_id: int,
    label: int,
    index: int,
    *,
    seed: int = 0,
    snr_db: float = 6.0,
    seconds: float = 10.0,
    sample_rate: int = 16000,
    channels: int = 8,
) -> tuple[np.ndarray, np.ndarray, ClipInfo]:
    """The machine part and the background part of a clip (each samples x channels, float32), already
    scaled as they are mixed: the written clip is their sum (scaled down only in the rare case
    it would exceed :data:`PEAK_LIMIT`).

    Mixing: the machine part is calibrated so that the product's *nominal* normal power (mean over
    all channels) is 1, and the background is scaled to power exactly ``10**(-snr_db/10)`` relative
    to it. A normal clip therefore has an SNR of ``snr_db`` give or take its own level variation (about
    +-1 dB); an anomaly that makes the machine louder raises its SNR and does not make the factory
    louder (which mixing each clip to the same SNR would do, handing the detector a cue no real
    recording has). The output gain is then constant per machine type and SNR.
    """
    sr = int(sample_rate)
    n = int(round(seconds * sr))
    rng_src, rng_bg, rng_plan = _clip_rngs(seed, machine, machine_id, label, index)
    kind, severity = _anomaly_plan(machine, label, index, rng_plan)
    prod = _product(machine, machine_id, sr)

    src = _SOURCES[machine](prod, rng_src, n + 2 * _pad(sr), sr, kind, severity)
    mach = _to_array(src, n, channels, prod)
    bg = _background(rng_bg, n, sr, channels, prod.hall)
    k_m = 1.0 / math.sqrt(_nominal_power(machine, machine_id, sr, channels))
    k_bg = math.sqrt(10.0 ** (-snr_db / 10.0) / _power(bg))
    nominal_total = 1.0 + 10.0 ** (-snr_db / 10.0)
    gain = 10.0 ** (NOMINAL_DBFS[machine] / 20.0) / math.sqrt(nominal_total)
    mach *= np.float32(gain * k_m)
    bg *= np.float32(gain * k_bg)
    return mach.T, bg.T, ClipInfo(kind, severity, gain)


def render_source(
    machine: str,
    machine_id: int,
    kind: str = "normal",
    severity: float = 0.0,
    *,
    seed: int = 0,
    seconds: float = 10.0,
    sample_rate: int = 16000,
) -> np.ndarray:
    """The mono machine source alone (no microphones, no background), for a chosen anomaly ``kind``
    (``"normal"`` or one of :data:`ANOMALY_KINDS`) and ``severity`` in [0, 1]; calibrated like the
    clips (a nominal normal recording has unit power). For tests and for listening to one effect."""
    if machine not in MACHINES:
        raise ConfigError(f"unknown machine type {machine!r} (choose from {', '.join(MACHINES)})")
    if kind != "normal" and kind not in ANOMALY_KINDS[machine]:
        choices = ", ".join(ANOMALY_KINDS[machine])
        raise ConfigError(f"unknown anomaly kind {kind!r} for {machine} (choose from normal, {choices})")
    sr = int(sample_rate)
    n = int(round(seconds * sr))
    rng = np.random.default_rng(np.random.SeedSequence([_SALT_CLIP, int(seed), _machine_key(machine), machine_id, 2]))
    prod = _product(machine, machine_id, sr)
    x = _SOURCES[machine](prod, rng, n, sr, kind, float(severity))
    return x * np.float32(1.0 / math.sqrt(_nominal_power(machine, machine_id, sr, 1)))


def _power(x: np.ndarray) -> float:
    """Mean square over all samples and channels (BLAS dot in float32 blocks, summed in float64)."""
    v = x.reshape(-1)
    return sum(float(np.dot(v[i : i + 65536], v[i : i + 65536])) for i in range(0, len(v), 65536)) / len(v)


# ----------------------------------------------------------------------------------------------------
# Arguments, randomness, files
# ----------------------------------------------------------------------------------------------------


def _check_args(machines, ids, n_normal, n_anomalous, snr_db, seed, seconds, sample_rate, channels):
    if isinstance(machines, str):
        machines = (machines,)
    try:
        machines = tuple(machines)
    except TypeError:
        raise ConfigError(f"machines: expected a list of machine types, got {machines!r}") from None
    if not machines:
        raise ConfigError(f"machines: empty (choose from {', '.join(MACHINES)})")
    for m in machines:
        if m not in MACHINES:
            raise ConfigError(f"unknown machine type {m!r} (choose from {', '.join(MACHINES)})")
    if len(set(machines)) != len(machines):
        raise ConfigError(f"machines: listed twice in {', '.join(machines)}")

    if isinstance(ids, (str, int)):
        ids = (ids,)
    try:
        ids = tuple(ids)
    except TypeError:
        raise ConfigError(f"ids: expected a list of machine ids like '00', got {ids!r}") from None
    if not ids:
        raise ConfigError("ids: empty (give machine ids like 00, 02, 04, 06)")
    id_nums = []
    for i in ids:
        id_nums.append(_parse_id(i))
    if len(set(id_nums)) != len(id_nums):
        raise ConfigError(f"ids: an id is listed twice in {', '.join(map(str, ids))}")

    for name, v in (("n_normal", n_normal), ("n_anomalous", n_anomalous)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ConfigError(f"{name} must be a whole number, got {v!r}")
        if v < 0:
            raise ConfigError(f"{name} must be 0 or more, got {v}")
        if v > MAX_CLIPS_PER_FOLDER:
            raise ConfigError(f"{name} must be at most {MAX_CLIPS_PER_FOLDER}, got {v}")
    if n_normal == 0 and n_anomalous == 0:
        raise ConfigError("n_normal and n_anomalous are both 0: nothing to generate")

    if isinstance(snr_db, bool) or not isinstance(snr_db, numbers.Real) or not math.isfinite(snr_db):
        raise ConfigError(f"snr_db must be a finite number of dB, got {snr_db!r}")
    if not -40.0 <= snr_db <= 60.0:
        raise ConfigError(f"snr_db must be between -40 and 60 dB, got {snr_db}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be a whole number 0 or more, got {seed!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not math.isfinite(seconds):
        raise ConfigError(f"seconds must be a number, got {seconds!r}")
    if not 0.5 <= seconds <= 600.0:
        raise ConfigError(f"seconds must be between 0.5 and 600, got {seconds}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral):
        raise ConfigError(f"sample_rate must be a whole number of Hz, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ConfigError(f"sample_rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {sample_rate}")
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral):
        raise ConfigError(f"channels must be a whole number, got {channels!r}")
    if not 1 <= channels <= 32:
        raise ConfigError(f"channels must be between 1 and 32, got {channels}")
    return machines, id_nums


_ID_RE = re.compile(r"^(?:id_)?(\d{1,2})$")


def _parse_id(value) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"bad machine id {value!r} (use e.g. '00' or 'id_00', 0-99)")
    if isinstance(value, numbers.Integral):
        if 0 <= value <= 99:
            return int(value)
        raise ConfigError(f"bad machine id {value!r} (use 0-99, e.g. '00' or 'id_00')")
    m = _ID_RE.match(str(value).strip()) if isinstance(value, str) else None
    if not m:
        raise ConfigError(f"bad machine id {value!r} (use e.g. '00' or 'id_00', 0-99)")
    return int(m.group(1))


def _machine_key(machine: str) -> int:
    return zlib.crc32(machine.encode("ascii"))


def _clip_rngs(seed: int, machine: str, machine_id: int, label: int, index: int):
    """Three independent generators (source, background, anomaly plan) for one clip."""
    ss = np.random.SeedSequence([_SALT_CLIP, int(seed), _machine_key(machine), machine_id, label, index])
    return [np.random.default_rng(s) for s in ss.spawn(3)]


def _anomaly_plan(machine: str, label: int, index: int, rng: np.random.Generator) -> tuple[str, float]:
    """Kinds rotate with the clip index (balanced); severity is drawn, skewed towards subtle."""
    if not label:
        return "normal", 0.0
    kinds = ANOMALY_KINDS[machine]
    kind = kinds[index % len(kinds)]
    severity = 0.1 + 0.9 * float(rng.uniform()) ** 1.2
    return kind, severity


def _to_pcm16(y: np.ndarray) -> np.ndarray:
    """Float (full scale 1.0) to int16 by rounding, so reading back gives y to within half an LSB."""
    q = np.rint(y * np.float32(32768.0))
    np.clip(q, -32768, 32767, out=q)
    return np.ascontiguousarray(q.astype(np.int16))


def _write_manifest(out: Path, rows: dict[str, list]) -> None:
    """Write ``manifest.csv``: the new rows plus earlier rows whose files are still there."""
    path = out / MANIFEST_NAME
    merged: dict[str, list] = {}
    if path.is_file():
        try:
            with open(path, newline="", encoding="utf-8") as f:
                for r in csv.DictReader(f):
                    p = r.get("path", "")
                    if p and (out / p).is_file() and all(k in r for k in MANIFEST_FIELDS):
                        merged[p] = [r[k] for k in MANIFEST_FIELDS]
        except (OSError, UnicodeDecodeError, csv.Error):
            merged = {}  # an unreadable old manifest is replaced
    merged.update(rows)
    write_csv(path, MANIFEST_FIELDS, (merged[k] for k in sorted(merged)))


# ----------------------------------------------------------------------------------------------------
# Signal helpers
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# Products (one per machine type and id)
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Product:
    machine: str
    machine_id: int
    sr: int
    p: dict  # model parameters
    geometry: "_Geometry"  # where the product stands relative to the array
    hall: int  # the factory hall it stands in (its background)


@lru_cache(maxsize=256)
def _product(machine: str, machine_id: int, sr: int) -> _Product:
    """The fixed parameters of product ``machine`` id ``machine_id`` (independent of the seed)."""
    r = np.random.default_rng(np.random.SeedSequence([_SALT_PRODUCT, _machine_key(machine), machine_id]))
    params = _PRODUCT_MAKERS[machine](r, sr)
    # Placement: distance as MIMII, direction and height random per product.
    az = r.uniform(0, _TWO_PI)
    el = r.uniform(-0.3, 0.4)
    d = SOURCE_DISTANCE[machine]
    src = d * np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
    hall = int(r.integers(len(_factories())))
    return _Product(machine, machine_id, sr, params, _Geometry(src, sr), hall)


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


_REFERENCE_TAKES, _REFERENCE_SECONDS = 4, 3.0


@lru_cache(maxsize=1024)
def _nominal_power(machine: str, machine_id: int, sr: int, channels: int) -> float:
    """The product's nominal normal power at the microphones (mean over channels): the mean power of
    four 3 s normal reference recordings made with a fixed generator. Dividing by it puts every
    product's normal clips at the same level, whatever its parameters."""
    prod = _product(machine, machine_id, sr)
    rng = np.random.default_rng(np.random.SeedSequence([_SALT_REFERENCE, _machine_key(machine), machine_id]))
    n = int(_REFERENCE_SECONDS * sr)
    powers = []
    for _ in range(_REFERENCE_TAKES):
        x = _SOURCES[machine](prod, rng, n + 2 * _pad(sr), sr, "normal", 0.0)
        powers.append(_power(_to_array(x, n, channels, prod)))
    return float(np.mean(powers))


# ----------------------------------------------------------------------------------------------------
# Fan
# ----------------------------------------------------------------------------------------------------


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
        _sos_band(sr, p["vortex_f"] / 1.5, p["vortex_f"] * 1.5, 1), w)
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


# ----------------------------------------------------------------------------------------------------
# Pump
# ----------------------------------------------------------------------------------------------------


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
    p["casing"] = _modal_ir(_loguniform(r, 1500, 6500, nc), r.uniform(20, 60, nc), r.uniform(0.5, 1.5, nc),
                            sr, 1024, 0.3)
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
    tones += np.float32(p["slot"]) * (_sin(_phase(f_bar + 2 * p["line"], n, sr))
                                      + _sin(_phase(f_bar - 2 * p["line"], n, sr)))
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


# ----------------------------------------------------------------------------------------------------
# Valve
# ----------------------------------------------------------------------------------------------------


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


def _valve_click(p: dict, sr: int, which: str, shift: float = 1.0, damp: float = 1.0,
                 thud_gain: float = 1.0) -> np.ndarray:
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
        ir_close = _valve_click(p, sr, "close", shift=1.0 - (0.03 + 0.12 * sev), damp=1.0 + 2.0 * sev,
                                thud_gain=1.0 + 2.0 * sev)
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


# ----------------------------------------------------------------------------------------------------
# Slider (slide rail)
# ----------------------------------------------------------------------------------------------------


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
        tau < ramp, 0.5 * tau**2 / ramp,
        np.where(tau <= T - ramp, tau - 0.5 * ramp, (T - ramp) - 0.5 * (T - tau) ** 2 / ramp),
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
        out.append(_Factory(
            line=float(r.choice([50.0, 60.0])),
            brown=_db(r.uniform(-3, 3)),
            hum=tuple(_db(r.uniform(-24, -16)) * np.arange(1, 7) ** -r.uniform(0.5, 1.5)),
            machines=tuple((float(f), _db(r.uniform(-18, -10)))
                           for f in _loguniform(r, 60, 700, int(r.integers(1, 4)))),
            bang_rate=r.uniform(0.02, 0.12),
            rt60=r.uniform(0.4, 1.2),
            diffuse=r.uniform(0.2, 0.45),
        ))
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
                y[len(seg):] += (a_ind * sens[c]) * stationary[: n - len(seg)]
    return out


_SOURCES = {"fan": _fan, "pump": _pump, "valve": _valve, "slider": _slider}
_PRODUCT_MAKERS = {"fan": _fan_product, "pump": _pump_product, "valve": _valve_product, "slider": _slider_product}
