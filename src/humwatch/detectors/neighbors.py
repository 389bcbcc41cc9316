"""Neighbour-based detectors: ``lof-vote`` (the study's), ``lof`` and ``knn``. All three are saved as
their (standardised) training matrix and refitted on load."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.neighbors import LocalOutlierFactor

from humwatch.detectors.base import CONTAMINATION_OR_AUTO, _RefitFromTraining
from humwatch.errors import ConfigError
from humwatch.settings import CONTAMINATION, Bool, Int, OneOf, Optional, Seq

#: Metrics accepted by the LOF detectors (a subset of scikit-learn's neighbour metrics that make
#: sense for real-valued embeddings without extra parameters). Default ``minkowski`` with
#: scikit-learn's default ``p=2`` is the euclidean distance, as in the study.
LOF_METRICS = ("minkowski", "euclidean", "l2", "manhattan", "l1", "cityblock", "chebyshev", "cosine")


# ---------------------------------------------------------------------------------- LOF family


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

    Score (``anomaly_score``): the continuous LOF value, with no ceiling::

        score(x) = mean over the LOFs of  -lof_c.score_samples(x)      (the LOF value, > 0; about 1 for inliers)

    The vote count (0 .. number of LOFs) is :meth:`votes`: the study's literal reading, whose AUC
    ``humwatch reproduce`` reports beside the score's. Since the votes are nested, the vote count is a
    step function of the score. A threshold must be calibrated on the score, never on the votes
    plus a bounded fraction: a score with a ceiling cannot cross a threshold calibrated above it.
    """

    name = "lof-vote"
    has_decision = True
    _tuple_params = ("contaminations",)

    def __init__(self, n_neighbors=4, contaminations=(0.1, 0.2, 0.3, 0.4), min_votes=None, metric="minkowski", standardize=False):
        self.n_neighbors = n_neighbors
        self.contaminations = contaminations
        self.min_votes = min_votes
        self.metric = metric
        self.standardize = standardize

    param_rules = {
        "n_neighbors": Int(1),
        "contaminations": Seq(CONTAMINATION),
        "min_votes": Optional(Int(1)),
        "metric": OneOf(LOF_METRICS),
        "standardize": Bool(),
    }

    def _check_across(self) -> None:
        if self.min_votes is not None and self.min_votes > len(self.contaminations):
            raise ConfigError(f"detector '{self.name}': min_votes={self.min_votes} is more than the {len(self.contaminations)} voters")

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
            LocalOutlierFactor(n_neighbors=self.n_neighbors, novelty=True, contamination=float(c), metric=self.metric).fit(Z)
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
        return self._lof_and_votes(Z)[0]

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

    param_rules = {"n_neighbors": Int(1), "contamination": CONTAMINATION_OR_AUTO, "metric": OneOf(LOF_METRICS), "standardize": Bool()}

    def _min_samples(self) -> int:
        return self.n_neighbors + 1

    def _min_samples_reason(self) -> str:
        return f"n_neighbors={self.n_neighbors} plus one"

    def _fit(self, Z: np.ndarray) -> None:
        self.train_X_ = Z
        contamination = self.contamination if self.contamination == "auto" else float(self.contamination)
        self.lof_ = LocalOutlierFactor(n_neighbors=self.n_neighbors, novelty=True, contamination=contamination, metric=self.metric).fit(Z)

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

    param_rules = {"n_neighbors": Int(1), "standardize": Bool()}

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
            d = 1.0 - U[start : start + step] @ self.train_unit_.T
            np.clip(d, 0.0, 2.0, out=d)
            nearest = np.sort(np.partition(d, k - 1, axis=1)[:, :k], axis=1)
            out[start : start + step] = nearest.mean(axis=1)
        return out
