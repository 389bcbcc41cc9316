"""Supervised fine-tuning: the study's ``cnn-supervised`` and ``ast-supervised`` rows of Table III.

The study puts a small head on a pretrained backbone's embedding and fine-tunes the top of the
backbone with it, as a binary normal/anomalous classifier:

* head: ``Linear(embedding_dim, 256) > Dropout(0.1) > ReLU > Linear(256, 1)`` (one logit);
* loss: binary cross-entropy on the logit (``BCEWithLogitsLoss``), *plain*: the study does not
  weight the classes, so no ``pos_weight`` is used although MIMII has fewer anomalous clips;
* optimiser: Adam, learning rate ``lr = 1e-3`` for the head;
* layer-wise rates: the backbone's blocks (:meth:`Backbone.blocks`, lowest to top) are taken from
  the top; the top trainable block learns at ``lr / 10``, the one below at ``lr / 100`` and so on
  (each block a tenth of the block above it), for ``trainable_blocks`` blocks (2 by default); every
  lower block is frozen (``requires_grad = False``). What a block is has two readings
  (``block_unit``): ``stage`` takes a whole timm stage, so ResNeXt101 trains ``layer4`` at
  ``lr/10`` and ``layer3`` at ``lr/100`` (84 M of its 86.7 M parameters); ``bottleneck`` takes one
  Bottleneck module, so it trains ``layer4.2`` ("bottleneck layer 3") at ``lr/10`` and ``layer4.1``
  ("bottleneck layer 2") at ``lr/100``, the reading that fits the study's argument that few
  parameters are trained (the default of ``configs/study.yaml``). AST: the top
  ``trainable_blocks`` transformer layers either way, the patch embedding and lower layers frozen.
  Every fine-tuning run prints and reports its trainable parameter count;
* the final LayerNorm of AST (a block named ``*norm`` at the top of ``blocks()``) is **not** its own
  group: it only normalises the top layer's output, so it is trained together with the top
  transformer layer, at the same ``lr / 10`` (see :func:`build_param_groups`);
* frozen blocks run in inference mode during training (BatchNorm statistics and dropout as
  pretrained), so a frozen block stays exactly the pretrained block;
* 1 epoch, batch size 8, trained on the TRAIN clips with both labels; the validation clips are
  scored once after training (AUC and loss, reported); the TEST clips are scored once at the end.
  A clip's anomaly score is the sigmoid of the logit (the probability of "anomalous").

Everything is deterministic on CPU for a given seed: the head's initialisation, the batch order
(a seeded ``torch.Generator``) and dropout (the global torch seed is set before training).

Example::

    >>> from humwatch.finetune import FinetuneSettings, finetune, load_finetuned
    >>> result = finetune(backbone, train_clips, FinetuneSettings(block_unit="bottleneck"), val=val_clips)
    >>> result.scorer.save("model/")                       # backbone + head.safetensors + JSON
    >>> load_finetuned("model/").score_files(["a.wav"])   # probabilities = anomaly scores
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from humwatch.audio import AudioSettings
from humwatch.data.clips import Clip
from humwatch.errors import ConfigError, DatasetError, HumwatchError, one_line
from humwatch.progress import bar
from humwatch.reader import ClipReader
from humwatch.settings import Int, OneOf, Real, Settings, setting

FORMAT = "humwatch.finetuned/1"
PRECISIONS = ("fp32", "bf16")
BLOCK_UNITS = ("stage", "bottleneck")
FEATURE_MEMORY_BYTES = 1 << 30
"""With more than one epoch, frontend outputs are kept in memory up to this size (then recomputed)."""

_TOP_NORM = re.compile(r"(^|[._])(layer_?norm|norm|ln_f|fc_norm|final_norm|ln_post)$", re.IGNORECASE)


# ------------------------------------------------------------------------------------ settings


@dataclass
class HeadTraining(Settings):
    """How the head and the top of the backbone are trained (the study's settings by default).

    ``trainable_blocks``: how many of the backbone's top blocks are fine-tuned (each at a tenth of
    the rate of the block above it, the top one at ``lr / 10``); 0 trains the head alone.
    ``block_unit``: what a block is (see the module docstring): ``stage`` or ``bottleneck``.
    """

    where: ClassVar[str] = "finetune"
    epochs: int = setting(1, Int(1), "fine-tuning epochs (the study: 1)")
    lr: float = setting(1e-3, Real(0, open_low=True), "head learning rate; the top block gets lr/10, the next lr/100 ...")
    batch_size: int = setting(8, Int(1), "clips per training step")
    trainable_blocks: int = setting(2, Int(0), "backbone blocks fine-tuned from the top (the rest frozen)")
    block_unit: str = setting("stage", OneOf(BLOCK_UNITS), "a block is a whole ResNeXt stage, or one bottleneck module")
    head_hidden: int = setting(256, Int(1), "width of the head's hidden layer")
    dropout: float = setting(0.1, Real(0, 1, open_high=True), "dropout in the head")

    def training(self, **extra) -> "FinetuneSettings":
        """These settings as :class:`FinetuneSettings` (``extra``: its precision and seed)."""
        return FinetuneSettings(**{f.name: getattr(self, f.name) for f in fields(HeadTraining)}, **extra).validate()


@dataclass
class FinetuneSettings(HeadTraining):
    """:class:`HeadTraining` plus the precision (``fp32``, or ``bf16`` CPU autocast) and the seed."""

    precision: str = setting("fp32", OneOf(PRECISIONS), "fp32, or bf16 autocast")
    seed: int = setting(0, Int(0), "seed of the head's initialisation, the batch order and dropout")


# -------------------------------------------------------------------------------- head, groups


def make_head(embedding_dim: int, hidden: int = 256, dropout: float = 0.1) -> nn.Sequential:
    """The study's head: ``Linear(embedding_dim, hidden) > Dropout(dropout) > ReLU > Linear(hidden, 1)``."""
    return nn.Sequential(nn.Linear(embedding_dim, hidden), nn.Dropout(dropout), nn.ReLU(), nn.Linear(hidden, 1))


