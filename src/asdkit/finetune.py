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
  lower block is frozen (``requires_grad = False``). ResNeXt101: ``layer4`` at ``lr/10``, ``layer3``
  at ``lr/100``, stem and ``layer1``-``layer2`` frozen. AST: the top ``trainable_blocks``
  transformer layers likewise, the patch embedding and lower layers frozen;
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

    >>> from asdkit.finetune import FinetuneSettings, finetune, load_finetuned
    >>> result = finetune(backbone, train_clips, FinetuneSettings(), val=val_clips)
    >>> result.scorer.save("model/")                       # backbone + head.safetensors + JSON
    >>> load_finetuned("model/").score_files(["a.wav"])   # probabilities = anomaly scores
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from asdkit.audio import AudioSettings, load_audio
from asdkit.data.clips import Clip
from asdkit.errors import AsdkitError, AudioError, ConfigError, DatasetError
from asdkit.progress import make_progress, progress_enabled

FORMAT = "asdkit.finetuned/1"
PRECISIONS = ("fp32", "bf16")
FEATURE_MEMORY_BYTES = 1 << 30
"""With more than one epoch, frontend outputs are kept in memory up to this size (then recomputed)."""

_TOP_NORM = re.compile(r"(^|[._])(layer_?norm|norm|ln_f|fc_norm|final_norm|ln_post)$", re.IGNORECASE)


# ------------------------------------------------------------------------------------ settings


@dataclass
class FinetuneSettings:
    """The study's fine-tuning settings (saved in the run's config.json and results.json).

    ``trainable_blocks``: how many of the backbone's top blocks are fine-tuned (each at a tenth of
    the rate of the block above it, the top one at ``lr / 10``); 0 trains the head alone.
    ``precision``: ``fp32``, or ``bf16`` for CPU autocast of the backbone and head.
    """

    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 8
    trainable_blocks: int = 2
    precision: str = "fp32"
    seed: int = 0
    head_hidden: int = 256
    dropout: float = 0.1

    def validate(self) -> "FinetuneSettings":
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("trainable_blocks", self.trainable_blocks, 0)
        _check_int("seed", self.seed, 0)
        _check_int("head_hidden", self.head_hidden, 1)
        if not _is_real(self.lr) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"finetune: lr must be a positive number, got {self.lr!r}")
        if not _is_real(self.dropout) or not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"finetune: dropout must be a number from 0 to below 1, got {self.dropout!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"finetune: precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        return self

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "finetune") -> "FinetuneSettings":
        """Settings from a mapping (a YAML section); unknown keys and bad values are one-line errors."""
        values = dict(values or {})
        for k in ("lr", "dropout"):  # YAML reads 1e-3 (no dot) as a string
            if isinstance(values.get(k), str):
                try:
                    values[k] = float(values[k])
                except ValueError:
                    pass
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        s = cls(**values)
        try:
            return s.validate()
        except ConfigError as e:
            raise ConfigError(str(e).replace("finetune:", f"{where}:", 1)) from None


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_int(name: str, v: Any, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"finetune: {name} must be a whole number {low} or more, got {v!r}")


def settings_from_config(cfg: Any) -> FinetuneSettings:
    """FinetuneSettings of a run config: ``cfg.finetune`` (a dict or FinetuneSettings) when it has
    one, else the study's defaults; ``seed`` and ``precision`` default to the run's own."""
    ft = getattr(cfg, "finetune", None)
    if isinstance(ft, FinetuneSettings):
        return ft.validate()
    base = {"seed": getattr(cfg, "seed", 0), "precision": getattr(cfg, "precision", "fp32")}
    return FinetuneSettings.from_dict({**base, **(ft or {})})


# -------------------------------------------------------------------------------- head, groups


def make_head(embedding_dim: int, hidden: int = 256, dropout: float = 0.1) -> nn.Sequential:
    """The study's head: ``Linear(embedding_dim, hidden) > Dropout(dropout) > ReLU > Linear(hidden, 1)``."""
    return nn.Sequential(nn.Linear(embedding_dim, hidden), nn.Dropout(dropout), nn.ReLU(), nn.Linear(hidden, 1))


def backbone_blocks(backbone) -> list[tuple[str, list[nn.Parameter]]]:
    """The backbone's blocks (lowest to top) as fine-tuning counts them.

    Blocks without parameters are dropped, and a final normalisation block (``layernorm``,
    ``norm``, ...; AST's final LayerNorm) is merged into the block below it, named
    ``"<block>+<norm>"``: it is trained with the top layer at the same rate.
    """
    blocks = [(str(n), [p for p in ps]) for n, ps in backbone.blocks()]
    blocks = [(n, ps) for n, ps in blocks if ps]
    while len(blocks) >= 2 and _TOP_NORM.search(blocks[-1][0]):
        (low_name, low), (top_name, top) = blocks[-2], blocks[-1]
        blocks[-2:] = [(f"{low_name}+{top_name}", low + top)]
    return blocks


