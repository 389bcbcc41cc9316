"""The study's train/validation/test split.

Each stratum -- one (machine type, machine id, label) -- is split on its own: its clips are sorted
by path, shuffled with a random generator seeded by ``(seed, stratum)``, then ``round(test * n)``
go to test, ``round(val * rest)`` of the rest to validation, and the remainder to training
(rounding half up). The split therefore depends only on the seed and on each stratum's own paths:
not on input order, and not on which other machines are loaded alongside.

In the study's unsupervised setting the detectors never see an anomalous clip in training:
:func:`drop_anomalies` removes them from the train and validation parts.
A run saves its split as ``RUN/split.csv`` (:meth:`humwatch.rundir.RunDir.write_split`, a
:func:`~humwatch.data.clips.write_clips_csv` file); ``--split RUN/split.csv`` repeats the run exactly.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from humwatch.data.clips import SPLITS, Clip
from humwatch.errors import ConfigError, DatasetError
from humwatch.settings import FRACTION, SEED, check_value


def study_split(clips: Iterable[Clip], seed: int = 0, test: float = 0.25, val: float = 0.1) -> list[Clip]:
    """Every clip with ``split`` set to ``train``/``val``/``test``, sorted by path (see module doc)."""
    test = fraction(test, "test")
    val = fraction(val, "val")
    check_value(seed, SEED, "seed")
    clips = sorted(clips, key=lambda c: c.path)
    for a, b in zip(clips, clips[1:]):
        if a.path == b.path:
            raise DatasetError(f"{a.path}: listed twice in the dataset")

    strata: dict[tuple[str, str, int], list[Clip]] = {}
    for c in clips:
        strata.setdefault(stratum_key(c), []).append(c)

    out: list[Clip] = []
    for key, members in strata.items():
        n = len(members)
        order = _rng(seed, key).permutation(n)
        n_test = _round(test * n)
        n_val = _round(val * (n - n_test))
        for rank, i in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            out.append(members[i].with_split(split))
    return sorted(out, key=lambda c: c.path)


def stratum_key(clip: Clip) -> tuple[str, str, int]:
    return (clip.machine_type, clip.machine_id, int(clip.label))


def drop_anomalies(clips: Iterable[Clip], splits: str | Sequence[str] = ("train", "val")) -> list[Clip]:
    """The clips without the anomalous ones in ``splits`` (the study's unsupervised setting)."""
    if isinstance(splits, str):
        splits = (splits,)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ConfigError(f"drop_anomalies: unknown split(s) {', '.join(map(repr, bad))} (use {', '.join(SPLITS)})")
    drop = set(splits)
    return [c for c in clips if not (c.is_anomalous and c.split in drop)]


def split_counts(clips: Iterable[Clip]) -> dict[tuple[str, str, str, int], int]:
    """Clip counts per ``(machine_type, machine_id, split, label)``, sorted by key."""
    counts = Counter((c.machine_type, c.machine_id, c.split, int(c.label)) for c in clips)
    return dict(sorted(counts.items()))


def fraction(value, name: str) -> float:
    """``value`` as a float from 0 to below 1, or a :class:`ConfigError` naming ``name``."""
    return check_value(value, FRACTION, f"{name} fraction")


def _round(x: float) -> int:
    """Round half up (``round`` in Python rounds half to even)."""
    return int(math.floor(x + 0.5 + 1e-9))


def _rng(seed: int, key: tuple[str, str, int]) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng([int(seed), *words])