def backbone_blocks(backbone, unit: str = "stage") -> list[tuple[str, list[nn.Parameter]]]:
    """The backbone's blocks (lowest to top) as fine-tuning counts them (``unit``: see
    :attr:`HeadTraining.block_unit`).

    Blocks without parameters are dropped, and a final normalisation block (``layernorm``,
    ``norm``, ...; AST's final LayerNorm) is merged into the block below it, named
    ``"<block>+<norm>"``: it is trained with the top layer at the same rate.
    """
    blocks = [(str(n), [p for p in ps]) for n, ps in backbone.blocks(unit)]
    blocks = [(n, ps) for n, ps in blocks if ps]
    while len(blocks) >= 2 and _TOP_NORM.search(blocks[-1][0]):
        (low_name, low), (top_name, top) = blocks[-2], blocks[-1]
        blocks[-2:] = [(f"{low_name}+{top_name}", low + top)]
    return blocks


def build_param_groups(backbone, head: nn.Module, settings: HeadTraining) -> list[dict]:
    """The optimiser's parameter groups, and the freezing that goes with them.

    Returns ``[{"name": "head", "params": [...], "lr": lr}, {"name": <top block>, "lr": lr/10},
    {"name": <next block>, "lr": lr/100}, ...]`` for ``settings.trainable_blocks`` backbone blocks
    (see :func:`backbone_blocks`). Every other backbone parameter gets ``requires_grad = False``
    and is in no group; the trainable ones get ``requires_grad = True``.
    """
    settings.validate()
    blocks = backbone_blocks(backbone, settings.block_unit)
    n = settings.trainable_blocks
    if n > len(blocks):
        names = ", ".join(b for b, _ in blocks)
        raise ConfigError(f"finetune: trainable_blocks={n} but {backbone.name} has {len(blocks)} blocks ({names})")
    for p in backbone.module.parameters():
        p.requires_grad_(False)
    groups = [{"name": "head", "params": list(head.parameters()), "lr": settings.lr}]
    seen = {id(p) for p in groups[0]["params"]}
    for depth, (name, params) in enumerate(reversed(blocks[len(blocks) - n :] if n else []), start=1):
        unique = []
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
                p.requires_grad_(True)
        if unique:
            groups.append({"name": name, "params": unique, "lr": settings.lr / 10**depth})
    for p in head.parameters():
        p.requires_grad_(True)
    return groups


class _Classifier(nn.Module):
    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(-1)


def _train_mode(model: nn.Module) -> None:
    """Train mode, except that every submodule whose parameters are all frozen runs in eval mode."""
    model.train()
    for m in model.modules():
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            m.eval()


