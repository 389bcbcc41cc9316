"""Fitting a monitor: a method learns a machine's healthy sound, and a threshold is calibrated so that
a chosen share of normal windows would raise an alarm.

**Calibration by cross-validation.** The normal recordings (each cut into ``seconds``-long windows
``hop`` apart) are split into ``folds`` groups (by recording; a few long recordings are cut into
contiguous time blocks instead, so windows of the same stretch of sound never sit on both sides).
Each group is scored by the method fitted on the others, which gives every normal window an
out-of-fold score: what an unseen normal window scores. The threshold is the ``1 - rate`` quantile
of those scores: ``percentile`` (empirical) or ``gamma`` (a gamma distribution fitted to them, as
the DCASE 2021+ baselines do; steadier with few windows). The false-alarm rate is **per window**
(one window = ``seconds`` of sound): a recording alarms when any of its windows does. Then the final
method is fitted on every normal window. A supervised method (``finetune``) folds its anomalous
recordings the same way and trains on them; an unsupervised one never sees them, and when the data
has some they are only used to report an AUC against the out-of-fold normal scores. That is
``folds + 1`` fits done literally; :mod:`humwatch.folds` embeds every window once for a method
whose network is fixed (refitting only the detector per fold) and trains the folds of a method
that trains a network in parallel processes (``jobs``), with the same numbers either way.

**Checks before any work**: the method's settings, the false-alarm rate and threshold method, and
whether there are enough normal windows for the rate (``percentile`` needs ``ceil(1 / rate)``;
``gamma`` needs :data:`humwatch.metrics.GAMMA_MIN_SCORES`) and enough per fold for the method.
**Windows no longer than the recordings, never padded**: when the shortest healthy recording is
shorter than ``seconds``, the window is the shortest recording's length (to a tenth of a second
below, with a note saying so); shorter than half a second (the shortest window) is refused with the
reason. An anomalous recording shorter than the window is left out of the AUC (with a note).
**Check after fitting**: inputs far from the training data (:meth:`Method.far_scores`) must score
above the threshold, and so must two real recordings scored end to end, loud white noise and a loud
pure tone (:func:`probe_scores`): a monitor that cannot alarm on them is refused, not saved (for a
supervised method, which learns what its anomalies sound like, it is a warning line).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from typing import Sequence

import numpy as np

from humwatch.audio import AudioSettings
from humwatch.data.clips import Clip, expand_windows
from humwatch.errors import ConfigError, DatasetError
from humwatch.fitcheck import check_recordings, fitted_recordings, recording_format, too_short
from humwatch.folds import cross_fit, fold_jobs
from humwatch.monitor import THRESHOLD_METHODS, Monitor, MonitorSettings, max_per_recording
from humwatch.runtime import Runtime, active
from humwatch.settings import FALSE_ALARM_RATE, FOLDS, WINDOW_SECONDS, OneOf, check_value

log = logging.getLogger("humwatch")


def windows_needed(false_alarm_rate: float, threshold_method: str) -> int:
    """How many out-of-fold normal scores the threshold rule needs."""
    from humwatch.metrics import GAMMA_MIN_SCORES

    if threshold_method == "percentile":
        return max(1, math.ceil(1.0 / false_alarm_rate - 1e-9))
    return GAMMA_MIN_SCORES


def fold_groups(windows: Sequence[Clip], folds: int) -> np.ndarray:
    """Fold index of every window: whole recordings per fold when there are at least ``folds`` of
    them (dealt round-robin in path order), else contiguous blocks of the windows in time order."""
    paths = sorted({w.path for w in windows})
    if len(paths) >= folds:
        of = {p: i % folds for i, p in enumerate(paths)}
        return np.array([of[w.path] for w in windows])
    order = sorted(range(len(windows)), key=lambda i: (windows[i].path, windows[i].start))
    groups = np.empty(len(windows), dtype=int)
    for rank, i in enumerate(order):
        groups[i] = rank * folds // len(windows)
    return groups


def fit_monitor(
    clips: Sequence[Clip],
    method: str = "embed-detect",
    settings: dict | None = None,
    *,
    false_alarm_rate: float = 0.05,
    threshold_method: str = "gamma",
    folds: int = 5,
    seconds: float = 10.0,
    hop: float | None = None,
    seed: int = 0,
    audio: AudioSettings | None = None,
    skip_bad: bool = False,
    cache_dir=None,
    progress: bool = True,
    device: str = "cpu",
    jobs: int | None = None,
) -> tuple["Monitor", dict]:  # noqa: F821
    """Fit a monitor with ``method`` (and its ``settings``) on ``clips``; returns (monitor, summary).
    ``jobs``: trainings at once for a method that trains a network (default: the cores here;
    :mod:`humwatch.folds`)."""
    from humwatch._version import __version__
    from humwatch.methods import Context, create_method, method_settings
    from humwatch.metrics import auc, threshold_from_scores

    # -- everything that can be checked before reading audio or building a model
    check_value(threshold_method, OneOf(THRESHOLD_METHODS), "threshold_method", "monitor")
    false_alarm_rate = check_value(false_alarm_rate, FALSE_ALARM_RATE, "false_alarm_rate", "monitor")
    folds = check_value(folds, FOLDS, "folds", "monitor")
    seconds = check_value(seconds, WINDOW_SECONDS, "seconds", "monitor")
    if hop is not None and not 0 < hop <= seconds:
        raise ConfigError(f"hop must be above 0 and at most the window length ({seconds:g} s), got {hop:g}")
    s = method_settings(method, settings)
    normal = [c for c in clips if not c.is_anomalous]
    anomalous = [c for c in clips if c.is_anomalous]
    if not normal:
        raise DatasetError("a monitor needs normal (healthy) recordings to learn from; found none")
    seconds = window_for(normal, seconds)
    if hop is not None and hop > seconds:
        log.warning("note: --hop %g is longer than the %g s window: the hop is %g s", hop, seconds, seconds)
    hop = min(float(hop if hop is not None else seconds), seconds)
    base = audio or AudioSettings()
    audio = AudioSettings(base.sample_rate, float(seconds), base.channel)
    ctx = Context(audio=audio, seed=seed, device=device)
    rt = Runtime(on_bad="skip" if skip_bad else "error", progress=progress, cache_dir=str(cache_dir) if cache_dir is not None else None)
    m = create_method(method, s, ctx, title="monitor")
    refused, _ = check_recordings(anomalous, audio)
    if refused:
        log.warning("note: %d anomalous recording(s) shorter than the %g s window are left out of the AUC", len(refused), seconds)
        anomalous = [c for c in anomalous if c.path not in refused]
    windows = expand_windows(normal, seconds, hop)
    need = windows_needed(false_alarm_rate, threshold_method)
    if len(windows) < need:
        raise DatasetError(
            f"a false-alarm rate of {false_alarm_rate:g} with the {threshold_method} threshold needs at least {need} "
            f"normal windows of {seconds:g} s, these {len(normal)} recording(s) give {len(windows)}: record more, or "
            + (
                "raise --false-alarm-rate"
                if threshold_method == "gamma"
                else f"raise --false-alarm-rate to {1 / len(windows):.2g}, or use --threshold-method gamma"
            )
        )
    k = min(folds, len(windows))
    per_fold = len(windows) - math.ceil(len(windows) / k)
    if per_fold < m.min_fit_clips():
        raise DatasetError(
            f"{method}: each of the {k} calibration folds trains on {per_fold} normal windows, it needs at least {m.min_fit_clips()}: record more"
        )
    if m.supervised and not anomalous:
        raise DatasetError(f"{method} learns from normal and anomalous recordings; found no anomalous ones")
    jobs = fold_jobs(jobs, k, device)
    check_recordings(normal, audio)  # the resampling note

    # -- out-of-fold scores of every normal window, and the final method on every normal window (and the
    # anomalous ones, if it learns from them): humwatch.folds does it with as few trainings as it can
    bad = expand_windows(anomalous, seconds, hop) if anomalous else []
    groups = fold_groups(windows, k)
    bad_groups = fold_groups(bad, k) if bad else np.zeros(0, int)

    def make_fold(f: int):
        return create_method(method, s, ctx, title=f"monitor: fold {f + 1}/{k}")

    worker = {
        "method": method,
        "settings": s,
        "audio": audio,
        "on_bad": rt.on_bad,
        "cache_dir": rt.cache_dir,
        "seed": seed,
        "device": device,
    }
    with active(rt):  # every fit and score of the calibration runs with this call's runtime (its skip count)
        oof, oof_bad = cross_fit(m, make_fold, windows, groups, bad, bad_groups, k, jobs=jobs, worker=worker)
    ok = np.isfinite(oof)
    if ok.sum() < need:
        raise DatasetError(f"only {int(ok.sum())} normal windows could be scored (bad files skipped); {need} are needed")
    threshold = threshold_from_scores(oof[ok], false_alarm_rate=false_alarm_rate, method=threshold_method)
    with active(rt):
        far = m.far_scores()
    if not np.any(np.asarray(far) > threshold):
        raise ConfigError(
            f"this monitor could never alarm: inputs far from the training data score at most {np.nanmax(far):.4g}, "
            f"not above the calibrated threshold {threshold:.4g} ({m.label}); choose another detector or method"
        )
    with active(rt):
        probes = probe_scores(m)
    deaf = [f"{name} scores {v:.4g}" for name, v in probes.items() if not v > threshold]
    if deaf and m.supervised:  # it learnt what its anomalies sound like: noise need not sound like one (said, not refused)
        log.warning("warning: this monitor does not alarm on %s (threshold %.4g)", ", ".join(deaf), threshold)
    elif deaf:
        raise ConfigError(
            f"this monitor does not alarm on sounds no healthy machine makes: {', '.join(deaf)}, not above the calibrated "
            f"threshold {threshold:.4g} ({m.label}, {seconds:g} s windows); record more healthy sound, or choose another method"
        )
    reference = _reference(rt.reader(audio), [w for w, g in zip(windows, ok) if g], audio)
    info = m.info()

    # -- what the anomalous recordings say (never used for the threshold)
    report_auc = None
    if anomalous:
        if not m.supervised:
            oof_bad = m.score(bad, runtime=rt)
        normal_rec = max_per_recording([w for w, g in zip(windows, ok) if g], oof[ok])
        fine = np.isfinite(oof_bad)
        bad_rec = max_per_recording([w for w, g in zip(bad, fine) if g], oof_bad[fine])
        if normal_rec and bad_rec:
            y = [0] * len(normal_rec) + [1] * len(bad_rec)
            report_auc = auc(y, list(normal_rec.values()) + list(bad_rec.values()))

    mon_settings = MonitorSettings(
        humwatch_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        machines=tuple(sorted({f"{c.machine_type} {c.machine_id}" for c in normal})),
        method=method,
        label=m.label,
        weights=info.get("weights", ""),
        random_init=bool(info.get("random_init", False)),
        audio=audio,
        hop=hop,
        threshold_rule={
            "method": threshold_method,
            "false_alarm_rate": false_alarm_rate,
            "per": "window",
            "folds": k,
            "n_windows": int(ok.sum()),
            "n_recordings": len(normal),
            "seed": seed,
            "score_range": [float(oof[ok].min()), float(oof[ok].max())],
        },
        n_train=m.n_train_,
        reference_windows=reference.n_windows if reference is not None else 0,
        recordings=fitted_recordings(normal),
    )
    summary = {
        "n_recordings": len(normal),
        "n_windows": len(windows),
        "n_train": m.n_train_,
        "n_calibration": int(ok.sum()),
        "folds": k,
        "n_anomalous": len(anomalous),
        "threshold": threshold,
        "oof_alarm_share": float(np.mean(oof[ok] > threshold)),
        "anomalous_auc": report_auc,
        "skipped": rt.skipped,
        "weights": info.get("weights", ""),
        "random_init": bool(info.get("random_init", False)),
        "label": m.label,
        "seconds": seconds,
        "probe_scores": probes,
    }
    return Monitor(method=m, threshold=threshold, settings=mon_settings, reference=reference), summary


def window_for(normal: Sequence[Clip], seconds: float) -> float:
    """The window a monitor is fitted with: ``seconds``, or the shortest healthy recording's length
    (to a tenth of a second below) when that is shorter (with a note); DatasetError when it is
    shorter than the shortest window (:data:`humwatch.settings.WINDOW_SECONDS`)."""
    from humwatch.audio import WINDOW_SLACK

    lengths = [(f[0], c) for c, f in ((c, recording_format(c)) for c in normal) if f is not None]
    if not lengths:
        return seconds
    shortest, clip = min(lengths, key=lambda t: t[0])
    if shortest >= seconds - WINDOW_SLACK:
        return seconds
    name = clip.key if clip.in_memory else clip.path
    window = math.floor((shortest + WINDOW_SLACK) * 10) / 10
    if window < WINDOW_SECONDS.low:
        raise DatasetError(too_short(shortest, WINDOW_SECONDS.low, name).replace("the monitor's", "a monitor's shortest"))
    log.warning(
        "note: the shortest healthy recording (%s) is %.1f s: the monitor's window is %g s, not %g s (windows are never padded)",
        name,
        shortest,
        window,
        seconds,
    )
    return window


PROBE_LEVEL = 0.9
"""The probes' peak level (full scale = 1.0)."""


