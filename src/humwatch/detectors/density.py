"""Detectors that model the normal embeddings as a whole rather than by their nearest neighbours:
``mahalanobis`` (one Gaussian with a shrunk covariance), ``gmm`` (a Gaussian mixture) and ``iforest``
(an isolation forest: how quickly random splits isolate a point)."""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular
from sklearn.covariance import LedoitWolf
from sklearn.ensemble import IsolationForest
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from humwatch.detectors.base import CONTAMINATION_OR_AUTO, Detector, _as_matrix, _is_int, _need, _RefitFromTraining, _resolve_seed
from humwatch.errors import ConfigError
from humwatch.settings import RANDOM_STATE, AnyOf, Bool, Const, Int, OneOf, Real

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

    param_rules = {"standardize": Bool()}

    def _fit(self, Z: np.ndarray) -> None:
        lw = LedoitWolf().fit(Z)
        self.location_ = np.asarray(lw.location_, dtype=np.float64)
        self.precision_ = np.asarray(lw.precision_, dtype=np.float64)
        self.shrinkage_ = float(lw.shrinkage_)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        D = Z - self.location_
        return np.maximum(np.einsum("ij,jk,ik->i", D, self.precision_, D), 0.0)

    def heldout_scores(self, X, X_held) -> np.ndarray:
        """With fewer training rows ``n`` than features ``d`` (embeddings from a few recordings), the
        held-out distances without the ``d x d`` precision matrix (whose eigendecomposition is most
        of a fold's time): the shrunk covariance is ``a I + U^T U`` (``a`` = shrinkage x mean
        variance, ``U`` the scaled centred rows), so by the Woodbury identity
        ``D P D^T = (|D|^2 - |L^-1 U D^T|^2) / a`` with ``L`` the Cholesky factor of the
        ``n x n`` matrix ``a I + U U^T``. The same numbers as :meth:`fit` then
        :meth:`anomaly_score` to float tolerance (a test compares them)."""
        from sklearn.covariance import ledoit_wolf_shrinkage

        Z = _as_matrix(X, f"detector '{self.name}' fit")
        n, d = Z.shape
        if n >= d or n < self._min_samples():
            return super().heldout_scores(X, X_held)
        self._check_params()
        H = _as_matrix(X_held, f"detector '{self.name}' anomaly_score")
        if H.shape[1] != d:
            raise ConfigError(f"detector '{self.name}' anomaly_score: X has {H.shape[1]} features but the detector was fitted on {d}")
        if self.standardize:
            scaler = StandardScaler().fit(Z)
            Z, H = scaler.transform(Z), scaler.transform(H)
        location = Z.mean(0)
        Zc = Z - location
        shrinkage = float(ledoit_wolf_shrinkage(Zc, assume_centered=True))
        a = shrinkage * float(np.sum(Zc**2)) / (n * d)
        if not a > 0:  # nothing to shrink towards: the generic way (a pseudo-inverse)
            return super().heldout_scores(X, X_held)
        U = np.sqrt((1.0 - shrinkage) / n) * Zc
        L = np.linalg.cholesky(a * np.eye(n) + U @ U.T)
        D = H - location
        W = solve_triangular(L, U @ D.T, lower=True)
        return np.maximum((np.sum(D**2, axis=1) - np.sum(W**2, axis=0)) / a, 0.0)

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

    def __init__(self, n_components=4, covariance_type="full", reg_covar=1e-3, max_iter=100, n_init=1, random_state=0, standardize=False):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.random_state = random_state
        self.standardize = standardize

    param_rules = {
        "n_components": Int(1),
        "covariance_type": OneOf(("full", "tied", "diag", "spherical")),
        "reg_covar": Real(0.0, text=False),
        "max_iter": Int(1),
        "n_init": Int(1),
        "random_state": RANDOM_STATE,
        "standardize": Bool(),
    }

    def _make(self) -> GaussianMixture:
        return GaussianMixture(
            n_components=self.n_components_,
            covariance_type=self.covariance_type,
            reg_covar=float(self.reg_covar),
            max_iter=self.max_iter,
            n_init=self.n_init,
            random_state=self.seed_,
        )

    def _fit(self, Z: np.ndarray) -> None:
        self.seed_ = _resolve_seed(self.random_state)
        self.n_components_ = int(min(self.n_components, Z.shape[0]))
        self.gmm_ = self._make().fit(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return -self.gmm_.score_samples(Z)

    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        fitted = {
            "n_components_": self.n_components_,
            "converged_": bool(self.gmm_.converged_),
            "n_iter_": int(self.gmm_.n_iter_),
            "lower_bound_": float(self.gmm_.lower_bound_),
        }
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
            raise ConfigError(
                f"detector state for '{self.name}': means do not match {self.n_components_} components x {self.n_features_in_} features"
            )
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

    def __init__(self, n_estimators=100, max_samples="auto", contamination="auto", random_state=0, standardize=False):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.contamination = contamination
        self.random_state = random_state
        self.standardize = standardize

    param_rules = {
        "n_estimators": Int(1),
        "max_samples": AnyOf(
            (Const("auto"), Int(1), Real(0.0, 1.0, open_low=True, text=False)),
            "'auto', a whole number 1 or more or a share above 0 and at most 1",
        ),
        "contamination": CONTAMINATION_OR_AUTO,
        "random_state": RANDOM_STATE,
        "standardize": Bool(),
    }

    def _fit(self, Z: np.ndarray) -> None:
        self.seed_ = _resolve_seed(self.random_state)  # on load random_state is the saved seed
        self.train_X_ = Z
        max_samples = self.max_samples
        if _is_int(max_samples):
            max_samples = min(int(max_samples), Z.shape[0])  # scikit-learn would warn and cap
        contamination = self.contamination if self.contamination == "auto" else float(self.contamination)
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators, max_samples=max_samples, contamination=contamination, random_state=self.seed_
        ).fit(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return -self.forest_.score_samples(Z)

    def _predict(self, Z: np.ndarray) -> np.ndarray:
        return (self.forest_.predict(Z) == -1).astype(np.int64)
