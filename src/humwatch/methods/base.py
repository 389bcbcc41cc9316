"""What every method is: settings checked before work, ``fit(clips)``, ``score(clips)``, ``save(dir)``
and ``load(dir)``.

A method turns clips into anomaly scores (higher = more anomalous). It is built from its settings
(a :class:`~humwatch.settings.Settings` dataclass, checked before any audio is read or any model is
built) and a :class:`Context` (what a fit leaves and the methods of a run share: the audio settings,
the seed, the device, the shared backbones). How one call runs (the bad-file policy and its skip
count, progress bars, the engine, the embedding cache, whether to keep embeddings) is not the
method's: it is a :class:`~humwatch.runtime.Runtime` handed to ``fit`` and ``score`` (a default one
when not given), so one fitted method can score from several threads at once.

A subclass writes ``_fit``, ``_score`` and ``_save`` / ``_load``; this base class does the rest:

* ``fit(clips, val=())`` keeps the clips the method learns from (the normal ones, unless the method
  is ``supervised``) and refuses an empty set;
* ``score(clips, runtime=...)`` returns one float64 score per clip, NaN where a bad clip was
  skipped (``runtime.skipped`` has the reasons); ``readings(clips)`` also returns other named
  scores a method can give (``lof-vote``'s vote count);
* ``save(dir)`` writes the method's files and then ``method.json`` (name, settings, humwatch version,
  the method's state, the SHA-256 of each weights file), last, so a half-written folder is never
  taken for a whole one; :func:`load_method` reads it back, never through pickle, after checking
  every field of method.json (:func:`check_method_doc`) and the weights against their fingerprints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Sequence, runtime_checkable

import numpy as np

from humwatch.audio import AudioSettings
from humwatch.data.clips import Clip
from humwatch.errors import ConfigError, DatasetError
from humwatch.reader import ClipReader
from humwatch.runtime import Runtime, active, current
from humwatch.settings import Bool, Int, Mapping, OneOf, Optional, Pattern, Settings, Text, check_fields, check_value, setting

METHOD_FILE = "method.json"
FORMAT = "humwatch.method/1"


def _backbone_names() -> list[str]:
    from humwatch.models import list_backbones

    return list_backbones()


def precision_setting():
    """The ``precision`` setting of every method that runs a backbone (:mod:`humwatch.models.precision`)."""
    return setting(
        "auto", OneOf(("auto", "fp32", "bf16")), "auto (bf16 where the hardware does it natively, else fp32), fp32, or bf16 autocast"
    )


def saved_precision(settings, saved: dict | None):
    """``settings`` with ``precision: auto`` replaced by the precision "auto" chose when the method
    was fitted (its saved backbone record), so a monitor loaded on other hardware gives the same
    embeddings, and its cache key (which includes the precision) matches."""
    from dataclasses import replace

    p = (saved or {}).get("precision")
    return replace(settings, precision=p) if settings.precision == "auto" and p in ("fp32", "bf16") else settings


@dataclass
class BackboneSettings(Settings):
    """The backbone part of a method's settings (shared by every method that embeds clips)."""

    backbone: str = setting("ast", OneOf(_backbone_names), "embedding backbone")
    weights: str = setting("default", Text(), "hub id, local folder/file, 'default' (the study's) or 'none' (random init)")
    precision: str = precision_setting()
    backbone_config: dict | None = setting(None, Optional(Mapping()), "architecture overrides (tiny test models)")

    def backbone_kwargs(self) -> dict:
        return {"weights": self.weights, "precision": self.precision, "config": self.backbone_config}


