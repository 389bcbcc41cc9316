"""Method ``finetune``: the study's supervised rows (a backbone with the study's head, trained on
normal and anomalous clips; :mod:`humwatch.finetune`).

Fits on the training clips of both labels, reports on the validation clips, and scores a clip by
the head's probability that it is anomalous (so the scores come with a natural threshold, 0.5).
Every fit prints its trainable parameter count. Saved as ``backbone/``, ``head.safetensors`` and
``finetune.json`` (a folder :func:`humwatch.finetune.load_finetuned` reads on its own) plus
``method.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from humwatch.finetune import HeadTraining
from humwatch.methods.base import BackboneSettings, Context, Method, scores_at


@dataclass
class FinetuneMethodSettings(BackboneSettings, HeadTraining):
    """The backbone (name, weights, precision, architecture) and :class:`~humwatch.finetune.HeadTraining`;
    the seed is the run's."""

    where: ClassVar[str] = "finetune"


class FinetuneMethod(Method):
    name = "finetune"
    Settings = FinetuneMethodSettings
    supervised = True
    natural_threshold = 0.5
    trains_network = True

    def __init__(self, settings, context=None, title=""):
        super().__init__(settings, context, title)
        self.scorer_ = None
        self.report_: dict = {}

    @property
    def label(self) -> str:
        return f"{self.settings.backbone}+finetune"

    def training_settings(self, precision: str):
        """The training settings, in ``precision`` (the backbone's resolved one: ``auto`` is never saved)."""
        return self.settings.training(precision=precision, seed=self.context.seed)

    def _fit(self, clips, val):
        from humwatch.finetune import finetune
        from humwatch.models.weights import RANDOM_INIT_BANNER
        from humwatch.progress import console

        backbone = self.context.backbone(self.settings, shared=False)  # its weights are trained in place
        if backbone.weights.random_init:
            console.print(f"[bold red]{self.settings.backbone}: {RANDOM_INIT_BANNER}[/]")
        res = finetune(
            backbone,
            clips,
            self.training_settings(backbone.precision),
            val=val,
            reader=self.reader,
            description=f"{self.title}: finetune {self.settings.backbone}",
        )
        console.print(f"{self.title}: {res.trainable_text()}")
        self.scorer_ = res.scorer
        self.report_ = res.report()
        return res.n_train

    def _score(self, clips):
        kept, prob = self.scorer_.score_clips(sorted(clips, key=lambda c: (c.path, c.start)), self.reader, f"{self.title}: test")
        return {"score": scores_at(clips, kept, prob)}

    def min_fit_clips(self) -> int:
        return 2  # one of each label

    def far_scores(self):
        """The synthetic recordings of :meth:`Method.far_scores`, and the head's probability for
        embeddings 1,000 units out along every axis direction (all up, all down, alternating)."""
        import numpy as np
        import torch

        d = self.scorer_.backbone.embedding_dim
        alt = np.where(np.arange(d) % 2 == 0, 1.0, -1.0)
        far = torch.tensor(np.stack([np.ones(d), -np.ones(d), alt, -alt]) * 1e3, dtype=torch.float32)
        with torch.no_grad():
            head = torch.sigmoid(self.scorer_.head.to("cpu")(far).squeeze(-1)).double().numpy()
        self.scorer_.head.to(self.scorer_.device)
        return np.concatenate([super().far_scores(), head])

    def info(self) -> dict:
        if self.scorer_ is None:
            return {}
        i = self.scorer_.info
        return {
            "weights": i.get("base_weights", ""),
            "weights_source": i.get("base_weights_source", ""),
            "random_init": bool(i.get("random_init", False)),
            "embedding_dim": int(self.scorer_.backbone.embedding_dim),
            "precision": self.scorer_.settings.precision,
            "training": self.report_,
        }

    def export_network(self) -> dict:
        return {"module": self.scorer_.model, "frontend": self.scorer_.frontend, "output": "logit"}

    def _save(self, directory: Path) -> dict:
        from humwatch.finetune import save_finetuned

        save_finetuned(self.scorer_, directory)
        return {}

    @classmethod
    def _load(cls, directory: Path, settings, context: Context, state: dict, doc: dict, **overrides):
        from humwatch.errors import ConfigError
        from humwatch.finetune import load_finetuned

        if overrides.get("weights") is not None:
            raise ConfigError("--weights does not apply to a fine-tuned model: its weights are in the folder")
        m = cls(settings, context)
        m.scorer_ = load_finetuned(directory, device=context.device, checked=True)
        m.report_ = dict(m.scorer_.info.get("training") or {})
        return m
