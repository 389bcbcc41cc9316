"""``knn-ldn``: k nearest neighbours over every normal embedding, with local density normalisation,
optionally on short segments of a clip whose scores are pooled by max or GeM.

Why this detector (the strongest DCASE 2022-2024 systems, e.g. Wilkinghoff's kNN on every normal
clip, and the DCASE 2023 baseline's selective Mahalanobis): a plain folder of healthy recordings
often mixes many clips of one condition (a speed, a load, a microphone place) and a few of another,
with no labels. One Gaussian (``mahalanobis``) models the mix as one blob: the few clips of the rare
condition sit in its tail, and new clips of that condition look anomalous. A nearest-neighbour
detector keeps **every** normal embedding as memory, so a new clip of the rare condition finds its
own kind nearby. Its distance is divided by the **local density** of the neighbours it found (how
far those training clips are from their own nearest training clips), so a tight cluster (a
condition recorded often) and a loose one (a condition recorded a few times) give normal clips
scores near 1 alike; an anomaly is far from its neighbours *relative to their spread*.

Score of a row x with memory T (the training rows)::

    d_k(x)   = mean distance from x to its n_neighbors nearest rows t_1..t_k of T
    r(t)     = mean distance from t to its density_neighbors nearest *other* rows of T
    score(x) = d_k(x) / mean(r(t_1), ..., r(t_k))

``metric``: ``mahalanobis`` (default: euclidean after whitening with the Ledoit-Wolf shrunk
covariance of the memory, so noisy and redundant dimensions do not drown the rest, as in the
``mahalanobis`` detector), ``euclidean`` or ``cosine``.

**Segments** (``segments`` > 1): each row of X is that many equal-length embeddings of consecutive
parts of one clip, laid end to end (the ``features-segments`` backbone gives them). Every training
segment is memory; a test clip's segments are scored as above (a training segment's density is
measured against *other clips'* segments, since neighbouring parts of one recording are nearly
copies) and pooled per clip by ``pool``: ``max``, ``gem`` (generalised mean ``(mean s^p)^(1/p)``
with ``gem_p``, between the mean and the max) or ``mean``. A 200 ms click changes one segment:
max or GeM pooling keeps it, the mean over twenty segments averages most of it away. Segment rows
are standardised together (one mean and spread per feature over all training segments).

Why not scikit-learn's :class:`~sklearn.neighbors.LocalOutlierFactor`: LOF's reachability
distances need k >= the size of the rare condition's cluster to be stable and cannot exclude a
segment's own clip from its density; the score here is twenty lines of numpy.
Saved as the training matrix (refitted deterministically on load). No built-in decision.
"""

from __future__ import annotations

import numpy as np
from sklearn.covariance import ledoit_wolf_shrinkage

from humwatch.detectors.base import _RefitFromTraining
from humwatch.errors import ConfigError
from humwatch.settings import Bool, Int, OneOf, Real

METRICS = ("mahalanobis", "euclidean", "cosine")
POOLS = ("max", "gem", "mean")
_CHUNK_ELEMENTS = 4_000_000  # distance-matrix block size (about 32 MB of float64)


def _pairwise(A: np.ndarray, B: np.ndarray, metric: str) -> np.ndarray:
    """Distances between rows of A and rows of B (A, B already whitened for mahalanobis)."""
    if metric == "cosine":
        na = np.linalg.norm(A, axis=1, keepdims=True)
        nb = np.linalg.norm(B, axis=1, keepdims=True)
        Ua = np.divide(A, na, out=np.zeros_like(A), where=na > 0)
        Ub = np.divide(B, nb, out=np.zeros_like(B), where=nb > 0)
        return np.clip(1.0 - Ua @ Ub.T, 0.0, 2.0)
    sq = (A * A).sum(axis=1)[:, None] + (B * B).sum(axis=1)[None, :] - 2.0 * A @ B.T
    return np.sqrt(np.maximum(sq, 0.0))


