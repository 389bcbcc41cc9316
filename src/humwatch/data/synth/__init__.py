"""Physically motivated MIMII-like machine sounds: humwatch's built-in data (no downloads).

:func:`synthesize` writes the MIMII layout (Purohit et al., DCASE 2019)::

    OUT/6dB_fan/fan/id_00/normal/00000000.wav
    OUT/6dB_fan/fan/id_00/abnormal/00000000.wav
    OUT/manifest.csv   path,machine_type,machine_id,label,snr,anomaly_kind,severity

Every clip is 16-bit PCM, ``channels`` microphones (8 as MIMII's circular array), ``sample_rate``
(16 kHz) and ``seconds`` (10 s) long. How each clip is made:

1. **The machine** (one mono source signal): every machine id is its own product with fixed
   parameters (:mod:`humwatch.data.synth.products`). Each clip draws an operating condition (speed,
   load, level, slow drifts within the clip) and, for anomalous clips, one anomaly kind of
   :data:`ANOMALY_KINDS` with a severity in [0.1, 1]. One module per machine type:
   :mod:`~humwatch.data.synth.fan`, :mod:`~humwatch.data.synth.pump`, :mod:`~humwatch.data.synth.valve`,
   :mod:`~humwatch.data.synth.slider` (the models are described in ``docs/synthetic-data.md``).
2. **The microphones**: the source placed near a circular array, near-field delays and gains
   (:mod:`humwatch.data.synth.room`).
3. **The factory**: the background of one of four halls (:mod:`humwatch.data.synth.room`).
4. **Mixing** at ``snr_db`` as MIMII: machine power / background power over all channels. The machine
   is calibrated per product (its nominal normal power is 1) and the background is scaled to exactly
   ``10**(-snr_db/10)`` of that, so normal clips have the asked SNR within their own level variation,
   and anomalies keep their physical level changes without changing the factory's level.

Randomness: each clip's generator is derived from ``(seed, machine type, machine id, label, index)``
only, so a clip's bytes do not depend on which other machines/ids/counts are generated, on the order,
or on ``snr_db`` (as in MIMII, the 6 dB, 0 dB and -6 dB sets hold the same recordings mixed at other
levels). The same arguments give byte-identical files.

The signal helpers all parts share are in :mod:`humwatch.data.synth.signals`.
"""

from __future__ import annotations

import csv
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from humwatch.audio import write_audio
from humwatch.data.clips import Clip
from humwatch.data.synth.products import _SOURCES, _machine_key, _nominal_power, _product
from humwatch.data.synth.room import _background, _pad, _to_array
from humwatch.data.synth.signals import _power
from humwatch.errors import ConfigError
from humwatch.io import write_csv

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

NOMINAL_DBFS = {"fan": -26.0, "pump": -32.0, "slider": -31.0, "valve": -44.0}
"""RMS level (dBFS, over all channels) of a nominal normal clip's machine + background mix. Our choice:
normal clips peak below -8 dBFS and even strong impacts (pump contamination, rail damage, valve chatter)
rarely reach the limiter; valves sit lowest because their clicks have a 35-40 dB crest factor."""
PEAK_LIMIT = 0.98
"""A clip whose peak would exceed this (full scale 1.0) is scaled down to it (rare; never clips)."""
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 96000
MAX_CLIPS_PER_FOLDER = 10**8  # file names have 8 digits, as MIMII's

_SALT_CLIP = 0x5EED_0002


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
    Raises :class:`~humwatch.errors.ConfigError` for a wrong argument.
    """
    machines, id_nums = _check_args(
        machines, ids, n_normal, n_anomalous, snr_db, seed, seconds, sample_rate, channels
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    from humwatch.io import mark_folder

    mark_folder(out, "data")  # humwatch's generated data (what `humwatch synth` may write into again)
    snr = snr_folder_name(snr_db)
    jobs = [
        (m, i, label, k)
        for m in machines
        for i in id_nums
        for label, count in ((0, n_normal), (1, n_anomalous))
        for k in range(count)
    ]

    from humwatch.progress import make_progress, progress_enabled

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
