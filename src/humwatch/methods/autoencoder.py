"""Method ``autoencoder``: the MIMII baseline (the study's first row).

Trains :class:`~humwatch.models.autoencoder.AutoencoderDetector` on the context vectors (``ae``
frontend: 309 x 320 per clip) of the normal training clips; a clip's score is its mean squared
reconstruction error. Saved as the trained network (a backbone folder: ``model.safetensors`` +
``humwatch_backbone.json``, loadable on its own with ``create_backbone("autoencoder", weights=DIR)``)
plus ``method.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from humwatch.methods.base import Context, Method, scores_at
from humwatch.models.autoencoder import AutoencoderSettings

SCORE_BATCH = 64
"""Clips whose features are held in memory at once while scoring."""


class AutoencoderMethod(Method):
    name = "autoencoder"
    Settings = AutoencoderSettings
    keeps_models = True
    trains_network = True

    def __init__(self, settings, context=None, title=""):
        super().__init__(settings, context, title)
        self.detector_ = None

    @property
    def frontend(self):
        from humwatch.features import get_frontend

        return get_frontend("ae")

    def _fit(self, clips, val):
        from humwatch.models.autoencoder import AutoencoderDetector

        s = self.settings
        kept, X = self.runtime.engine.read_all(self.reader, clips, f"{self.title}: train features", self.frontend)
        if not kept:
            from humwatch.errors import DatasetError

            raise DatasetError(f"{self.title}: no normal training clips could be read")
        self.detector_ = AutoencoderDetector(s.epochs, s.lr, s.batch_size, self.context.seed)
        self.detector_.fit(X, progress=self.runtime.progress, description=f"{self.title}: autoencoder")
        V = np.concatenate(X).astype(np.float64)
        self._spread = (V.mean(axis=0), V.std(axis=0) + 1e-6)
        return len(kept)

    def far_scores(self) -> np.ndarray:
        """Reconstruction errors of context vectors 1,000 spreads away from the training vectors' mean."""
        mu, sd = self._spread
        alt = np.where(np.arange(mu.size) % 2 == 0, 1.0, -1.0)
        far = [np.repeat((mu + k * 1e3 * sd)[None].astype(np.float32), 8, axis=0) for k in (1.0, -1.0, alt)]
        return self.detector_.score_clips(far)

    def _score(self, clips):
        kept, scores = [], []
        for k, X in self.runtime.engine.batches(self.reader, clips, SCORE_BATCH, f"{self.title}: test features", self.frontend):
            kept += k
            scores.append(self.detector_.score_clips(X))
        return {"score": scores_at(clips, kept, np.concatenate(scores) if scores else [])}

    def info(self) -> dict:
        return {"weights": "trained from scratch on normal training clips", "random_init": False}

    def export_network(self) -> dict:
        return {"module": self.detector_.model_, "frontend": self.frontend, "output": "reconstruction"}

    def backbone(self):
        """The trained network as a backbone (its embedding: the clip's mean 8-d code)."""
        from humwatch.models.autoencoder import detector_backbone

        return detector_backbone(
            self.detector_, f"MIMII autoencoder trained on {self.n_train_} normal {self.title} clips, {self.settings.epochs} epochs"
        )

    def _save(self, directory: Path) -> dict:
        self.backbone().save(directory)
        return {"loss_history": [round(v, 6) for v in self.detector_.loss_history_]}

    @classmethod
    def _load(cls, directory: Path, settings, context: Context, state: dict, doc: dict, **overrides):
        from humwatch.models import create_backbone
        from humwatch.models.autoencoder import AutoencoderDetector

        bb = create_backbone("autoencoder", weights=str(directory))
        m = cls(settings, context)
        m.detector_ = AutoencoderDetector(settings.epochs, settings.lr, settings.batch_size, context.seed)
        m.detector_.model_ = bb.module.autoencoder.eval()
        m.detector_.loss_history_ = list(state.get("loss_history") or [])
        return m
