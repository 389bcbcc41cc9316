"""Method ``idnet``: an ID network trained from scratch on the user's own machines, then kNN.

The strongest published systems for this task need no outside weights (STgram-MFN: Liu et al.,
ICASSP 2022; Noisy-ArcMix: Choi et al., 2023): a small network (:mod:`humwatch.models.idnet`,
STgram-MFN, 1.3 M parameters) learns to tell the machines of the training clips apart (machine
type + id or section, DCASE attributes where the names carry them) with an angular-margin loss
and mixup (:mod:`humwatch.idtrain`), on 2-s crops, with early stopping on held-out normal clips.
A clip is then scored by

* ``knn`` (default): the cosine distance to the nearest training embeddings of its own section,
  through the shared detector settings (``detector: knn``, ``n_neighbors: 1``, ``per_section``,
  k-means source centres for domain shift, per-section normalisation: :mod:`humwatch.sections`);
* ``classifier``: ``-log p(its section | clip)``, the classifier's own score.

Both come in every run (the other one as the reading ``classifier`` or ``knn``); ``score``
picks the main one. ``scope: run`` (default) trains one network on every training clip of the
run (all machine types, as STgram-MFN does; a run's groups share it), ``scope: group`` one per
training group. One machine alone (one class) gets outlier exposure (``outlier_exposure``): the
other machines of the run, else generated ones, and says which.

Saved as ``backbone/`` (the trained network: ``create_backbone("idnet", weights=DIR)`` loads it),
``head.safetensors`` (class centres), ``detector.safetensors`` and ``method.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from humwatch.errors import ConfigError, one_line
from humwatch.idtrain import IdObjective, MarginHead
from humwatch.methods.base import precision_setting, saved_precision
from humwatch.methods.embedding import DetectorSettings, EmbeddingMethod, _detector_names
from humwatch.sections import section_of
from humwatch.settings import Bool, Int, Mapping, OneOf, Optional, setting

SCORES = ("knn", "classifier")


@dataclass
class IdScoring(DetectorSettings):
    """How an ID-trained network's clips are scored (``idnet``, ``aux-finetune``)."""

    detector: str = setting("knn", OneOf(_detector_names), "anomaly detector on the learned embeddings")
    detector_params: dict = setting({"n_neighbors": 1}, Mapping(), "detector hyper-parameters")
    per_section: bool = setting(True, Bool(), "kNN memory per machine id / section")
    normalize: bool = setting(True, Bool(), "standardise scores per section by cross-fitted normal scores")
    score: str = setting("knn", OneOf(SCORES), "knn (distance to the section's normal embeddings) or classifier")
    scope: str = setting("run", OneOf(("run", "group")), "one network for every clip of the run, or one per group")

    def training_key(self) -> str:
        """What decides the trained network (for sharing it between a run's groups): every setting but
        how its embeddings are scored (the fields of :class:`IdScoring` other than ``scope``)."""
        scoring = {f.name for f in fields(IdScoring)} - {"scope"}
        keep = {k: v for k, v in self.to_dict().items() if k not in scoring}
        return json.dumps(keep, sort_keys=True, default=str)


@dataclass
class IdNetSettings(IdScoring, IdObjective):
    where: ClassVar[str] = "idnet"
    epochs: int = setting(30, Int(1), "most epochs (early stopping ends sooner)")
    batch_size: int = setting(32, Int(2), "crops per training step")
    epoch_crops: int = setting(512, Int(1), "random 2-s crops per epoch (so training time does not grow with the data)")
    backbone_config: dict | None = setting(
        None, Optional(Mapping()), "network overrides (width, crop_frames, waveform_branch, embedding_dim, n_mels)"
    )
    precision: str = precision_setting()  # of embedding; training is fp32


@dataclass
class IdModel:
    backbone: object
    head: MarginHead
    classes: list
    report: dict


