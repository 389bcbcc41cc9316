"""Detectors: separation on known data, the lof-vote rule, cosine k-NN, standardisation,
scikit-learn parameter contract, state round trips and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from humwatch.detectors import (
    DETECTORS,
    Detector,
    DetectorNotFittedError,
    LofVoteDetector,
    create_detector,
    detector_from_state,
    list_detectors,
)
from humwatch.errors import ConfigError

NAMES = ["lof-vote", "lof", "knn", "mahalanobis", "gmm", "iforest", "knn-ldn"]
WITH_DECISION = {"lof-vote", "lof", "iforest"}


@pytest.fixture(scope="module")
def blob():
    """Normal training blob N((8, 0), I) in 2-D; test = 60 fresh inliers + 30 clear outliers
    around (0, 8) (far away and, for the cosine k-NN, in another direction)."""
    rng = np.random.default_rng(0)
    center = np.array([8.0, 0.0])
    train = rng.normal(size=(200, 2)) + center
    inliers = rng.normal(size=(60, 2)) + center
    outliers = rng.normal(scale=0.5, size=(30, 2)) + np.array([0.0, 8.0])
    X_test = np.vstack([inliers, outliers])
    y_test = np.r_[np.zeros(60, dtype=int), np.ones(30, dtype=int)]
    return train, X_test, y_test


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


def test_registry_lists_the_six_detectors():
    assert list_detectors() == NAMES  # the study's lof-vote first
    assert set(DETECTORS) == set(NAMES)
    for name in NAMES:
        det = create_detector(name)
        assert isinstance(det, Detector) and det.name == name
        assert det.has_decision == (name in WITH_DECISION)


@pytest.mark.parametrize("name", NAMES)
def test_each_detector_scores_outliers_higher(name, blob):
    train, X_test, y_test = blob
    det = create_detector(name).fit(train)
    scores = det.anomaly_score(X_test)
    assert scores.shape == (len(X_test),) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    assert roc_auc_score(y_test, scores) > 0.95
    assert scores[y_test == 1].mean() > scores[y_test == 0].mean()
    assert det.n_features_in_ == 2 and det.n_samples_fit_ == len(train)


@pytest.mark.parametrize("name", NAMES)
def test_predict_is_0_1_where_there_is_a_decision(name, blob):
    train, X_test, y_test = blob
    det = create_detector(name).fit(train)
    if name in WITH_DECISION:
        pred = det.predict(X_test)
        assert pred.dtype == np.int64 and set(np.unique(pred)) <= {0, 1}
        assert pred[y_test == 1].all()  # every clear outlier flagged
        assert pred[y_test == 0].mean() < 0.5  # most inliers normal
    else:
        with pytest.raises(ConfigError, match="no built-in decision") as e:
            det.predict(X_test)
        _one_line(e)


# ------------------------------------------------------------------------------ lof-vote


@pytest.fixture(scope="module")
def vote_case():
    """Training blob at the origin and test points on 12 rays leaving it: the LOF value grows
    along the rays, so every vote count 0..4 appears."""
    rng = np.random.default_rng(1)
    train = rng.normal(size=(120, 2))
    angles = np.linspace(0.0, 2 * np.pi, 12, endpoint=False)
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    radii = np.linspace(0.0, 6.0, 200)
    ray = (radii[None, :, None] * directions[:, None, :]).reshape(-1, 2)
    return train, ray


def test_lof_vote_uses_four_study_lofs(vote_case):
    train, _ = vote_case
    det = create_detector("lof-vote").fit(train)
    assert det.get_params()["n_neighbors"] == 4
    assert [lof.contamination for lof in det.lofs_] == [0.1, 0.2, 0.3, 0.4]
    for lof in det.lofs_:
        assert lof.novelty is True and lof.n_neighbors == 4 and lof.metric == "minkowski"
        assert lof.n_samples_fit_ == len(train)
    # a larger contamination means a lower LOF threshold (-offset_)
    offsets = [lof.offset_ for lof in det.lofs_]
    assert offsets == sorted(offsets)
    assert det.min_votes_ == 3


def test_lof_vote_predict_is_the_majority_of_the_four(vote_case):
    train, ray = vote_case
    det = create_detector("lof-vote").fit(train)
    manual = np.sum([lof.predict(ray) == -1 for lof in det.lofs_], axis=0)  # sklearn's own rule
    votes = det.votes(ray)
    np.testing.assert_array_equal(votes, manual)
    assert set(np.unique(votes)) == {0, 1, 2, 3, 4}  # the constructed case hits every count
    pred = det.predict(ray)
    np.testing.assert_array_equal(pred, (manual >= 3).astype(int))
    assert (pred[votes == 2] == 0).all()  # a 2-2 tie is not a majority
    tie_rule = create_detector("lof-vote", min_votes=2).fit(train)
    assert (tie_rule.predict(ray)[votes == 2] == 1).all()


def test_lof_vote_score_is_the_continuous_lof_value_and_votes_a_step_of_it(vote_case):
    train, ray = vote_case
    det = create_detector("lof-vote").fit(train)
    scores = det.anomaly_score(ray)
    votes = det.votes(ray)
    lof_value = -np.mean([lof.score_samples(ray) for lof in det.lofs_], axis=0)
    np.testing.assert_allclose(scores, lof_value, rtol=0, atol=1e-12)
    # by score, vote counts never go down: the vote count is a step function of the score
    order = np.argsort(scores, kind="stable")
    assert (np.diff(votes[order]) >= 0).all() and set(votes) <= {0, 1, 2, 3, 4}
    # no ceiling: a point far from the training data scores far above every training score
    far = det.anomaly_score(train.mean(axis=0, keepdims=True) + 1000.0)
    assert far[0] > 100 * det.anomaly_score(train).max()


# ----------------------------------------------------------------------------------- knn


def test_knn_is_mean_cosine_distance_and_scale_invariant(blob):
    train, X_test, _ = blob
    det = create_detector("knn", n_neighbors=5).fit(train)
    scores = det.anomaly_score(X_test)
    expected = np.sort(cdist(X_test, train, metric="cosine"), axis=1)[:, :5].mean(axis=1)
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-12)
    for c in (0.01, 3.0, 1000.0):
        np.testing.assert_allclose(det.anomaly_score(c * X_test), scores, rtol=1e-9, atol=1e-12)
    # a euclidean detector is not scale-invariant, so this is a real check of the metric
    lof = create_detector("lof").fit(train)
    assert not np.allclose(lof.anomaly_score(3.0 * X_test), lof.anomaly_score(X_test))


# ----------------------------------------------------------------------------- standardize


@pytest.mark.parametrize("name", NAMES)
def test_standardize_makes_scores_independent_of_feature_units(name, blob):
    train, X_test, _ = blob
    units = np.array([1000.0, 0.01])  # one feature in very different units
    std = create_detector(name, standardize=True)
    a = clone(std).fit(train).anomaly_score(X_test)
    b = clone(std).fit(train * units).anomaly_score(X_test * units)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    fitted = clone(std).fit(train)
    np.testing.assert_allclose(fitted.scaler_.mean_, train.mean(axis=0))
    assert create_detector(name).fit(train).scaler_ is None


def test_without_standardize_units_matter(blob):
    train, X_test, y_test = blob
    units = np.array([1.0, 1000.0])
    raw = create_detector("lof").fit(train * units).anomaly_score(X_test * units)
    std = create_detector("lof", standardize=True).fit(train * units).anomaly_score(X_test * units)
    assert not np.allclose(raw, std)
    assert roc_auc_score(y_test, std) > 0.95


# ------------------------------------------------------------------------ params & clone


@pytest.mark.parametrize("name", NAMES)
def test_get_set_params_and_clone(name, blob):
    train, X_test, _ = blob
    det = create_detector(name, standardize=True)
    params = det.get_params()
    assert params["standardize"] is True
    assert create_detector(name, **params).get_params() == params
    assert det.set_params(**params) is det and det.get_params() == params
    det.fit(train)
    twin = clone(det)
    assert twin.get_params() == params and twin is not det
    with pytest.raises(NotFittedError):  # a clone is unfitted ...
        twin.anomaly_score(X_test)
    with pytest.raises(DetectorNotFittedError) as e:  # ... and that is also a ConfigError
        twin.anomaly_score(X_test)
    assert isinstance(e.value, ConfigError)
    np.testing.assert_allclose(twin.fit(train).anomaly_score(X_test), det.anomaly_score(X_test), rtol=0, atol=1e-9)
    det.set_params(standardize=False)
    assert det.get_params()["standardize"] is False


def test_set_params_changes_the_fit(blob):
    train, X_test, _ = blob
    det = create_detector("knn")
    a = det.fit(train).anomaly_score(X_test)
    b = det.set_params(n_neighbors=20).fit(train).anomaly_score(X_test)
    assert det.n_neighbors == 20 and not np.allclose(a, b)


def test_fit_copies_training_data(blob):
    train, X_test, _ = blob
    X = train.copy()
    det = create_detector("lof-vote").fit(X)
    before = det.anomaly_score(X_test)
    X[:] = 0.0
    np.testing.assert_array_equal(det.anomaly_score(X_test), before)


# ---------------------------------------------------------------------------- state I/O


ROUND_TRIP_CASES = [(n, s) for n in NAMES for s in (False, True)] + [("gmm", None), ("iforest", None)]


@pytest.mark.parametrize("name,standardize", ROUND_TRIP_CASES)
def test_state_round_trip_is_exact(name, standardize, blob, tmp_path):
    train, X_test, _ = blob
    if standardize is None:  # random_state=None: the seed actually used is saved
        det = create_detector(name, random_state=None).fit(train)
    else:
        det = create_detector(name, standardize=standardize).fit(train)
    meta, arrays = det.state()
    assert meta["name"] == name and meta["n_features_in_"] == 2 and meta["n_samples_fit_"] == len(train)
    assert set(meta["params"]) == set(det.get_params())
    meta = json.loads(json.dumps(meta))  # JSON-able
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in arrays.values())
    # through a real file without pickle
    from safetensors.numpy import load_file, save_file

    save_file(arrays, str(tmp_path / "det.safetensors"))
    loaded = load_file(str(tmp_path / "det.safetensors"))
    for rebuild in (detector_from_state, Detector.from_state, DETECTORS[name].from_state):
        twin = rebuild(meta, loaded)
        assert type(twin) is type(det)
        np.testing.assert_allclose(twin.anomaly_score(X_test), det.anomaly_score(X_test), rtol=0, atol=1e-9)
        if det.has_decision:
            np.testing.assert_array_equal(twin.predict(X_test), det.predict(X_test))


def test_state_errors(blob):
    train, _, _ = blob
    meta, arrays = create_detector("lof").fit(train).state()
    with pytest.raises(ConfigError, match="not 'knn'") as e:
        DETECTORS["knn"].from_state(meta, arrays)
    _one_line(e)
    with pytest.raises(ConfigError, match="format"):
        detector_from_state({**meta, "format": "other/9"}, arrays)
    with pytest.raises(ConfigError, match="unknown detector"):
        detector_from_state({**meta, "name": "svm"}, arrays)
    with pytest.raises(ConfigError, match="lacks array 'train_X'"):
        detector_from_state(meta, {})
    with pytest.raises(DetectorNotFittedError):
        create_detector("gmm").state()


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name,n_ok", [("lof-vote", 5), ("lof", 5), ("knn", 5), ("mahalanobis", 2), ("gmm", 2), ("iforest", 2)])
def test_too_few_training_samples(name, n_ok):
    rng = np.random.default_rng(2)
    with pytest.raises(ConfigError, match=f"at least {n_ok} training samples") as e:
        create_detector(name).fit(rng.normal(size=(n_ok - 1, 3)))
    _one_line(e)
    det = create_detector(name).fit(rng.normal(size=(n_ok, 3)))
    assert np.isfinite(det.anomaly_score(rng.normal(size=(4, 3)))).all()


def test_lof_needs_n_neighbors_plus_one():
    X = np.random.default_rng(3).normal(size=(10, 2))
    with pytest.raises(ConfigError, match="n_neighbors=10 plus one"):
        create_detector("lof", n_neighbors=10).fit(X)
    create_detector("lof", n_neighbors=9).fit(X)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_one_line_config_errors(name, blob):
    train, X_test, _ = blob
    bad = train.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ConfigError, match="NaN") as e:
        create_detector(name).fit(bad)
    _one_line(e)
    det = create_detector(name).fit(train)
    with pytest.raises(ConfigError, match="3 features but the detector was fitted on 2") as e:
        det.anomaly_score(np.ones((4, 3)))
    _one_line(e)
    with pytest.raises(ConfigError, match="NaN"):
        det.anomaly_score(np.array([[np.inf, 0.0]]))
    with pytest.raises(ConfigError, match="2-D"):
        det.anomaly_score(np.ones(2))
    assert det.anomaly_score(np.empty((0, 2))).shape == (0,)
    with pytest.raises(ConfigError, match="numeric"):
        det.fit([["a", "b"], ["c", "d"]])


def test_unknown_detector_and_parameters():
    with pytest.raises(ConfigError, match="unknown detector 'svm'") as e:
        create_detector("svm")
    assert "lof-vote" in _one_line(e)
    with pytest.raises(ConfigError, match="unknown parameter.*n_neigbors") as e:
        create_detector("lof", n_neigbors=3)
    _one_line(e)


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("lof-vote", {"n_neighbors": 0}, "n_neighbors"),
        ("lof-vote", {"contaminations": (0.1, 0.7)}, "contaminations"),
        ("lof-vote", {"contaminations": ()}, "contaminations"),
        ("lof-vote", {"min_votes": 5}, "min_votes"),
        ("lof", {"contamination": 0.0}, "contamination"),
        ("lof", {"metric": "jaccard"}, "metric"),
        ("lof", {"n_neighbors": True}, "n_neighbors"),
        ("knn", {"n_neighbors": 2.5}, "n_neighbors"),
        ("mahalanobis", {"standardize": "yes"}, "standardize"),
        ("gmm", {"covariance_type": "huge"}, "covariance_type"),
        ("gmm", {"reg_covar": -1.0}, "reg_covar"),
        ("iforest", {"max_samples": 1.5}, "max_samples"),
        ("iforest", {"random_state": "seven"}, "random_state"),
    ],
)
def test_bad_parameter_values(name, params, match):
    with pytest.raises(ConfigError, match=match) as e:
        create_detector(name, **params)
    _one_line(e)
    # set_params does not validate (scikit-learn convention); fit does
    det = create_detector(name).set_params(**params)
    with pytest.raises(ConfigError, match=match):
        det.fit(np.random.default_rng(4).normal(size=(30, 2)))


def test_gmm_components_capped_by_samples():
    X = np.random.default_rng(5).normal(size=(3, 2))
    det = create_detector("gmm", n_components=8).fit(X)
    assert det.n_components_ == 3 and det.get_params()["n_components"] == 8
    assert np.isfinite(det.anomaly_score(X)).all()


def test_lof_vote_is_the_class_behind_the_name():
    assert DETECTORS["lof-vote"] is LofVoteDetector
    assert LofVoteDetector().get_params() == {
        "n_neighbors": 4,
        "contaminations": (0.1, 0.2, 0.3, 0.4),
        "min_votes": None,
        "metric": "minkowski",
        "standardize": False,
    }


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gmm_round_trip_every_covariance_type(covariance_type, blob):
    train, X_test, _ = blob
    det = create_detector("gmm", covariance_type=covariance_type).fit(train)
    meta, arrays = det.state()
    assert sorted(arrays) == ["means", "precisions_cholesky", "weights"]
    twin = detector_from_state(json.loads(json.dumps(meta)), arrays)
    np.testing.assert_allclose(twin.anomaly_score(X_test), det.anomaly_score(X_test), rtol=0, atol=1e-9)
    np.testing.assert_allclose(twin.gmm_.covariances_, det.gmm_.covariances_, rtol=1e-9, atol=1e-12)


def test_scores_are_the_documented_formulas(blob):
    from sklearn.covariance import LedoitWolf
    from sklearn.ensemble import IsolationForest
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import LocalOutlierFactor

    train, X_test, _ = blob
    lw = LedoitWolf().fit(train)
    d = X_test - lw.location_
    expected = np.einsum("ij,jk,ik->i", d, lw.precision_, d)
    np.testing.assert_allclose(create_detector("mahalanobis").fit(train).anomaly_score(X_test), expected, rtol=1e-10)
    gm = GaussianMixture(n_components=4, reg_covar=1e-3, random_state=0).fit(train)
    np.testing.assert_allclose(create_detector("gmm").fit(train).anomaly_score(X_test), -gm.score_samples(X_test), rtol=1e-10)
    forest = IsolationForest(random_state=0).fit(train)
    np.testing.assert_allclose(create_detector("iforest").fit(train).anomaly_score(X_test), -forest.score_samples(X_test), rtol=1e-12)
    lof = LocalOutlierFactor(n_neighbors=4, novelty=True, contamination=0.1).fit(train)
    det = create_detector("lof").fit(train)
    np.testing.assert_allclose(det.anomaly_score(X_test), -lof.score_samples(X_test), rtol=1e-12)
    np.testing.assert_array_equal(det.predict(X_test), (lof.predict(X_test) == -1).astype(int))


def test_failed_refit_leaves_detector_unfitted(blob):
    train, X_test, _ = blob
    det = create_detector("lof").fit(train)
    with pytest.raises(ConfigError, match="at least 5"):
        det.fit(train[:3])
    with pytest.raises(DetectorNotFittedError):
        det.anomaly_score(X_test)
