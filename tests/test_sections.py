"""Per-section detectors (domain shift), DCASE's domain AUCs and harmonic mean, on hand-made numbers."""

from types import SimpleNamespace as NS

import numpy as np
import pytest

from humwatch.detectors import create_detector
from humwatch.metrics import add_domain_columns, group_table, official_score
from humwatch.sections import SectionDetector


def clip(mid, domain="", label=0, mtype="m"):
    return NS(machine_type=mtype, machine_id=mid, domain=domain, label=label)


def test_per_section_detectors_score_against_their_own_section_and_unknown_sections_take_the_nearest():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, (20, 3)) + [5, 0, 0]
    b = rng.normal(0, 0.1, (20, 3)) + [0, 5, 0]
    clips = [clip("a")] * 20 + [clip("b")] * 20
    knn = lambda: create_detector("knn", n_neighbors=1)  # noqa: E731
    per = SectionDetector(knn, per_section=True).fit(np.vstack([a, b]), clips)
    one = SectionDetector(knn, per_section=False).fit(np.vstack([a, b]), clips)
    # a clip that sounds like machine b but is labelled a: only the per-section detector calls it anomalous
    x = np.array([[0, 5, 0.05]])
    assert per.anomaly_score(x, [clip("a")])[0] > 0.5 > one.anomaly_score(x, [clip("a")])[0]
    assert per.anomaly_score(x, [clip("zz")])[0] == pytest.approx(per.anomaly_score(x, [clip("b")])[0])


def test_source_clips_become_kmeans_centres_only_where_target_clips_exist():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(40, 2))
    tgt = rng.normal(size=(3, 2)) + 10
    sd = SectionDetector(lambda: create_detector("knn", n_neighbors=1), per_section=True, source_centres=4)
    mem = sd.memory(np.vstack([src, tgt]), ["source"] * 40 + ["target"] * 3)
    assert mem.shape == (4 + 3, 2) and np.allclose(mem[4:], tgt)
    assert sd.memory(src, ["source"] * 40).shape == (40, 2)  # no target clips: every clip kept
    assert sd.memory(src, [""] * 40).shape == (40, 2)


def test_normalisation_puts_sections_on_one_scale_and_round_trips():
    rng = np.random.default_rng(2)
    X = np.vstack([rng.normal(0, 1, (30, 4)), rng.normal(0, 100, (30, 4))])  # section b's distances 100x larger
    clips = [clip("a")] * 30 + [clip("b")] * 30
    sd = SectionDetector(lambda: create_detector("knn", n_neighbors=2), per_section=True, normalize=True).fit(X, clips)
    test = np.vstack([rng.normal(0, 1, (50, 4)), rng.normal(0, 100, (50, 4))])
    s = sd.anomaly_score(test, [clip("a")] * 50 + [clip("b")] * 50)
    assert abs(np.median(s[:50]) - np.median(s[50:])) < 1.0  # raw scores would differ by ~100x
    meta, arrays = sd.state()
    back = SectionDetector.from_state(meta, arrays, per_section=True, normalize=True)
    np.testing.assert_allclose(back.anomaly_score(test, [clip("a")] * 50 + [clip("b")] * 50), s)


def test_domain_aucs_follow_dcase_2022_and_the_official_score_is_a_harmonic_mean():
    recs = [
        clip("s0", "source", 0),
        clip("s0", "source", 0),
        clip("s0", "target", 0),
        clip("s0", "target", 0),
        clip("s0", "source", 1),
        clip("s0", "target", 1),
    ]
    scores = np.array([0.1, 0.2, 0.8, 0.9, 0.5, 0.6])
    rows = add_domain_columns(group_table(recs, scores), recs, scores)
    sec = [r for r in rows if r["machine_id"] == "s0"][0]
    # source normals (0.1, 0.2) vs both anomalies (0.5, 0.6): 1.0; target normals (0.8, 0.9) vs them: 0.0
    assert sec["auc_source"] == 1.0 and sec["auc_target"] == 0.0
    assert official_score(rows) == 0.0
    rows2 = [{"machine_type": "m", "machine_id": "a", "auc": 0.5, "pauc": 1.0}, {"machine_type": "m", "machine_id": "all", "auc": 0.1}]
    assert official_score(rows2) == pytest.approx(2 / (1 / 0.5 + 1 / 1.0))
    plain = group_table(recs[:2] + recs[4:5], scores[[0, 1, 4]])
    assert add_domain_columns(plain, [clip("s0")] * 3, scores[[0, 1, 4]]) == plain  # no domains: unchanged
