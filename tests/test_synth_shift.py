"""The DCASE layouts' domain shift is real: the target condition (drawn from the seed per machine type
and named in the attributes) moves the ``features`` embedding far beyond the clip-to-clip spread, and a
Gaussian fitted on source clips alone scores target normal clips higher than source normal ones.
Clips are 3 s at 6 dB (a few seconds for the whole file)."""

from __future__ import annotations

import numpy as np
import pytest

from humwatch.data.synth.dcase import render_dcase_clip
from humwatch.data.synth.domains import (
    SECOND_FACTORS,
    SOURCE_SPEEDS,
    TARGET_SPEED_SPREAD,
    attributes,
    clip_condition,
    conditions,
    second_factor,
)

SR = 16000
MACHINES = ("fan", "pump", "slider", "valve")


@pytest.mark.parametrize("machine", MACHINES)
def test_the_target_condition_is_drawn_by_the_seed_and_named_in_the_attributes(machine):
    seen = set()
    for seed in range(12):
        extra = second_factor(machine, seed)
        seen.add(extra)
        conds = conditions(machine, 0, seed)
        (tgt,) = conds["target"]
        src_attrs = {attributes(machine, 0, SR, c) for c in conds["source"]}
        t_attr = attributes(machine, 0, SR, tgt)
        assert len(src_attrs) == 2 and t_attr not in src_attrs
        # both attributes change: the speed (the valve: its program) and the second factor
        assert [a for a, _ in t_attr] == [a for a, _ in next(iter(src_attrs))]
        assert all(t_attr[i][1] != a[i][1] for a in src_attrs for i in range(2))
        if machine != "valve":
            # 10-30 % away from every source speed, a real ratio
            assert min(abs(tgt.speed / s - 1.0) for s in SOURCE_SPEEDS[machine]) >= 0.1
            assert tgt.speed_spread == TARGET_SPEED_SPREAD
        if extra == "mic":
            assert tgt.mic_distance > 1.5 and max(abs(g) for g in tgt.mic_db) >= 3.0  # band gains of several dB
        elif extra == "noise":
            assert tgt.hall_shift and tgt.hall_level_db >= 3.0 and max(abs(g) for g in tgt.hall_db) >= 3.0
        else:
            assert abs(tgt.load - 1.0) >= 0.25
    assert seen == set(SECOND_FACTORS[machine])  # the seed chooses among every kind the machine has
    assert conditions(machine, 0, 3) == conditions(machine, 0, 3)


def test_each_target_clip_runs_at_its_own_speed_and_is_named_by_the_set_point():
    (tgt,) = conditions("pump", 0, 0)["target"]
    speeds, names = set(), set()
    for k in range(6):
        c = clip_condition(tgt, np.random.default_rng(k))
        assert abs(c.speed / tgt.speed - 1.0) <= TARGET_SPEED_SPREAD and c.speed_spread == 0.0
        speeds.add(c.speed)
        names.add(render_dcase_clip("pump", 0, "target", "train", 0, k, seconds=0.2)[1].attributes)
    assert len(speeds) == 6 and names == {attributes("pump", 0, SR, tgt)}
    (src, _) = conditions("pump", 0, 0)["source"]
    assert clip_condition(src, np.random.default_rng(0)) is src  # the source stays as it was


def _embed(machine, domain, idx, seed):
    from humwatch.features import get_frontend
    from humwatch.models import create_backbone

    fe, bb = get_frontend("logmel"), create_backbone("features")
    X = np.stack([fe(render_dcase_clip(machine, 0, domain, "train", 0, k, seed=seed, seconds=3.0)[0]) for k in idx])
    return bb.embed(X.astype(np.float32))


@pytest.mark.parametrize("machine,seed", [("fan", 0), ("fan", 1), ("pump", 1), ("slider", 0), ("valve", 0), ("valve", 1)])
def test_the_shift_is_real_in_the_features_embedding(machine, seed):
    """Each second factor (fan 0 and valve 0: another hall; fan 1: another load; pump 1, slider 0 and
    valve 1: another microphone position). Before the change, fan and valve failed both checks (their
    target was 2.4 and 1.4 spreads away, scored 2.5 and 1.6 times the source normals' maximum)."""
    from humwatch.detectors import create_detector

    src, held, tgt = (
        _embed(machine, "source", range(10), seed),
        _embed(machine, "source", range(10, 14), seed),
        _embed(machine, "target", range(4), seed),
    )
    mu, sd = src.mean(0), src.std(0) + 1e-6
    z = lambda X: (X - mu) / sd  # noqa: E731
    within = np.linalg.norm(z(src), axis=1).mean()  # a source clip's distance from the source mean
    assert np.linalg.norm(z(tgt).mean(0)) > 2.0 * within, machine  # several spreads away
    g = create_detector("mahalanobis", standardize=True).fit(src)
    assert np.median(g.anomaly_score(tgt)) > 3.0 * np.max(g.anomaly_score(held))
