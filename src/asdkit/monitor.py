"""A monitor: any fitted method plus a calibrated decision threshold, for one machine (or type).

``fit_monitor`` learns from a machine's recordings: most clips fit the method (its normal ones, or
both labels for a supervised method), a seeded validation share of NORMAL clips sets the decision
threshold so that a chosen share of normal clips would raise an alarm (the false-alarm rate). Two
threshold methods: ``percentile`` (the empirical (1 - rate) quantile of the validation scores) and
``gamma`` (the (1 - rate) quantile of a gamma distribution fitted to them, as the DCASE 2021+
baselines do; steadier with few validation clips).

A monitor is a folder, never a pickle::

    MONITOR/monitor.json    format version, asdkit version, method name, threshold and its rule, audio settings
    MONITOR/method/         the fitted method (asdkit.methods: method.json, its arrays and weights)
    MONITOR/manifest.json   the SHA-256 of every file above, written last

``Monitor.load`` refuses, with one clear line, a monitor it cannot trust: a missing, changed or
added file, a method whose backbone weights or embedding size differ from the ones it was fitted
with. :func:`load_monitor` also takes a saved method folder whose scores come with their own
threshold (a fine-tuned model's probability, 0.5: ``RUN/models/<group>`` of ``asdkit finetune --save-model``).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from asdkit.audio import AudioSettings
from asdkit.data.clips import Clip
from asdkit.errors import AsdkitError, ConfigError, DatasetError
from asdkit.io import check_manifest, read_json_doc, write_json, write_manifest

FORMAT = "asdkit-monitor"
FORMAT_VERSION = 2
THRESHOLD_METHODS = ("percentile", "gamma")
METHOD_DIR = "method"


class MonitorError(AsdkitError):
    """A monitor directory that cannot be trusted or used."""


@dataclass
class Monitor:
    """A fitted method + threshold. Build with :func:`fit_monitor` or :meth:`load`."""

    method: object
    threshold: float
    settings: dict = field(default_factory=dict)

    @property
    def audio(self) -> AudioSettings:
        return AudioSettings(**self.settings.get("audio", {}))

    @property
    def random_init(self) -> bool:
        return bool(self.method.info().get("random_init", False))

    # -- scoring -------------------------------------------------------------------------------
    def score_clips(self, clips: Sequence[Clip], skip_bad: bool = False, progress: bool = True, cache_dir=None):
        """Scores of ``clips``; returns (kept clips, scores, skipped [(path, reason)])."""
        from asdkit.reader import ClipReader

        ctx = self.method.context
        ctx.reader = ClipReader(self.audio, "skip" if skip_bad else "error", progress)
        ctx.cache_dir = str(cache_dir) if cache_dir is not None else None
        clips = list(clips)
        s = self.method.score(clips)
        ok = np.isfinite(s)
        return [c for c, k in zip(clips, ok) if k], s[ok], list(ctx.reader.skipped)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """True where a score is above the threshold (an alarm)."""
        return np.asarray(scores) > self.threshold

    # -- saving --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write the monitor folder: the method, monitor.json, then manifest.json last (so a
        half-written monitor is never taken for a whole one)."""
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise ConfigError(f"{d}: exists and is not a folder")
        d.mkdir(parents=True, exist_ok=True)
        (d / "manifest.json").unlink(missing_ok=True)
        self.method.save(d / METHOD_DIR)
        write_json(d / "monitor.json", {"format": FORMAT, "format_version": FORMAT_VERSION, **self.settings,
                                        "threshold": float(self.threshold)})
        write_manifest(d)

    @classmethod
    def load(cls, directory: str | Path, weights: str | None = None, device: str = "cpu") -> "Monitor":
        """Load and check a monitor; ``weights`` says where the backbone's weights are now (they
        must be the ones the monitor was fitted with)."""
        from asdkit.methods import Context, load_method
        from asdkit.reader import ClipReader

        d = Path(directory)
        if not d.is_dir():
            raise MonitorError(f"{d}: no such monitor folder")
        mj = d / "monitor.json"
        if not mj.is_file():
            raise MonitorError(f"{d}: not a monitor (monitor.json is missing)")
        try:
            check_manifest(d)
            doc = read_json_doc(mj, FORMAT)
        except ConfigError as e:
            raise MonitorError(str(e)) from None
        if doc.get("format_version") != FORMAT_VERSION:
            raise MonitorError(f"{mj}: monitor format {doc.get('format_version')} is not supported "
                               f"(this asdkit reads {FORMAT_VERSION}; fit the monitor again)")
        threshold = doc.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
            raise MonitorError(f"{mj}: threshold must be a finite number, got {threshold!r}")
        settings = {k: v for k, v in doc.items() if k not in ("format", "format_version", "threshold")}
        try:
            audio = AudioSettings(**settings.get("audio", {}))
        except TypeError as e:
            raise MonitorError(f"{mj}: audio settings unusable ({e})") from None
        try:
            method = load_method(d / METHOD_DIR, Context(reader=ClipReader(audio), device=device), checked=True, weights=weights)
        except ConfigError as e:
            raise MonitorError(str(e)) from None
        return cls(method=method, threshold=float(threshold), settings=settings)


