"""A monitor: any fitted method plus a calibrated decision threshold, for one machine (or type).

Recordings of any length are scored as windows of ``seconds`` (10 s) every ``hop`` seconds; a recording's score is the
highest of its windows' (:meth:`Monitor.score_clips`; :meth:`Monitor.score_windows` gives them one by one). A shorter
recording is padded with silence (with a warning), another sample rate is resampled (with a note).

:func:`humwatch.calibrate.fit_monitor` fits a method on healthy recordings and sets the threshold from out-of-fold
scores of all of them, then fits the final method on every normal window.

A monitor scores with a :class:`~humwatch.methods.base.Scorer` (a fitted method, or its network on ONNX Runtime or
OpenVINO) and never changes it: each call hands the method its own :class:`~humwatch.runtime.Runtime`, so one monitor
scores from several threads at once and each call's skipped files come back from that call. ``monitor.json`` is read
into a typed :class:`MonitorSettings`; a loaded monitor has a :class:`MonitorRecipe` (its folder and how it was loaded)
from which a worker process rebuilds it (:mod:`humwatch.engine.ray`).

A monitor is a folder, never a pickle::

    MONITOR/monitor.json          format version, humwatch version, method, threshold and its rule (with the
                                  calibration scores' range), audio and window settings, its weights' SHA-256
    MONITOR/method/               the fitted method (humwatch.methods: method.json, its arrays and weights)
    MONITOR/reference.safetensors the normal reference the "why did it alarm" figure compares with
    MONITOR/manifest.json         the SHA-256 of every file above, written last

``Monitor.load`` refuses, with one clear line, a monitor it cannot trust: a missing, changed or added file, a field that
is not what it must be (every field is checked, an unknown one refused), weights that differ from the SHA-256
monitor.json and method.json record of them (checked apart from the manifest: a manifest recomputed over edited weights
does not help), audio settings that are not the method's, a threshold its calibration could not give
(:func:`check_threshold`), a method whose backbone weights or embedding size differ from the ones it was fitted with. One
written by a newer humwatch loads with a warning line. A window whose score is not finite is an
error for its recording (a counted skip with ``skip_bad``), never left out in silence. :func:`load_monitor` also takes a saved method folder whose scores come with
their own threshold (a fine-tuned model's probability, 0.5: ``RUN/models/<group>`` of ``humwatch finetune --save-model``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np

from humwatch.audio import AudioSettings
from humwatch.data.clips import Clip, expand_windows
from humwatch.errors import ConfigError, HumwatchError
from humwatch.io import check_manifest, check_weight_fingerprints, damaged, read_json_doc, weight_fingerprints, write_json, write_manifest
from humwatch.methods.base import Scorer
from humwatch.runtime import Runtime

if TYPE_CHECKING:
    from humwatch.recordings import Scores  # Monitor.score's result (the Python API)

log = logging.getLogger("humwatch")

FORMAT = "humwatch-monitor"
FORMAT_VERSION = 3
"""3: monitor.json records its weights' fingerprints and the calibration's score range."""
METHOD_DIR = "method"
REFERENCE_FILE = "reference.safetensors"
THRESHOLD_METHODS = ("percentile", "gamma")


class MonitorError(HumwatchError):
    """A monitor directory that cannot be trusted or used."""


@dataclass(frozen=True)
class MonitorSettings:
    """What monitor.json says of a monitor besides its threshold (its fields, by name; ``kind`` is
    not saved: ``saved method`` for a fine-tuned model folder loaded as a monitor)."""

    method: str
    audio: AudioSettings
    humwatch_version: str = ""
    created: str = ""
    machines: tuple[str, ...] = ()
    label: str = ""
    weights: str = ""
    random_init: bool = False
    hop: float | None = None
    threshold_rule: dict = field(default_factory=dict)
    n_train: int = 0
    reference_windows: int = 0
    recordings: dict = field(default_factory=dict)
    """The channel counts and sample rates of the recordings it was fitted on (:func:`humwatch.fitcheck.fitted_recordings`;
    empty for a monitor written before humwatch recorded them)."""
    kind: str = "monitor"

    SAVED: ClassVar[tuple[str, ...]] = (
        "humwatch_version",
        "created",
        "machines",
        "method",
        "label",
        "weights",
        "random_init",
        "audio",
        "hop",
        "threshold_rule",
        "n_train",
        "reference_windows",
        "recordings",
    )
    """The fields monitor.json holds, in its order (besides format, format_version, threshold, fingerprints)."""

    def to_dict(self) -> dict:
        """The fields as monitor.json writes them."""
        a = self.audio
        out = {k: getattr(self, k) for k in self.SAVED}
        if not self.recordings:
            del out["recordings"]
        out.update(
            machines=list(self.machines),
            threshold_rule=dict(self.threshold_rule),
            audio={"sample_rate": a.sample_rate, "seconds": a.seconds, "channel": a.channel},
        )
        return out

    @classmethod
    def from_doc(cls, doc: dict, audio: AudioSettings) -> "MonitorSettings":
        """The settings of a checked monitor.json (:func:`check_monitor_fields`)."""
        kw = {k: doc[k] for k in cls.SAVED if k not in ("audio", "machines", "recordings")}
        return cls(**kw, audio=audio, machines=tuple(doc["machines"]), recordings=dict(doc.get("recordings") or {}))


@dataclass(frozen=True)
class MonitorRecipe:
    """How to rebuild a loaded monitor in another process (a Ray worker): its folder and the
    arguments it was loaded with (:func:`load_monitor`)."""

    directory: str
    weights: str | None = None
    device: str = "cpu"
    runtime: str = "torch"
    cache_dir: str | None = None

    def build(self) -> "Monitor":
        return load_monitor(self.directory, weights=self.weights, device=self.device, runtime=self.runtime, cache_dir=self.cache_dir)


@dataclass
class Monitor:
    """A fitted method + threshold (+ the normal reference). Build with
    :func:`humwatch.calibrate.fit_monitor` or :func:`load_monitor`."""

    method: Scorer
    threshold: float
    settings: MonitorSettings
    reference: object = None  # humwatch.explain.alarm.NormalReference
    recipe: MonitorRecipe | None = None
    """Set by :func:`load_monitor`: how a worker process rebuilds this monitor."""

    @property
    def audio(self) -> AudioSettings:
        return self.settings.audio

    @property
    def hop(self) -> float:
        return float(self.settings.hop or self.audio.seconds or 10.0)

    @property
    def random_init(self) -> bool:
        return bool(self.method.info().get("random_init", False))

    # -- scoring -------------------------------------------------------------------------------
    def score_windows(self, clips: Sequence[Clip], skip_bad: bool = False, progress: bool = True, cache_dir=None):
        """Every window of ``clips`` and its score: (windows, scores, skipped [(path, reason)] of this call).
        A recording shorter than the window is refused (an AudioError, or a skip with ``skip_bad``);
        another channel count or sample rate than the monitor's recordings is a warning line (logged)."""
        from humwatch.errors import AudioError
        from humwatch.fitcheck import check_recordings

        rt = Runtime(on_bad="skip" if skip_bad else "error", progress=progress, cache_dir=str(cache_dir) if cache_dir is not None else None)
        reader = rt.reader(self.audio)
        clips = list(clips)
        refused, warnings = check_recordings(clips, self.audio, self.settings.recordings)
        if refused and self.settings.kind == "saved method":  # a study run's model: it learned from clips read so
            log.warning(
                "note: %d recording(s) shorter than %g s are padded with silence, as the run that trained this model read its clips",
                len(refused),
                self.audio.seconds,
            )
            refused = {}
        for line in warnings:
            log.warning("%s", line)
        for c in clips:
            if c.path in refused:
                reader.fail(c, AudioError(refused[c.path]))
        windows = expand_windows([c for c in clips if c.path not in refused], self.audio.seconds or 10.0, self.hop)
        s = self.method.score(windows, runtime=rt)
        for w, v in zip(windows, s):  # NaN is a window the reader skipped; any other is the monitor failing
            if not np.isfinite(v) and not reader.is_bad(w):
                reader.fail(
                    w,
                    MonitorError(
                        f"{w.key}: the monitor's score is {v} (not a finite number): the monitor cannot score it (damaged weights?)"
                    ),
                )
        ok = np.isfinite(s)
        return [w for w, k in zip(windows, ok) if k], s[ok], rt.skipped

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

        from humwatch.io import atomic_path, check_out_folder, staged_folder

        check_out_folder(directory, kind="monitor")
        with staged_folder(directory, kind="monitor") as d:
            self.method.save(d / METHOD_DIR)
            if self.reference is not None:
                with atomic_path(d / REFERENCE_FILE, suffix=".safetensors") as tmp:
                    save_file({k: np.ascontiguousarray(v) for k, v in self.reference.arrays().items()}, str(tmp))
            write_json(
                d / "monitor.json",
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    **self.settings.to_dict(),
                    "threshold": float(self.threshold),
                    "fingerprints": weight_fingerprints(d),
                },
            )
            write_manifest(d)

    @classmethod
    def load(
        cls, directory: str | Path, weights: str | None = None, device: str = "cpu", runtime: str = "torch", cache_dir=None
    ) -> "Monitor":
        """Load and check a monitor; ``weights`` says where the backbone's weights are now (they
        must be the ones the monitor was fitted with); ``runtime="onnx"``: an exported monitor's
        network on ONNX Runtime (:mod:`humwatch.onnxrun`); ``"openvino"``: on OpenVINO (:mod:`humwatch.ovrun`)."""
        from humwatch.methods import Context, load_method

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
            raise MonitorError(
                f"{mj}: monitor format {doc.get('format_version')!r} is not supported (this humwatch reads {FORMAT_VERSION}; fit the monitor again)"
            )
        audio = check_monitor_fields(doc, mj)
        threshold = float(doc["threshold"])
        settings = MonitorSettings.from_doc(doc, audio)
        try:
            check_weight_fingerprints(d, doc["fingerprints"], mj)
            if runtime == "onnx" or (runtime == "openvino" and (d / "export.json").is_file()):
                from humwatch.ovrun import load_exported

                method = load_exported(d, audio, runtime)
            else:
                method = load_method(d / METHOD_DIR, Context(audio=audio, device=device), checked=True, weights=weights)
        except ConfigError as e:
            raise MonitorError(str(e)) from None
        mon = cls(
            method=method,
            threshold=threshold,
            settings=settings,
            reference=_load_reference(d, settings),
            recipe=MonitorRecipe(str(d), weights, device, runtime, cache_dir),
        )
        check_method_matches(mon, mj)
        if runtime == "openvino" and getattr(method, "backend", "torch") == "torch":  # a plain monitor: converted once, cached
            from humwatch.convert import cached_openvino

            mon.method = cached_openvino(d, method, audio, cache_dir)
        return mon

    # -- the Python API (docs/api.md) -----------------------------------------------------------
    def score(self, recordings, *, skip_bad: bool = False, progress: bool = False, cache_dir=None) -> Scores:
        """Score ``recordings`` (paths, folders, :class:`Clip` objects, ``(array, sample_rate)``
        pairs or a dict ``name -> (array, sample_rate)``: :func:`humwatch.recordings.as_recordings`)
        window by window, as :meth:`score_windows`; returns a :class:`humwatch.recordings.Scores`:
        one typed result per recording (higher = more anomalous) and, with ``skip_bad``, the
        skipped ones with their reasons (without it, the first unusable one is an error)."""
        from humwatch.recordings import as_recordings, collect

        names, clips = as_recordings(recordings)
        windows, scores, skipped = self.score_windows(clips, skip_bad=skip_bad, progress=progress, cache_dir=cache_dir)
        return collect(names, clips, windows, scores, skipped, self.threshold, self.audio.seconds or 10.0)


