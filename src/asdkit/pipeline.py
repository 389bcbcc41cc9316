"""`asdkit run`: one method over one dataset, from files to the results table.

    files -> clips (layout parser) -> the study's split -> frontend -> model/detector per machine
    type (or per id) -> scores of the test clips -> AUC/pAUC per machine type and id

Unsupervised methods learn from the normal clips of the training split only (the study drops the
anomalies of train and validation). The run directory gets ``config.json``, ``split.csv``,
``scores.csv``, ``results.json`` and ``results.md`` (see docs/architecture.md).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from asdkit.audio import AudioSettings, load_audio
from asdkit.data.clips import Clip, read_clips_csv, write_clips_csv
from asdkit.errors import AsdkitError, AudioError, ConfigError, DatasetError
from asdkit.io import write_csv, write_json, write_text
from asdkit.progress import track

METHODS = ("autoencoder", "embed-detect", "finetune")


@dataclass
class RunConfig:
    """Everything that decides a run's numbers (saved as the run's config.json)."""

    data: str
    method: str = "autoencoder"
    layout: str = "auto"
    machines: list[str] | None = None
    ids: list[str] | None = None
    snr: str | None = None
    per_id: bool = False
    seed: int = 0
    test_fraction: float = 0.25
    val_fraction: float = 0.1
    split_csv: str | None = None
    channel: int | None = None
    skip_bad: bool = False
    # autoencoder baseline
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 512
    # embeddings + detector
    backbone: str = "ast"
    weights: str = "default"
    precision: str = "fp32"
    backbone_config: dict | None = None
    detector: str = "lof-vote"
    detector_params: dict = field(default_factory=dict)
    standardize: bool = False
    embed_batch_size: int = 8
    cache_dir: str | None = None
    # supervised fine-tuning (method "finetune"): asdkit.finetune.FinetuneSettings fields, e.g.
    # {"epochs": 1, "trainable_blocks": 2}; seed and precision default to the run's own
    finetune: dict = field(default_factory=dict)
    save_models: bool = False

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r} (choose from {', '.join(METHODS)})")
        if self.channel is not None and self.channel < 0:
            raise ConfigError(f"channel must be 0 or more, got {self.channel}")
        if self.method == "finetune":
            from asdkit.finetune import settings_from_config

            self.finetune = asdict(settings_from_config(self))  # every setting, checked, saved in config.json

    @property
    def audio(self) -> AudioSettings:
        return AudioSettings(channel=self.channel)

    @property
    def label(self) -> str:
        if self.method == "autoencoder":
            return "autoencoder"
        if self.method == "finetune":
            return f"{self.backbone}+finetune"
        return f"{self.backbone}+{self.detector}"


@dataclass
class RunResult:
    rows: list[dict]
    scores: dict[str, float]
    clips: list[Clip]
    skipped: list[tuple[str, str]]
    info: dict


def prepare_clips(cfg: RunConfig, progress: bool = True) -> list[Clip]:
    """The dataset's clips with the study's split (or a saved split, to repeat a run exactly)."""
    from asdkit.data import load_dataset
    from asdkit.data.split import study_split

    if cfg.split_csv:
        clips = read_clips_csv(cfg.split_csv)
        if not all(c.split for c in clips):
            raise DatasetError(f"{cfg.split_csv}: some clips have no split")
        return clips
    clips = load_dataset(cfg.data, layout=cfg.layout, machines=cfg.machines, ids=cfg.ids, snr=cfg.snr)
    return study_split(clips, seed=cfg.seed, test=cfg.test_fraction, val=cfg.val_fraction)


def training_groups(clips: Sequence[Clip], per_id: bool) -> dict[str, list[Clip]]:
    """Clips of each model to train: one per machine type (all ids, as the study) or one per id."""
    groups: dict[str, list[Clip]] = {}
    for c in clips:
        groups.setdefault(c.group if per_id else c.machine_type, []).append(c)
    return dict(sorted(groups.items()))


def load_clip_arrays(
    clips: Sequence[Clip],
    fn: Callable[[np.ndarray], np.ndarray],
    audio: AudioSettings,
    skip_bad: bool,
    description: str,
    progress: bool = True,
) -> tuple[list[Clip], list[np.ndarray], list[tuple[str, str]]]:
    """Read each clip and apply ``fn``; bad files raise, or are skipped and reported."""
    kept, arrays, skipped = [], [], []
    for c in track(clips, description, enabled=progress):
        try:
            arrays.append(fn(load_audio(c.path, audio)))
        except AudioError as e:
            if not skip_bad:
                raise
            skipped.append((c.path, str(e)))
            continue
        kept.append(c)
    return kept, arrays, skipped


def _unsupervised_parts(group: list[Clip]) -> tuple[list[Clip], list[Clip]]:
    train = [c for c in group if c.split == "train" and not c.is_anomalous]
    test = [c for c in group if c.split == "test"]
    return train, test


def _run_autoencoder(cfg: RunConfig, groups: dict[str, list[Clip]], out: Path, progress: bool):
    from asdkit.features import get_frontend
    from asdkit.models.autoencoder import AutoencoderDetector, detector_backbone

    frontend = get_frontend("ae")
    scores: dict[str, float] = {}
    skipped: list[tuple[str, str]] = []
    for name, group in groups.items():
        train, test = _unsupervised_parts(group)
        train, xtr, sk1 = load_clip_arrays(train, frontend, cfg.audio, cfg.skip_bad, f"{name}: train features", progress)
        test, xte, sk2 = load_clip_arrays(test, frontend, cfg.audio, cfg.skip_bad, f"{name}: test features", progress)
        skipped += sk1 + sk2
        if not train:
            raise DatasetError(f"{name}: no normal training clips to learn from")
        det = AutoencoderDetector(cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed)
        det.fit(xtr, progress=progress, description=f"{name}: autoencoder")
        detector_backbone(det, f"MIMII autoencoder trained on {len(train)} normal {name} clips, {cfg.epochs} epochs").save(out / "models" / name)
        for c, s in zip(test, det.score_clips(xte)):
            scores[c.path] = float(s)
    return scores, skipped, {"weights": "trained from scratch on normal training clips (models/<group>)", "random_init": False}


def _run_embed_detect(cfg: RunConfig, groups: dict[str, list[Clip]], out: Path, progress: bool):
    from asdkit.detectors import create_detector
    from asdkit.embed import EmbeddingSet, embed_clips
    from asdkit.models import create_backbone

    backbone = create_backbone(cfg.backbone, weights=cfg.weights, precision=cfg.precision, config=cfg.backbone_config)
    used = [c for g in groups.values() for c in g if c.split == "test" or (c.split == "train" and not c.is_anomalous)]
    emb = embed_clips(
        used,
        backbone,
        cache_dir=cfg.cache_dir,
        batch_size=cfg.embed_batch_size,
        audio=cfg.audio,
        on_bad="skip" if cfg.skip_bad else "error",
        progress=progress,
    )
    emb.save_npz(out / "embeddings" / f"{cfg.backbone}.npz")
    index = {c.path: i for i, c in enumerate(emb.clips)}
    scores: dict[str, float] = {}
    for name, group in groups.items():
        train, test = _unsupervised_parts(group)
        train = [c for c in train if c.path in index]
        test = [c for c in test if c.path in index]
        if not train:
            raise DatasetError(f"{name}: no normal training clips to learn from")
        det = create_detector(cfg.detector, standardize=cfg.standardize, **cfg.detector_params)
        det.fit(emb.X[[index[c.path] for c in train]])
        if test:
            s = det.score_samples(emb.X[[index[c.path] for c in test]])
            scores.update({c.path: float(v) for c, v in zip(test, s)})
    info = {
        "weights": backbone.weights.describe(),
        "weights_source": backbone.weights.source,
        "random_init": backbone.weights.random_init,
        "embedding_dim": backbone.embedding_dim,
    }
    return scores, list(emb.skipped), info


def run(cfg: RunConfig, out: str | Path, progress: bool = True) -> RunResult:
    """Run ``cfg`` and write the run directory ``out``."""
    from asdkit.metrics import group_table
    from asdkit.runinfo import environment

    cfg.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    clips = prepare_clips(cfg, progress)
    write_clips_csv(clips, out / "split.csv")
    groups = training_groups(clips, cfg.per_id)
    if cfg.method == "autoencoder":
        scores, skipped, info = _run_autoencoder(cfg, groups, out, progress)
    elif cfg.method == "finetune":
        from asdkit.finetune import run_finetune

        scores, skipped, info = run_finetune(cfg, groups, out, progress)
    else:
        scores, skipped, info = _run_embed_detect(cfg, groups, out, progress)
    scored = [c for c in clips if c.path in scores]
    if not scored:
        raise DatasetError(f"{cfg.data}: no test clips could be scored")
    # one model per id: its scores are not on a common scale, so the type's row is the mean of the ids'
    rows = group_table(scored, np.array([scores[c.path] for c in scored]), type_summary="mean" if cfg.per_id else "pooled")
    write_csv(
        out / "scores.csv",
        ["file", "machine_type", "machine_id", "label", "split", "score"],
        ([c.path, c.machine_type, c.machine_id, c.label, c.split, f"{scores[c.path]:.8g}"] for c in scored),
    )
    env = environment()
    info = {
        "method": cfg.method,
        "label": cfg.label,
        **info,
        "n_clips": len(clips),
        "n_scored": len(scored),
        "skipped": [{"file": p, "reason": r} for p, r in skipped],
        "seconds": round(time.time() - t0, 2),
        **env,
    }
    write_json(out / "config.json", {"config": asdict(cfg), **env})
    write_json(out / "results.json", {**info, "rows": rows})
    write_text(out / "results.md", results_markdown(info, rows))
    return RunResult(rows, scores, clips, skipped, info)


def results_markdown(info: dict, rows: list[dict]) -> str:
    from asdkit.metrics import markdown_table

    lines = [f"# asdkit run: {info['label']}", ""]
    if info.get("random_init"):
        lines += ["**RANDOM INIT: the backbone has no pretrained weights; these numbers say nothing about the pretrained model.**", ""]
    lines += [f"- weights: {info.get('weights')}", f"- clips scored: {info['n_scored']} of {info['n_clips']}"]
    if info["skipped"]:
        lines.append(f"- skipped bad files: {len(info['skipped'])}")
    lines += ["", markdown_table(rows, ["machine_type", "machine_id", "auc", "pauc", "n_normal", "n_anomalous"]), ""]
    return "\n".join(lines)