def _nearest(A: np.ndarray, B: np.ndarray, k: int, metric: str, exclude: tuple | None = None):
    """(distances, indices) of the k nearest rows of B for every row of A, chunked.
    ``exclude=(group_of_A, group_of_B)``: rows of B in the same group as the A row are skipped."""
    k = min(k, B.shape[0])
    step = max(1, _CHUNK_ELEMENTS // max(1, B.shape[0]))
    dist = np.empty((A.shape[0], k))
    idx = np.empty((A.shape[0], k), dtype=np.int64)
    for s in range(0, A.shape[0], step):
        d = _pairwise(A[s : s + step], B, metric)
        if exclude is not None:
            d[exclude[0][s : s + step, None] == exclude[1][None, :]] = np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        dist[s : s + step] = np.take_along_axis(d, part, axis=1)
        idx[s : s + step] = part
    return dist, idx


def pool_scores(S: np.ndarray, pool: str, p: float = 3.0) -> np.ndarray:
    """Per-row pooling of segment scores ``S`` (clips x segments, all >= 0)."""
    if pool == "max":
        return S.max(axis=1)
    if pool == "mean":
        return S.mean(axis=1)
    return np.mean(S**p, axis=1) ** (1.0 / p)


class KnnLdnDetector(_RefitFromTraining):
    """``knn-ldn``: kNN over every normal embedding with local density normalisation, on whole
    clips or on segments pooled by max/GeM (see :mod:`humwatch.detectors.local`)."""

    name = "knn-ldn"

    def __init__(self, n_neighbors=1, density_neighbors=3, metric="mahalanobis", segments=1, pool="max", gem_p=3.0, standardize=False):
        self.n_neighbors = n_neighbors
        self.density_neighbors = density_neighbors
        self.metric = metric
        self.segments = segments
        self.pool = pool
        self.gem_p = gem_p
        self.standardize = standardize

    param_rules = {
        "n_neighbors": Int(1),
        "density_neighbors": Int(1),
        "metric": OneOf(METRICS),
        "segments": Int(1),
        "pool": OneOf(POOLS),
        "gem_p": Real(1.0, 100.0, text=False),
        "standardize": Bool(),
    }

    def _min_samples(self) -> int:
        return 2  # a density needs one other clip

    def _min_samples_reason(self) -> str:
        return "one clip and another to measure its local density against"

    def _rows(self, Z: np.ndarray, what: str) -> np.ndarray:
        s = int(self.segments)
        if Z.shape[1] % s:
            raise ConfigError(f"detector '{self.name}' {what}: {Z.shape[1]} features do not split into segments={s} equal parts")
        return Z.reshape(Z.shape[0] * s, Z.shape[1] // s)

    def _project(self, R: np.ndarray) -> np.ndarray:
        R = (R - self.row_mean_) / self.row_scale_
        return R @ self.whiten_ if self.whiten_ is not None else R

    def _fit(self, Z: np.ndarray) -> None:
        self.train_X_ = Z
        R = self._rows(Z, "fit")
        if self.segments > 1:
            self.row_mean_, sd = R.mean(axis=0), R.std(axis=0)
            self.row_scale_ = np.where(sd > 1e-12, sd, 1.0)
        else:
            self.row_mean_, self.row_scale_ = np.zeros(R.shape[1]), np.ones(R.shape[1])
        self.whiten_ = None
        if self.metric == "mahalanobis":
            self.whiten_ = ledoit_wolf_whitening((R - self.row_mean_) / self.row_scale_)
        self.memory_ = self._project(R)
        self.clip_of_ = np.repeat(np.arange(Z.shape[0]), int(self.segments))
        kd = min(int(self.density_neighbors), (Z.shape[0] - 1) * int(self.segments))  # rows of other clips
        d, _ = _nearest(self.memory_, self.memory_, kd, self.metric, exclude=(self.clip_of_, self.clip_of_))
        r = d.mean(axis=1)
        finite = r[np.isfinite(r) & (r > 0)]
        floor = 1e-9 * (float(np.median(finite)) if finite.size else 1.0) + 1e-300
        self.density_ = np.where(np.isfinite(r), np.maximum(r, floor), floor)

    def _segment_scores(self, Z: np.ndarray) -> np.ndarray:
        Q = self._project(self._rows(Z, "anomaly_score"))
        d, idx = _nearest(Q, self.memory_, int(self.n_neighbors), self.metric)
        s = d.mean(axis=1) / self.density_[idx].mean(axis=1)
        return s.reshape(Z.shape[0], int(self.segments))

    def _score(self, Z: np.ndarray) -> np.ndarray:
        S = self._segment_scores(Z)
        return S[:, 0] if self.segments == 1 else pool_scores(S, self.pool, float(self.gem_p))


def ledoit_wolf_whitening(X: np.ndarray) -> np.ndarray:
    """A symmetric ``W`` with ``W @ W.T`` the inverse of the Ledoit-Wolf shrunk covariance of ``X``
    (what :class:`sklearn.covariance.LedoitWolf` fits, its pseudo-inverse where it is singular).

    The shrunk covariance is ``(1 - delta) S + delta mu I`` (``S`` the empirical covariance, ``mu``
    its mean eigenvalue), so its eigenvectors are those of ``S``: a thin SVD of the centred ``X``
    gives them, and every direction outside the rows' span has eigenvalue ``delta mu``. That is one
    ``n x d`` SVD instead of the two ``d x d`` eigendecompositions of ``LedoitWolf().precision_`` and
    a whitening of it (with 640 features and a few dozen clips, most of a monitor's fit time).
    Why not sklearn alone: it gives the precision, not a square root of it.
    """
    Xc = X - X.mean(axis=0)
    n, d = Xc.shape
    delta = float(ledoit_wolf_shrinkage(Xc, assume_centered=True))
    mu = float((Xc * Xc).sum()) / (n * d)
    _, sv, Vt = np.linalg.svd(Xc, full_matrices=False)
    lam = (1.0 - delta) * sv**2 / n + delta * mu
    cut = np.finfo(np.float64).eps * max(d, n) * (float(lam.max()) if lam.size else 0.0)
    a = np.where(lam > cut, 1.0 / np.sqrt(np.where(lam > cut, lam, 1.0)), 0.0)
    b = 1.0 / np.sqrt(delta * mu) if delta * mu > cut else 0.0
    return b * np.eye(d) + (Vt.T * (a - b)) @ Vt
