"""Detectors per section, for domain shift: :class:`SectionDetector`.

A detector on embeddings (any of :mod:`humwatch.detectors`) is fitted either once for all the
clips it is given (the study: one per machine type) or once per **section** (a machine id:
``id_00`` in MIMII and DCASE 2020, ``section_00`` in DCASE 2021-2024), and a test clip is scored
by its own section's detector. Two ideas of the top DCASE 2022-2023 systems come with it (Wilkinghoff,
"Design choices for learning embeddings from auxiliary tasks for domain generalization in
anomalous sound detection", ICASSP 2023; the DCASE 2023 Task 2 baseline's "selective Mahalanobis"):

* **k-means centres of the source clips plus every target clip.** DCASE 2021-2024 sections hold
  about a thousand *source*-domain training clips and ten *target*-domain ones (another speed,
  another microphone, another factory). A nearest-neighbour detector on all of them sees the
  target domain as almost empty, so normal target clips look anomalous. Replacing the source
  clips by ``source_centres`` k-means centres (:class:`sklearn.cluster.KMeans`, seeded) and
  keeping every target clip gives both domains the same weight; the test clip's domain need not
  be known (it usually is not, in the evaluation sets). Only sections that hold target clips
  and more source clips than centres are reduced; the others keep every clip.
* **Per-section score normalisation** (``normalize``): each section's scores are standardised
  by the mean and standard deviation of held-out normal scores of that section, so that the
  sections' scores share one scale (the machine type's pooled AUC, and one monitor threshold,
  mean something). The held-out scores are cross-fitted: the section's training clips in
  ``folds`` parts, each scored by a detector fitted on the others (memory rebuilt each time).

A clip whose section was never seen (a monitor scoring files it knows nothing about) gets the
lowest normalised score over all sections: the distance to the nearest known machine.

Saved without pickle: :meth:`state` gives a JSON-able dict and named arrays; one detector
without normalisation is saved exactly as that detector's own state (the form ``embed-detect``
has always written).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from humwatch.errors import ConfigError

ALL = "*"
"""The key of the one detector when there are no sections."""
FOLDS = 5


def section_of(clip: Any) -> str:
    """``fan/id_00``: a clip's machine type and id (or section) together."""
    return f"{clip.machine_type}/{clip.machine_id}"


@dataclass
class _Section:
    detector: Any
    mean: float = 0.0
    std: float = 1.0
    normalized: bool = False
    n_train: int = 0
    n_memory: int = 0


