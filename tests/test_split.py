"""The study's stratified, seeded split; drop_anomalies; counts; saving and reading a split back."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from humwatch.data import Clip, drop_anomalies, read_clips_csv, split_counts, study_split
from humwatch.errors import ConfigError, DatasetError


def clips_for(machine: str, mid: str, n_normal: int, n_anomalous: int) -> list[Clip]:
    out = []
    for label, n in ((0, n_normal), (1, n_anomalous)):
        sub = "abnormal" if label else "normal"
        out += [Clip(f"/d/6dB_{machine}/{machine}/{mid}/{sub}/{i:08d}.wav", machine, mid, label) for i in range(n)]
    return out


def half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def assignment(clips) -> dict[str, str]:
    return {c.path: c.split for c in clips}


FAN00 = clips_for("fan", "id_00", 1011, 407)
FAN02 = clips_for("fan", "id_02", 40, 13)
PUMP00 = clips_for("pump", "id_00", 60, 10)


def test_proportions_per_stratum():
    clips = FAN00 + FAN02 + PUMP00
    out = study_split(clips, seed=0)
    assert len(out) == len(clips) and {c.path for c in out} == {c.path for c in clips}
    counts = split_counts(out)
    for m, mid, n_norm, n_anom in (("fan", "id_00", 1011, 407), ("fan", "id_02", 40, 13), ("pump", "id_00", 60, 10)):
        for label, n in ((0, n_norm), (1, n_anom)):
            n_test = half_up(0.25 * n)
            n_val = half_up(0.1 * (n - n_test))
            got = tuple(counts.get((m, mid, s, label), 0) for s in ("train", "val", "test"))
            assert got == (n - n_test - n_val, n_val, n_test), (m, mid, label)
    # fan id_00 normal: 1011 -> 253 test, 76 val, 682 train
    assert [counts[("fan", "id_00", s, 0)] for s in ("train", "val", "test")] == [682, 76, 253]
    assert [c.path for c in out] == sorted(c.path for c in out)


def test_custom_fractions_and_rounding_half_up():
    out = study_split(clips_for("m", "id_00", 10, 2), seed=3, test=0.5, val=0.2)
    c = split_counts(out)
    assert (c[("m", "id_00", "test", 0)], c[("m", "id_00", "val", 0)], c[("m", "id_00", "train", 0)]) == (5, 1, 4)
    assert c[("m", "id_00", "test", 1)] == 1  # 0.5 * 2
    # 0.25 * 2 = 0.5 rounds up to one test clip; a single clip stays in train
    tiny = split_counts(study_split(clips_for("t", "id_00", 2, 1), test=0.25, val=0.1))
    assert tiny == {("t", "id_00", "test", 0): 1, ("t", "id_00", "train", 0): 1, ("t", "id_00", "train", 1): 1}
    none = study_split(clips_for("t", "id_00", 8, 0), test=0.0, val=0.0)
    assert {c.split for c in none} == {"train"}


def test_deterministic_and_seed_dependent():
    a = study_split(FAN00, seed=7)
    b = study_split(list(FAN00), seed=7)
    assert a == b
    c = study_split(FAN00, seed=8)
    assert assignment(a) != assignment(c)
    assert split_counts(a) == split_counts(c)  # same sizes, different clips


def test_independent_of_input_order_and_of_old_splits():
    clips = FAN00 + PUMP00
    shuffled = clips[:]
    random.Random(1).shuffle(shuffled)
    relabelled = [c.with_split("test") for c in shuffled]
    ref = study_split(clips, seed=2)
    assert study_split(shuffled, seed=2) == ref
    assert study_split(relabelled, seed=2) == ref


def test_adding_machines_does_not_change_a_machine_split():
    alone = assignment(study_split(FAN00, seed=5))
    together = assignment(study_split(PUMP00 + FAN00 + FAN02, seed=5))
    assert {p: together[p] for p in alone} == alone
    # nor does adding clips of the other label to the same machine id
    normals = [c for c in FAN00 if c.label == 0]
    assert {p: together[p] for p in assignment(study_split(normals, seed=5))} == assignment(study_split(normals, seed=5))


def test_strata_are_shuffled_differently():
    # two strata with paths of the same shape must not get the same positions in the test set
    a = study_split(clips_for("fan", "id_00", 200, 0), seed=0)
    b = study_split(clips_for("fan", "id_02", 200, 0), seed=0)
    tests_a = {c.path.rsplit("/", 1)[1] for c in a if c.split == "test"}
    tests_b = {c.path.rsplit("/", 1)[1] for c in b if c.split == "test"}
    assert tests_a != tests_b


def test_drop_anomalies():
    out = study_split(FAN00 + PUMP00, seed=0)
    kept = drop_anomalies(out)
    assert not any(c.is_anomalous and c.split in ("train", "val") for c in kept)
    assert [c for c in kept if c.split == "test"] == [c for c in out if c.split == "test"]
    assert sum(c.is_anomalous for c in kept) == sum(c.is_anomalous and c.split == "test" for c in out) > 0
    assert [c for c in kept if not c.is_anomalous] == [c for c in out if not c.is_anomalous]
    only_train = drop_anomalies(out, splits="train")
    assert any(c.is_anomalous and c.split == "val" for c in only_train)
    assert not any(c.is_anomalous and c.split == "train" for c in only_train)
    with pytest.raises(ConfigError) as e:
        drop_anomalies(out, splits=("train", "validation"))
    assert "validation" in str(e.value)


def test_split_counts_and_table():
    out = study_split(FAN02, seed=0)
    counts = split_counts(out)
    assert sum(counts.values()) == len(FAN02)
    assert list(counts) == sorted(counts)
    assert counts[("fan", "id_02", "test", 1)] == half_up(0.25 * 13) == 3
    assert [counts[("fan", "id_02", s, y)] for s in ("train", "val", "test") for y in (0, 1)] == [27, 9, 3, 1, 10, 3]


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"test": 1.0}, "test"),
        ({"test": -0.1}, "test"),
        ({"test": float("nan")}, "test"),
        ({"test": "0.25"}, "test"),
        ({"test": True}, "test"),
        ({"val": 1.5}, "val"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_options(kwargs, needle):
    with pytest.raises(ConfigError) as e:
        study_split(FAN02, **kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_duplicate_paths_are_an_error():
    with pytest.raises(DatasetError) as e:
        study_split(FAN02 + FAN02[:1])
    assert FAN02[0].path in str(e.value)


def test_empty_input():
    assert study_split([]) == []


def test_save_and_read_back(tmp_path):
    """A run's split.csv (RunDir.write_split) reads back as the same clips and splits."""
    from humwatch.rundir import RunDir

    out = study_split(FAN02 + PUMP00, seed=4)
    RunDir(tmp_path).write_split(out)
    assert RunDir(tmp_path).clips() == out
    assert read_clips_csv(tmp_path / "split.csv") == out
    assert Counter(c.split for c in RunDir(tmp_path).clips()) == Counter(c.split for c in out)
