"""Anomaly detectors on embeddings, with the scikit-learn estimator contract.

Every detector is fitted on *normal* training embeddings only and follows the contract of
scikit-learn's :class:`~sklearn.neighbors.LocalOutlierFactor` (the model the study uses):

* hyper-parameters are keyword arguments of ``__init__`` stored unchanged under the same name
  (so :class:`sklearn.base.BaseEstimator` gives ``get_params`` / ``set_params`` and
  :func:`sklearn.base.clone` works); they are validated in :meth:`Detector.fit` (as scikit-learn
  does) and also by :func:`create_detector`, so a bad option fails before any work is done;
* everything learned in ``fit`` ends in ``_`` (``n_features_in_``, ``n_samples_fit_``,
  ``scaler_``, the inner scikit-learn models ...);
* ``score_samples(X)`` is an **anomaly score: higher means more anomalous**. This is the
  opposite sign of scikit-learn's own ``score_samples`` (where lower means more abnormal) and is
  what AUC / pAUC in :mod:`asdkit.metrics` expect;
* ``predict(X)`` returns ``1`` for anomalous and ``0`` for normal (not scikit-learn's -1/+1), and
  only exists as a decision for detectors that have a natural one (``lof-vote``, ``lof``,
  ``iforest``); the others raise :class:`~asdkit.errors.ConfigError` and a threshold comes from
  :func:`asdkit.metrics.threshold_from_scores` on normal validation scores instead.

``standardize=True`` (every detector) fits a :class:`~sklearn.preprocessing.StandardScaler` on
the training X and applies it to every X before the detector sees it.

Saving without pickle: :meth:`Detector.state` returns ``(meta, arrays)`` where ``meta`` is a
JSON-able dict (``format``, ``name``, ``params``, ``n_features_in_``, ``n_samples_fit_``,
``fitted``) and ``arrays`` maps names to numpy arrays (ready for safetensors / ``np.savez``).
:meth:`Detector.from_state` (also :func:`detector_from_state`) rebuilds a detector whose
``score_samples`` equals the original's on the same X. The neighbour-based detectors and the
isolation forest store the (standardised) training matrix and refit deterministically on load
(the forest with the integer seed it actually used, so ``random_state=None`` still round-trips);
``mahalanobis`` and ``gmm`` store their fitted parameters directly.

Every user-caused problem (unknown detector or parameter, bad value, X that is not 2-D, has
NaN/inf, has the wrong number of features at score time, too few training samples) raises
:class:`~asdkit.errors.ConfigError` with a one-line message.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.covariance import LedoitWolf
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state

from asdkit.errors import ConfigError

__all__ = [
    "DETECTORS",
    "Detector",
    "DetectorNotFittedError",
    "GmmDetector",
    "IForestDetector",
    "KnnDetector",
    "LofDetector",
    "LofVoteDetector",
    "MahalanobisDetector",
    "STATE_FORMAT",
    "create_detector",
    "detector_from_state",
    "list_detectors",
]

STATE_FORMAT = "asdkit.detector/1"

#: Metrics accepted by the LOF detectors (a subset of scikit-learn's neighbour metrics that make
#: sense for real-valued embeddings without extra parameters). Default ``minkowski`` with
#: scikit-learn's default ``p=2`` is the euclidean distance, as in the study.
LOF_METRICS = ("minkowski", "euclidean", "l2", "manhattan", "l1", "cityblock", "chebyshev", "cosine")


class DetectorNotFittedError(ConfigError, NotFittedError):
    """``score_samples`` / ``predict`` / ``state`` before ``fit``: an :class:`asdkit ConfigError
    <asdkit.errors.ConfigError>` that is also scikit-learn's ``NotFittedError``."""


# --------------------------------------------------------------------------- validation helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_int(det: str, name: str, value: Any, low: int) -> None:
    if not _is_int(value) or value < low:
        raise ConfigError(f"detector '{det}': {name} must be an integer >= {low}, got {value!r}")


