"""The detector base class (:class:`Detector`: input checks, optional standardisation, the 0/1
``predict``, saving without pickle) and the parameter checks every detector shares. The contract
all detectors follow is described in :mod:`humwatch.detectors`."""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state

from humwatch.errors import ConfigError, one_line
from humwatch.settings import CONTAMINATION, AnyOf, Const, Rule, check_value

STATE_FORMAT = "humwatch.detector/1"

CONTAMINATION_OR_AUTO = AnyOf((Const("auto"), CONTAMINATION))
"""``contamination`` of ``lof`` and ``iforest``: scikit-learn's ``"auto"`` or a share of outliers."""


class DetectorNotFittedError(ConfigError, NotFittedError):
    """``anomaly_score`` / ``predict`` / ``state`` before ``fit``: an :class:`humwatch ConfigError
    <humwatch.errors.ConfigError>` that is also scikit-learn's ``NotFittedError``."""


# --------------------------------------------------------------------------- validation helpers
# Parameters are checked by the rules of :mod:`humwatch.settings` (each detector's ``param_rules``),
# with the same words as every other setting humwatch checks.


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


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
        raise ConfigError(f"{what}: X must be a numeric 2-D array ({one_line(exc)})") from None
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
    say how each is checked in ``param_rules`` (rules of :mod:`humwatch.settings`; checks across
    parameters in ``_check_across``), and implement ``_min_samples``, ``_fit(Z)``, ``_score(Z)`` and
    (when ``has_decision``) ``_predict(Z)``, plus ``_state`` / ``_restore`` for saving.
    ``Z`` is X after the optional scaler.
    """

    name: ClassVar[str] = ""
    registry: ClassVar[dict[str, type["Detector"]]] = {}
    """name -> detector class: :data:`humwatch.detectors.DETECTORS`, which fills it."""
    has_decision: ClassVar[bool] = False
    #: hyper-parameters that are tuples in Python and lists in JSON
    _tuple_params: ClassVar[tuple[str, ...]] = ()

    #: {hyper-parameter: rule}: every ``__init__`` parameter's check (tests/test_one_way_to_check.py
    #: checks that none is left out). Checking never changes a parameter (scikit-learn's convention).
    param_rules: ClassVar[dict[str, Rule]] = {}

    def _check_params(self) -> None:
        """Every hyper-parameter against its rule: one ConfigError line ``detector 'NAME': PARAM must be ...``."""
        for param, rule in self.param_rules.items():
            check_value(getattr(self, param), rule, param, f"detector '{self.name}'")
        self._check_across()

    # ---- to be provided by subclasses
    def _check_across(self) -> None:
        """Checks across parameters (after each one's own); subclasses override."""

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
                f"detector '{self.name}' needs at least {need} training samples ({self._min_samples_reason()}), got {X.shape[0]}"
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

    def heldout_scores(self, X: Any, X_held: Any) -> np.ndarray:
        """``fit(X).anomaly_score(X_held)``: the scores of held-out rows by this detector fitted on
        ``X``, for cross-fitting (a monitor's calibration folds). A detector with a cheaper way to
        the same numbers (``mahalanobis``) overrides it; use the detector for nothing else after."""
        return self.fit(X).anomaly_score(X_held)

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
                f"detector '{self.name}' {what}: X has {X.shape[1]} features but the detector was fitted on {self.n_features_in_}"
            )
        if self.scaler_ is not None:
            X = self.scaler_.transform(X)
        return np.ascontiguousarray(X)

    def anomaly_score(self, X: Any) -> np.ndarray:
        """Anomaly score per row of ``X``, float64; **higher = more anomalous**."""
        Z = self._transform(X, "anomaly_score")
        if Z.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self._score(Z), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """``1`` anomalous / ``0`` normal per row (int64), for detectors with a natural decision."""
        if not self.has_decision:
            raise ConfigError(
                f"detector '{self.name}' has no built-in decision; pick a threshold with "
                "humwatch.metrics.threshold_from_scores on normal validation scores"
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
    def create(cls, **params) -> "Detector":
        """A new, unfitted detector of this class with hyper-parameters ``params``, checked now
        (:func:`humwatch.detectors.create_detector` by name)."""
        accepted = cls._get_param_names()
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ConfigError(f"detector '{cls.name}': unknown parameter(s) {', '.join(unknown)} (accepted: {', '.join(accepted)})")
        det = cls(**params)
        det._check_params()
        return det

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> "Detector":
        """Rebuild a fitted detector from :meth:`state`'s output. Called on :class:`Detector`
        it picks the class from ``meta["name"]``; on a subclass the name must match."""
        # The registry is humwatch.detectors' (built from the subclasses, which import this module): it
        # hands itself to this class (Detector.registry), complete by the time a state can be loaded.
        DETECTORS = Detector.registry

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
        det = klass.create(**params)
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
                f"detector state for '{self.name}': train_X has shape {Z.shape}, expected ({self.n_samples_fit_}, {self.n_features_in_})"
            )
        self._fit(np.ascontiguousarray(Z))  # deterministic; a saved random_state is the used seed
