"""Anomaly detectors on embeddings, with the scikit-learn estimator contract.

Every detector is fitted on *normal* training embeddings only and follows the contract of
scikit-learn's :class:`~sklearn.neighbors.LocalOutlierFactor` (the model the study uses):

* hyper-parameters are keyword arguments of ``__init__`` stored unchanged under the same name
  (so :class:`sklearn.base.BaseEstimator` gives ``get_params`` / ``set_params`` and
  :func:`sklearn.base.clone` works); they are validated in :meth:`Detector.fit` (as scikit-learn
  does) and also by :func:`create_detector`, so a bad option fails before any work is done;
* everything learned in ``fit`` ends in ``_`` (``n_features_in_``, ``n_samples_fit_``,
  ``scaler_``, the inner scikit-learn models ...);
* ``anomaly_score(X)`` is an **anomaly score: higher means more anomalous** (what AUC / pAUC in
  :mod:`humwatch.metrics` expect). The name is ours on purpose: scikit-learn's ``score_samples``
  points the other way (higher means more normal), so a detector has no ``score_samples`` and a
  scikit-learn model's ``score_samples`` is only ever called on that model (as ``-lof.score_samples``);
* ``predict(X)`` returns ``1`` for anomalous and ``0`` for normal (not scikit-learn's -1/+1), and
  only exists as a decision for detectors that have a natural one (``lof-vote``, ``lof``,
  ``iforest``); the others raise :class:`~humwatch.errors.ConfigError` and a threshold comes from
  :func:`humwatch.metrics.threshold_from_scores` on normal validation scores instead.

``standardize=True`` (every detector) fits a :class:`~sklearn.preprocessing.StandardScaler` on
the training X and applies it to every X before the detector sees it.

Saving without pickle: :meth:`Detector.state` returns ``(meta, arrays)`` where ``meta`` is a
JSON-able dict (``format``, ``name``, ``params``, ``n_features_in_``, ``n_samples_fit_``,
``fitted``) and ``arrays`` maps names to numpy arrays (ready for safetensors / ``np.savez``).
:meth:`Detector.from_state` (also :func:`detector_from_state`) rebuilds a detector whose
``anomaly_score`` equals the original's on the same X. The neighbour-based detectors and the
isolation forest store the (standardised) training matrix and refit deterministically on load
(the forest with the integer seed it actually used, so ``random_state=None`` still round-trips);
``mahalanobis`` and ``gmm`` store their fitted parameters directly.

Every user-caused problem (unknown detector or parameter, bad value, X that is not 2-D, has
NaN/inf, has the wrong number of features at score time, too few training samples) raises
:class:`~humwatch.errors.ConfigError` with a one-line message.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np

from humwatch.detectors.base import STATE_FORMAT, Detector, DetectorNotFittedError
from humwatch.detectors.density import GmmDetector, IForestDetector, MahalanobisDetector
from humwatch.detectors.local import KnnLdnDetector
from humwatch.detectors.neighbors import LOF_METRICS, KnnDetector, LofDetector, LofVoteDetector  # noqa: F401 (LOF_METRICS)
from humwatch.errors import ConfigError

__all__ = [
    "DETECTORS",
    "Detector",
    "DetectorNotFittedError",
    "GmmDetector",
    "IForestDetector",
    "KnnDetector",
    "KnnLdnDetector",
    "LofDetector",
    "LofVoteDetector",
    "MahalanobisDetector",
    "STATE_FORMAT",
    "create_detector",
    "detector_from_state",
    "list_detectors",
]


# ----------------------------------------------------------------------------------- registry

#: name -> detector class, in the order :func:`list_detectors` reports them (the study's first).
DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls for cls in (LofVoteDetector, LofDetector, KnnDetector, MahalanobisDetector, GmmDetector, IForestDetector, KnnLdnDetector)
}
Detector.registry = DETECTORS  # the same dict: Detector.from_state finds a saved detector's class here


def list_detectors() -> list[str]:
    """Detector names accepted by :func:`create_detector`, the study's ``lof-vote`` first."""
    return list(DETECTORS)


def create_detector(name: str, **params: Any) -> Detector:
    """A new, unfitted detector ``name`` with hyper-parameters ``params`` (validated now, so a
    wrong option fails before any embedding is computed)."""
    if name not in DETECTORS:
        raise ConfigError(f"unknown detector {name!r} (choose from: {', '.join(DETECTORS)})")
    return DETECTORS[name].create(**params)


def detector_from_state(meta: dict, arrays: dict[str, np.ndarray]) -> Detector:
    """Same as :meth:`Detector.from_state`: rebuild a fitted detector from :meth:`Detector.state`."""
    return Detector.from_state(meta, arrays)


class _CallableRegistry(types.ModuleType):
    """``humwatch.detectors()`` (docs/api.md): this package, called, lists the detector names."""

    def __call__(self) -> list[str]:
        return list_detectors()


sys.modules[__name__].__class__ = _CallableRegistry
