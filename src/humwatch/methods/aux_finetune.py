"""Method ``aux-finetune``: the ID task on a pretrained backbone's upper blocks, then kNN (the
study's future work: "fine-tuning on an auxiliary task to sharpen embeddings").

The study fine-tunes AST and ResNeXt with a binary normal/anomalous head, which needs anomalous
training clips. Here the top of the backbone learns the auxiliary ID task of :mod:`humwatch.idtrain`
instead (which machine, section and attributes a normal clip comes from; angular margin, mixup,
outlier exposure for one machine alone, early stopping on held-out normal clips), with the study's
block machinery (:func:`humwatch.finetune.build_param_groups`: the top ``trainable_blocks`` blocks
at lr/10, lr/100, ..., the rest frozen and in eval mode). A clip is then scored as ``idnet``
scores it: cosine kNN to its section's training embeddings, or the classifier's ``-log p``.

Every backbone works (``ast``, ``resnext101_32x8d``, tiny configs for tests); with random
weights it still runs and says RANDOM INIT. Saved as ``backbone/`` (the fine-tuned backbone),
``head.safetensors``, ``detector.safetensors`` and ``method.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from humwatch.finetune import BLOCK_UNITS
from humwatch.idtrain import IdObjective, MarginHead
from humwatch.methods.base import BackboneSettings
from humwatch.methods.idnet import IdModel, IdNetMethod, IdScoring
from humwatch.settings import Int, OneOf, setting


@dataclass
class AuxFinetuneSettings(BackboneSettings, IdScoring, IdObjective):
    where: ClassVar[str] = "aux-finetune"
    epochs: int = setting(2, Int(1), "most epochs (early stopping ends sooner)")
    batch_size: int = setting(8, Int(2), "clips per training step")
    trainable_blocks: int = setting(2, Int(0), "backbone blocks fine-tuned from the top (the rest frozen)")
    block_unit: str = setting("stage", OneOf(BLOCK_UNITS), "a block is a whole ResNeXt stage, or one bottleneck module")


class AuxFinetuneMethod(IdNetMethod):
    name = "aux-finetune"
    Settings = AuxFinetuneSettings

    @property
    def label(self) -> str:
        return f"{self.settings.backbone}+aux-finetune+{self.settings.score}"

    @property
    def embedding_key(self) -> str:
        return f"{self.settings.backbone}-aux"

    def _train(self, own, val, pool, description) -> IdModel:
        import torch

        from humwatch.finetune import HeadTraining, _Inputs, _train_mode, build_param_groups
        from humwatch.idtrain import id_data, say_outliers, train_id
        from humwatch.models.weights import RANDOM_INIT_BANNER
        from humwatch.progress import console

        s, ctx = self.settings, self.context
        data = id_data(own, val, pool, s, cache_dir=self.runtime.cache_dir, audio=self.audio, seed=ctx.seed, progress=self.runtime.progress)
        try:
            say_outliers(description, data.outliers)
            bb = ctx.backbone(s, shared=False)  # its weights are trained in place
            random_base = bb.weights.random_init
            if random_base:
                console.print(f"[bold red]{s.backbone}: {RANDOM_INIT_BANNER}[/]")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed)
                head = MarginHead(bb.embedding_dim, len(data.classes), s.loss, s.margin, s.scale, s.sub_centers).to(bb.device)
                groups = build_param_groups(bb, head, HeadTraining(lr=s.lr, trainable_blocks=s.trainable_blocks, block_unit=s.block_unit))
                modules = torch.nn.ModuleDict({"net": bb.module, "head": head})
                inputs = _Inputs(bb.frontend, self.reader, memo=s.epochs > 1)
                gen = torch.Generator().manual_seed(ctx.seed)

                def embed(x):
                    with bb.autocast():
                        return bb.module(x).float()

                def batches(clips, shuffle):
                    def it():
                        order = torch.randperm(len(clips), generator=gen).tolist() if shuffle else range(len(clips))
                        order = list(order)
                        for i in range(0, len(order), s.batch_size):
                            got = inputs.batch([clips[j] for j in order[i : i + s.batch_size]])
                            if got is not None:
                                yield torch.from_numpy(got[1]).to(bb.device), data.y(got[0]).to(bb.device)

                    return it

                report = train_id(
                    modules,
                    embed,
                    head,
                    groups,
                    batches(data.train, True),
                    math.ceil(len(data.train) / s.batch_size),
                    s.epochs,
                    s,
                    val_batches=batches(data.held_out, False) if data.held_out else None,
                    train_mode=lambda: _train_mode(modules),
                    seed=ctx.seed,
                    progress=self.runtime.progress,
                    description=description,
                )
        finally:
            if data.cleanup:
                data.cleanup()
        for p in bb.module.parameters():  # back to torch's default (explanations take gradients)
            p.requires_grad_(True)
        trainable = sum(p.numel() for g in groups for p in g["params"])
        total = sum(p.numel() for p in bb.module.parameters()) + sum(p.numel() for p in head.parameters())
        console.print(
            f"{description}: {trainable / 1e6:.2f} M of {total / 1e6:.2f} M parameters trainable ({', '.join(g['name'] for g in groups)})"
        )
        report.n_train, report.n_held_out = len(data.train), len(data.held_out)
        report.n_classes, report.classes, report.outlier_exposure = len(data.classes), data.classes, data.outliers
        bb.mark_trained(f"aux-finetuned (ID task) on {len(data.train)} clips of {len(data.classes)} classes, {report.best_epoch} epoch(s)")
        rep = {**report.to_dict(), "trainable_params": int(trainable), "total_params": int(total), "base_weights_random_init": random_base}
        return IdModel(bb, head, data.classes, rep)

    def info(self) -> dict:
        out = super().info()
        if out:
            out["random_init"] = bool(self.model_.report.get("base_weights_random_init"))
        return out

    @classmethod
    def _load_backbone(cls, directory: Path, settings, context):
        from humwatch.models import create_backbone

        return create_backbone(settings.backbone, weights=str(directory / "backbone"), precision=settings.precision, device=context.device)
