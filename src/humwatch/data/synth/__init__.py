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

The signal helpers all parts share are in :mod:`humwatch.data.synth.signals`; what both layouts share
(machine types, levels, argument checks) in :mod:`humwatch.data.synth.common`.

:func:`synthesize_dcase` writes the DCASE 2023/2024 Task 2 development-set layout instead, with
source and target domains (:mod:`humwatch.data.synth.dcase`, :mod:`humwatch.data.synth.domains`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from humwatch.audio import write_audio
from humwatch.data.clips import Clip
from humwatch.data.synth.common import ANOMALY_KINDS, MACHINES, NOMINAL_DBFS, PEAK_LIMIT, _check_args, _merge_csv, _to_pcm16
from humwatch.data.synth.dcase import DCASE_ANOMALY_KINDS, synthesize_dcase
from humwatch.data.synth.products import _SOURCES, _machine_key, _nominal_power, _product
from humwatch.data.synth.room import _background, _pad, _to_array
from humwatch.data.synth.signals import _power
from humwatch.errors import ConfigError

__all__ = [
    "ANOMALY_KINDS",
    "DCASE_ANOMALY_KINDS",
    "MACHINES",
    "MANIFEST_FIELDS",
    "MANIFEST_NAME",
    "NOMINAL_DBFS",
    "PEAK_LIMIT",
    "ClipInfo",
    "render_clip",
    "render_clip_parts",
    "render_source",
    "snr_folder_name",
    "synthesize",
    "synthesize_dcase",
]

MANIFEST_NAME = "manifest.csv"
MANIFEST_FIELDS = ("path", "machine_type", "machine_id", "label", "snr", "anomaly_kind", "severity")

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
    machines, id_nums = _check_args(machines, ids, n_normal, n_anomalous, snr_db, seed, seconds, sample_rate, channels)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    from humwatch.io import mark_folder

    mark_folder(out, "data")  # humwatch's generated data (what `humwatch synth` may write into again)
    snr = snr_folder_name(snr_db)
    jobs = [(m, i, label, k) for m in machines for i in id_nums for label, count in ((0, n_normal), (1, n_anomalous)) for k in range(count)]

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
            y, info = render_clip(m, i, label, k, seed=seed, snr_db=snr_db, seconds=seconds, sample_rate=sample_rate, channels=channels)
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
    m, b, info = render_clip_parts(
        machine, machine_id, label, index, seed=seed, snr_db=snr_db, seconds=seconds, sample_rate=sample_rate, channels=channels
    )
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


def _write_manifest(out: Path, rows: dict[str, list]) -> None:
    """Write ``manifest.csv``: the new rows plus earlier rows whose files are still there."""
    _merge_csv(out / MANIFEST_NAME, MANIFEST_FIELDS, rows, out)
