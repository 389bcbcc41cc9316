"""Method ``embed-detect``: a backbone's embeddings into an anomaly detector (the study's LOF rows).

The backbone (``ast``, ``resnext101_32x8d``, ...; pretrained, local or random weights) embeds every
clip (batched, cached on disk by content: :mod:`asdkit.embed`); the detector (``lof-vote`` as the
study, ``lof``, ``knn``, ``mahalanobis``, ``gmm``, ``iforest``: :mod:`asdkit.detectors`) is fitted on
the normal training embeddings and scores new ones. With ``lof-vote`` the scores come with a second
reading, the vote count (``readings(...)["votes"]``, the study's literal majority vote).

Saved as ``detector.safetensors`` (the detector's arrays) and ``method.json`` holding the
detector's settings and the backbone's identity; loading rebuilds the backbone from the same
weights and refuses any other (``weights=`` says where they are now; their content must match).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from asdkit.errors import ConfigError
from asdkit.methods.base import BackboneSettings, Context, Method, scores_at
from asdkit.settings import Bool, Int, Mapping, OneOf, setting


def _detector_names() -> list[str]:
    from asdkit.detectors import list_detectors

    return list_detectors()


@dataclass
class EmbedDetectSettings(BackboneSettings):
    where: ClassVar[str] = "embed-detect"
    detector: str = setting("lof-vote", OneOf(_detector_names), "anomaly detector on the embeddings")
    detector_params: dict = setting({}, Mapping(), "detector hyper-parameters (e.g. {\"n_neighbors\": 4})")
    standardize: bool = setting(False, Bool(), "standardise embeddings before the detector")
    batch_size: int = setting(8, Int(1), "clips per forward pass")

    def _check(self) -> None:
        self.make_detector()  # unknown detector parameters or bad values fail now

    def make_detector(self):
        from asdkit.detectors import create_detector

        return create_detector(self.detector, standardize=self.standardize, **self.detector_params)


class EmbedDetectMethod(Method):
    name = "embed-detect"
    Settings = EmbedDetectSettings

    def __init__(self, settings, context=None, title=""):
        super().__init__(settings, context, title)
        self.backbone_ = None
        self.detector_ = None
        self._seen: list = []

    @property
    def label(self) -> str:
        return f"{self.settings.backbone}+{self.settings.detector}"

    def _embed(self, clips):
        if self.backbone_ is None:
            self.backbone_ = self.context.backbone(self.settings)
        emb = self.context.engine.embed(clips, self.backbone_, cache_dir=self.context.cache_dir,
                                        batch_size=self.settings.batch_size, reader=self.reader)
        self._seen.append(emb)
        return emb

    def _fit(self, clips, val):
        from asdkit.errors import DatasetError

        emb = self._embed(clips)
        if len(emb) == 0:
            raise DatasetError(f"{self.title}: no normal training clips could be read")
        self.detector_ = self.settings.make_detector().fit(emb.X)
        return len(emb)

    def _score(self, clips):
        emb = self._embed(clips)
        out = {"score": scores_at(clips, emb.clips, self.detector_.score_samples(emb.X) if len(emb) else [])}
        if hasattr(self.detector_, "votes"):
            out["votes"] = scores_at(clips, emb.clips, self.detector_.votes(emb.X) if len(emb) else [])
        return out

    def min_fit_clips(self) -> int:
        return self.settings.make_detector()._min_samples()

    def far_scores(self) -> np.ndarray:
        """The detector's scores of embeddings 1,000 spreads away from the training embeddings'
        mean, in three directions (all up, all down, alternating)."""
        X = self._seen[0].X.astype(np.float64)
        mu, sd = X.mean(axis=0), X.std(axis=0) + 1e-6
        alt = np.where(np.arange(X.shape[1]) % 2 == 0, 1.0, -1.0)
        return self.detector_.score_samples(np.stack([mu + 1e3 * sd, mu - 1e3 * sd, mu + 1e3 * sd * alt]))

    def embeddings(self) -> dict:
        from asdkit.embed import EmbeddingSet

        if not self._seen:
            return {}
        return {self.settings.backbone: EmbeddingSet.concat(self._seen, self.backbone_.embedding_dim)}

    def export_network(self) -> dict:
        bb = self.backbone_
        return {"module": bb.module, "frontend": bb.frontend, "output": "embedding", "batch_size": self.settings.batch_size}

    def info(self) -> dict:
        bb = self.backbone_
        if bb is None:
            return {}
        return {"weights": bb.weights.describe(), "weights_source": bb.weights.source,
                "random_init": bb.weights.random_init, "embedding_dim": bb.embedding_dim, "precision": bb.precision}

    # -- saving --------------------------------------------------------------------------------------
    def _save(self, directory: Path) -> dict:
        from safetensors.numpy import save_file

        from asdkit.io import atomic_path

        meta, arrays = self.detector_.state()
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        with atomic_path(directory / "detector.safetensors", suffix=".safetensors") as tmp:
            save_file(arrays, str(tmp))
        bb = self.backbone_
        return {
            "detector": meta,
            "arrays": {k: list(v.shape) for k, v in arrays.items()},
            "backbone": {"name": bb.name, "embedding_dim": bb.embedding_dim, "cache_key": bb.cache_key,
                         "weights_description": bb.weights.describe(), "random_init": bb.weights.random_init,
                         "precision": bb.precision},
        }

    @classmethod
    def _load(cls, directory: Path, settings, context: Context, state: dict, doc: dict, weights: str | None = None):
        from dataclasses import replace

        detector = load_detector(directory, state)
        try:
            saved = state["backbone"]
            want_dim, want_key = int(saved["embedding_dim"]), str(saved["cache_key"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{directory}: saved backbone unusable ({e})") from None
        if settings.precision == "auto" and saved.get("precision") in ("fp32", "bf16"):
            # the precision "auto" chose when fitting, wherever the monitor is loaded: the same embeddings
            settings = replace(settings, precision=saved["precision"])
        m = cls(replace(settings, weights=weights) if weights else settings, context)
        m.backbone_ = context.backbone(m.settings)
        if m.backbone_.embedding_dim != want_dim or detector.n_features_in_ != want_dim:
            raise ConfigError(f"{directory}: backbone {settings.backbone} gives {m.backbone_.embedding_dim}-d embeddings, "
                              f"the detector was fitted on {want_dim}-d")
        if m.backbone_.cache_key != want_key:
            raise ConfigError(f"{directory}: the backbone weights ({m.backbone_.weights.describe()}) are not the ones "
                              f"it was fitted with ({saved.get('weights_description', '?')})")
        m.detector_ = detector
        return m


def load_detector(directory: Path, state: dict):
    """The fitted detector of a saved ``embed-detect`` folder (``detector.safetensors`` and the
    method state's ``detector``/``arrays``); needs no backbone (exported monitors use it too)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from asdkit.detectors import detector_from_state

    path = Path(directory) / "detector.safetensors"
    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e})") from None
    shapes = {k: list(v.shape) for k, v in arrays.items()}
    if shapes != state.get("arrays"):
        raise ConfigError(f"{path}: array shapes {shapes} differ from method.json {state.get('arrays')}")
    try:
        return detector_from_state(state["detector"], arrays)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{directory}: saved detector unusable ({e})") from None