@dataclass
class Context:
    """What a fit leaves and every method of one run (or monitor) shares; how a call runs is a
    :class:`~humwatch.runtime.Runtime` instead."""

    audio: AudioSettings = field(default_factory=AudioSettings)
    """The audio settings the method reads clips with (it is fitted on them)."""
    seed: int = 0
    device: str = "cpu"
    run_clips: list = field(default_factory=list, repr=False)
    """Every training and validation clip of the run, of all its groups (never a test clip): for
    methods that also learn from the other machines (``idnet``: outlier exposure, one network per run)."""
    shared: dict = field(default_factory=dict, repr=False)
    """What a method fitted once for the whole run keeps for the run's other groups (keyed by the method)."""
    _backbones: dict = field(default_factory=dict, repr=False)

    def backbone(self, s: BackboneSettings, shared: bool = True):
        """The backbone of ``s``: shared by the run's methods and built only when first needed
        (a :class:`~humwatch.models.LazyBackbone`: a run whose embeddings are all cached builds
        none), or, with ``shared=False``, a new built one (for methods that change its weights)."""
        from humwatch.models import create_backbone, plan_backbone

        if not shared:
            return create_backbone(s.backbone, seed=self.seed, device=self.device, **s.backbone_kwargs())
        key = json.dumps([s.backbone, s.backbone_kwargs()], sort_keys=True, default=str)
        if key not in self._backbones:
            self._backbones[key] = plan_backbone(s.backbone, seed=self.seed, device=self.device, **s.backbone_kwargs())
        return self._backbones[key]


@runtime_checkable
class Scorer(Protocol):
    """What a :class:`~humwatch.monitor.Monitor` scores with: a fitted :class:`Method`, or an exported
    monitor's network on ONNX Runtime (:class:`humwatch.onnxrun.OnnxMethod`)."""

    name: str
    natural_threshold: float | None

    @property
    def audio(self) -> AudioSettings: ...

    @property
    def label(self) -> str: ...

    def score(self, clips: Sequence[Clip], runtime: Runtime | None = None) -> np.ndarray: ...

    def readings(self, clips: Sequence[Clip], runtime: Runtime | None = None) -> dict[str, np.ndarray]: ...

    def info(self) -> dict: ...