class IdNetMethod(EmbeddingMethod):
    name = "idnet"
    Settings = IdNetSettings
    embedding_name = "idnet"
    trains_network = True

    def __init__(self, settings, context=None, title=""):
        super().__init__(settings, context, title)
        self.model_: IdModel | None = None
        self.sections_: list[str] = []

    @property
    def label(self) -> str:
        return f"idnet+{self.settings.score}"

    # -- training --------------------------------------------------------------------------------
    def _train_embeddings(self, clips, val):
        s, ctx = self.settings, self.context
        self.sections_ = sorted({section_of(c) for c in clips})
        if s.scope == "run" and ctx.run_clips:
            key = (self.name, s.training_key())
            if key not in ctx.shared:
                own = [c for c in ctx.run_clips if c.split == "train" and not c.is_anomalous]
                own = sorted({c.key: c for c in [*own, *clips]}.values(), key=lambda c: (c.path, c.start))
                ctx.shared[key] = self._train(
                    own,
                    [c for c in ctx.run_clips if c.split == "val"] + list(val),
                    [],
                    f"{self.name} (all {len({c.machine_type for c in own})} machine types)",
                )
            self.model_ = ctx.shared[key]
        else:
            pool = [c for c in ctx.run_clips if c.split == "train"]
            self.model_ = self._train(clips, val, pool, f"{self.title}: {self.name}")
        return self._embed(clips)

    def _train(self, own, val, pool, description) -> IdModel:
        import torch

        from humwatch.finetune import _Inputs
        from humwatch.idtrain import id_data, say_outliers, train_id
        from humwatch.models import create_backbone

        s, ctx = self.settings, self.context
        if self.audio.seconds is None:
            raise ConfigError("idnet: clips must have one length (audio seconds), not each file's own")
        data = id_data(own, val, pool, s, cache_dir=self.runtime.cache_dir, audio=self.audio, seed=ctx.seed, progress=self.runtime.progress)
        try:
            say_outliers(description, data.outliers)
            bb = create_backbone("idnet", weights="none", precision=s.precision, config=s.backbone_config, seed=ctx.seed, device=ctx.device)
            net, dev = bb.module, bb.device  # the device resolved ("auto" -> cpu or cuda)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed)
                head = MarginHead(bb.embedding_dim, len(data.classes), s.loss, s.margin, s.scale, s.sub_centers)
                head.to(dev)
                modules = torch.nn.ModuleDict({"net": net, "head": head})
                inputs = _Inputs(bb.frontend, self.reader, memo=True)
                rng = np.random.default_rng(ctx.seed)
                n_epoch = s.epoch_crops  # a fixed budget: small sets are cycled, large ones sampled
                crop = net.crop_samples

                def train_batches():
                    order = np.concatenate([rng.permutation(len(data.train)) for _ in range(math.ceil(n_epoch / len(data.train)))])
                    for i in range(0, n_epoch, s.batch_size):
                        got = inputs.batch([data.train[j] for j in order[i : i + s.batch_size]])
                        if got is not None:
                            kept, waves = got
                            starts = rng.integers(0, max(1, waves.shape[1] - crop + 1), size=len(kept))
                            x = np.stack([_crop(w, a, crop) for w, a in zip(waves, starts)])
                            yield torch.from_numpy(x).to(dev), data.y(kept).to(dev)

                def val_batches():
                    for i in range(0, len(data.held_out), s.batch_size):
                        got = inputs.batch(data.held_out[i : i + s.batch_size])
                        if got is not None:
                            yield torch.from_numpy(got[1]).to(dev), data.y(got[0]).to(dev)

                report = train_id(
                    modules,
                    net.crop_embedding,
                    head,
                    [{"params": list(modules.parameters())}],
                    train_batches,
                    math.ceil(n_epoch / s.batch_size),
                    s.epochs,
                    s,
                    val_batches=val_batches if data.held_out else None,
                    val_embed=net,
                    seed=ctx.seed,
                    progress=self.runtime.progress,
                    description=description,
                )
        finally:
            if data.cleanup:
                data.cleanup()
        report.n_train, report.n_held_out = len(data.train), len(data.held_out)
        report.n_classes, report.classes, report.outlier_exposure = len(data.classes), data.classes, data.outliers
        trained_from_scratch(
            bb, f"idnet trained from scratch on {len(data.train)} clips of {len(data.classes)} classes, {report.best_epoch} epoch(s)"
        )
        return IdModel(bb, head, data.classes, report.to_dict())

    # -- scoring ---------------------------------------------------------------------------------
    def _embed(self, clips):
        from humwatch.embed import embed_clips

        # in this process whatever the engine: the network was trained here (the Ray engine rebuilds a
        # backbone from its recipe in each worker), and its embeddings are not cached (new each training)
        return self._kept(embed_clips(clips, self.model_.backbone, cache_dir=None, batch_size=8, reader=self.reader))

    def _score(self, clips):
        from humwatch.idtrain import classifier_scores
        from humwatch.methods.base import scores_at

        emb = self._embed(clips)
        knn = self.scorer_.readings(emb.X, emb.clips)["score"]
        sections = [section_of(c) for c in emb.clips]
        cls = classifier_scores(self.model_.head, emb.X, sections, self.model_.classes, self.sections_)
        main, other = (knn, cls) if self.settings.score == "knn" else (cls, knn)
        other_name = "classifier" if self.settings.score == "knn" else "knn"
        return {"score": scores_at(clips, emb.clips, main), other_name: scores_at(clips, emb.clips, other)}

    def info(self) -> dict:
        if self.model_ is None:
            return {}
        rep = self.model_.report
        return {
            "weights": self.model_.backbone.weights.describe(),
            "random_init": False,
            "embedding_dim": self.model_.backbone.embedding_dim,
            "precision": self.model_.backbone.precision,
            "outlier_exposure": rep.get("outlier_exposure"),
            "training": rep,
            **self.detector_info(),
        }

    def export_network(self) -> dict:
        if self.settings.score != "knn":
            raise ConfigError(
                f"{self.name} with score={self.settings.score} cannot be exported to ONNX (the classifier's score is not in the graph); score=knn can"
            )
        bb = self.model_.backbone
        return {"module": bb.module, "frontend": bb.frontend, "output": "embedding", "batch_size": 8, "detector_state": "scorer"}

    # -- saving ----------------------------------------------------------------------------------
    def _save(self, directory: Path) -> dict:
        return {
            "scorer": self._save_detector(directory),
            **save_id_model(self.model_, directory),
            "own_sections": self.sections_,
            "precision": self.model_.backbone.precision,
        }

    @classmethod
    def _load_backbone(cls, directory: Path, settings, context):
        from humwatch.models import create_backbone

        return create_backbone("idnet", weights=str(directory / "backbone"), precision=settings.precision, device=context.device)

    @classmethod
    def _load(cls, directory: Path, settings, context, state: dict, doc: dict, **overrides):
        if overrides.get("weights") is not None:
            raise ConfigError(f"--weights does not apply to a trained {cls.name}: its weights are in the folder")
        settings = saved_precision(settings, state)  # what "auto" chose when it was fitted
        m = cls(settings, context)
        bb = cls._load_backbone(directory, settings, context)
        m.model_ = load_id_model(directory, state, bb)
        m.scorer_ = cls._load_detector(directory, state.get("scorer") or {}, settings, context.seed)
        m.sections_ = [str(x) for x in state.get("own_sections") or []]
        if m.scorer_.n_features_in_ != bb.embedding_dim:
            raise ConfigError(
                f"{directory}: the detector was fitted on {m.scorer_.n_features_in_}-d embeddings, the network gives {bb.embedding_dim}-d"
            )
        return m