def _autocast(precision: str, device: str = "cpu"):
    return torch.autocast(str(device).split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16")


def _device(backbone) -> str:
    return str(getattr(backbone, "device", "cpu") or "cpu")


# ------------------------------------------------------------------------------------- scorer


class FinetunedScorer:
    """A fine-tuned backbone + head that scores clips: sigmoid probability of "anomalous".

    ``score_batch(x)`` takes a batch of frontend outputs; ``score_clips(clips, reader)`` reads clips
    through a :class:`~humwatch.reader.ClipReader`; ``score_files(paths)`` reads audio files (``audio``
    settings: mono mix, 16 kHz, 10 s; an unusable file raises) and returns one float64 score per
    file; ``save(dir)`` / :func:`load_finetuned` round-trip without pickle. ``info`` holds what the
    model was trained from (base weights, RANDOM INIT, settings, training report).
    """

    def __init__(self, backbone, head: nn.Module, settings: FinetuneSettings, audio: AudioSettings | None = None, info: dict | None = None):
        self.backbone = backbone
        self.head = head
        self.settings = settings
        self.audio = audio or AudioSettings()
        self.info = dict(info or {})
        self.device = _device(backbone)
        self.model = _Classifier(backbone.module, head).to(self.device)
        self.model.eval()

    @property
    def frontend(self):
        return self.backbone.frontend

    @torch.no_grad()
    def score_batch(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Probabilities for a batch of frontend outputs (float64, shape (B,))."""
        self.model.eval()
        t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
        with _autocast(self.settings.precision, self.device):
            logits = self.model(t.to(self.device))
        return torch.sigmoid(logits.float()).double().cpu().numpy()

    def score_clips(
        self, clips: Sequence[Clip], reader: ClipReader | None = None, description: str = "scoring"
    ) -> tuple[list[Clip], np.ndarray]:
        """(clips scored, their probabilities); ``reader`` (default: this model's audio settings,
        errors raised) applies the bad-file policy and counts what it skipped."""
        reader = reader or ClipReader(self.audio, progress=False)
        kept, scores = [], []
        for cl, xs in reader.batches(clips, self.settings.batch_size, description, self.frontend):
            kept += cl
            scores.append(self.score_batch(np.stack(xs)))
        return kept, (np.concatenate(scores) if scores else np.empty(0, dtype=np.float64))

    def score_files(self, paths: Iterable[str | Path]) -> np.ndarray:
        """One anomaly score (probability) per audio file; an unusable file raises AudioError."""
        clips = [Clip(str(p), "clip", "", 0) for p in paths]
        return self.score_clips(clips)[1]

    def save(self, directory: str | Path) -> Path:
        return save_finetuned(self, directory)


def save_finetuned(scorer: FinetunedScorer, directory: str | Path) -> Path:
    """Write ``directory/backbone/`` (Backbone.save), ``head.safetensors`` and ``finetune.json``.

    No pickle anywhere; :func:`load_finetuned` gives a scorer with identical scores.
    """
    from safetensors.torch import save_file

    from humwatch.io import atomic_path, write_json, write_manifest

    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ConfigError(f"{d}: exists and is not a folder")
    d.mkdir(parents=True, exist_ok=True)
    scorer.backbone.save(d / "backbone")
    state = {k: v.detach().float().contiguous().clone() for k, v in scorer.head.state_dict().items()}
    with atomic_path(d / "head.safetensors", suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    write_json(
        d / "finetune.json",
        {
            "format": FORMAT,
            "backbone": scorer.backbone.name,
            "embedding_dim": int(scorer.backbone.embedding_dim),
            "settings": asdict(scorer.settings),
            "audio": asdict(scorer.audio),
            "info": scorer.info,
        },
    )
    write_manifest(d)  # sealed: load_finetuned refuses a changed, missing or added file
    return d


def load_finetuned(directory: str | Path, precision: str | None = None, device: str = "cpu", checked: bool = False) -> FinetunedScorer:
    """Load a model written by :func:`save_finetuned` (``precision`` overrides the saved one), after
    checking its manifest (unless the caller did: ``checked``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from humwatch.io import check_manifest, read_json_doc
    from humwatch.models import create_backbone

    d = Path(directory)
    meta_path = d / "finetune.json"
    if not checked and meta_path.is_file():
        check_manifest(d)
    meta = read_json_doc(meta_path, FORMAT, {"settings": dict, "backbone": str}, missing=f"{d}: not a fine-tuned model (no finetune.json)")
    try:
        settings = FinetuneSettings.from_dict(meta["settings"], where=str(meta_path))
        audio = AudioSettings(**meta.get("audio", {}))
        name = meta["backbone"]
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{meta_path}: missing or bad field ({e})") from None
    if precision is not None:
        settings.precision = precision
        settings.validate()
    backbone = create_backbone(name, weights=str(d / "backbone"), precision=settings.precision, device=device)
    head = make_head(backbone.embedding_dim, settings.head_hidden, settings.dropout)
    try:
        state = load_file(str(d / "head.safetensors"))
        head.load_state_dict(state)
    except (OSError, SafetensorError, RuntimeError) as e:
        raise ConfigError(f"{d / 'head.safetensors'}: not a head for this model ({one_line(e)})") from None
    return FinetunedScorer(backbone, head, settings, audio, info=meta.get("info") or {})


# ----------------------------------------------------------------------------------- training


class _Inputs:
    """Frontend outputs of training clips, read through the reader (kept in memory up to
    :data:`FEATURE_MEMORY_BYTES` when the clips are seen more than once)."""

    def __init__(self, frontend, reader: ClipReader, memo: bool):
        self.frontend = frontend
        self.reader = reader
        self.memo = memo
        self.store: dict[str, np.ndarray] = {}
        self.bytes = 0

    def batch(self, clips: Sequence[Clip]) -> tuple[list[Clip], np.ndarray] | None:
        kept, xs = [], []
        for c in clips:
            x = self.store.get(c.key)
            if x is None:
                x = self.reader.read(c, self.frontend)
                if x is None:
                    continue
                if self.memo and self.bytes + x.nbytes <= FEATURE_MEMORY_BYTES:
                    self.store[c.key] = x
                    self.bytes += x.nbytes
            kept.append(c)
            xs.append(x)
        return (kept, np.stack(xs)) if xs else None


@dataclass
class FinetuneResult:
    """The fine-tuned scorer and what training reported."""

    scorer: FinetunedScorer
    train_loss: list[float] = field(default_factory=list)
    val: dict = field(default_factory=dict)
    n_train: int = 0
    n_train_anomalous: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    seconds: float = 0.0

    def report(self) -> dict:
        return {
            "n_train": self.n_train,
            "n_train_anomalous": self.n_train_anomalous,
            "train_loss": [round(v, 6) for v in self.train_loss],
            "val": self.val,
            "param_groups": self.groups,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "seconds": round(self.seconds, 2),
        }

    def trainable_text(self) -> str:
        """``"1.23 M of 86.74 M parameters trainable (head, layer4.2, layer4.1)"``."""
        names = ", ".join(g["name"] for g in self.groups)
        return (
            f"{self.trainable_params / 1e6:.2f} M of {self.total_params / 1e6:.2f} M parameters trainable ({names})"
            if self.total_params >= 1e5
            else f"{self.trainable_params:,} of {self.total_params:,} parameters trainable ({names})"
        )


def optimizer_step(opt, loss: torch.Tensor, description: str) -> float:
    """Back-propagate ``loss`` and step ``opt`` (its gradients cleared first by the caller); a loss that
    is not finite stops training with one line. Returns the loss."""
    if not torch.isfinite(loss):
        raise HumwatchError(f"{description}: the training loss became {loss.item()} (try a lower lr)")
    loss.backward()
    opt.step()
    return loss.item()


def _train(
    model: nn.Module,
    groups: list[dict],
    train: list[Clip],
    inputs: _Inputs,
    s: FinetuneSettings,
    dev: str,
    progress: bool,
    description: str,
) -> list[float]:
    """The training loop: Adam over ``groups``, plain BCE on the logit; returns the mean loss per epoch."""
    opt = torch.optim.Adam(groups, lr=s.lr)
    loss_fn = nn.BCEWithLogitsLoss()  # plain BCE as the study: no pos_weight for the rarer anomalies
    gen = torch.Generator().manual_seed(s.seed)
    history: list[float] = []
    n = len(train)
    n_batches = math.ceil(n / s.batch_size)
    with bar(f"{description} ({n} clips)", s.epochs * n_batches, progress) as b:
        for epoch in range(s.epochs):
            _train_mode(model)
            order = torch.randperm(n, generator=gen).tolist()
            total, count = 0.0, 0
            for i in range(0, n, s.batch_size):
                got = inputs.batch([train[j] for j in order[i : i + s.batch_size]])
                if got is not None:
                    cl, x = got
                    y = torch.tensor([float(c.label) for c in cl], device=dev)
                    opt.zero_grad(set_to_none=True)
                    with _autocast(s.precision, dev):
                        logits = model(torch.from_numpy(x).to(dev))
                    total += optimizer_step(opt, loss_fn(logits.float(), y), description) * len(cl)
                    count += len(cl)
                b.advance(1, description=f"{description} epoch {epoch + 1} loss {total / max(count, 1):.3f}")
            if count == 0:
                raise DatasetError(f"{description}: no training clip could be read")
            history.append(total / count)
    return history


def finetune(
    backbone,
    train: Sequence[Clip],
    settings: FinetuneSettings | None = None,
    *,
    val: Sequence[Clip] = (),
    audio: AudioSettings | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    description: str = "finetune",
    reader: ClipReader | None = None,
) -> FinetuneResult:
    """Fine-tune ``backbone`` + a new head on ``train`` (normal and anomalous clips), then report
    loss and AUC on ``val``. The backbone's module is changed in place (it becomes the scorer's).
    Clips are read by ``reader`` (default: one from ``audio``, ``skip_bad`` and ``progress``)."""
    from humwatch.metrics import auc as roc_auc

    s = (settings or FinetuneSettings()).validate()
    reader = reader or ClipReader(audio, "skip" if skip_bad else "error", progress)
    progress = reader.progress
    n_skipped = len(reader.skipped)
    train = sorted(train, key=lambda c: (c.path, c.start))
    labels = {int(c.label) for c in train}
    if labels != {0, 1}:
        have = "only anomalous" if labels == {1} else "only normal" if labels == {0} else "no"
        raise DatasetError(f"{description}: supervised fine-tuning needs normal and anomalous training clips, got {have} clips")
    t0 = time.time()
    base = {
        "base_weights": backbone.weights.describe(),
        "base_weights_source": getattr(backbone.weights, "source", ""),
        "random_init": bool(backbone.weights.random_init),
    }
    dev = _device(backbone)
    inputs = _Inputs(backbone.frontend, reader, memo=s.epochs > 1)
    with torch.random.fork_rng(devices=[]):  # seeded here, the caller's random state left alone
        torch.manual_seed(s.seed)
        head = make_head(backbone.embedding_dim, s.head_hidden, s.dropout).to(dev)
        groups = build_param_groups(backbone, head, s)
        model = _Classifier(backbone.module, head)
        history = _train(model, groups, train, inputs, s, dev, progress, description)
    model.eval()
    for p in model.parameters():  # back to torch's default, so gradient-based explanations still work
        p.requires_grad_(True)
    used = [c for c in train if not reader.is_bad(c)]
    if hasattr(backbone, "mark_trained"):  # new weights: new cache key, and saved as "fine-tuned from ..."
        backbone.mark_trained(f"fine-tuned by humwatch on {len(used)} clips ({s.epochs} epoch(s), seed {s.seed})")
    info = {**base, "machine_types": sorted({c.machine_type for c in train}), "machine_ids": sorted({c.machine_id for c in train})}
    scorer = FinetunedScorer(backbone, head, s, reader.audio, info)
    group_sizes = [{"name": g["name"], "lr": g["lr"], "n_params": int(sum(p.numel() for p in g["params"]))} for g in groups]
    result = FinetuneResult(
        scorer,
        train_loss=history,
        n_train=len(used),
        n_train_anomalous=sum(c.label for c in used),
        groups=group_sizes,
        trainable_params=sum(g["n_params"] for g in group_sizes),
        total_params=int(sum(p.numel() for p in model.parameters())),
    )
    if val:
        kept, prob = scorer.score_clips(sorted(val, key=lambda c: (c.path, c.start)), reader, f"{description}: validation")
        y = np.array([c.label for c in kept], dtype=np.float64)
        p = np.clip(prob, 1e-7, 1 - 1e-7)
        loss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(y) else float("nan")
        result.val = {"n": len(kept), "n_anomalous": int(y.sum()), "auc": roc_auc(y.astype(int), prob), "loss": loss}
    result.skipped = reader.skipped[n_skipped:]
    result.seconds = time.time() - t0
    scorer.info["training"] = result.report()
    return result