class Method:
    """Base class of every method (see the module docstring)."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[Settings]] = Settings
    supervised: ClassVar[bool] = False
    """Learns from normal and anomalous clips (else from the normal ones only, as the study's unsupervised methods)."""
    natural_threshold: ClassVar[float | None] = None
    """A decision threshold the scores come with (a probability's 0.5), if any."""
    keeps_models: ClassVar[bool] = False
    """A run saves this method's fitted models even without ``save_models`` (they are small)."""
    trains_network: ClassVar[bool] = False
    """Fitting trains a network (minutes, not seconds): a monitor's calibration trains its folds in
    parallel processes (:mod:`humwatch.folds`)."""

    def __init__(self, settings: Settings, context: Context | None = None, title: str = ""):
        if not isinstance(settings, self.Settings):
            raise ConfigError(f"{self.name}: settings must be {self.Settings.__name__}, got {type(settings).__name__}")
        self.settings = settings.validate()
        self.context = context or Context()
        self.title = title or self.name
        self.fitted_ = False
        self.n_train_ = 0

    # -- for subclasses ----------------------------------------------------------------------------
    def _fit(self, clips: list[Clip], val: list[Clip]) -> int:
        """Learn from ``clips``; returns how many were used (bad ones skipped)."""
        raise NotImplementedError  # pragma: no cover

    def _score(self, clips: list[Clip]) -> dict[str, np.ndarray]:
        """``{"score": ..., other readings}``, one value per clip, NaN for skipped clips."""
        raise NotImplementedError  # pragma: no cover

    def _save(self, directory: Path) -> dict:
        """Write the method's files into ``directory``; returns its JSON state."""
        raise NotImplementedError  # pragma: no cover

    @classmethod
    def _load(cls, directory: Path, settings: Settings, context: "Context", state: dict, doc: dict, **overrides) -> "Method":
        raise NotImplementedError  # pragma: no cover

    def info(self) -> dict:
        """What the results should say about this method (weights, RANDOM INIT, sizes)."""
        return {}

    def min_fit_clips(self) -> int:
        """The fewest clips :meth:`fit` can learn from (a monitor checks it before any work)."""
        return 1

    def far_scores(self) -> np.ndarray:
        """Scores of inputs far from anything a machine sounds like, to check that a threshold can
        be crossed (a monitor refuses one that cannot alarm). By default four synthetic recordings
        scored end to end: full-scale white noise, a full-scale 3 kHz square wave, a click train and
        a loud chirp. Methods override this with inputs far from their own training data."""
        from dataclasses import replace

        sr = self.audio.sample_rate
        n = int(round((self.audio.seconds or 10.0) * sr))
        t = np.arange(n) / sr
        rng = np.random.default_rng(0)
        clicks = np.zeros(n)
        clicks[:: max(1, sr // 25)] = 0.95
        probes = [
            0.9 * np.clip(rng.standard_normal(n) / 3, -1, 1),
            0.9 * np.sign(np.sin(2 * np.pi * 3000 * t)),
            clicks,
            0.9 * np.sin(2 * np.pi * (50 + (sr / 2 - 100) * t / t[-1] / 2) * t),
        ]
        # as 16-bit PCM, as the probe files written before were: the same samples, the same scores
        clips = [
            Clip.from_array(np.rint(y.astype(np.float32) * np.float32(32767)).astype(np.int16), sr, f"probe{i}.wav", "probe", "probe", 1)
            for i, y in enumerate(probes)
        ]
        rt = current() or Runtime()
        return self.score(clips, runtime=replace(rt, cache_dir=None, keep_embeddings=False))  # probes are not cached

    def embeddings(self) -> dict:
        """``{backbone name: EmbeddingSet}`` of the clips fitted and scored (kept for t-SNE)."""
        return {}

    def export_network(self) -> dict:
        """The fitted network :mod:`humwatch.export` writes as ONNX: ``{"module": a torch module
        taking a batch of ``frontend`` outputs, "frontend": Frontend, "output": kind, "batch_size":
        clips per run (optional, 8)}`` where kind is
        ``embedding`` (the method's saved detector scores it), ``reconstruction`` (the module
        reconstructs its input; the score is the mean squared error) or ``logit`` (the score is its
        sigmoid)."""
        raise ConfigError(f"method {self.name} cannot be exported to ONNX (yet)")

    @property
    def label(self) -> str:
        return self.name

    # -- the contract ------------------------------------------------------------------------------
    @property
    def audio(self) -> AudioSettings:
        """The audio settings the method reads clips with."""
        return self.context.audio

    @property
    def runtime(self) -> Runtime:
        """The runtime of the call in progress (:mod:`humwatch.runtime`; a default one outside a call)."""
        return current() or Runtime()

    @property
    def reader(self) -> ClipReader:
        """A reader of the method's audio settings with the call's policy and skip count."""
        return self.runtime.reader(self.audio)

    def fit(self, clips: Sequence[Clip], val: Sequence[Clip] = (), runtime: Runtime | None = None) -> "Method":
        """Learn from ``clips`` (the normal ones, unless the method is supervised); ``val`` is for
        methods that report on held-out clips while training; ``runtime``: how the call runs."""
        clips = list(clips) if self.supervised else [c for c in clips if not c.is_anomalous]
        if not clips:
            raise DatasetError(f"{self.title}: no normal training clips to learn from")
        with active(runtime):
            self.n_train_ = self._fit(clips, list(val))
        self.fitted_ = True
        return self

    def readings(self, clips: Sequence[Clip], runtime: Runtime | None = None) -> dict[str, np.ndarray]:
        """``{"score": ..., other named scores}``; NaN where a clip was skipped as bad."""
        if not self.fitted_:
            raise ConfigError(f"{self.title}: the method is not fitted yet")
        clips = list(clips)
        if not clips:
            return {"score": np.empty(0)}
        with active(runtime):
            out = self._score(clips)
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}

    def score(self, clips: Sequence[Clip], runtime: Runtime | None = None) -> np.ndarray:
        """One anomaly score per clip (float64, higher = more anomalous; NaN where skipped)."""
        return self.readings(clips, runtime)["score"]

    def save(self, directory: str | Path) -> Path:
        """Write the fitted method into ``directory``: its files, ``method.json``, then
        ``manifest.json`` (the SHA-256 of every file; :func:`load_method` refuses a changed folder)."""
        from humwatch._version import __version__
        from humwatch.io import weight_fingerprints, write_json, write_manifest

        if not self.fitted_:
            raise ConfigError(f"{self.title}: fit the method before saving it")
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise ConfigError(f"{d}: exists and is not a folder")
        d.mkdir(parents=True, exist_ok=True)
        state = self._save(d)
        write_json(
            d / METHOD_FILE,
            {
                "format": FORMAT,
                "method": self.name,
                "settings": self.settings.to_dict(),
                "humwatch_version": __version__,
                "audio": asdict(self.audio),
                "n_train": self.n_train_,
                "info": self.info(),
                "state": state,
                "fingerprints": weight_fingerprints(d),
            },
        )
        write_manifest(d)
        return d


def scores_at(clips: Sequence[Clip], kept: Sequence[Clip], values) -> np.ndarray:
    """``values`` (one per kept clip) placed at the positions of ``clips``; NaN for the others."""
    pos = {c.key: i for i, c in enumerate(clips)}
    out = np.full(len(clips), np.nan)
    for c, v in zip(kept, np.asarray(values, dtype=np.float64)):
        out[pos[c.key]] = v
    return out


def read_method_json(directory: str | Path) -> dict:
    from humwatch.io import read_json_doc

    d = Path(directory)
    return read_json_doc(
        d / METHOD_FILE,
        FORMAT,
        {"method": str, "settings": dict, "state": dict},
        missing=f"{d}: not a saved method ({METHOD_FILE} is missing)",
    )


VERSION = Pattern(r"\d+(\.\d+){0,3}([.+-]?[0-9A-Za-z.+-]*)?", "a version such as 0.1.0")


def _method_names() -> list[str]:
    from humwatch.methods.registry import list_methods

    return list_methods()


def check_method_doc(directory: Path, doc: dict):
    """Every field of a saved method.json checked (one ConfigError line naming the first bad one, an
    unknown field refused), its weights against the fingerprints it records, and a warning when a
    newer humwatch wrote it; returns the audio settings it was fitted with."""
    from humwatch.audio import saved_audio_settings
    from humwatch.io import check_weight_fingerprints

    where = directory / METHOD_FILE
    v = check_fields(
        doc,
        {
            "format": OneOf((FORMAT,)),
            "method": OneOf(_method_names),
            "settings": Mapping(),
            "humwatch_version": VERSION,
            "audio": Mapping(),
            "n_train": Int(0),
            "info": Mapping(),
            "state": Mapping(),
            "fingerprints": Mapping(),
        },
        where,
    )
    check_value(v["info"].get("random_init"), Optional(Bool()), "info.random_init", where)  # what results say of it
    check_value(v["info"].get("weights"), Optional(Text(empty=True)), "info.weights", where)
    warn_if_newer(v["humwatch_version"], where)
    audio = saved_audio_settings(v["audio"], where)
    check_weight_fingerprints(directory, v["fingerprints"], where)
    return audio


def version_tuple(version: str) -> tuple[int, ...]:
    import re

    return tuple(int(x) for x in re.match(r"\d+(?:\.\d+)*", version).group(0).split("."))


def warn_if_newer(version: str, where) -> bool:
    """Log one warning line when ``version`` (of the humwatch that wrote ``where``) is newer than
    this humwatch (it may hold what this one does not know); True when it is."""
    import logging

    from humwatch._version import __version__

    if version_tuple(version) <= version_tuple(__version__):
        return False
    logging.getLogger("humwatch").warning(
        "warning: %s was written by humwatch %s, newer than this humwatch %s; upgrade humwatch if it fails or scores differently",
        where,
        version,
        __version__,
    )
    return True


def load_saved(cls: type[Method], directory: Path, doc: dict, context: Context | None, device: str = "cpu", **overrides: Any) -> Method:
    """Build a fitted ``cls`` from a folder whose manifest was checked and whose method.json is ``doc``
    (every field checked here: :func:`check_method_doc`); without a ``context``, clips are read with
    the audio settings it was fitted with, and with one, its audio settings must be those."""
    audio = check_method_doc(directory, doc)
    settings = cls.Settings.from_dict(doc["settings"], where=f"{directory / METHOD_FILE}: settings")
    if context is None:
        context = Context(audio=audio, device=device)
    elif context.audio != audio:
        raise ConfigError(
            f"{directory / METHOD_FILE}: the method was fitted on audio {asdict(audio)}, not the {asdict(context.audio)} it is loaded with"
        )
    m = cls._load(directory, settings, context, doc["state"], doc, **overrides)
    m.n_train_ = doc["n_train"]
    m.fitted_ = True
    return m