def build_param_groups(backbone, head: nn.Module, settings: FinetuneSettings) -> list[dict]:
    """The optimiser's parameter groups, and the freezing that goes with them.

    Returns ``[{"name": "head", "params": [...], "lr": lr}, {"name": <top block>, "lr": lr/10},
    {"name": <next block>, "lr": lr/100}, ...]`` for ``settings.trainable_blocks`` backbone blocks
    (see :func:`backbone_blocks`). Every other backbone parameter gets ``requires_grad = False``
    and is in no group; the trainable ones get ``requires_grad = True``.
    """
    settings.validate()
    blocks = backbone_blocks(backbone)
    n = settings.trainable_blocks
    if n > len(blocks):
        names = ", ".join(b for b, _ in blocks)
        raise ConfigError(
            f"finetune: trainable_blocks={n} but {backbone.name} has {len(blocks)} blocks ({names})"
        )
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


def frozen_block_names(backbone, settings: FinetuneSettings) -> list[str]:
    """Names of the blocks :func:`build_param_groups` freezes (lowest first)."""
    blocks = backbone_blocks(backbone)
    return [n for n, _ in blocks[: len(blocks) - settings.trainable_blocks]]


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

    ``score_batch(x)`` takes a batch of frontend outputs; ``score_files(paths)`` reads audio files
    (``audio`` settings: mono mix, 16 kHz, 10 s) and returns one float64 score per file;
    ``save(dir)`` / :func:`load_finetuned` round-trip without pickle. ``info`` holds what the model
    was trained from (base weights, RANDOM INIT, settings, training report).
    """

    def __init__(self, backbone, head: nn.Module, settings: FinetuneSettings, audio: AudioSettings | None = None,
                 info: dict | None = None):
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

    def score_signals(self, signals: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities for mono 16 kHz signals."""
        out = []
        bs = self.settings.batch_size
        for i in range(0, len(signals), bs):
            out.append(self.score_batch(self.frontend.batch(list(signals[i : i + bs]))))
        return np.concatenate(out) if out else np.empty(0, dtype=np.float64)

    def score_files(self, paths: Iterable[str | Path]) -> np.ndarray:
        """One anomaly score (probability) per audio file; an unusable file raises AudioError."""
        paths = [Path(p) for p in paths]
        out = []
        bs = self.settings.batch_size
        for i in range(0, len(paths), bs):
            xs = [self.frontend(load_audio(p, self.audio)) for p in paths[i : i + bs]]
            out.append(self.score_batch(np.stack(xs)))
        return np.concatenate(out) if out else np.empty(0, dtype=np.float64)

    def score_clips(self, clips: Sequence[Clip], skip_bad: bool = False, progress: bool = False,
                    description: str = "scoring") -> tuple[list[Clip], np.ndarray, list[tuple[str, str]]]:
        """(clips scored, their scores, skipped (path, reason)) for ``clips``."""
        feats = _Features(self.frontend, self.audio, skip_bad, memo=False)
        kept, scores = [], []
        for batch in _batches(list(clips), self.settings.batch_size, progress, description):
            got = feats.get_batch(batch)
            if got is None:
                continue
            cl, x = got
            kept += cl
            scores.append(self.score_batch(x))
        s = np.concatenate(scores) if scores else np.empty(0, dtype=np.float64)
        return kept, s, feats.skipped

    def save(self, directory: str | Path) -> Path:
        return save_finetuned(self, directory)


def save_finetuned(scorer: FinetunedScorer, directory: str | Path) -> Path:
    """Write ``directory/backbone/`` (Backbone.save), ``head.safetensors`` and ``finetune.json``.

    No pickle anywhere; :func:`load_finetuned` gives a scorer with identical scores.
    """
    from safetensors.torch import save_file

    from asdkit.io import atomic_path, write_json

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
    return d


