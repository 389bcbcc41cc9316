"""The clip record every dataset parser returns and every later step reads."""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from humwatch.errors import DatasetError, one_line
from humwatch.io import write_csv

NORMAL, ANOMALOUS = 0, 1
SPLITS = ("train", "val", "test")
MEMORY = "<memory>"
"""The folder part of an in-memory clip's name (:meth:`Clip.from_array`): no file is ever there."""


class Samples:
    """Decoded audio held by an in-memory clip: a read-only float32 copy of the samples (frames, or
    frames x channels) and their sample rate; ``digest`` is the SHA-256 of both (what the
    embedding cache keys on)."""

    __slots__ = ("data", "sample_rate", "_digest")

    def __init__(self, data: np.ndarray, sample_rate: int):
        self.data, self.sample_rate, self._digest = data, sample_rate, None

    @property
    def digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256(f"{self.sample_rate}:{self.data.dtype}:{self.data.shape}:".encode())
            h.update(np.ascontiguousarray(self.data).tobytes())
            self._digest = h.hexdigest()
        return self._digest

    @property
    def seconds(self) -> float:
        return self.data.shape[0] / self.sample_rate


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
    samples: Samples | None = field(default=None, compare=False, repr=False)
    """The decoded audio of an in-memory clip (:meth:`from_array`); None for a file."""

    @classmethod
    def from_array(
        cls, samples: np.ndarray, sample_rate: int, name: str, machine_type: str = "", machine_id: str = "", label: int = 0
    ) -> "Clip":
        """A clip whose audio is in memory: ``samples`` (frames, or frames x channels) at
        ``sample_rate``, named ``name`` (its path is ``<memory>/name``, never a file). It is read
        with the same channel, resampling, padding and cutting rules and errors as a file
        (:func:`humwatch.audio.decode_array`); the array is copied, so later changes to it do not
        change the clip."""
        from humwatch.audio import check_samples

        if not isinstance(name, str) or not name or "/" in name or "#" in name:
            raise DatasetError(f"an in-memory clip needs a name without '/' or '#', got {name!r}")
        where = f"{MEMORY}/{name}"
        data, sr = check_samples(samples, sample_rate, where)
        data = np.array(data, dtype=np.float32, copy=True)
        data.setflags(write=False)
        return cls(where, machine_type, machine_id, int(label), samples=Samples(data, sr))

    @property
    def in_memory(self) -> bool:
        return self.samples is not None

    def load(self, audio=None, notes: list[str] | None = None) -> np.ndarray:
        """The clip's signal as ``audio`` (:class:`~humwatch.audio.AudioSettings`) says: the file
        read, or the in-memory samples decoded, with the same rules and errors."""
        from humwatch.audio import decode_array, load_audio

        if self.samples is not None:
            return decode_array(self.samples.data, self.samples.sample_rate, audio, name=self.key, notes=notes, start=self.start)
        return load_audio(self.path, audio, notes=notes, start=self.start)

    @property
    def duration(self) -> float | None:
        """Seconds of audio (from a file's header; None when it cannot be read)."""
        if self.samples is not None:
            return self.samples.seconds
        from humwatch.audio import duration

        return duration(self.path)

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


CLIP_FIELDS = tuple(f.name for f in fields(Clip) if f.name != "samples")


def write_clips_csv(clips: list[Clip], path: str | os.PathLike) -> None:
    """Save clips (with their split) so a run can be repeated exactly; an in-memory clip has no
    file to name, and is refused."""
    mem = next((c for c in clips if c.in_memory), None)
    if mem is not None:
        raise DatasetError(f"{mem.path}: an in-memory clip cannot be written to a manifest (it has no file)")
    write_csv(path, CLIP_FIELDS, ([getattr(c, k) for k in CLIP_FIELDS] for c in clips))


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
    from humwatch.audio import window_starts

    out = []
    for c in clips:
        total = c.duration
        starts = window_starts(total, seconds, hop) if total else [0.0]
        out += [replace(c, start=s) for s in starts]
    return out


_LABELS = {"0": 0, "1": 1, "normal": 0, "abnormal": 1, "anomaly": 1, "anomalous": 1}


def _parse_label(value: str, path: Path, line: int) -> int:
    v = (value or "").strip().lower()
    if v not in _LABELS:
        raise DatasetError(f"{path}:{line}: label {value!r} is not normal/anomalous (or 0/1)")
    return _LABELS[v]
