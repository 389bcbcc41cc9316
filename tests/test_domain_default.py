"""knn-ldn (kNN over every normal clip with local density normalisation, segments pooled by max or
GeM) and the features-segments backbone: a short click in one segment is found by max/GeM pooling
and averaged away by the mean; a folder mixing 20 clips of one condition and 4 of another does not
make the few look anomalous (as one Gaussian does); state round trips and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from humwatch.detectors import create_detector, detector_from_state
from humwatch.errors import ConfigError

S, D = 20, 8


def _clips(rng, n, click=0.0):
    X = rng.normal(size=(n, S, D))
    X[:, 3, :2] += click  # a short event: two features of one segment of twenty
    return X.reshape(n, S * D)


def _flagged(det, train, ref, test) -> float:
    det.fit(train)
    thr = np.quantile(det.anomaly_score(ref), 0.95)  # the 5 % false-alarm threshold on held-out normals
    return float((det.anomaly_score(test) > thr).mean())


def test_a_click_in_one_segment_is_kept_by_max_and_gem_and_averaged_away_by_mean():
    rng = np.random.default_rng(1)
    train, ref, test = _clips(rng, 30), _clips(rng, 100), _clips(rng, 30, click=6.0)
    got = {pool: _flagged(create_detector("knn-ldn", segments=S, pool=pool), train, ref, test) for pool in ("max", "gem", "mean")}
    assert got["max"] >= 0.9 and got["gem"] >= 0.9, got
    assert got["mean"] <= 0.75, got


def _mixed_folder(seed=0, d=16):
    rng = np.random.default_rng(seed)
    shift = np.r_[5.0 * np.ones(4), np.zeros(d - 4)]  # condition B: another speed, say
    a = lambda n: rng.normal(size=(n, d))  # noqa: E731
    b = lambda n: rng.normal(size=(n, d)) + shift  # noqa: E731
    faults = a(20)
    faults[:, 8:12] += 4.0
    return np.vstack([a(20), b(4)]), a(50), b(20), faults


def test_a_rare_condition_in_a_plain_folder_is_not_an_anomaly_for_knn_ldn_but_is_for_one_gaussian():
    train, ref_a, held_b, faults = _mixed_folder()
    gaussian = _flagged(create_detector("mahalanobis", standardize=True), train, ref_a, held_b)
    ldn = create_detector("knn-ldn", standardize=True)
    assert gaussian >= 0.5  # one Gaussian: the four B clips are its tail
    assert _flagged(ldn, train, ref_a, held_b) <= 0.1
    assert _flagged(ldn, train, ref_a, faults) >= 0.9  # and real faults still stand out


def test_the_offline_default_is_the_measured_one():
    from humwatch.methods.embed_detect import WEIGHT_FREE

    assert WEIGHT_FREE["detector"] == "knn-ldn" and WEIGHT_FREE["backbone"] == "features"
    train, ref_a, held_b, faults = _mixed_folder(seed=3)
    det = create_detector(WEIGHT_FREE["detector"], standardize=WEIGHT_FREE["standardize"], **WEIGHT_FREE.get("detector_params", {}))
    assert _flagged(det, train, ref_a, held_b) <= 0.15
    assert _flagged(det, train, ref_a, faults) >= 0.9


def test_normal_scores_sit_near_one_in_tight_and_loose_clusters_alike():
    rng = np.random.default_rng(2)
    tight, loose = rng.normal(scale=0.1, size=(30, 4)), rng.normal(scale=3.0, size=(30, 4)) + 50.0
    det = create_detector("knn-ldn", metric="euclidean").fit(np.vstack([tight, loose]))
    s_t = det.anomaly_score(rng.normal(scale=0.1, size=(40, 4)))
    s_l = det.anomaly_score(rng.normal(scale=3.0, size=(40, 4)) + 50.0)
    assert 0.5 < np.median(s_t) < 2.0 and 0.5 < np.median(s_l) < 2.0
    assert det.anomaly_score(np.array([[1.5, 0, 0, 0]]))[0] > 3.0  # 15 spreads from the tight cluster


@pytest.mark.parametrize("params", [{}, {"segments": 4, "pool": "gem", "metric": "cosine"}, {"metric": "euclidean"}])
def test_state_round_trip_gives_the_same_scores(params):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(25, 16))
    det = create_detector("knn-ldn", standardize=True, **params).fit(X)
    meta, arrays = det.state()
    again = detector_from_state(meta, arrays)
    Q = rng.normal(size=(7, 16)) * 2
    assert np.allclose(det.anomaly_score(Q), again.anomaly_score(Q))


@pytest.mark.parametrize(
    "params,match",
    [
        ({"metric": "hamming"}, "metric must be one of mahalanobis, euclidean, cosine"),
        ({"pool": "median"}, "pool must be one of max, gem, mean"),
        ({"gem_p": 0.5}, "gem_p must be a number at least 1 and at most 100"),
        ({"segments": 0}, "segments must be a whole number 1 or more"),
        ({"n_neighbors": True}, "n_neighbors must be a whole number"),
    ],
)
def test_bad_parameters_are_one_line_config_errors(params, match):
    with pytest.raises(ConfigError, match=match) as e:
        create_detector("knn-ldn", **params)
    assert "\n" not in str(e.value)


def test_features_that_do_not_split_into_segments_and_a_single_clip_are_refused():
    with pytest.raises(ConfigError, match="10 features do not split into segments=3"):
        create_detector("knn-ldn", segments=3).fit(np.zeros((5, 10)))
    with pytest.raises(ConfigError, match="needs at least 2 training samples"):
        create_detector("knn-ldn").fit(np.zeros((1, 10)))


def test_duplicate_training_clips_give_finite_scores():
    X = np.vstack([np.ones((5, 3)), np.zeros((5, 3))])
    s = create_detector("knn-ldn", metric="euclidean").fit(X).anomaly_score(np.array([[1.0, 1, 1], [0.5, 0.5, 0.5]]))
    assert np.isfinite(s).all() and s[1] > s[0]


def test_features_segments_backbone_puts_a_click_in_its_own_segment():
    from humwatch.models import create_backbone

    bb = create_backbone("features-segments", config={"segments": 10})
    assert bb.embedding_dim == 10 * 3 * 64
    rng = np.random.default_rng(0)
    y = (0.01 * rng.normal(size=16000 * 10)).astype(np.float32)
    clicked = y.copy()
    clicked[16000 * 5 + 4000 : 16000 * 5 + 4000 + 3200] += 0.5 * rng.normal(size=3200).astype(np.float32)  # 200 ms
    E = bb.embed(bb.frontend.batch([y, clicked])).reshape(2, 10, 3, 64)
    rise = (E[1] - E[0])[:, 2].mean(axis=1)  # per segment: mean rise of the band maxima (dB)
    assert int(np.argmax(rise)) == 5 and rise[5] > 10.0
    others = np.delete(rise, 5)
    assert np.abs(others).max() < 0.5 * rise[5]


@pytest.mark.parametrize("n,d", [(80, 640), (200, 16), (30, 30), (5, 3)])
def test_the_whitening_is_a_square_root_of_the_ledoit_wolf_precision(n, d):
    from sklearn.covariance import LedoitWolf

    from humwatch.detectors.local import ledoit_wolf_whitening

    X = np.random.default_rng(n).normal(size=(n, d)) * np.linspace(0.1, 5.0, d)
    P, W = LedoitWolf().fit(X).precision_, ledoit_wolf_whitening(X)
    np.testing.assert_allclose(W @ W.T, P, atol=1e-10 * np.abs(P).max())
    assert not ledoit_wolf_whitening(np.ones((6, 4))).any()  # identical clips: no direction to scale, as pinvh gives