def _check_contamination(det: str, name: str, value: Any, allow_auto: bool) -> None:
    if allow_auto and isinstance(value, str) and value == "auto":
        return
    ok = _is_real(value) and 0.0 < float(value) <= 0.5
    if not ok:
        extra = " or 'auto'" if allow_auto else ""
        raise ConfigError(f"detector '{det}': {name} must be a number in (0, 0.5]{extra}, got {value!r}")


def _check_bool(det: str, name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"detector '{det}': {name} must be true or false, got {value!r}")


def _check_random_state(det: str, value: Any) -> None:
    if value is None or isinstance(value, np.random.RandomState):
        return
    if _is_int(value) and 0 <= value < 2**32:
        return
    raise ConfigError(
        f"detector '{det}': random_state must be None, an integer in [0, 2**32) or a "
        f"numpy RandomState, got {value!r}"
    )


def _resolve_seed(random_state: Any) -> int:
    """The integer seed a fit actually uses: the int itself, or one drawn from the given
    RandomState / numpy's global state for ``None`` (scikit-learn's meaning of ``None``). Keeping
    it lets :meth:`Detector.from_state` refit the same model."""
    if _is_int(random_state):
        return int(random_state)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def _as_matrix(X: Any, what: str) -> np.ndarray:
    """X as a finite 2-D float64 array (one-line ConfigError otherwise)."""
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: X must be a numeric 2-D array ({str(exc).splitlines()[0]})") from None
    if arr.ndim != 2:
        raise ConfigError(f"{what}: X must be 2-D (samples x features), got shape {arr.shape}")
    if arr.shape[1] < 1:
        raise ConfigError(f"{what}: X has no features (shape {arr.shape})")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ConfigError(f"{what}: X has NaN or infinite values in {bad} of {arr.shape[0]} rows")
    return arr


