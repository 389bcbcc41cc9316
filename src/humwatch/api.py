"""humwatch's Python API (docs/api.md): fit a monitor, load one, score recordings, list what there is.

::

    import humwatch

    mon = humwatch.fit("data/fan", out="monitors/fan")       # healthy recordings -> a saved monitor
    mon = humwatch.load_monitor("monitors/fan")
    for r in mon.score(["new/a.wav", (samples, 16000)]):     # paths and decoded audio alike
        print(r.name, r.anomaly_score, r.anomalous)          # higher = more anomalous

Each function is the command line's own work (``humwatch fit`` is :func:`fit`, ``humwatch score``
is :meth:`~humwatch.monitor.Monitor.score`) with the same defaults and the same checks; every
problem a caller can cause is a :class:`~humwatch.errors.HumwatchError` with a one-line message.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

from humwatch.errors import ConfigError
from humwatch.monitor import Monitor

log = logging.getLogger("humwatch")

DEFAULT_METHOD = "embed-detect"
"""What :func:`fit` (and ``humwatch fit``) uses when no method is named: ``embed-detect`` with the
study's AST when its weights are here, else the weight-free ``features`` backbone with ``knn-ldn``
(:data:`humwatch.methods.embed_detect.WEIGHT_FREE`), never a random network."""


def fit(
    data: Any,
    method: str | None = None,
    settings: Mapping[str, Any] | None = None,
    *,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    false_alarm_rate: float = 0.05,
    threshold_method: str = "gamma",
    folds: int = 5,
    seconds: float = 10.0,
    hop: float | None = None,
    seed: int = 0,
    channel: int | None = None,
    layout: str = "auto",
    skip_bad: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    device: str = "auto",
    jobs: int | None = None,
) -> Monitor:
    """A monitor fitted on healthy recordings, saved to ``out`` when given (as ``humwatch fit``).

    ``data``: a folder (any layout :func:`humwatch.data.load_dataset` reads, a plain folder of audio
    files included; an ``abnormal/`` subfolder only reports an AUC), a ``.csv`` manifest, or
    recordings as :meth:`Monitor.score` takes them (paths, :class:`~humwatch.data.Clip` objects,
    ``(array, sample_rate)`` pairs, a dict ``name -> (array, sample_rate)``: all healthy but Clips
    labelled anomalous). ``method``: a name of ``humwatch.methods()`` or a one-line spec
    (``embed-detect:backbone=features,detector=knn``); ``settings`` override it. None: the command
    line's default (:data:`DEFAULT_METHOD`). The threshold is calibrated so that
    ``false_alarm_rate`` of normal ``seconds``-long windows would alarm (:mod:`humwatch.calibrate`).
    ``cache_dir``: where to cache embeddings (none by default)."""
    from humwatch.audio import AudioSettings
    from humwatch.calibrate import fit_monitor
    from humwatch.io import check_holds_none, check_out_folder

    name, s = _method(method, settings)
    if out is not None:
        _check_path(out, "out")
        try:
            check_out_folder(out, overwrite, kind="monitor", inputs=[data] if isinstance(data, (str, os.PathLike)) else [])
        except ConfigError as e:  # its words are the command line's
            raise ConfigError(str(e).replace("pass --overwrite", "pass overwrite=True").replace("another --out", "another out")) from None
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)):
        raise ConfigError(f"channel must be a whole number (a microphone, from 0) or None, got {channel!r}")
    clips = _training_clips(data, layout)
    if out is not None:
        check_holds_none(out, (c.path for c in clips if getattr(c, "samples", None) is None), option="out")  # files only
    mon, summary = fit_monitor(
        clips,
        name,
        s,
        false_alarm_rate=false_alarm_rate,
        threshold_method=threshold_method,
        folds=folds,
        seconds=seconds,
        hop=hop,
        seed=seed,
        audio=AudioSettings(channel=channel),
        skip_bad=skip_bad,
        cache_dir=cache_dir,
        progress=progress,
        device=device,
        jobs=jobs,
    )
    if summary["random_init"]:
        log.warning("warning: %s: %s", summary["label"], summary["weights"])
    if out is not None:
        mon.save(out)
    return mon


def load_monitor(directory: str | os.PathLike, *, weights: str | None = None, device: str = "auto", runtime: str = "auto") -> Monitor:
    """The monitor in ``directory`` (written by :func:`fit`, ``humwatch fit`` or ``humwatch export``;
    or a fine-tuned model's folder, with its own threshold), checked as ``humwatch score`` checks it;
    ``weights``: where its backbone's weights are now, if they moved (they must be the same)."""
    from humwatch.monitor import load_monitor as _load

    _check_path(directory, "directory")
    if runtime not in ("auto", "torch", "onnx", "openvino"):
        raise ConfigError(f"runtime must be auto, torch, onnx or openvino, got {runtime!r}")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ConfigError(f"weights must be a path or a hub id, got {type(weights).__name__}")
    return _load(Path(directory), weights=None if weights is None else os.fspath(weights), device=device, runtime=runtime)


def backbones() -> list[str]:
    """The backbones an ``embed-detect`` method's ``backbone`` setting takes, sorted."""
    from humwatch.models import list_backbones

    return list_backbones()


# ----------------------------------------------------------------------------------------- helpers


def _check_path(value: Any, what: str) -> None:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigError(f"{what} must be a folder path, got {value!r}")


def _method(method: str | None, settings: Mapping[str, Any] | None) -> tuple[str, dict]:
    """The method's name and its settings: a name or a one-line spec, ``settings`` over it, or the
    command line's default (:func:`humwatch.methods.embed_detect.monitor_defaults`)."""
    from humwatch.methods import method_settings

    if settings is not None and not isinstance(settings, Mapping):
        raise ConfigError(f"settings must be a mapping (a dict of the method's settings), got {type(settings).__name__}")
    given = dict(settings or {})
    if method is None:
        from humwatch.methods.embed_detect import monitor_defaults

        defaults, note = monitor_defaults(given)
        if note:
            log.info("%s", note)
        name, s = DEFAULT_METHOD, {**defaults, **given}
    elif isinstance(method, str):
        from humwatch.methods.spec import parse_spec

        spec = parse_spec(method)
        name, s = spec.method, {**spec.settings, **given}
    else:
        raise ConfigError(f"method must be a method's name or a one-line spec, got {type(method).__name__}")
    method_settings(name, s)  # checked now (an unknown method or setting), before any audio is read
    return name, s


def _training_clips(data: Any, layout: str):
    """The clips ``fit`` learns from: a dataset folder or manifest as :func:`load_dataset` reads it,
    else recordings (each folder among them read as a dataset too)."""
    from humwatch.data import load_dataset
    from humwatch.recordings import as_recordings

    def folder(p: str):
        return load_dataset(p, layout=layout)

    if isinstance(data, (str, os.PathLike)) and (os.path.isdir(data) or os.fspath(data).lower().endswith(".csv")):
        return folder(os.fspath(data))
    return as_recordings(data, folder)[1]