def trained_from_scratch(backbone, note: str) -> None:
    """Record a network trained from its random start: new weights identity (for caches and the
    saved folder's check) and a description that does not call trained weights RANDOM INIT."""
    from dataclasses import replace

    backbone.mark_trained(note)
    backbone.weights = replace(backbone.weights, source="trained", description=note)


def _crop(wave: np.ndarray, start: int, n: int) -> np.ndarray:
    out = wave[start : start + n]
    return out if len(out) == n else np.pad(out, (0, n - len(out)))


def save_id_model(model: IdModel, directory: Path) -> dict:
    """``backbone/`` + ``head.safetensors``; returns the JSON state that goes with them."""
    from safetensors.torch import save_file

    from humwatch.io import atomic_path

    model.backbone.save(directory / "backbone")
    h = model.head
    with atomic_path(directory / "head.safetensors", suffix=".safetensors") as tmp:
        save_file({"weight": h.weight.detach().cpu().contiguous(), "scale": h.scale.detach().cpu().reshape(1)}, str(tmp))
    return {
        "classes": list(model.classes),
        "training": model.report,
        "head": {"loss": h.kind, "margin": h.margin, "sub_centers": h.k, "n_classes": h.n_classes},
    }


def load_id_model(directory: Path, state: dict, backbone) -> IdModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        spec = state["head"]
        classes = [str(c) for c in state["classes"]]
        head = MarginHead(
            backbone.embedding_dim, int(spec["n_classes"]), str(spec["loss"]), float(spec["margin"]), 30.0, int(spec["sub_centers"])
        )
        t = load_file(str(directory / "head.safetensors"))
        head.weight.data.copy_(t["weight"])
        head.scale.fill_(float(t["scale"][0]))
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as e:
        raise ConfigError(f"{directory}: saved class centres unusable ({one_line(e)})") from None
    if len(classes) != head.n_classes:
        raise ConfigError(f"{directory}: {len(classes)} class names for {head.n_classes} classes")
    return IdModel(backbone, head.to(backbone.device).eval(), classes, dict(state.get("training") or {}))