def probe_scores(m) -> dict[str, float]:
    """The fitted method's scores of loud white noise and a loud 1 kHz pure tone, each a real
    recording of one window scored end to end (as any clip is): a monitor must alarm on both."""
    from humwatch.data.clips import Clip

    sr = m.audio.sample_rate
    n = int(round(m.audio.seconds * sr))
    t = np.arange(n) / sr
    probes = {
        "loud white noise": PROBE_LEVEL * np.clip(np.random.default_rng(1).standard_normal(n) / 3, -1, 1),
        "a loud 1 kHz tone": PROBE_LEVEL * np.sin(2 * np.pi * 1000 * t),
    }
    clips = [Clip.from_array(y.astype(np.float32), sr, f"probe-{i}.wav", "probe", "probe", 1) for i, y in enumerate(probes.values())]
    from dataclasses import replace

    from humwatch.runtime import current

    rt = current() or Runtime()
    scores = np.asarray(m.score(clips, runtime=replace(rt, cache_dir=None, keep_embeddings=False)), dtype=np.float64)  # never cached
    return {name: float(v) for name, v in zip(probes, scores)}


def _reference(reader, windows: Sequence[Clip], audio: AudioSettings):
    """The normal reference of the "why did it alarm" figure, from the normal windows (bad ones skipped)."""
    from humwatch.explain.alarm import NormalReference

    signals = (y for _, ys in reader.batches(windows, 16, "monitor: normal reference") for y in ys)
    try:
        return NormalReference.from_signals(signals, audio.sample_rate)
    except ValueError:
        return None
