"""A monitor: any fitted method plus a calibrated decision threshold, for one machine (or type).

Recordings of any length are scored as windows of ``seconds`` (10 s) every ``hop`` seconds; a
recording's score is the highest of its windows' (:meth:`Monitor.score_clips`;
:meth:`Monitor.score_windows` gives them one by one). A shorter recording is padded with silence
(with a warning), another sample rate is resampled (with a note).

:func:`fit_monitor` (in :mod:`humwatch.calibrate`) fits a method on healthy recordings and sets the
threshold from out-of-fold scores of all of them, then fits the final method on every normal window.

A monitor is a folder, never a pickle::

    MONITOR/monitor.json          format version, humwatch version, method, threshold and its rule, audio and window settings
    MONITOR/method/               the fitted method (humwatch.methods: method.json, its arrays and weights)
    MONITOR/reference.safetensors the normal reference the "why did it alarm" figure compares with
    MONITOR/manifest.json         the SHA-256 of every file above, written last

``Monitor.load`` refuses, with one clear line, a monitor it cannot trust: a missing, changed or
added file, a bad field, a method whose backbone weights or embedding size differ from the ones it
was fitted with. :func:`load_monitor` also takes a saved method folder whose scores come with
their own threshold (a fine-tuned model's probability, 0.5: ``RUN/models/<group>`` of ``humwatch finetune --save-model``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from humwatch.audio import AudioSettings
from humwatch.calibrate import THRESHOLD_METHODS, fit_monitor  # noqa: F401  (fit_monitor: humwatch.monitor's public entry)
from humwatch.data.clips import Clip, expand_windows
from humwatch.errors import HumwatchError, ConfigError
from humwatch.io import check_manifest, read_json_doc, write_json, write_manifest

log = logging.getLogger("humwatch")

FORMAT = "humwatch-monitor"
FORMAT_VERSION = 2
METHOD_DIR = "method"
REFERENCE_FILE = "reference.safetensors"


class MonitorError(HumwatchError):
    """A monitor directory that cannot be trusted or used."""


@dataclass
class Monitor:
    """A fitted method + threshold (+ the normal reference). Build with :func:`fit_monitor` or :meth:`load`."""

    method: object
    threshold: float
    settings: dict = field(default_factory=dict)
    reference: object = None  # humwatch.explain.alarm.NormalReference

    @property
    def audio(self) -> AudioSettings:
        return AudioSettings(**self.settings.get("audio", {}))

    @property
    def hop(self) -> float:
        return float(self.settings.get("hop") or self.audio.seconds or 10.0)

    @property
    def random_init(self) -> bool:
        return bool(self.method.info().get("random_init", False))

    # -- scoring -------------------------------------------------------------------------------
    def score_windows(self, clips: Sequence[Clip], skip_bad: bool = False, progress: bool = True, cache_dir=None):
        """Every window of ``clips`` and its score: (windows, scores, skipped [(path, reason)])."""
        from humwatch.reader import ClipReader

        ctx = self.method.context
        ctx.reader = ClipReader(self.audio, "skip" if skip_bad else "error", progress)
        ctx.cache_dir = str(cache_dir) if cache_dir is not None else None
        windows = expand_windows(list(clips), self.audio.seconds or 10.0, self.hop)
        recording_notes(clips, self.audio)
        s = self.method.score(windows)
        ok = np.isfinite(s)
        return [w for w, k in zip(windows, ok) if k], s[ok], list(ctx.reader.skipped)

    def score_clips(self, clips: Sequence[Clip], skip_bad: bool = False, progress: bool = True, cache_dir=None):
        """One score per recording (the highest of its windows'): (kept clips, scores, skipped)."""
        clips = list(clips)
        windows, scores, skipped = self.score_windows(clips, skip_bad, progress, cache_dir)
        per = max_per_recording(windows, scores)
        kept = [c for c in clips if c.path in per]
        return kept, np.array([per[c.path] for c in kept], dtype=np.float64), skipped

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """True where a score is above the threshold (an alarm)."""
        return np.asarray(scores) > self.threshold

    # -- saving --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write the monitor folder: the method, the reference, monitor.json, then manifest.json, in
        a hidden folder that takes ``directory``'s place when complete (an older monitor there is
        replaced in one step, never mixed with the new one)."""
        from safetensors.numpy import save_file

        from humwatch.io import atomic_path

        from humwatch.io import check_out_folder, staged_folder

        check_out_folder(directory, kind="monitor")
        with staged_folder(directory, kind="monitor") as d:
            self.method.save(d / METHOD_DIR)
            if self.reference is not None:
                with atomic_path(d / REFERENCE_FILE, suffix=".safetensors") as tmp:
                    save_file({k: np.ascontiguousarray(v) for k, v in self.reference.arrays().items()}, str(tmp))
            write_json(d / "monitor.json", {"format": FORMAT, "format_version": FORMAT_VERSION, **self.settings,
                                            "threshold": float(self.threshold)})
            write_manifest(d)

    @classmethod
    def load(cls, directory: str | Path, weights: str | None = None, device: str = "cpu", runtime: str = "torch") -> "Monitor":
        """Load and check a monitor; ``weights`` says where the backbone's weights are now (they
        must be the ones the monitor was fitted with); ``runtime="onnx"``: an exported monitor's
        network on ONNX Runtime (:mod:`humwatch.onnxrun`)."""
        from humwatch.methods import Context, load_method
        from humwatch.reader import ClipReader

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
                               f"(this humwatch reads {FORMAT_VERSION}; fit the monitor again)")
        threshold = doc.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
            raise MonitorError(f"{mj}: threshold must be a finite number, got {threshold!r}")
        settings = {k: v for k, v in doc.items() if k not in ("format", "format_version", "threshold")}
        audio = check_monitor_fields(settings, mj)
        try:
            if runtime == "onnx":
                from humwatch.onnxrun import load_onnx_method

                method = load_onnx_method(d, ClipReader(audio))
            else:
                method = load_method(d / METHOD_DIR, Context(reader=ClipReader(audio), device=device), checked=True, weights=weights)
        except ConfigError as e:
            raise MonitorError(str(e)) from None
        return cls(method=method, threshold=float(threshold), settings=settings, reference=_load_reference(d, settings))


def check_monitor_fields(doc: dict, where: Path) -> AudioSettings:
    """Every field of a monitor.json that scoring reads, checked (a one-line MonitorError naming the
    field, never a KeyError or TypeError later); returns the audio settings."""
    from humwatch.methods import list_methods
    from humwatch.settings import Int, OneOf, Optional, Real

    def check(value, rule, name):
        try:
            return rule(value)
        except ValueError as e:
            raise MonitorError(f"{where}: {name} must be {e}, got {value!r}") from None

    for key, kind in (("audio", dict), ("threshold_rule", dict), ("method", str)):
        if not isinstance(doc.get(key), kind):
            raise MonitorError(f"{where}: field {key!r} is missing or not a {kind.__name__}")
    check(doc["method"], OneOf(tuple(list_methods())), "method")
    a = doc["audio"]
    unknown = set(a) - {"sample_rate", "seconds", "channel"}
    if unknown:
        raise MonitorError(f"{where}: audio has unknown field(s) {', '.join(sorted(unknown))}")
    audio = AudioSettings(check(a.get("sample_rate"), Int(1000, 384000), "audio.sample_rate"),
                          check(a.get("seconds"), Real(0.5, 600), "audio.seconds"),
                          check(a.get("channel"), Optional(Int(0)), "audio.channel"))
    check(doc.get("hop"), Real(0.0, audio.seconds, open_low=True), "hop")
    rule = doc["threshold_rule"]
    check(rule.get("method"), OneOf(THRESHOLD_METHODS), "threshold_rule.method")
    check(rule.get("false_alarm_rate"), Real(0.0, 1.0, open_low=True, open_high=True), "threshold_rule.false_alarm_rate")
    return audio


def _load_reference(d: Path, settings: dict):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from humwatch.explain.alarm import NormalReference

    f = d / REFERENCE_FILE
    if not f.is_file():
        return None
    try:
        return NormalReference.from_arrays(load_file(str(f)), int(settings.get("reference_windows") or 0))
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise MonitorError(f"{f}: unreadable ({e})") from None


def load_monitor(directory: str | Path, weights: str | None = None, device: str = "cpu", runtime: str = "auto") -> Monitor:
    """A monitor written by ``humwatch fit`` (monitor.json), or a saved method whose scores come with
    their own threshold (a fine-tuned model, ``RUN/models/<group>``: probability, threshold 0.5);
    ``runtime``: ``auto``, ``torch`` or ``onnx`` for a monitor written by ``humwatch export``
    (:func:`humwatch.onnxrun.choose_runtime`)."""
    from humwatch.methods import load_method
    from humwatch.onnxrun import choose_runtime

    d = Path(directory)
    if choose_runtime(d, runtime) == "onnx":
        if weights is not None:
            raise ConfigError("--weights does not apply to the onnx runtime: the weights are in the exported model")
        return Monitor.load(d, runtime="onnx")
    if d.is_dir() and not (d / "monitor.json").exists() and (d / "method.json").is_file():
        method = load_method(d, device=device, weights=weights)
        if method.natural_threshold is None:
            raise MonitorError(f"{d}: a saved {method.name} method has no threshold of its own; "
                               "fit a monitor with `humwatch fit --method ...`")
        audio = method.reader.audio
        settings = {"method": method.name, "kind": "saved method",
                    "audio": {"sample_rate": audio.sample_rate, "seconds": audio.seconds, "channel": audio.channel}}
        return Monitor(method=method, threshold=float(method.natural_threshold), settings=settings)
    return Monitor.load(d, weights=weights, device=device)


def max_per_recording(windows: Sequence[Clip], scores) -> dict[str, float]:
    """``{path: the highest score of its windows}``."""
    out: dict[str, float] = {}
    for w, s in zip(windows, np.asarray(scores, dtype=np.float64)):
        out[w.path] = max(out.get(w.path, -np.inf), float(s))
    return out


def recording_notes(clips: Sequence[Clip], audio: AudioSettings) -> None:
    """Say (at the default verbosity) which recordings are padded because they are shorter than a
    window, and which are resampled; one line each kind."""
    import soundfile as sf

    from humwatch.audio import check_file

    short, rates = [], {}
    for c in clips:
        try:
            info = sf.info(os.fsencode(check_file(c.path)))
        except Exception:  # noqa: BLE001 - an unusable file is reported when it is read
            continue
        if audio.seconds and info.duration < audio.seconds - 1e-3:
            short.append((Path(c.path).name, info.duration))
        if info.samplerate != audio.sample_rate:
            rates.setdefault(info.samplerate, []).append(c.path)
    if short:
        first = ", ".join(f"{n} ({d:.1f} s)" for n, d in short[:3])
        log.warning("warning: %d recording(s) shorter than the %g s window are padded with silence: %s%s",
                    len(short), audio.seconds, first, ", ..." if len(short) > 3 else "")
    for sr, paths in sorted(rates.items()):
        log.warning("note: %d recording(s) at %d Hz are resampled to %d Hz", len(paths), sr, audio.sample_rate)