def load_finetuned(directory: str | Path, precision: str | None = None, device: str = "cpu") -> FinetunedScorer:
    """Load a model written by :func:`save_finetuned` (``precision`` overrides the saved one)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from asdkit.models import create_backbone

    d = Path(directory)
    meta_path = d / "finetune.json"
    if not meta_path.is_file():
        raise ConfigError(f"{d}: not a fine-tuned model (no finetune.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{meta_path}: not readable JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{meta_path}: format must be {FORMAT!r}")
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
        raise ConfigError(f"{d / 'head.safetensors'}: not a head for this model ({str(e).splitlines()[0]})") from None
    return FinetunedScorer(backbone, head, settings, audio, info=meta.get("info") or {})


# ----------------------------------------------------------------------------------- training


class _Features:
    """Frontend outputs of clips, read batch by batch (kept in memory up to a budget when ``memo``)."""

    def __init__(self, frontend, audio: AudioSettings, skip_bad: bool, memo: bool):
        self.frontend = frontend
        self.audio = audio
        self.skip_bad = skip_bad
        self.memo = memo
        self.store: dict[str, np.ndarray] = {}
        self.bytes = 0
        self.skipped: list[tuple[str, str]] = []
        self.bad: set[str] = set()

    def get(self, clip: Clip) -> np.ndarray | None:
        if clip.path in self.store:
            return self.store[clip.path]
        if clip.path in self.bad:
            return None
        try:
            x = self.frontend(load_audio(clip.path, self.audio))
        except AudioError as e:
            if not self.skip_bad:
                raise
            self.bad.add(clip.path)
            self.skipped.append((clip.path, str(e)))
            return None
        if self.memo and self.bytes + x.nbytes <= FEATURE_MEMORY_BYTES:
            self.store[clip.path] = x
            self.bytes += x.nbytes
        return x

    def get_batch(self, clips: Sequence[Clip]) -> tuple[list[Clip], np.ndarray] | None:
        kept, xs = [], []
        for c in clips:
            x = self.get(c)
            if x is not None:
                kept.append(c)
                xs.append(x)
        return (kept, np.stack(xs)) if xs else None


def _batches(items: list, size: int, progress: bool, description: str):
    show = progress_enabled(progress) and len(items) > 0
    bar = make_progress() if show else None
    if bar is None:
        for i in range(0, len(items), size):
            yield items[i : i + size]
        return
    with bar:
        task = bar.add_task(description, total=len(items))
        for i in range(0, len(items), size):
            yield items[i : i + size]
            bar.advance(task, min(size, len(items) - i))


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
    seconds: float = 0.0

    def report(self) -> dict:
        return {
            "n_train": self.n_train,
            "n_train_anomalous": self.n_train_anomalous,
            "train_loss": [round(v, 6) for v in self.train_loss],
            "val": self.val,
            "param_groups": self.groups,
            "seconds": round(self.seconds, 2),
        }


def _train(model: nn.Module, groups: list[dict], train: list[Clip], feats: "_Features", s: FinetuneSettings,
           dev: str, progress: bool, description: str) -> list[float]:
    """The training loop: Adam over ``groups``, plain BCE on the logit; returns the mean loss per epoch."""
    opt = torch.optim.Adam(groups, lr=s.lr)
    loss_fn = nn.BCEWithLogitsLoss()  # plain BCE as the study: no pos_weight for the rarer anomalies
    gen = torch.Generator().manual_seed(s.seed)
    history: list[float] = []
    n = len(train)
    n_batches = math.ceil(n / s.batch_size)
    bar = make_progress() if progress_enabled(progress) else None
    if bar:
        bar.start()
        task = bar.add_task(f"{description} ({n} clips)", total=s.epochs * n_batches)
    try:
        for epoch in range(s.epochs):
            _train_mode(model)
            order = torch.randperm(n, generator=gen).tolist()
            total, count = 0.0, 0
            for i in range(0, n, s.batch_size):
                got = feats.get_batch([train[j] for j in order[i : i + s.batch_size]])
                if got is not None:
                    cl, x = got
                    y = torch.tensor([float(c.label) for c in cl], device=dev)
                    opt.zero_grad(set_to_none=True)
                    with _autocast(s.precision, dev):
                        logits = model(torch.from_numpy(x).to(dev))
                    loss = loss_fn(logits.float(), y)
                    if not torch.isfinite(loss):
                        raise AsdkitError(f"{description}: the training loss became {loss.item()} (try a lower lr)")
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(cl)
                    count += len(cl)
                if bar:
                    bar.update(task, advance=1, description=f"{description} epoch {epoch + 1} loss {total / max(count, 1):.3f}")
            if count == 0:
                raise DatasetError(f"{description}: no training clip could be read")
            history.append(total / count)
    finally:
        if bar:
            bar.stop()
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
) -> FinetuneResult:
    """Fine-tune ``backbone`` + a new head on ``train`` (normal and anomalous clips), then report
    loss and AUC on ``val``. The backbone's module is changed in place (it becomes the scorer's)."""
    from asdkit.metrics import auc as roc_auc

    s = (settings or FinetuneSettings()).validate()
    audio = audio or AudioSettings()
    train = sorted(train, key=lambda c: c.path)
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
    feats = _Features(backbone.frontend, audio, skip_bad, memo=s.epochs > 1)
    with torch.random.fork_rng(devices=[]):  # seeded here, the caller's random state left alone
        torch.manual_seed(s.seed)
        head = make_head(backbone.embedding_dim, s.head_hidden, s.dropout).to(dev)
        groups = build_param_groups(backbone, head, s)
        model = _Classifier(backbone.module, head)
        history = _train(model, groups, train, feats, s, dev, progress, description)
    model.eval()
    for p in model.parameters():  # back to torch's default, so gradient-based explanations still work
        p.requires_grad_(True)
    used = [c for c in train if c.path not in feats.bad]
    if hasattr(backbone, "mark_trained"):  # new weights: new cache key, and saved as "fine-tuned from ..."
        backbone.mark_trained(f"fine-tuned by asdkit on {len(used)} clips ({s.epochs} epoch(s), seed {s.seed})")
    info = {
        **base,
        "machine_types": sorted({c.machine_type for c in train}),
        "machine_ids": sorted({c.machine_id for c in train}),
    }
    scorer = FinetunedScorer(backbone, head, s, audio, info)
    result = FinetuneResult(
        scorer,
        train_loss=history,
        n_train=len(used),
        n_train_anomalous=sum(c.label for c in used),
        skipped=list(feats.skipped),
        groups=[{"name": g["name"], "lr": g["lr"], "n_params": int(sum(p.numel() for p in g["params"]))} for g in groups],
    )
    if val:
        kept, prob, sk = scorer.score_clips(sorted(val, key=lambda c: c.path), skip_bad=skip_bad, progress=progress,
                                            description=f"{description}: validation")
        result.skipped += sk
        y = np.array([c.label for c in kept], dtype=np.float64)
        p = np.clip(prob, 1e-7, 1 - 1e-7)
        loss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(y) else float("nan")
        result.val = {"n": len(kept), "n_anomalous": int(y.sum()), "auc": roc_auc(y.astype(int), prob), "loss": loss}
    result.seconds = time.time() - t0
    scorer.info["training"] = result.report()
    return result


# ----------------------------------------------------------------------------------- pipeline


def run_finetune(cfg: Any, groups: dict[str, list[Clip]], out: str | Path, progress: bool = True,
                 save_models: bool | None = None):
    """Method ``finetune`` of the pipeline: one fine-tuned backbone + head per training group.

    ``cfg`` is a :class:`asdkit.pipeline.RunConfig` (or anything with its fields ``backbone``,
    ``weights``, ``precision``, ``backbone_config``, ``seed``, ``audio``, ``skip_bad``, and
    optionally ``finetune``: a dict of :class:`FinetuneSettings` fields). Each group trains on its
    TRAIN clips (both labels), reports VAL, scores TEST. With ``save_models`` (default
    ``cfg.save_models`` if present, else False) each model is saved to ``out/models/<group>/``.

    Returns ``(scores {path: probability}, skipped [(path, reason)], info)`` like the pipeline's
    other methods; ``info["finetune"]`` holds the settings and ``info["groups"]`` the per-group
    training report (train loss, validation AUC and loss).
    """
    from asdkit.models import create_backbone
    from asdkit.progress import console

    s = settings_from_config(cfg)
    audio = getattr(cfg, "audio", None) or AudioSettings()
    skip_bad = bool(getattr(cfg, "skip_bad", False))
    if save_models is None:
        save_models = bool(getattr(cfg, "save_models", False))
    out = Path(out)
    scores: dict[str, float] = {}
    skipped: list[tuple[str, str]] = []
    reports: dict[str, dict] = {}
    base = None
    for name, group in groups.items():
        backbone = create_backbone(cfg.backbone, weights=cfg.weights, precision=s.precision,
                                   config=getattr(cfg, "backbone_config", None), seed=s.seed)
        if base is None:
            base = {
                "weights": backbone.weights.describe(),
                "weights_source": getattr(backbone.weights, "source", ""),
                "random_init": bool(backbone.weights.random_init),
                "embedding_dim": int(backbone.embedding_dim),
            }
            if backbone.weights.random_init:
                console.print(f"[bold red]{cfg.backbone}: {backbone.weights.describe()}[/]")
        train = [c for c in group if c.split == "train"]
        val = [c for c in group if c.split == "val"]
        test = sorted((c for c in group if c.split == "test"), key=lambda c: c.path)
        res = finetune(backbone, train, s, val=val, audio=audio, skip_bad=skip_bad, progress=progress,
                       description=f"{name}: finetune {cfg.backbone}")
        kept, prob, sk = res.scorer.score_clips(test, skip_bad=skip_bad, progress=progress, description=f"{name}: test")
        scores.update({c.path: float(p) for c, p in zip(kept, prob)})
        skipped += res.skipped + sk
        reports[name] = res.report()
        if save_models:
            save_finetuned(res.scorer, out / "models" / name)
    if base is None:
        raise DatasetError("finetune: no clips to train on")
    info = {
        **base,
        "finetune": asdict(s),
        "groups": reports,
    }
    return scores, skipped, info

