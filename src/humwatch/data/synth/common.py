"""What the MIMII and DCASE layouts of the built-in data share: the machine types and their anomaly
kinds, the output levels, argument checks, 16-bit rounding and the merging CSV writer."""

from __future__ import annotations

import csv
import numbers
import re
from pathlib import Path

import numpy as np

from humwatch.errors import ConfigError
from humwatch.io import write_csv
from humwatch.settings import SEED, WINDOW_SECONDS, Int, Real, check_value

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

NOMINAL_DBFS = {"fan": -26.0, "pump": -32.0, "slider": -31.0, "valve": -44.0}
"""RMS level (dBFS, over all channels) of a nominal normal clip's machine + background mix. Our choice:
normal clips peak below -8 dBFS and even strong impacts (pump contamination, rail damage, valve chatter)
rarely reach the limiter; valves sit lowest because their clicks have a 35-40 dB crest factor."""
PEAK_LIMIT = 0.98
"""A clip whose peak would exceed this (full scale 1.0) is scaled down to it (rare; never clips)."""
SYNTH_SAMPLE_RATE = Int(8000, 96000)
"""The sample rates the built-in data is written at (Hz)."""
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = SYNTH_SAMPLE_RATE.low, SYNTH_SAMPLE_RATE.high
MAX_CLIPS_PER_FOLDER = 10**8  # file names have 8 digits, as MIMII's
CLIP_COUNT = Int(0, MAX_CLIPS_PER_FOLDER)
SNR_DB = Real(-40.0, 60.0, text=False)
"""The machine-to-background level of the built-in data (dB)."""
CHANNELS = Int(1, 32)


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
        check_value(v, CLIP_COUNT, name)
    if n_normal == 0 and n_anomalous == 0:
        raise ConfigError("n_normal and n_anomalous are both 0: nothing to generate")
    check_value(snr_db, SNR_DB, "snr_db")
    check_value(seed, SEED, "seed")
    check_value(seconds, WINDOW_SECONDS, "seconds")
    check_value(sample_rate, SYNTH_SAMPLE_RATE, "sample_rate")
    check_value(channels, CHANNELS, "channels")
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


def _to_pcm16(y: np.ndarray) -> np.ndarray:
    """Float (full scale 1.0) to int16 by rounding, so reading back gives y to within half an LSB."""
    q = np.rint(y * np.float32(32768.0))
    np.clip(q, -32768, 32767, out=q)
    return np.ascontiguousarray(q.astype(np.int16))


def _merge_csv(path: Path, fields, rows: dict[str, list], base: Path, key: str = "path", pad: bool = False) -> None:
    """Write the CSV ``path`` (atomically): ``rows`` (keyed by their ``key`` column, a path relative
    to ``base``) plus the earlier rows of the file whose files are still there, sorted by key. An earlier
    row that lacks a column is dropped, or with ``pad`` written with the column empty."""
    merged: dict[str, list] = {}
    if path.is_file():
        try:
            with open(path, newline="", encoding="utf-8") as f:
                for r in csv.DictReader(f):
                    p = r.get(key, "")
                    if p and (base / p).is_file() and (pad or all(r.get(k) is not None for k in fields)):
                        merged[p] = [r.get(k) or "" for k in fields]
        except (OSError, UnicodeDecodeError, csv.Error):
            merged = {}  # an unreadable old file is replaced
    merged.update(rows)
    write_csv(path, fields, (merged[k] for k in sorted(merged)))
