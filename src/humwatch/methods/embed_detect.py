"""Method ``embed-detect``: a backbone's embeddings into an anomaly detector (the study's LOF rows).

The backbone (``ast``, ``resnext101_32x8d``, ``features``, ...; pretrained, local or random
weights) embeds every clip (batched, cached on disk by content: :mod:`humwatch.embed`); the
detector (``lof-vote`` as the study, ``lof``, ``knn``, ``mahalanobis``, ``gmm``, ``iforest``:
:mod:`humwatch.detectors`) is fitted on the normal training embeddings and scores new ones. With
``lof-vote`` the scores come with a second reading, the vote count (``readings(...)["votes"]``,
the study's literal majority vote). ``per_section``, ``source_centres`` and ``normalize`` fit one
detector per machine id / section for domain shift (:mod:`humwatch.sections`).

Saved as ``detector.safetensors`` (the detector's arrays) and ``method.json`` holding the
detector's settings and the backbone's identity; loading rebuilds the backbone from the same
weights and refuses any other (``weights=`` says where they are now; their content must match).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from humwatch.errors import ConfigError
from humwatch.methods.base import BackboneSettings, Context, saved_precision
from humwatch.methods.embedding import DetectorSettings, EmbeddingMethod
from humwatch.settings import Int, setting


@dataclass
class EmbedDetectSettings(BackboneSettings, DetectorSettings):
    where: ClassVar[str] = "embed-detect"
    batch_size: int = setting(8, Int(1), "clips per forward pass")


def backbone_record(bb) -> dict:
    """What a saved method keeps of its backbone, to refuse other weights when it is loaded."""
    return {
        "name": bb.name,
        "embedding_dim": bb.embedding_dim,
        "cache_key": bb.cache_key,
        "weights_description": bb.weights.describe(),
        "random_init": bb.weights.random_init,
        "precision": bb.precision,
    }


def check_backbone(directory: Path, bb, saved: dict) -> None:
    """Refuse a rebuilt backbone whose size or weights differ from the saved record."""
    try:
        want_dim, want_key = int(saved["embedding_dim"]), str(saved["cache_key"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{directory}: saved backbone record unusable ({e})") from None
    if bb.embedding_dim != want_dim:
        raise ConfigError(f"{directory}: backbone {bb.name} gives {bb.embedding_dim}-d embeddings, the detector was fitted on {want_dim}-d")
    if bb.cache_key != want_key:
        raise ConfigError(
            f"{directory}: the backbone weights ({bb.weights.describe()}) are not the ones "
            f"it was fitted with ({saved.get('weights_description', '?')})"
        )


def backbone_info(bb) -> dict:
    return {
        "weights": bb.weights.describe(),
        "weights_source": bb.weights.source,
        "random_init": bb.weights.random_init,
        "embedding_dim": bb.embedding_dim,
        "precision": bb.precision,
    }


WEIGHT_FREE = {"backbone": "features", "detector": "knn-ldn", "standardize": True}
"""What a monitor uses when no pretrained weights are here (:func:`monitor_defaults`): kNN over every
normal clip with local density normalisation (``knn-ldn``, Mahalanobis-whitened), chosen over one
Gaussian in docs/methods.md ("A default for mixed conditions")."""


def monitor_defaults(given: dict) -> tuple[dict, str | None]:
    """``embed-detect``'s settings for a monitor whose user named no backbone and no weights: the
    study's AST when its weights can be loaded here (a local copy, the Hugging Face cache, or the hub
    when online), else the weight-free ``features`` backbone with ``knn-ldn`` on standardised
    statistics (never a random network; it ties ``mahalanobis`` on the built-in data and, unlike one
    Gaussian, does not flag the few clips of a rarely recorded condition: docs/methods.md). Returns (default settings, the line that says so or None)."""
    if given.get("backbone") is not None or given.get("weights") is not None:
        return {}, None
    from humwatch.models.ast import DEFAULT_WEIGHTS
    from humwatch.models.weights import resolve_weights

    try:
        resolve_weights("default", DEFAULT_WEIGHTS)
        return {}, None
    except ConfigError:
        return dict(WEIGHT_FREE), (
            "no pretrained AST weights here (offline and no local copy): using the weight-free "
            "features backbone (per-band log-mel statistics) with knn-ldn instead of a random "
            "network; --backbone ast --weights DIR uses AST"
        )


class EmbedDetectMethod(EmbeddingMethod):
    name = "embed-detect"
    Settings = EmbedDetectSettings

    def __init__(self, settings, context=None, title=""):
        super().__init__(settings, context, title)
        self.backbone_ = None

    @property
    def label(self) -> str:
        return f"{self.settings.backbone}+{self.settings.detector}"

    @property
    def embedding_key(self) -> str:
        return self.settings.backbone

    def _embed(self, clips):
        if self.backbone_ is None:
            self.backbone_ = self.context.backbone(self.settings)
        return self._kept(
            self.runtime.engine.embed(
                clips, self.backbone_, cache_dir=self.runtime.cache_dir, batch_size=self.settings.batch_size, reader=self.reader
            )
        )

    def export_network(self) -> dict:
        bb = self.backbone_
        return {"module": bb.module, "frontend": bb.frontend, "output": "embedding", "batch_size": self.settings.batch_size}

    def info(self) -> dict:
        return {} if self.backbone_ is None else {**backbone_info(self.backbone_), **self.detector_info()}

    # -- saving --------------------------------------------------------------------------------------
    def _save(self, directory: Path) -> dict:
        return {**self._save_detector(directory), "backbone": backbone_record(self.backbone_)}

    @classmethod
    def _load(cls, directory: Path, settings, context: Context, state: dict, doc: dict, weights: str | None = None):
        from dataclasses import replace

        scorer = cls._load_detector(directory, state, settings, context.seed)
        settings = saved_precision(settings, state.get("backbone"))
        m = cls(replace(settings, weights=weights) if weights else settings, context)
        m.backbone_ = context.backbone(m.settings)
        check_backbone(directory, m.backbone_, state.get("backbone") or {})
        if scorer.n_features_in_ != m.backbone_.embedding_dim:
            raise ConfigError(
                f"{directory}: backbone {settings.backbone} gives {m.backbone_.embedding_dim}-d embeddings, "
                f"the detector was fitted on {scorer.n_features_in_}-d"
            )
        m.scorer_ = scorer
        return m
