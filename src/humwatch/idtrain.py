"""Learning embeddings by telling machines apart: the auxiliary ID task (``idnet``, ``aux-finetune``).

No anomalous clip is needed. A network learns to say which machine (type + id, or DCASE section,
and DCASE's operating-condition attributes where the file names carry them) a normal clip comes
from; an anomalous clip then lies far from the normal clips of its own machine in the learned
embedding. The pieces, used by both methods:

* :class:`IdObjective`, the settings; :func:`id_label`, a clip's class;
* :class:`MarginHead`: the angular-margin classifier on unit embeddings. ``arcface`` (Deng et al.,
  CVPR 2019) adds a margin ``m`` to the angle of the true class, ``cos(theta + m)``, scaled by
  ``s``; with ``sub_centers`` K > 1 each class has K centres and the nearest counts (sub-center
  ArcFace, Deng et al., ECCV 2020: a machine may sound different in different conditions).
  ``adacos`` (Zhang et al., CVPR 2019) has no margin and adapts the scale each step;
* **mixup** (``mixup`` = Beta(a, a)'s a, 1 by default; 0 turns it off; ``mixup_share`` of the steps,
  all by default): two clips are mixed and the loss is the mix of the two classes' margin losses, as
  Noisy-ArcMix (Choi et al., 2023) does;
* **outlier exposure** (:func:`outlier_clips`): when the clips hold one class only there is
  nothing to tell apart, so the other machine types of the data, or clips of other machines from
  the built-in generator (:mod:`humwatch.data.synth`), become extra classes (never kNN memory);
* :func:`train_id`: Adam, one progress bar, and **early stopping** on held-out normal clips (the
  validation loss after each epoch; the best epoch's weights are kept).

Why not pytorch-metric-learning's ArcFaceLoss/SubCenterArcFaceLoss: it would be one more
dependency for ~60 lines, and its losses do not take the two labels and weight a mixed clip needs.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from humwatch.data.clips import Clip
from humwatch.errors import ConfigError, DatasetError
from humwatch.finetune import optimizer_step
from humwatch.progress import bar, console
from humwatch.sections import section_of
from humwatch.settings import Bool, Int, OneOf, Real, Settings, setting

LOSSES = ("arcface", "adacos")
OUTLIER_MODES = ("auto", "data", "generated", "off")
OUTLIER_PREFIX = "outlier:"
GENERATED_MACHINES = ("fan", "pump", "valve", "slider")
GENERATED_IDS = ("90", "91")
"""Products the built-in generator makes for outlier exposure (ids no demo or test data uses)."""
MIN_HELD_OUT = 8
"""Fewer normal validation clips than this: a share of the training clips is held out instead."""
HELD_OUT_SHARE = 0.1


@dataclass
class IdObjective(Settings):
    """What the auxiliary ID task trains with (shared by ``idnet`` and ``aux-finetune``)."""

    where: ClassVar[str] = "id objective"
    loss: str = setting("arcface", OneOf(LOSSES), "arcface (angular margin) or adacos (adaptive scale)")
    margin: float = setting(0.5, Real(0, 1.5), "ArcFace angular margin in radians")
    scale: float = setting(30.0, Real(0, open_low=True), "ArcFace logit scale (adacos sets its own)")
    sub_centers: int = setting(2, Int(1, 16), "centres per class (sub-center ArcFace)")
    mixup: float = setting(1.0, Real(0), "mixup Beta(a, a) parameter; 0 turns mixup off")
    mixup_share: float = setting(1.0, Real(0, 1), "share of the training steps whose batch is mixed")
    attributes: bool = setting(True, Bool(), "DCASE attribute labels in file names as extra classes")
    outlier_exposure: str = setting(
        "auto",
        OneOf(OUTLIER_MODES),
        "auto (only when there is one class), data (other machine types of the run), generated (built-in generator), off",
    )
    outlier_clips: int = setting(16, Int(1), "generated clips per outlier machine (8 machines)")
    lr: float = setting(1e-3, Real(0, open_low=True), "Adam learning rate")
    patience: int = setting(5, Int(1), "epochs without a better validation loss before training stops")


def id_label(clip: Clip, attributes: bool = True) -> str:
    """``fan/id_00`` (machine type / id or section), ``+ /vel_4_loc_A`` with DCASE attributes."""
    from humwatch.data.dcase import attributes_of

    attr = attributes_of(clip.path) if attributes else ""
    return section_of(clip) + (f"/{attr}" if attr else "")


def section_label(label: str) -> str:
    """The machine (type/id) of a class label."""
    return "/".join(label.split("/")[:2])


# ----------------------------------------------------------------------------------------- head


class MarginHead(nn.Module):
    """ArcFace (with sub-centres) or AdaCos on unit embeddings; ``loss(emb, y, y2, lam)``."""

    def __init__(self, dim: int, n_classes: int, loss: str = "arcface", margin: float = 0.5, scale: float = 30.0, sub_centers: int = 1):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r} (choose from {', '.join(LOSSES)})")
        self.kind, self.n_classes, self.k = loss, int(n_classes), int(sub_centers)
        self.margin = float(margin) if loss == "arcface" else 0.0
        self.weight = nn.Parameter(torch.empty(self.n_classes * self.k, dim))
        nn.init.xavier_uniform_(self.weight)
        s0 = scale if loss == "arcface" else math.sqrt(2.0) * math.log(max(self.n_classes - 1, 2))
        self.register_buffer("scale", torch.tensor(float(s0)))

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, classes): the cosine to each class's nearest centre."""
        cos = nn.functional.normalize(emb.float(), dim=-1) @ nn.functional.normalize(self.weight, dim=-1).T
        return cos.reshape(cos.shape[0], self.n_classes, self.k).amax(dim=-1).clamp(-1.0, 1.0)

    def _with_margin(self, cos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.margin == 0:
            return cos
        m = self.margin
        target = cos.gather(1, y[:, None])
        sin = torch.sqrt((1.0 - target**2).clamp_min(1e-9))
        phi = target * math.cos(m) - sin * math.sin(m)
        # beyond theta = pi - m, cos(theta + m) is not decreasing: ArcFace's linear fallback
        phi = torch.where(target > math.cos(math.pi - m), phi, target - math.sin(math.pi - m) * m)
        return cos.scatter(1, y[:, None], phi)

    def loss(self, emb: torch.Tensor, y: torch.Tensor, y2: torch.Tensor | None = None, lam: float = 1.0) -> torch.Tensor:
        cos = self.cosine(emb)
        if self.kind == "adacos" and self.training:
            self._adapt_scale(cos, y)
        ce = nn.functional.cross_entropy
        out = lam * ce(self.scale * self._with_margin(cos, y), y)
        if y2 is not None and lam < 1.0:
            out = out + (1.0 - lam) * ce(self.scale * self._with_margin(cos, y2), y2)
        return out

    @torch.no_grad()
    def _adapt_scale(self, cos: torch.Tensor, y: torch.Tensor) -> None:
        """AdaCos: s = log(B_avg) / cos(min(pi/4, median angle of the true class))."""
        onehot = nn.functional.one_hot(y, self.n_classes).bool()
        b_avg = torch.where(onehot, torch.zeros_like(cos), torch.exp(self.scale * cos)).sum(dim=1).mean()
        theta = torch.acos(cos[onehot].clamp(-1 + 1e-7, 1 - 1e-7))
        s = torch.log(b_avg.clamp_min(1e-9)) / torch.cos(torch.clamp(theta.median(), max=math.pi / 4))
        if torch.isfinite(s) and s > 0:
            self.scale.fill_(float(s))

    @torch.no_grad()
    def log_probs(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, classes) log-softmax of the scaled cosines (no margin: what the classifier says)."""
        return torch.log_softmax(self.scale * self.cosine(emb), dim=-1)


def classifier_scores(head: MarginHead, X: np.ndarray, sections: Sequence[str], classes: Sequence[str], own: Sequence[str]) -> np.ndarray:
    """``-log p(section | clip)``: the classifier's anomaly score (summing the probabilities of every
    class of the clip's section); a clip of a section not in ``classes`` takes the most likely of the
    ``own`` sections (the group's)."""
    if len(X) == 0:
        return np.empty(0)
    x = torch.from_numpy(np.asarray(X, dtype=np.float32)).to(head.weight.device)
    lp = head.log_probs(x).double().cpu().numpy()
    sec_of = np.array([section_label(c) for c in classes], dtype=object)
    known = set(sec_of)
    per_section = {s: np.logaddexp.reduce(lp[:, sec_of == s], axis=1) for s in sorted(known)}
    fallback = np.max([per_section[s] for s in own if s in per_section], axis=0) if own else np.full(len(X), -np.inf)
    return np.array([-(per_section[s][i] if s in known else fallback[i]) for i, s in enumerate(sections)])


# ------------------------------------------------------------------------------ the training set


@dataclass
class IdData:
    """The clips one network is trained on, their classes, what is held out and where outliers came from."""

    train: list[Clip]
    held_out: list[Clip]
    classes: list[str]
    labels: dict[str, int]
    """clip key (path, and start for a window) -> class index."""
    outliers: str = "none"
    cleanup: Callable[[], None] | None = field(default=None, repr=False)

    def y(self, clips: Sequence[Clip]) -> torch.Tensor:
        return torch.tensor([self.labels[c.key] for c in clips], dtype=torch.long)


def outlier_clips(
    own: Sequence[Clip], pool: Sequence[Clip], s: IdObjective, *, cache_dir: str | None, audio, seed: int, progress: bool
) -> tuple[list[Clip], str, Callable[[], None] | None]:
    """Extra classes for ``own`` (see the module docstring): ``(clips, what was done, cleanup)``.
    ``pool``: the run's other normal training clips."""
    n_classes = len({id_label(c, s.attributes) for c in own})
    mode = s.outlier_exposure
    if mode == "off" or (mode == "auto" and n_classes >= 2):
        if n_classes < 2:
            raise DatasetError(
                "the ID task needs two classes at least (machine ids, sections or attributes); the "
                "clips hold one: use outlier_exposure auto, data or generated"
            )
        return [], "none", None
    mine = {section_of(c) for c in own}
    others = [c for c in pool if section_of(c) not in mine and not c.is_anomalous]
    if others and mode in ("auto", "data"):
        rng = np.random.default_rng(seed)
        cap = max(3 * len(own), 256)
        if len(others) > cap:
            others = [others[i] for i in sorted(rng.choice(len(others), cap, replace=False))]
        kinds = sorted({c.machine_type for c in others})
        return others, f"data: {len(others)} clips of {len({c.group for c in others})} other machines ({', '.join(kinds)})", None
    return _generated(s, cache_dir, audio, seed, progress)


def _generated(s: IdObjective, cache_dir: str | None, audio, seed: int, progress: bool):
    import hashlib
    import json
    import shutil
    import tempfile

    from humwatch.data.synth import synthesize

    channels = 1 if audio.channel is None else audio.channel + 1
    seconds = 10.0 if audio.seconds is None else float(audio.seconds)
    params = {
        "machines": list(GENERATED_MACHINES),
        "ids": list(GENERATED_IDS),
        "n_normal": s.outlier_clips,
        "seconds": seconds,
        "channels": channels,
        "seed": seed,
        "snr_db": 6.0,
        "format": 1,
    }
    cleanup = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(cache_dir).expanduser() / "outliers" / key
    else:
        folder = Path(tempfile.mkdtemp(prefix="humwatch-outliers-"))
        cleanup = lambda: shutil.rmtree(folder, ignore_errors=True)  # noqa: E731
    done = folder / "done.json"
    if not done.is_file():
        synthesize(
            folder,
            machines=GENERATED_MACHINES,
            ids=GENERATED_IDS,
            n_normal=s.outlier_clips,
            n_anomalous=0,
            snr_db=6.0,
            seed=seed,
            seconds=seconds,
            channels=channels,
            progress=progress,
        )
        from humwatch.io import write_json

        write_json(done, params)
    from humwatch.data.mimii import load_mimii

    clips = [c for c in load_mimii(folder) if not c.is_anomalous]
    machines = len({c.group for c in clips})
    return clips, f"generated: {len(clips)} clips of {machines} machines of the built-in generator", cleanup


def id_data(
    own: Sequence[Clip], val: Sequence[Clip], pool: Sequence[Clip], s: IdObjective, *, cache_dir, audio, seed: int, progress: bool
) -> IdData:
    """The training set of one network: ``own`` clips (+ outlier classes), and the held-out normal
    clips early stopping watches (``val``'s normal clips of known classes, or a seeded share of the
    training clips per class when fewer than :data:`MIN_HELD_OUT`)."""
    extra, note, cleanup = outlier_clips(own, pool, s, cache_dir=cache_dir, audio=audio, seed=seed, progress=progress)
    label = {c.key: id_label(c, s.attributes) for c in own}
    label.update({c.key: OUTLIER_PREFIX + id_label(c, False) for c in extra})
    train = sorted({c.key: c for c in [*own, *extra]}.values(), key=lambda c: (c.path, c.start))
    classes = sorted(set(label.values()))
    held = [c for c in val if not c.is_anomalous and id_label(c, s.attributes) in classes and c.key not in label]
    if len(held) < MIN_HELD_OUT:
        rng = np.random.default_rng(seed)
        held = []
        for cls in classes:
            members = [c for c in train if label[c.key] == cls]
            n = int(round(HELD_OUT_SHARE * len(members))) if len(members) >= 5 else 0
            held += [members[i] for i in sorted(rng.choice(len(members), max(n, 1 if len(members) >= 5 else 0), replace=False))]
        keep = {c.key for c in held}
        train = [c for c in train if c.key not in keep]
    else:
        label.update({c.key: id_label(c, s.attributes) for c in held})
    index = {cls: i for i, cls in enumerate(classes)}
    return IdData(train, held, classes, {p: index[v] for p, v in label.items()}, note, cleanup)


# -------------------------------------------------------------------------------------- training


@dataclass
class IdReport:
    epochs: int = 0
    best_epoch: int = 0
    stopped_early: bool = False
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    n_train: int = 0
    n_held_out: int = 0
    n_classes: int = 0
    classes: list = field(default_factory=list)
    outlier_exposure: str = "none"
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["train_loss"] = [round(v, 5) for v in self.train_loss]
        d["val_loss"] = [round(v, 5) for v in self.val_loss]
        d["seconds"] = round(self.seconds, 2)
        return d


Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def train_id(
    modules: nn.ModuleDict,
    embed: Callable[[torch.Tensor], torch.Tensor],
    head: MarginHead,
    groups: list[dict],
    train_batches: Batches,
    n_steps: int,
    epochs: int,
    s: IdObjective,
    *,
    val_batches: Batches | None = None,
    val_embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    train_mode: Callable[[], None] | None = None,
    seed: int = 0,
    progress: bool = True,
    description: str = "id training",
) -> IdReport:
    """Train ``embed`` + ``head`` on ``train_batches()`` (one call per epoch, ``n_steps`` batches)
    with Adam over ``groups``; after each epoch the loss on ``val_batches()`` (embedded by
    ``val_embed``, in eval mode) decides early stopping, and the best epoch's state of ``modules``
    is restored at the end. Deterministic for a seed on CPU."""
    opt = torch.optim.Adam(groups, lr=s.lr)
    rng = np.random.default_rng(seed)
    report = IdReport()
    best, best_state, waited = math.inf, None, 0
    t0 = time.time()
    with bar(f"{description}", epochs * n_steps, progress) as b:
        for epoch in range(1, epochs + 1):
            (train_mode or modules.train)()
            total, count = 0.0, 0
            for x, y in train_batches():
                lam, y2 = 1.0, None
                if s.mixup > 0 and len(y) > 1 and rng.random() < s.mixup_share:
                    lam = float(rng.beta(s.mixup, s.mixup))
                    perm = torch.from_numpy(rng.permutation(len(y)))
                    x, y2 = lam * x + (1.0 - lam) * x[perm], y[perm]
                opt.zero_grad(set_to_none=True)
                total += optimizer_step(opt, head.loss(embed(x), y, y2, lam), description) * len(y)
                count += len(y)
                b.advance(1, description=f"{description} epoch {epoch} loss {total / max(count, 1):.3f}")
            report.train_loss.append(total / max(count, 1))
            report.epochs = epoch
            if val_batches is None:
                continue
            v = _val_loss(modules, head, val_batches, val_embed or embed)
            report.val_loss.append(v)
            if v < best - 1e-4:
                best, waited, report.best_epoch = v, 0, epoch
                best_state = copy.deepcopy(modules.state_dict())
            else:
                waited += 1
                if waited >= s.patience:
                    report.stopped_early = True
                    break
    if best_state is not None:
        modules.load_state_dict(best_state)
    else:
        report.best_epoch = report.epochs
    modules.eval()
    report.seconds = time.time() - t0
    return report


@torch.no_grad()
def _val_loss(modules: nn.Module, head: MarginHead, batches: Batches, embed) -> float:
    modules.eval()
    total, count = 0.0, 0
    for x, y in batches():
        total += head.loss(embed(x), y).item() * len(y)
        count += len(y)
    return total / max(count, 1)


def say_outliers(title: str, note: str) -> None:
    if note != "none":
        console.print(f"{title}: one machine alone; outlier exposure with {note}")
