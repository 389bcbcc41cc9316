"""The clip record every dataset parser returns and every later step reads."""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from humwatch.errors import DatasetError
from humwatch.errors import one_line
from humwatch.io import write_csv

NORMAL, ANOMALOUS = 0, 1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Clip:
    """One recording.

    ``machine_id`` is spelled as in the data's paths: ``id_00`` (MIMII, DCASE 2020) or
    ``section_00`` (DCASE 2021-2024). ``label`` is 0 for normal and 1 for anomalous. ``snr`` is
    e.g. ``6dB`` where the layout says it, ``split`` is ``train``/``val``/``test`` once split,
    ``domain`` is DCASE's ``source``/``target`` where given. ``start`` is where a window of a long
    recording begins (seconds; 0 for a whole clip).
    """

    path: str
    machine_type: str
    machine_id: str
    label: int
    snr: str = ""
    split: str = ""
    domain: str = ""
    start: float = 0.0

    @property
    def key(self) -> str:
        """What tells clips apart: the path, and for a window of a long recording its start (``a.wav#20``)."""
        return f"{self.path}#{self.start:g}" if self.start else self.path

    @property
    def group(self) -> str:
        """``fan_id_00``: the machine type and id together."""
        return f"{self.machine_type}_{self.machine_id}"

    @property
    def is_anomalous(self) -> bool:
        return self.label == ANOMALOUS

    def with_split(self, split: str) -> "Clip":
        return replace(self, split=split)


CLIP_FIELDS = tuple(f.name for f in fields(Clip))


def write_clips_csv(clips: list[Clip], path: str | os.PathLike) -> None:
    """Save clips (with their split) so a run can be repeated exactly."""
    write_csv(path, CLIP_FIELDS, ([asdict(c)[k] for k in CLIP_FIELDS] for c in clips))


def read_clips_csv(path: str | os.PathLike) -> list[Clip]:
    """Read a file written by :func:`write_clips_csv` (or a manifest with at least
    ``path``, ``machine_type``, ``machine_id``, ``label``). Relative paths are taken relative to
    the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such manifest")
    try:  # utf-8-sig: spreadsheets save a byte-order mark; surrogateescape: file names need not be UTF-8
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, csv.Error) as e:
        raise DatasetError(f"{path}: not a readable CSV ({one_line(e)})") from None
    if not rows:
        raise DatasetError(f"{path}: manifest holds no clips")
    missing = {"path", "label"} - set(header)
    if missing:
        raise DatasetError(f"{path}: manifest lacks column(s) {', '.join(sorted(missing))} (its columns: {', '.join(header)})")
    for i, r in enumerate(rows, start=2):
        if None in r or any(v is None for v in r.values()):
            n = sum(v is not None for k, v in r.items() if k is not None) + len(r.get(None) or [])
            raise DatasetError(f"{path}:{i}: {n} field(s), the header has {len(header)}")
    clips = []
    for i, r in enumerate(rows, start=2):
        label = _parse_label(r.get("label", ""), path, i)
        p = Path(r["path"])
        if not p.is_absolute():
            p = path.parent / p
        clips.append(
            Clip(
                path=str(p),
                machine_type=r.get("machine_type") or "machine",
                machine_id=r.get("machine_id") or "id_00",
                label=label,
                snr=r.get("snr", "") or "",
                split=r.get("split", "") or "",
                domain=r.get("domain", "") or "",
                start=_parse_start(r.get("start"), path, i),
            )
        )
    bad = {c.split for c in clips} - set(SPLITS) - {""}
    if bad:
        raise DatasetError(f"{path}: unknown split(s) {', '.join(sorted(bad))} (use train, val, test)")
    return clips


def _parse_start(value, path: Path, line: int) -> float:
    try:
        v = float(value or 0.0)
    except ValueError:
        raise DatasetError(f"{path}:{line}: start {value!r} is not a number of seconds") from None
    if not v >= 0 or v == float("inf"):
        raise DatasetError(f"{path}:{line}: start {value!r} must be 0 or more seconds")
    return v


def expand_windows(clips: list[Clip], seconds: float, hop: float) -> list[Clip]:
    """Each recording as its ``seconds``-long windows ``hop`` apart (:func:`humwatch.audio.window_starts`);
    a file whose header cannot be read stays one clip (reading it will say what is wrong)."""
    from humwatch.audio import duration, window_starts

    out = []
    for c in clips:
        total = duration(c.path)
        starts = window_starts(total, seconds, hop) if total else [0.0]
        out += [replace(c, start=s) for s in starts]
    return out


_LABELS = {"0": 0, "1": 1, "normal": 0, "abnormal": 1, "anomaly": 1, "anomalous": 1}


def _parse_label(value: str, path: Path, line: int) -> int:
    v = (value or "").strip().lower()
    if v not in _LABELS:
        raise DatasetError(f"{path}:{line}: label {value!r} is not normal/anomalous (or 0/1)")
    return _LABELS[v]