def _json_value(value: Any) -> Any:
    """A hyper-parameter value as plain JSON (tuples become lists, numpy scalars Python ones)."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_json_value(v) for v in value]
    return value


# --------------------------------------------------------------------------------- base class


class Detector(BaseEstimator):
    """Base class: input checks, optional standardisation, the 0/1 ``predict`` and state I/O.

    Subclasses set ``name``, ``has_decision``, list their hyper-parameters in ``__init__`` and
    implement ``_check_params``, ``_min_samples``, ``_fit(Z)``, ``_score(Z)`` and (when
    ``has_decision``) ``_predict(Z)``, plus ``_state`` / ``_restore`` for saving.
    ``Z`` is X after the optional scaler.
    """

    name: ClassVar[str] = ""
    has_decision: ClassVar[bool] = False
    #: hyper-parameters that are tuples in Python and lists in JSON
    _tuple_params: ClassVar[tuple[str, ...]] = ()

    # ---- to be provided by subclasses
    def _check_params(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _min_samples(self) -> int:
        return 2

    def _fit(self, Z: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, Z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, Z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Class-specific (json-able fitted info, arrays)."""
        raise NotImplementedError  # pragma: no cover

    def _restore(self, fitted: dict, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError  # pragma: no cover

    # ---- the contract
    def fit(self, X: Any, y: Any = None) -> "Detector":
        """Fit on normal training embeddings ``X`` (n_samples x n_features); ``y`` is ignored
        (present for scikit-learn compatibility). Returns ``self``."""
        self._check_params()
        self.__dict__.pop("n_features_in_", None)  # a failed refit leaves the detector unfitted
        X = np.array(_as_matrix(X, f"detector '{self.name}' fit"), copy=True)  # never alias the caller's X
        need = self._min_samples()
        if X.shape[0] < need:
            raise ConfigError(
                f"detector '{self.name}' needs at least {need} training samples "
                f"({self._min_samples_reason()}), got {X.shape[0]}"
            )
        if self.standardize:
            self.scaler_ = StandardScaler().fit(X)
            Z = self.scaler_.transform(X)
        else:
            self.scaler_ = None
            Z = X
        self._fit(np.ascontiguousarray(Z))
        self.n_samples_fit_ = int(X.shape[0])
        self.n_features_in_ = int(X.shape[1])  # set last: its presence means "fitted"
        return self

    def _min_samples_reason(self) -> str:
        return "to estimate a spread"

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise DetectorNotFittedError(f"detector '{self.name}' is not fitted yet; call fit(X) first")

    def _transform(self, X: Any, what: str) -> np.ndarray:
        self._check_fitted()
        X = _as_matrix(X, f"detector '{self.name}' {what}")
        if X.shape[1] != self.n_features_in_:
            raise ConfigError(
                f"detector '{self.name}' {what}: X has {X.shape[1]} features but the detector "
                f"was fitted on {self.n_features_in_}"
            )
        if self.scaler_ is not None:
            X = self.scaler_.transform(X)
        return np.ascontiguousarray(X)

    def score_samples(self, X: Any) -> np.ndarray:
        """Anomaly score per row of ``X``, float64; **higher = more anomalous**."""
        Z = self._transform(X, "score_samples")
        if Z.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self._score(Z), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """``1`` anomalous / ``0`` normal per row (int64), for detectors with a natural decision."""
        if not self.has_decision:
            raise ConfigError(
                f"detector '{self.name}' has no built-in decision; pick a threshold with "
                "asdkit.metrics.threshold_from_scores on normal validation scores"
            )
        Z = self._transform(X, "predict")
        if Z.shape[0] == 0:
            return np.empty(0, dtype=np.int64)
        return np.asarray(self._predict(Z), dtype=np.int64)

    # ---- saving without pickle
    def _params_for_state(self) -> dict:
        params = {k: _json_value(v) for k, v in self.get_params(deep=False).items()}
        if "random_state" in params:
            # the seed the fit actually used, so that a refit on load is the same model
            params["random_state"] = int(self.seed_)
        return params

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(meta, arrays)``: ``meta`` is JSON-able (``format``, ``name``, ``params``,
        ``n_features_in_``, ``n_samples_fit_``, ``fitted``); ``arrays`` are float64 numpy arrays.
        ``random_state`` in ``params`` is the integer seed the fit used."""
        self._check_fitted()
        fitted, arrays = self._state()
        arrays = dict(arrays)
        if self.scaler_ is not None:
            arrays["scaler_mean"] = self.scaler_.mean_
            arrays["scaler_scale"] = self.scaler_.scale_
            arrays["scaler_var"] = self.scaler_.var_
        arrays = {k: np.array(v, dtype=np.float64, order="C", copy=True) for k, v in arrays.items()}
        meta = {
            "format": STATE_FORMAT,
            "name": self.name,
            "params": self._params_for_state(),
            "n_features_in_": int(self.n_features_in_),
            "n_samples_fit_": int(self.n_samples_fit_),
            "fitted": fitted,
        }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> "Detector":
        """Rebuild a fitted detector from :meth:`state`'s output. Called on :class:`Detector`
        it picks the class from ``meta["name"]``; on a subclass the name must match."""
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ConfigError(f"detector state: format must be '{STATE_FORMAT}', got {got!r}")
        name = meta.get("name")
        if name not in DETECTORS:
            raise ConfigError(f"detector state: unknown detector {name!r} (known: {', '.join(DETECTORS)})")
        klass = DETECTORS[name]
        if cls is not Detector and klass is not cls:
            raise ConfigError(f"detector state is for '{name}', not '{cls.name}'")
        params = dict(meta.get("params") or {})
        for key in klass._tuple_params:
            if isinstance(params.get(key), list):
                params[key] = tuple(params[key])
        det = create_detector(name, **params)
        try:
            det.n_features_in_ = int(meta["n_features_in_"])
            det.n_samples_fit_ = int(meta["n_samples_fit_"])
            fitted = meta["fitted"]
            if not isinstance(fitted, dict):
                raise TypeError("'fitted' must be an object")
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"detector state for '{name}': missing or bad meta field {exc}") from None
        arrays = dict(arrays)
        det.scaler_ = None
        if det.standardize:
            mean, scale, var = (_need(arrays, name, k) for k in ("scaler_mean", "scaler_scale", "scaler_var"))
            scaler = StandardScaler()
            scaler.mean_ = np.asarray(mean, dtype=np.float64)
            scaler.scale_ = np.asarray(scale, dtype=np.float64)
            scaler.var_ = np.asarray(var, dtype=np.float64)
            scaler.n_features_in_ = det.n_features_in_
            scaler.n_samples_seen_ = det.n_samples_fit_
            det.scaler_ = scaler
        det._restore(fitted, arrays)
        return det


def _need(arrays: dict[str, np.ndarray], name: str, key: str) -> np.ndarray:
    if key not in arrays:
        raise ConfigError(f"detector state for '{name}' lacks array '{key}'")
    return np.asarray(arrays[key], dtype=np.float64)


class _RefitFromTraining(Detector):
    """Detectors saved as their (standardised) training matrix and refitted on load."""

    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {}, {"train_X": self.train_X_}

    def _restore(self, fitted: dict, arrays: dict[str, np.ndarray]) -> None:
        Z = _need(arrays, self.name, "train_X")
        if Z.ndim != 2 or Z.shape != (self.n_samples_fit_, self.n_features_in_):
            raise ConfigError(
                f"detector state for '{self.name}': train_X has shape {Z.shape}, expected "
                f"({self.n_samples_fit_}, {self.n_features_in_})"
            )
        self._fit(np.ascontiguousarray(Z))  # deterministic; a saved random_state is the used seed


# ---------------------------------------------------------------------------------- LOF family


def _check_metric(det: str, metric: Any) -> None:
    if metric not in LOF_METRICS:
        raise ConfigError(f"detector '{det}': metric must be one of {', '.join(LOF_METRICS)}, got {metric!r}")


class LofVoteDetector(_RefitFromTraining):
    """``lof-vote``: the study's detector. Four novelty-mode LOFs voting.

    Fit: one ``LocalOutlierFactor(n_neighbors=4, novelty=True, contamination=c)`` per
    ``c`` in ``contaminations = (0.1, 0.2, 0.3, 0.4)`` on the normal training embeddings, with
    scikit-learn's default metric (Minkowski, p=2, i.e. euclidean). ``n_neighbors=4`` and the four
    contaminations are the study's settings.

    Decision (``predict``): each LOF votes "anomalous" where scikit-learn's own rule says outlier
    (``lof.score_samples(x) - lof.offset_ < 0``, exactly ``lof.predict(x) == -1``). A clip is
    anomalous when **more than half** of the LOFs vote so: ``votes >= min_votes`` with
    ``min_votes = len(contaminations) // 2 + 1`` = 3 of 4 by default. A 2-2 tie is *not* a
    majority and counts as normal (the literal meaning of a majority vote; it also keeps the
    training false-alarm rate near 0.2 rather than 0.3). Set ``min_votes=2`` for "at least half".

    Because the four LOFs share ``n_neighbors`` and the training data, their LOF values are the
    same and only their thresholds ``-offset_`` differ (a larger contamination gives a lower
    threshold); the votes are therefore nested, and the vote count never decreases as the LOF
    value grows.

    Score (``score_samples``)::

        lof(x)   = mean over the LOFs of  -lof_c.score_samples(x)      (the LOF value, > 0)
        score(x) = votes(x) + lof(x) / (1 + lof(x))

    ``lof / (1 + lof)`` (= ``sigmoid(log lof)``) maps (0, inf) into (0, 1) strictly increasingly
    and is 0.5 at LOF = 1 (a point as dense as its neighbours). So ``floor(score) == votes``,
    ordering within equal vote counts follows the LOF value, and, since votes are nested, the
    whole score is an increasing function of the LOF value: AUC/pAUC equal those of the LOF
    value itself while the integer part stays readable as the vote count.
    """

    name = "lof-vote"
    has_decision = True
    _tuple_params = ("contaminations",)

    def __init__(self, n_neighbors=4, contaminations=(0.1, 0.2, 0.3, 0.4), min_votes=None,
                 metric="minkowski", standardize=False):
        self.n_neighbors = n_neighbors
        self.contaminations = contaminations
        self.min_votes = min_votes
        self.metric = metric
        self.standardize = standardize

    def _check_params(self) -> None:
        _check_int(self.name, "n_neighbors", self.n_neighbors, 1)
        cs = self.contaminations
        if isinstance(cs, (str, bytes)) or not hasattr(cs, "__len__") or len(cs) == 0:
            raise ConfigError(f"detector '{self.name}': contaminations must be a non-empty list of numbers, got {cs!r}")
        for c in cs:
            _check_contamination(self.name, "each of contaminations", c, allow_auto=False)
        if self.min_votes is not None:
            _check_int(self.name, "min_votes", self.min_votes, 1)
            if self.min_votes > len(cs):
                raise ConfigError(
                    f"detector '{self.name}': min_votes={self.min_votes} is more than the "
                    f"{len(cs)} voters"
                )
        _check_metric(self.name, self.metric)
        _check_bool(self.name, "standardize", self.standardize)

    def _min_samples(self) -> int:
        return self.n_neighbors + 1

    def _min_samples_reason(self) -> str:
        return f"n_neighbors={self.n_neighbors} plus one"

    @property
    def min_votes_(self) -> int:
        """Votes needed for "anomalous": ``min_votes`` or a strict majority."""
        return int(self.min_votes) if self.min_votes is not None else len(self.contaminations) // 2 + 1

    def _fit(self, Z: np.ndarray) -> None:
        self.train_X_ = Z
        self.lofs_ = [
            LocalOutlierFactor(n_neighbors=self.n_neighbors, novelty=True, contamination=float(c),
                               metric=self.metric).fit(Z)
            for c in self.contaminations
        ]

    def _lof_and_votes(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        neg = np.stack([lof.score_samples(Z) for lof in self.lofs_])  # -LOF, one row per LOF
        offsets = np.array([lof.offset_ for lof in self.lofs_])[:, None]
        votes = (neg - offsets < 0).sum(axis=0)  # scikit-learn's predict rule, per LOF
        return -neg.mean(axis=0), votes

    def votes(self, X: Any) -> np.ndarray:
        """Number of LOFs (0..len(contaminations)) that call each row an outlier."""
        Z = self._transform(X, "votes")
        if Z.shape[0] == 0:
            return np.empty(0, dtype=np.int64)
        return self._lof_and_votes(Z)[1].astype(np.int64)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        lof, votes = self._lof_and_votes(Z)
        return votes + lof / (1.0 + lof)

    def _predict(self, Z: np.ndarray) -> np.ndarray:
        return (self._lof_and_votes(Z)[1] >= self.min_votes_).astype(np.int64)


class LofDetector(_RefitFromTraining):
    """``lof``: one novelty-mode :class:`~sklearn.neighbors.LocalOutlierFactor` (Breunig et al.,
    2000). Score = the LOF value ``-lof.score_samples(x)`` (about 1 for inliers, larger for
    outliers). ``n_neighbors=4`` follows the study (scikit-learn's default is 20);
    ``contamination=0.1`` (the study's smallest) sets the decision threshold as scikit-learn does
    (the training LOF value exceeded by that fraction); ``"auto"`` gives scikit-learn's fixed
    LOF > 1.5. ``predict`` is scikit-learn's outlier decision as 1/0.
    """

    name = "lof"
    has_decision = True

    def __init__(self, n_neighbors=4, contamination=0.1, metric="minkowski", standardize=False):
        self.n_neighbors = n_neighbors
        self.contamination = contamination
        self.metric = metric
        self.standardize = standardize

    def _check_params(self) -> None:
        _check_int(self.name, "n_neighbors", self.n_neighbors, 1)
        _check_contamination(self.name, "contamination", self.contamination, allow_auto=True)
        _check_metric(self.name, self.metric)
        _check_bool(self.name, "standardize", self.standardize)

    def _min_samples(self) -> int:
        return self.n_neighbors + 1

    def _min_samples_reason(self) -> str:
        return f"n_neighbors={self.n_neighbors} plus one"

    def _fit(self, Z: np.ndarray) -> None:
        self.train_X_ = Z
        contamination = self.contamination if self.contamination == "auto" else float(self.contamination)
        self.lof_ = LocalOutlierFactor(n_neighbors=self.n_neighbors, novelty=True,
                                       contamination=contamination, metric=self.metric).fit(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return -self.lof_.score_samples(Z)

    def _predict(self, Z: np.ndarray) -> np.ndarray:
        return (self.lof_.predict(Z) == -1).astype(np.int64)


# ------------------------------------------------------------------------------------ k-NN


def _unit_rows(A: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (cosine distance 1 to everything,
    scikit-learn's convention for ``metric='cosine'``)."""
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    return np.divide(A, norms, out=np.zeros_like(A), where=norms > 0)


class KnnDetector(_RefitFromTraining):
    """``knn``: mean **cosine distance** ``1 - cos(x, t)`` from x to its ``n_neighbors`` (default
    5) nearest training embeddings. Test points are new, so nothing is excluded. Cosine makes
    the score independent of the embedding's length (scaling x by c > 0 leaves it unchanged),
    the usual choice for comparing neural-network embeddings. No built-in decision."""

    name = "knn"
    _CHUNK_ELEMENTS = 4_000_000  # distance-matrix block size (about 32 MB of float64)

    def __init__(self, n_neighbors=5, standardize=False):
        self.n_neighbors = n_neighbors
        self.standardize = standardize

    def _check_params(self) -> None:
        _check_int(self.name, "n_neighbors", self.n_neighbors, 1)
        _check_bool(self.name, "standardize", self.standardize)

    def _min_samples(self) -> int:
        return self.n_neighbors

    def _min_samples_reason(self) -> str:
        return f"n_neighbors={self.n_neighbors}"

    def _fit(self, Z: np.ndarray) -> None:
        self.train_X_ = Z
        self.train_unit_ = _unit_rows(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        U = _unit_rows(Z)
        k = self.n_neighbors
        step = max(1, self._CHUNK_ELEMENTS // max(1, self.train_unit_.shape[0]))
        out = np.empty(U.shape[0], dtype=np.float64)
        for start in range(0, U.shape[0], step):
            d = 1.0 - U[start:start + step] @ self.train_unit_.T
            np.clip(d, 0.0, 2.0, out=d)
            nearest = np.sort(np.partition(d, k - 1, axis=1)[:, :k], axis=1)
            out[start:start + step] = nearest.mean(axis=1)
        return out


# ----------------------------------------------------------------------------- Mahalanobis


class MahalanobisDetector(Detector):
    """``mahalanobis``: squared Mahalanobis distance ``(x - mu)^T P (x - mu)`` to the training
    mean ``mu``, with ``P`` the inverse of the Ledoit-Wolf shrunk covariance
    (:class:`sklearn.covariance.LedoitWolf`; Ledoit & Wolf, 2004), which stays invertible when
    embeddings have more dimensions than there are training clips. Saved as ``mu`` and ``P``.
    No built-in decision."""

    name = "mahalanobis"

    def __init__(self, standardize=False):
        self.standardize = standardize

    def _check_params(self) -> None:
        _check_bool(self.name, "standardize", self.standardize)

    def _fit(self, Z: np.ndarray) -> None:
        lw = LedoitWolf().fit(Z)
        self.location_ = np.asarray(lw.location_, dtype=np.float64)
        self.precision_ = np.asarray(lw.precision_, dtype=np.float64)
        self.shrinkage_ = float(lw.shrinkage_)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        D = Z - self.location_
        return np.maximum(np.einsum("ij,jk,ik->i", D, self.precision_, D), 0.0)

    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"shrinkage_": self.shrinkage_}, {"location": self.location_, "precision": self.precision_}

    def _restore(self, fitted: dict, arrays: dict[str, np.ndarray]) -> None:
        d = self.n_features_in_
        self.location_ = _need(arrays, self.name, "location")
        self.precision_ = _need(arrays, self.name, "precision")
        if self.location_.shape != (d,) or self.precision_.shape != (d, d):
            raise ConfigError(f"detector state for '{self.name}': arrays do not match {d} features")
        self.shrinkage_ = float(fitted.get("shrinkage_", float("nan")))


# ------------------------------------------------------------------------------------- GMM


_GMM_ARRAYS = ("weights_", "means_", "precisions_cholesky_")  # all that scoring reads


def _gmm_derived(chol: np.ndarray, covariance_type: str) -> tuple[np.ndarray, np.ndarray]:
    """``precisions_`` and ``covariances_`` of a GaussianMixture from its Cholesky precisions
    (only used for completeness after loading; scores depend on the Cholesky factors alone)."""
    if covariance_type == "full":
        prec = np.einsum("kij,klj->kil", chol, chol)
        return prec, np.linalg.inv(prec)
    if covariance_type == "tied":
        prec = chol @ chol.T
        return prec, np.linalg.inv(prec)
    prec = chol**2  # diag / spherical
    return prec, 1.0 / prec


class GmmDetector(Detector):
    """``gmm``: :class:`sklearn.mixture.GaussianMixture`; score = ``-log p(x)``
    (``-gmm.score_samples``). ``n_components=4`` is capped by the number of training samples
    (``n_components_``). ``covariance_type='full'`` with ``reg_covar=1e-3`` added to each
    covariance's diagonal (scikit-learn's default 1e-6 leaves full covariances of high-dimensional
    embeddings from a few hundred clips near-singular). ``random_state=0`` makes fits repeatable.
    Saved as the fitted weights, means and Cholesky factors of the precisions (what scoring
    uses; precisions and covariances are recomputed from them on load). No built-in decision."""

    name = "gmm"

    def __init__(self, n_components=4, covariance_type="full", reg_covar=1e-3, max_iter=100,
                 n_init=1, random_state=0, standardize=False):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.random_state = random_state
        self.standardize = standardize

    def _check_params(self) -> None:
        _check_int(self.name, "n_components", self.n_components, 1)
        if self.covariance_type not in ("full", "tied", "diag", "spherical"):
            raise ConfigError(
                f"detector '{self.name}': covariance_type must be full, tied, diag or spherical, "
                f"got {self.covariance_type!r}"
            )
        if not _is_real(self.reg_covar) or not (float(self.reg_covar) >= 0.0 and math.isfinite(self.reg_covar)):
            raise ConfigError(f"detector '{self.name}': reg_covar must be a number >= 0, got {self.reg_covar!r}")
        _check_int(self.name, "max_iter", self.max_iter, 1)
        _check_int(self.name, "n_init", self.n_init, 1)
        _check_random_state(self.name, self.random_state)
        _check_bool(self.name, "standardize", self.standardize)

    def _make(self) -> GaussianMixture:
        return GaussianMixture(n_components=self.n_components_, covariance_type=self.covariance_type,
                               reg_covar=float(self.reg_covar), max_iter=self.max_iter,
                               n_init=self.n_init, random_state=self.seed_)

    def _fit(self, Z: np.ndarray) -> None:
        self.seed_ = _resolve_seed(self.random_state)
        self.n_components_ = int(min(self.n_components, Z.shape[0]))
        self.gmm_ = self._make().fit(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return -self.gmm_.score_samples(Z)

    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        fitted = {"n_components_": self.n_components_, "converged_": bool(self.gmm_.converged_),
                  "n_iter_": int(self.gmm_.n_iter_), "lower_bound_": float(self.gmm_.lower_bound_)}
        return fitted, {k.rstrip("_"): getattr(self.gmm_, k) for k in _GMM_ARRAYS}

    def _restore(self, fitted: dict, arrays: dict[str, np.ndarray]) -> None:
        self.seed_ = int(self.random_state)
        try:
            self.n_components_ = int(fitted["n_components_"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"detector state for '{self.name}' lacks fitted n_components_") from None
        gm = self._make()
        for key in _GMM_ARRAYS:
            setattr(gm, key, _need(arrays, self.name, key.rstrip("_")))
        if gm.means_.shape != (self.n_components_, self.n_features_in_):
            raise ConfigError(f"detector state for '{self.name}': means do not match "
                              f"{self.n_components_} components x {self.n_features_in_} features")
        gm.precisions_, gm.covariances_ = _gmm_derived(gm.precisions_cholesky_, self.covariance_type)
        gm.converged_ = bool(fitted.get("converged_", True))
        gm.n_iter_ = int(fitted.get("n_iter_", 0))
        gm.lower_bound_ = float(fitted.get("lower_bound_", float("nan")))
        gm.n_features_in_ = self.n_features_in_
        self.gmm_ = gm


# -------------------------------------------------------------------------- isolation forest


class IForestDetector(_RefitFromTraining):
    """``iforest``: :class:`sklearn.ensemble.IsolationForest` (Liu, Ting & Zhou, 2008) with
    scikit-learn's defaults (100 trees, ``max_samples='auto'``, ``contamination='auto'``) and
    ``random_state=0`` for repeatable fits. Score = ``-forest.score_samples(x)`` (the isolation
    anomaly score, in (0, 1]); ``predict`` is scikit-learn's outlier decision as 1/0."""

    name = "iforest"
    has_decision = True

    def __init__(self, n_estimators=100, max_samples="auto", contamination="auto", random_state=0,
                 standardize=False):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.contamination = contamination
        self.random_state = random_state
        self.standardize = standardize

    def _check_params(self) -> None:
        _check_int(self.name, "n_estimators", self.n_estimators, 1)
        ms = self.max_samples
        ok = (isinstance(ms, str) and ms == "auto") or (_is_int(ms) and ms >= 1) or (
            _is_real(ms) and not _is_int(ms) and 0.0 < float(ms) <= 1.0)
        if not ok:
            raise ConfigError(
                f"detector '{self.name}': max_samples must be 'auto', an integer >= 1 or a "
                f"fraction in (0, 1], got {ms!r}"
            )
        _check_contamination(self.name, "contamination", self.contamination, allow_auto=True)
        _check_random_state(self.name, self.random_state)
        _check_bool(self.name, "standardize", self.standardize)

    def _fit(self, Z: np.ndarray) -> None:
        self.seed_ = _resolve_seed(self.random_state)  # on load random_state is the saved seed
        self.train_X_ = Z
        max_samples = self.max_samples
        if _is_int(max_samples):
            max_samples = min(int(max_samples), Z.shape[0])  # scikit-learn would warn and cap
        contamination = self.contamination if self.contamination == "auto" else float(self.contamination)
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, max_samples=max_samples,
                                       contamination=contamination, random_state=self.seed_).fit(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return -self.forest_.score_samples(Z)

    def _predict(self, Z: np.ndarray) -> np.ndarray:
        return (self.forest_.predict(Z) == -1).astype(np.int64)


# ----------------------------------------------------------------------------------- registry

#: name -> detector class, in the order :func:`list_detectors` reports them (the study's first).
DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (LofVoteDetector, LofDetector, KnnDetector, MahalanobisDetector, GmmDetector, IForestDetector)
}


def list_detectors() -> list[str]:
    """Detector names accepted by :func:`create_detector`, the study's ``lof-vote`` first."""
    return list(DETECTORS)


def create_detector(name: str, **params: Any) -> Detector:
    """A new, unfitted detector ``name`` with hyper-parameters ``params`` (validated now, so a
    wrong option fails before any embedding is computed)."""
    if name not in DETECTORS:
        raise ConfigError(f"unknown detector {name!r} (choose from: {', '.join(DETECTORS)})")
    cls = DETECTORS[name]
    accepted = cls._get_param_names()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"detector '{name}': unknown parameter(s) {', '.join(unknown)} "
            f"(accepted: {', '.join(accepted)})"
        )
    det = cls(**params)
    det._check_params()
    return det


def detector_from_state(meta: dict, arrays: dict[str, np.ndarray]) -> Detector:
    """Same as :meth:`Detector.from_state`: rebuild a fitted detector from :meth:`Detector.state`."""
    return Detector.from_state(meta, arrays)