def load_monitor(directory: str | Path, weights: str | None = None, device: str = "cpu") -> Monitor:
    """A monitor written by ``asdkit fit`` (monitor.json), or a saved method whose scores come with
    their own threshold (a fine-tuned model, ``RUN/models/<group>``: probability, threshold 0.5)."""
    from asdkit.methods import load_method

    d = Path(directory)
    if d.is_dir() and not (d / "monitor.json").exists() and (d / "method.json").is_file():
        method = load_method(d, device=device, weights=weights)
        if method.natural_threshold is None:
            raise MonitorError(f"{d}: a saved {method.name} method has no threshold of its own; "
                               "fit a monitor with `asdkit fit --method ...`")
        audio = method.reader.audio
        settings = {"method": method.name, "kind": "saved method",
                    "audio": {"sample_rate": audio.sample_rate, "seconds": audio.seconds, "channel": audio.channel}}
        return Monitor(method=method, threshold=float(method.natural_threshold), settings=settings)
    return Monitor.load(d, weights=weights, device=device)


def fit_monitor(
    clips: Sequence[Clip],
    method: str = "embed-detect",
    settings: dict | None = None,
    *,
    false_alarm_rate: float = 0.05,
    threshold_method: str = "gamma",
    val_fraction: float = 0.2,
    seed: int = 0,
    audio: AudioSettings | None = None,
    skip_bad: bool = False,
    cache_dir=None,
    progress: bool = True,
    device: str = "cpu",
) -> tuple[Monitor, dict]:
    """Fit a monitor with ``method`` (and its ``settings``) on ``clips``; returns (monitor, summary)."""
    from asdkit import __version__
    from asdkit.data.split import study_split
    from asdkit.methods import Context, create_method, method_settings
    from asdkit.metrics import threshold_from_scores
    from asdkit.reader import ClipReader

    if threshold_method not in THRESHOLD_METHODS:
        raise ConfigError(f"unknown threshold method {threshold_method!r} (choose from {', '.join(THRESHOLD_METHODS)})")
    if not 0 < false_alarm_rate < 1:
        raise ConfigError(f"false-alarm rate must be between 0 and 1, got {false_alarm_rate}")
    s = method_settings(method, settings)
    audio = audio or AudioSettings()
    ctx = Context(reader=ClipReader(audio, "skip" if skip_bad else "error", progress),
                  cache_dir=str(cache_dir) if cache_dir is not None else None, seed=seed, device=device)
    m = create_method(method, s, ctx, title="monitor")
    normal = [c for c in clips if not c.is_anomalous]
    if len(normal) < 10:
        raise DatasetError(f"a monitor needs at least 10 normal clips to learn from, found {len(normal)}")
    parts = study_split(list(clips) if m.supervised else normal, seed=seed, test=0.0, val=val_fraction)
    train = [c for c in parts if c.split == "train"]
    val = [c for c in parts if c.split == "val" and not c.is_anomalous]
    m.fit(train, val=[c for c in parts if c.split == "val"])
    val_scores = m.score(val)
    val_scores = val_scores[np.isfinite(val_scores)]
    threshold = threshold_from_scores(val_scores, false_alarm_rate=false_alarm_rate, method=threshold_method)
    info = m.info()
    mon_settings = {
        "asdkit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machines": sorted({f"{c.machine_type} {c.machine_id}" for c in normal}),
        "method": method,
        "label": m.label,
        "weights": info.get("weights", ""),
        "random_init": bool(info.get("random_init", False)),
        "audio": {"sample_rate": audio.sample_rate, "seconds": audio.seconds, "channel": audio.channel},
        "threshold_rule": {"method": threshold_method, "false_alarm_rate": false_alarm_rate,
                           "n_val": int(len(val_scores)), "val_fraction": val_fraction, "seed": seed},
        "n_train": m.n_train_,
    }
    summary = {
        "n_train": m.n_train_,
        "n_val": int(len(val_scores)),
        "n_anomalous_ignored": 0 if m.supervised else len(clips) - len(normal),
        "threshold": threshold,
        "val_alarm_share": float(np.mean(val_scores > threshold)) if len(val_scores) else float("nan"),
        "skipped": list(ctx.reader.skipped),
        "weights": info.get("weights", ""),
        "random_init": bool(info.get("random_init", False)),
        "label": m.label,
    }
    return Monitor(method=m, threshold=threshold, settings=mon_settings), summary
