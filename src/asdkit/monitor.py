"""A monitor: a fitted detector for one machine (or machine type) that scores new recordings.

``fit_monitor`` learns from the NORMAL clips of a dataset: most of them fit the detector on the
backbone's embeddings, the rest (a seeded validation share) set the decision threshold so that a
chosen share of normal clips would raise an alarm (the false-alarm rate). Two threshold methods:
``percentile`` (the empirical (1 - rate) quantile of the validation scores) and ``gamma`` (the
(1 - rate) quantile of a gamma distribution fitted to them, as the DCASE 2021+ baselines do; steadier
with few validation clips).

A monitor is a directory, never a pickle::

    MONITOR/monitor.json         format version, asdkit version, settings, threshold, checksums
    MONITOR/detector.safetensors the detector's arrays (e.g. its training embeddings)

``Monitor.load`` refuses, with one clear line, a monitor it cannot trust: a missing file, a checksum
that does not match, arrays whose shapes disagree with the settings, or a backbone whose embedding
size or weights differ from the ones it was fitted with.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from asdkit.audio import AudioSettings
from asdkit.data.clips import Clip
from asdkit.errors import AsdkitError, ConfigError, DatasetError
from asdkit.io import atomic_path, write_json

FORMAT = "asdkit-monitor"
FORMAT_VERSION = 1
THRESHOLD_METHODS = ("percentile", "gamma")


class MonitorError(AsdkitError):
    """A monitor directory that cannot be trusted or used."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Monitor:
    """A fitted backbone + detector + threshold. Build with :func:`fit_monitor` or :meth:`load`."""

    backbone: object
    detector: object
    threshold: float
    settings: dict = field(default_factory=dict)

    # -- scoring -------------------------------------------------------------------------------
    def score_clips(self, clips: Sequence[Clip], skip_bad: bool = False, progress: bool = True, cache_dir=None):
        """Scores of ``clips``; returns (kept clips, scores, skipped [(path, reason)])."""
        from asdkit.embed import embed_clips

        audio = AudioSettings(**self.settings.get("audio", {}))
        emb = embed_clips(list(clips), self.backbone, cache_dir=cache_dir, audio=audio,
                          on_bad="skip" if skip_bad else "error", progress=progress)
        if len(emb.clips) == 0:
            return [], np.empty(0), list(emb.skipped)
        return list(emb.clips), np.asarray(self.detector.score_samples(emb.X), dtype=np.float64), list(emb.skipped)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """True where a score is above the threshold (an alarm)."""
        return np.asarray(scores) > self.threshold

    # -- saving --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write the monitor directory (each file atomically; monitor.json last, so a half-written
        monitor is never taken for a whole one)."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"{directory}: exists and is not a folder")
        directory.mkdir(parents=True, exist_ok=True)
        meta, arrays = self.detector.state()
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        with atomic_path(directory / "detector.safetensors", suffix=".safetensors") as tmp:
            save_file(arrays, str(tmp))
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **self.settings,
            "threshold": float(self.threshold),
            "detector": meta,
            "arrays": {k: list(v.shape) for k, v in arrays.items()},
            "checksums": {"detector.safetensors": _sha256(directory / "detector.safetensors")},
        }
        write_json(directory / "monitor.json", doc)

    @classmethod
    def load(cls, directory: str | Path, weights: str | None = None) -> "Monitor":
        """Load and check a monitor; ``weights`` overrides where the backbone's weights come from
        (e.g. a local copy of the hub model the monitor was fitted with)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        from asdkit.detectors import detector_from_state
        from asdkit.models import create_backbone

        directory = Path(directory)
        if not directory.is_dir():
            raise MonitorError(f"{directory}: no such monitor folder")
        mj = directory / "monitor.json"
        if not mj.is_file():
            raise MonitorError(f"{directory}: not a monitor (monitor.json is missing)")
        try:
            doc = json.loads(mj.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MonitorError(f"{mj}: damaged ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise MonitorError(f"{mj}: not an asdkit monitor")
        if doc.get("format_version") != FORMAT_VERSION:
            raise MonitorError(f"{mj}: monitor format {doc.get('format_version')} is not supported (this asdkit reads {FORMAT_VERSION})")
        arr_path = directory / "detector.safetensors"
        if not arr_path.is_file():
            raise MonitorError(f"{directory}: detector.safetensors is missing")
        want = doc.get("checksums", {}).get("detector.safetensors")
        if want != _sha256(arr_path):
            raise MonitorError(f"{arr_path}: checksum does not match monitor.json (file changed or damaged)")
        try:
            arrays = load_file(str(arr_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise MonitorError(f"{arr_path}: unreadable ({e})") from None
        shapes = {k: list(v.shape) for k, v in arrays.items()}
        if shapes != doc.get("arrays"):
            raise MonitorError(f"{arr_path}: array shapes {shapes} differ from monitor.json {doc.get('arrays')}")
        try:
            detector = detector_from_state(doc["detector"], arrays)
        except (KeyError, TypeError, ValueError) as e:
            raise MonitorError(f"{mj}: detector settings unusable ({e})") from None
        b = doc.get("backbone", {})
        try:
            backbone = create_backbone(
                b["name"], weights=weights or b["weights"], precision=b.get("precision", "fp32"), config=b.get("config")
            )
        except KeyError as e:
            raise MonitorError(f"{mj}: backbone setting {e} is missing") from None
        n_in = doc["detector"].get("n_features_in_")
        if backbone.embedding_dim != n_in:
            raise MonitorError(
                f"{directory}: backbone {b['name']} gives {backbone.embedding_dim}-d embeddings, the detector was fitted on {n_in}-d"
            )
        if weights is None and b.get("cache_key") and backbone.cache_key != b["cache_key"]:
            raise MonitorError(
                f"{directory}: the backbone weights differ from those the monitor was fitted with ({b['weights']})"
            )
        settings = {k: v for k, v in doc.items() if k not in ("threshold", "detector", "arrays", "checksums")}
        return cls(backbone=backbone, detector=detector, threshold=float(doc["threshold"]), settings=settings)


def fit_monitor(
    clips: Sequence[Clip],
    backbone_name: str,
    detector_name: str = "lof-vote",
    weights: str = "default",
    precision: str = "fp32",
    backbone_config: dict | None = None,
    detector_params: dict | None = None,
    standardize: bool = False,
    false_alarm_rate: float = 0.05,
    threshold_method: str = "gamma",
    val_fraction: float = 0.2,
    seed: int = 0,
    audio: AudioSettings | None = None,
    skip_bad: bool = False,
    cache_dir=None,
    progress: bool = True,
) -> tuple[Monitor, dict]:
    """Fit a monitor on the normal clips among ``clips``; returns (monitor, summary)."""
    from asdkit.data.split import study_split
    from asdkit.detectors import create_detector
    from asdkit.embed import embed_clips
    from asdkit.metrics import threshold_from_scores
    from asdkit.models import create_backbone

    if threshold_method not in THRESHOLD_METHODS:
        raise ConfigError(f"unknown threshold method {threshold_method!r} (choose from {', '.join(THRESHOLD_METHODS)})")
    if not 0 < false_alarm_rate < 1:
        raise ConfigError(f"false-alarm rate must be between 0 and 1, got {false_alarm_rate}")
    normal = [c for c in clips if not c.is_anomalous]
    if len(normal) < 10:
        raise DatasetError(f"a monitor needs at least 10 normal clips to learn from, found {len(normal)}")
    parts = study_split(normal, seed=seed, test=0.0, val=val_fraction)
    train = [c for c in parts if c.split == "train"]
    val = [c for c in parts if c.split == "val"]
    audio = audio or AudioSettings()
    backbone = create_backbone(backbone_name, weights=weights, precision=precision, config=backbone_config)
    on_bad = "skip" if skip_bad else "error"
    etr = embed_clips(train, backbone, cache_dir=cache_dir, audio=audio, on_bad=on_bad, progress=progress)
    eva = embed_clips(val, backbone, cache_dir=cache_dir, audio=audio, on_bad=on_bad, progress=progress)
    detector = create_detector(detector_name, standardize=standardize, **(detector_params or {}))
    detector.fit(etr.X)
    val_scores = np.asarray(detector.score_samples(eva.X), dtype=np.float64)
    threshold = threshold_from_scores(val_scores, false_alarm_rate=false_alarm_rate, method=threshold_method)
    from asdkit import __version__

    settings = {
        "asdkit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machines": sorted({f"{c.machine_type} {c.machine_id}" for c in normal}),
        "backbone": {
            "name": backbone_name,
            "weights": weights,
            "weights_description": backbone.weights.describe(),
            "random_init": backbone.weights.random_init,
            "precision": precision,
            "config": backbone_config,
            "embedding_dim": backbone.embedding_dim,
            "cache_key": backbone.cache_key,
        },
        "audio": {"sample_rate": audio.sample_rate, "seconds": audio.seconds, "channel": audio.channel},
        "threshold_rule": {"method": threshold_method, "false_alarm_rate": false_alarm_rate,
                           "n_val": len(eva.clips), "val_fraction": val_fraction, "seed": seed},
        "n_train": len(etr.clips),
    }
    summary = {
        "n_train": len(etr.clips),
        "n_val": len(eva.clips),
        "n_anomalous_ignored": len(clips) - len(normal),
        "threshold": threshold,
        "val_alarm_share": float(np.mean(val_scores > threshold)) if len(val_scores) else float("nan"),
        "skipped": list(etr.skipped) + list(eva.skipped),
        "weights": backbone.weights.describe(),
        "random_init": backbone.weights.random_init,
    }
    return Monitor(backbone=backbone, detector=detector, threshold=threshold, settings=settings), summary


@dataclass
class FinetunedMonitor:
    """A model fine-tuned with the study's head (``asdkit finetune --save-model``), used as a
    monitor: the score is the head's probability that a clip is anomalous, and the decision
    threshold is the classifier's own 0.5."""

    scorer: object
    threshold: float = 0.5
    settings: dict = field(default_factory=dict)

    def score_clips(self, clips: Sequence[Clip], skip_bad: bool = False, progress: bool = True, cache_dir=None):
        return self.scorer.score_clips(list(clips), skip_bad=skip_bad, progress=progress)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold


def load_monitor(directory: str | Path, weights: str | None = None) -> "Monitor | FinetunedMonitor":
    """A monitor written by ``asdkit fit`` (monitor.json), or a fine-tuned model folder
    (finetune.json, from ``asdkit finetune --save-model``: ``RUN/models/<group>``)."""
    from asdkit.finetune import load_finetuned

    directory = Path(directory)
    if directory.is_dir() and not (directory / "monitor.json").exists() and (directory / "finetune.json").is_file():
        if weights is not None:
            raise ConfigError("--weights does not apply to a fine-tuned model: its weights are in the folder")
        scorer = load_finetuned(directory)
        info = scorer.info
        settings = {
            "kind": "finetuned",
            "backbone": {"name": scorer.backbone.name, "weights_description": scorer.backbone.weights.describe(),
                         "random_init": bool(info.get("random_init", False))},
        }
        return FinetunedMonitor(scorer=scorer, settings=settings)
    return Monitor.load(directory, weights=weights)