THRESHOLD_SPREADS = 1000
"""How far above the calibration scores a threshold may lie, in units of their size (see :func:`check_threshold`)."""


def check_monitor_fields(doc: dict, where: Path) -> AudioSettings:
    """Every field of a monitor.json checked against what it must be (a one-line MonitorError naming
    the field, never a KeyError or TypeError later, nor a wrong value shown or used); a field this
    humwatch does not know is refused. Returns the audio settings."""
    from humwatch.audio import saved_audio_settings
    from humwatch.methods import list_methods
    from humwatch.methods.base import VERSION, warn_if_newer
    from humwatch.settings import (
        FALSE_ALARM_RATE,
        FOLDS,
        SAMPLE_RATE_HZ,
        SEED,
        Bool,
        Int,
        Mapping,
        OneOf,
        Optional,
        Pattern,
        Real,
        Seq,
        Text,
        check_fields,
        check_value,
    )

    try:
        v = check_fields(
            doc,
            {
                "format": OneOf((FORMAT,)),
                "format_version": OneOf((FORMAT_VERSION,)),
                "humwatch_version": VERSION,
                "created": Pattern(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?", "a date and time (ISO 8601)"),
                "machines": Seq(Text()),
                "method": OneOf(tuple(list_methods())),
                "label": Text(),
                "weights": Text(empty=True),
                "random_init": Bool(),
                "audio": Mapping(),
                "hop": Real(0.0, open_low=True),
                "threshold_rule": Mapping(),
                "n_train": Int(1),
                "reference_windows": Int(0),
                "recordings": Optional(Mapping()),
                "threshold": Real(),
                "fingerprints": Mapping(),
            },
            where,
        )
        audio = saved_audio_settings(v["audio"], where, seconds_required=True)
        check_value(v["hop"], Real(0.0, audio.seconds, open_low=True), "hop", where)
        rule = check_fields(
            v["threshold_rule"],
            {
                "method": OneOf(THRESHOLD_METHODS),
                "false_alarm_rate": FALSE_ALARM_RATE,
                "per": OneOf(("window",)),
                "folds": FOLDS,
                "n_windows": Int(1),
                "n_recordings": Int(1),
                "seed": SEED,
                "score_range": Seq(Real(), min_len=2),
            },
            where,
            "threshold_rule.",
        )
        if v["recordings"] is not None:  # optional (format 3 monitors written before it have none)
            check_fields(
                v["recordings"],
                {"channels": Seq(Int(1, 1024), min_len=1), "sample_rates": Seq(SAMPLE_RATE_HZ, min_len=1)},
                where,
                "recordings.",
            )
    except ConfigError as e:
        raise MonitorError(str(e)) from None
    check_threshold(v["threshold"], rule, where)
    warn_if_newer(v["humwatch_version"], where)
    return audio


def check_threshold(threshold: float, rule: dict, where) -> None:
    """A threshold its calibration could have given: ``score_range`` (the lowest and highest
    out-of-fold normal score) holds a ``percentile`` threshold (it is their quantile); a ``gamma``
    one (the fitted distribution's quantile, which may lie above them) lies from a spread below the
    lowest to :data:`THRESHOLD_SPREADS` times their size above the highest. Where every calibration
    score is above 0 (distances, reconstruction errors, LOF values: every usual monitor) the
    threshold must be too. Not "above 0" for every monitor: a ``gmm`` detector's -log p(x) and
    ``normalize``'s z-scores can be negative."""
    rng = rule["score_range"]
    if len(rng) != 2 or rng[0] > rng[1]:
        raise MonitorError(f"{where}: threshold_rule.score_range must be [lowest, highest] score, got {rng!r}")
    lo, hi = rng
    span = hi - lo
    size = max(span, abs(lo), abs(hi), 1e-12)
    tol = 1e-9 * size
    if rule["method"] == "percentile":
        low, high = lo - tol, hi + tol
    else:
        low, high = lo - span - tol, hi + THRESHOLD_SPREADS * size
    if lo > 0:
        low = max(low, 0.0)
    if not low <= threshold <= high or (lo > 0 and threshold <= 0):
        raise MonitorError(
            f"{where}: threshold {threshold!r} is not one its calibration could give "
            f"({rule['method']} of normal scores from {lo:.6g} to {hi:.6g}: "
            f"{'above 0 and ' if lo > 0 else ''}from {low:.6g} to {high:.6g})"
        )


def check_method_matches(mon: "Monitor", where: Path) -> None:
    """The monitor.json's account of its method is the method's own (name, training size, random init)."""
    m, s = mon.method, mon.settings
    if m.name != s.method:
        raise MonitorError(f"{where}: method {s.method!r}, but its method folder holds {m.name!r}")
    if getattr(m, "backend", "torch") != "torch":  # an exported network: its method's numbers are in method.json
        return
    if m.n_train_ != s.n_train:
        raise MonitorError(f"{where}: n_train {s.n_train!r}, but its method was fitted on {m.n_train_}")
    if bool(m.info().get("random_init", False)) != s.random_init:
        raise MonitorError(
            f"{where}: random_init {s.random_init!r}, but its method's weights say {bool(m.info().get('random_init', False))}"
        )


def _load_reference(d: Path, settings: MonitorSettings):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from humwatch.explain.alarm import NormalReference

    f = d / REFERENCE_FILE
    n = settings.reference_windows
    if f.is_file() != (n > 0):
        raise MonitorError(
            f"{d / 'monitor.json'}: reference_windows is {n}, but {REFERENCE_FILE} is {'there' if f.is_file() else 'missing'}"
        )
    if not f.is_file():
        return None
    try:
        ref = NormalReference.from_arrays(load_file(str(f)), n)
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise damaged(f, e) from None
    from humwatch.explain.alarm import N_MELS

    shapes = (ref.mean.shape, ref.std.shape, ref.example.shape)
    if shapes[:2] != ((N_MELS,), (N_MELS,)) or len(shapes[2]) != 2 or shapes[2][0] != N_MELS or shapes[2][1] < 1:
        raise MonitorError(f"{f}: arrays of shapes {shapes}, not a {N_MELS}-band normal reference")
    if not all(np.isfinite(a).all() for a in (ref.mean, ref.std, ref.example)) or (ref.std < 0).any():
        raise MonitorError(f"{f}: holds values that are not finite (or a negative spread)")
    cs = ref.clip_spread
    if cs is not None and (cs.shape != (N_MELS,) or not np.isfinite(cs).all() or (cs <= 0).any()):
        raise MonitorError(f"{f}: clip_spread is not {N_MELS} positive numbers")
    return ref


def load_monitor(directory: str | Path, weights: str | None = None, device: str = "cpu", runtime: str = "auto", cache_dir=None) -> Monitor:
    """A monitor written by ``humwatch fit`` (monitor.json), or a saved method whose scores come with
    their own threshold (a fine-tuned model, ``RUN/models/<group>``: probability, threshold 0.5);
    ``runtime``: ``auto``, ``torch``, ``onnx`` or ``openvino`` (:func:`humwatch.onnxrun.choose_runtime`);
    ``cache_dir``: where ``openvino`` keeps a plain monitor's converted network."""
    from humwatch.methods import load_method
    from humwatch.onnxrun import choose_runtime

    d = Path(directory)
    chosen = choose_runtime(d, runtime)
    if chosen != "torch" and (d / "monitor.json").is_file():  # onnx: an export (choose_runtime); openvino: either
        if weights is not None and (d / "export.json").is_file():
            raise ConfigError(f"--weights does not apply to the {chosen} runtime: the weights are in the exported model")
        return Monitor.load(d, weights=weights, device=device, runtime=chosen, cache_dir=cache_dir)
    if d.is_dir() and not (d / "monitor.json").exists() and (d / "method.json").is_file():
        method = load_method(d, device=device, weights=weights)
        if method.natural_threshold is None:
            raise MonitorError(
                f"{d}: a saved {method.name} method has no threshold of its own; fit a monitor with `humwatch fit --method ...`"
            )
        settings = MonitorSettings(method=method.name, audio=method.audio, kind="saved method")
        return Monitor(
            method=method,
            threshold=float(method.natural_threshold),
            settings=settings,
            recipe=MonitorRecipe(str(d), weights, device, "torch"),
        )
    return Monitor.load(d, weights=weights, device=device)


def max_per_recording(windows: Sequence[Clip], scores) -> dict[str, float]:
    """``{path: the highest score of its windows}``."""
    out: dict[str, float] = {}
    for w, s in zip(windows, np.asarray(scores, dtype=np.float64)):
        out[w.path] = max(out.get(w.path, -np.inf), float(s))
    return out