class SectionDetector:
    """One detector per section (or one for all), with k-means source memory and score
    normalisation; see the module docstring. ``make_detector()`` returns a new unfitted detector."""

    def __init__(
        self, make_detector: Callable[[], Any], per_section: bool = False, source_centres: int = 0, normalize: bool = False, seed: int = 0
    ):
        self.make_detector = make_detector
        self.per_section = bool(per_section)
        self.source_centres = int(source_centres)
        self.normalize = bool(normalize)
        self.seed = int(seed)
        self.sections_: dict[str, _Section] = {}
        self.n_features_in_ = 0

    # -- fitting ---------------------------------------------------------------------------------
    def _key(self, clip) -> str:
        return section_of(clip) if self.per_section else ALL

    def memory(self, X: np.ndarray, domains: Sequence[str]) -> np.ndarray:
        """The rows a section's detector is fitted on: k-means centres of the source rows plus
        every target row, when the section has target rows and more source rows than centres;
        else every row."""
        dom = np.asarray([str(d) for d in domains])
        src, tgt = X[dom != "target"], X[dom == "target"]
        k = self.source_centres
        if k < 1 or len(tgt) == 0 or len(src) <= k:
            return X
        from sklearn.cluster import KMeans

        centres = KMeans(n_clusters=k, n_init=4, random_state=self.seed).fit(src).cluster_centers_
        return np.concatenate([centres.astype(X.dtype), tgt])

    def _fit_one(self, X: np.ndarray, domains: Sequence[str]):
        return self.make_detector().fit(self.memory(X, domains))

    def _reference(self, X: np.ndarray, domains: Sequence[str]) -> np.ndarray | None:
        """Cross-fitted scores of the section's own clips (None when it is too small to split)."""
        n = len(X)
        folds = min(FOLDS, n)
        if folds < 2:
            return None
        order = np.random.default_rng(self.seed).permutation(n)
        dom = np.asarray(list(domains), dtype=object)
        out = np.empty(n)
        for f in range(folds):
            held = order[f::folds]
            rest = np.setdiff1d(order, held)
            try:
                det = self._fit_one(X[rest], dom[rest])
            except ConfigError:  # too few clips left for the detector (e.g. LOF's neighbours)
                return None
            out[held] = det.anomaly_score(X[held])
        return out

    def fit(self, X: np.ndarray, clips: Sequence[Any]) -> "SectionDetector":
        X = np.asarray(X, dtype=np.float32)
        if len(X) != len(clips):
            raise ConfigError(f"section detector: {len(X)} embeddings for {len(clips)} clips")
        keys = np.array([self._key(c) for c in clips], dtype=object)
        domains = np.array([getattr(c, "domain", "") or "" for c in clips], dtype=object)
        self.sections_ = {}
        for key in sorted(set(keys)):
            sel = keys == key
            sec = _Section(self._fit_one(X[sel], domains[sel]), n_train=int(sel.sum()))
            sec.n_memory = int(getattr(sec.detector, "n_samples_fit_", sec.n_train))
            if self.normalize:
                ref = self._reference(X[sel], domains[sel])
                if ref is not None and np.isfinite(ref).all():
                    sec.mean = float(ref.mean())
                    sec.std = float(max(ref.std(), 1e-9 * max(1.0, abs(sec.mean))))
                    sec.normalized = True
            self.sections_[key] = sec
        self.n_features_in_ = int(X.shape[1])
        return self

    def heldout_scores(self, X: np.ndarray, clips: Sequence[Any], X_held: np.ndarray, held: Sequence[Any]) -> np.ndarray:
        """``fit(X, clips).anomaly_score(X_held, held)`` (cross-fitting: a monitor's folds); one
        detector without normalisation goes through the detector's own
        :meth:`~humwatch.detectors.Detector.heldout_scores` (the same numbers, sometimes cheaper)."""
        X = np.asarray(X, dtype=np.float32)
        keys = {self._key(c) for c in clips}
        if self.normalize or len(keys) != 1 or len(X) != len(clips):
            return self.fit(X, clips).anomaly_score(X_held, held)
        domains = [getattr(c, "domain", "") or "" for c in clips]
        det = self.make_detector()
        return det.heldout_scores(self.memory(X, domains), np.asarray(X_held, dtype=np.float32))

    # -- scoring ---------------------------------------------------------------------------------
    def readings(self, X: np.ndarray, clips: Sequence[Any]) -> dict[str, np.ndarray]:
        """``{"score": ...}`` (+ ``"votes"`` when the detector counts votes), one value per row."""
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        out = {"score": np.full(n, np.nan)}
        has_votes = all(hasattr(s.detector, "votes") for s in self.sections_.values())
        if has_votes:
            out["votes"] = np.full(n, np.nan)
        if n == 0:
            return out
        keys = np.array([self._key(c) for c in clips], dtype=object)
        unknown = ~np.isin(keys, list(self.sections_))
        for key, sec in self.sections_.items():
            sel = keys == key
            if sel.any():
                out["score"][sel] = self._normalized(sec, X[sel])
                if has_votes:
                    out["votes"][sel] = sec.detector.votes(X[sel])
        if unknown.any():  # a section never seen: the nearest known one
            Xu = X[unknown]
            out["score"][unknown] = np.min([self._normalized(s, Xu) for s in self.sections_.values()], axis=0)
            if has_votes:
                out["votes"][unknown] = np.min([s.detector.votes(Xu) for s in self.sections_.values()], axis=0)
        return out

    @staticmethod
    def _normalized(sec: _Section, X: np.ndarray) -> np.ndarray:
        return (sec.detector.anomaly_score(X) - sec.mean) / sec.std

    def anomaly_score(self, X: np.ndarray, clips: Sequence[Any]) -> np.ndarray:
        return self.readings(X, clips)["score"]

    def summary(self) -> dict:
        """What results should say: sections, memory sizes, whether each was normalised."""
        return {k: {"n_train": s.n_train, "n_memory": s.n_memory, "normalized": s.normalized} for k, s in self.sections_.items()}

    # -- saving ----------------------------------------------------------------------------------
    @property
    def plain(self) -> bool:
        """One detector, no normalisation: saved as that detector's own state."""
        return list(self.sections_) == [ALL] and not self.sections_[ALL].normalized

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        if self.plain:
            meta, arrays = self.sections_[ALL].detector.state()
            return {"detector": meta}, arrays
        sections, arrays = [], {}
        for i, (key, s) in enumerate(self.sections_.items()):
            meta, arr = s.detector.state()
            arrays.update({f"{i}:{k}": v for k, v in arr.items()})
            sections.append(
                {
                    "key": key,
                    "detector": meta,
                    "mean": s.mean,
                    "std": s.std,
                    "normalized": s.normalized,
                    "n_train": s.n_train,
                    "n_memory": s.n_memory,
                }
            )
        return {"sections": sections, "per_section": self.per_section}, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray], **settings) -> "SectionDetector":
        """Rebuild from :meth:`state` (``settings``: the constructor's, for the record)."""
        from humwatch.detectors import detector_from_state

        sd = cls(lambda: None, **settings)
        try:
            if "sections" not in meta:
                det = detector_from_state(meta["detector"], arrays)
                sd.sections_ = {ALL: _Section(det, n_train=int(det.n_samples_fit_), n_memory=int(det.n_samples_fit_))}
            else:
                sd.per_section = bool(meta.get("per_section", sd.per_section))
                for i, s in enumerate(meta["sections"]):
                    arr = {k.split(":", 1)[1]: v for k, v in arrays.items() if k.split(":", 1)[0] == str(i)}
                    sd.sections_[str(s["key"])] = _Section(
                        detector_from_state(s["detector"], arr),
                        float(s["mean"]),
                        float(s["std"]),
                        bool(s["normalized"]),
                        int(s["n_train"]),
                        int(s["n_memory"]),
                    )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ConfigError(f"saved section detectors unusable ({e})") from None
        dims = {int(s.detector.n_features_in_) for s in sd.sections_.values()}
        if len(dims) != 1:
            raise ConfigError(f"saved section detectors disagree on the embedding size ({sorted(dims)})")
        sd.n_features_in_ = dims.pop()
        return sd
