"""What the Python API (:mod:`humwatch.api`) takes as recordings, and the typed results it gives back.

Recordings are any of: a path (an audio file, or a folder: every audio file below it), a
:class:`~humwatch.data.clips.Clip`, an ``(array, sample_rate)`` pair (decoded audio: frames, or
frames x channels), a list mixing those, or a dict ``name -> (array, sample_rate)``. Each becomes
one :class:`Clip` (:func:`as_recordings`); an array through :meth:`Clip.from_array`, read from
memory with the same rules as a file.

A monitor's answer (:meth:`humwatch.monitor.Monitor.score`) is a :class:`Scores`: one frozen
:class:`Result` per recording in the order given (its score is the highest of its windows',
``anomalous`` when that is above the threshold), and the :class:`Skipped` ones with their reasons.
Every score here is an **anomaly score: higher means more anomalous** (never scikit-learn's
``score_samples`` sign).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import numpy as np

from humwatch.data.clips import Clip
from humwatch.errors import ConfigError

ACCEPTED = "paths, Clip objects, (array, sample_rate) pairs or a dict name -> (array, sample_rate)"


@dataclass(frozen=True)
class Window:
    """One window of a recording: where it starts and ends (seconds) and its anomaly score."""

    start: float
    end: float
    anomaly_score: float
    anomalous: bool


@dataclass(frozen=True)
class Result:
    """One recording's answer: ``anomaly_score`` is the highest of its windows' (higher = more
    anomalous), ``anomalous`` whether it is above ``threshold`` (the monitor's alarm)."""

    name: str
    anomaly_score: float
    anomalous: bool
    threshold: float
    windows: tuple[Window, ...]


@dataclass(frozen=True)
class Skipped:
    """A recording (or one window of it, from ``start`` seconds) that could not be scored, and why."""

    name: str
    reason: str
    start: float = 0.0


@dataclass(frozen=True)
class Scores:
    """Every scored recording (:attr:`results`, in the order given) and the skipped ones. Iterate
    it, take ``len``, or index it by position or by name."""

    results: tuple[Result, ...]
    skipped: tuple[Skipped, ...]
    threshold: float

    def __iter__(self) -> Iterator[Result]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, key: Union[int, str]) -> Result:
        if isinstance(key, str):
            for r in self.results:
                if r.name == key:
                    return r
            raise KeyError(key)
        return self.results[key]

    @property
    def anomalous(self) -> tuple[Result, ...]:
        """The recordings that raise an alarm."""
        return tuple(r for r in self.results if r.anomalous)


def _is_pair(x: Any) -> bool:
    return (
        isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], np.ndarray) and isinstance(x[1], Integral) and not isinstance(x[1], bool)
    )


def _from_array(pair: Any, name: str) -> Clip:
    if not _is_pair(pair):
        raise ConfigError(f"{name}: expected an (array, sample_rate) pair (a numpy array and a whole number), got {type(pair).__name__}")
    return Clip.from_array(pair[0], int(pair[1]), name, "unknown", "unknown", 0)


def _files(folder: str) -> list[Clip]:
    """Every audio file below ``folder``, one clip each (what ``humwatch score FOLDER`` scores)."""
    from humwatch.audio import find_audio

    found = find_audio(folder)
    if not found:
        raise ConfigError(f"{folder}: no audio files in this folder")
    return [Clip(str(f), "unknown", "unknown", 0) for f in found]


def as_recordings(recordings: Any, folder: Callable[[str], list[Clip]] = _files) -> tuple[list[str], list[Clip]]:
    """``(names, clips)`` of ``recordings`` (see the module's doc), in order; ``folder`` turns a
    folder into clips. Anything else, nothing at all, or a name given twice is a one-line ConfigError."""
    if isinstance(recordings, Mapping):
        items: list[tuple[str, Any]] = []
        for name, pair in recordings.items():
            if not isinstance(name, str):
                raise ConfigError(f"recording names must be text, got {name!r}")
            items.append((name, _from_array(pair, name)))
    else:
        many = (isinstance(recordings, (list, tuple)) and not _is_pair(recordings)) or (
            not isinstance(recordings, (str, bytes, os.PathLike, Clip, np.ndarray, tuple)) and hasattr(recordings, "__iter__")
        )
        items = []
        for i, x in enumerate(list(recordings) if many else [recordings]):
            if isinstance(x, Clip):
                items.append((x.path if not x.start else x.key, x))
            elif isinstance(x, (str, os.PathLike)):
                p = os.fspath(x)
                items += [(c.path, c) for c in folder(p)] if os.path.isdir(p) else [(p, Clip(p, "unknown", "unknown", 0))]
            elif _is_pair(x):
                items.append((f"array{i}", _from_array(x, f"array{i}")))
            elif isinstance(x, np.ndarray):
                raise ConfigError("an array needs its sample rate: give (array, sample_rate) pairs or a dict name -> (array, sample_rate)")
            else:
                raise ConfigError(f"cannot use {type(x).__name__} {_short(x)} as a recording: give {ACCEPTED}")
    if not items:
        raise ConfigError(f"no recordings given: give {ACCEPTED}")
    seen: set[str] = set()
    for name, c in items:
        if c.key in seen:
            raise ConfigError(f"{name}: given twice")
        seen.add(c.key)
    return [n for n, _ in items], [c for _, c in items]


def _short(x: Any) -> str:
    text = " ".join(repr(x).split())  # a value shown in an error, on one line
    return text if len(text) <= 40 else text[:37] + "..."


def collect(
    names: Sequence[str],
    clips: Sequence[Clip],
    windows: Sequence[Clip],
    scores: np.ndarray,
    skipped: Sequence[tuple[str, str]],
    threshold: float,
    seconds: float,
) -> Scores:
    """The typed :class:`Scores` of a monitor's ``(windows, scores, skipped)`` for ``clips`` (named ``names``)."""
    threshold = float(threshold)
    per: dict[str, list[Window]] = {}
    for w, s in zip(windows, np.asarray(scores, dtype=np.float64)):
        per.setdefault(w.path, []).append(Window(float(w.start), float(w.start) + float(seconds), float(s), bool(s > threshold)))
    results = []
    for name, c in zip(names, clips):
        ws = per.get(c.path)
        if ws:
            top = max(w.anomaly_score for w in ws)
            results.append(Result(name, top, bool(top > threshold), threshold, tuple(ws)))
    name_of = {c.path: n for n, c in zip(names, clips)}
    gone = []
    for key, reason in skipped:
        path, start = key, 0.0
        if key not in name_of and "#" in key:
            head, _, tail = key.rpartition("#")
            if head in name_of:
                path, start = head, float(tail)
        gone.append(Skipped(name_of.get(path, key), str(reason), start))
    return Scores(tuple(results), tuple(gone), threshold)
