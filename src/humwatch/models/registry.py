"""One registry for every backbone: a name -> a factory that builds a :class:`Backbone`.

Built-in backbones live in modules that register themselves when imported
(:data:`BUILTIN_MODULES`); they are imported on first use, so ``import humwatch.models`` stays cheap
(no torch, no transformers).

A factory is called with keyword arguments only::

    factory(weights=..., precision=..., config=dict, seed=int, device=str, **options) -> Backbone

``weights``/``precision``/``config``/``device`` are validated before the call (``device`` and
``precision`` resolved: a factory gets ``cpu``/``cuda``/... and ``fp32``/``bf16``, never ``auto``;
config a dict); ``seed`` and ``device`` may be left out of a factory's signature (they are then only
accepted at their defaults, 0 and ``"cpu"``); ``options`` are backbone-specific (e.g. AST's
``attention``) and must appear in the factory's signature.

A factory returns a :class:`Backbone`, or a :class:`~humwatch.models.lazy.LazyBackbone` (its identity
now, the network on first need): then :func:`plan_backbone` gives a backbone whose cache key is
known without building the network, so a fully cached run builds none.

Example::

    >>> from humwatch.models import create_backbone, list_backbones
    >>> "ast" in list_backbones()
    True
    >>> bb = create_backbone("ast", weights="none", config=dict(hidden_size=32, num_hidden_layers=2,
    ...                      num_attention_heads=4, intermediate_size=64, max_length=128))
    >>> bb.weights.describe()
    'RANDOM INIT (no pretrained weights): seed 0'
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from humwatch.errors import ConfigError
from humwatch.models.lazy import CACHE_FORMAT, BackboneIdentity, LazyBackbone, cache_key_for  # noqa: F401 (CACHE_FORMAT: re-exported)
from humwatch.models.precision import PRECISIONS, resolve_precision
from humwatch.models.weights import META_FILE, WeightsInfo

log = logging.getLogger("humwatch")

BUILTIN_MODULES = (
    "humwatch.models.ast",
    "humwatch.models.resnext",
    "humwatch.models.autoencoder",
    "humwatch.models.features",
    "humwatch.models.segments",
    "humwatch.models.twfr",
    "humwatch.models.idnet",
    "humwatch.models.hf_audio",
)
"""Modules imported on first use of the registry; each registers its backbone(s)."""

_FACTORIES: dict[str, Callable[..., "Backbone"]] = {}
_builtins_loaded = False


def register_backbone(name: str):
    """Decorator: register a factory (or a class whose constructor is the factory) under ``name``.

    Example::

        >>> @register_backbone("my-net")
        ... def build(*, weights, precision, config, seed, device):
        ...     ...
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"backbone names are non-empty strings without spaces, got {name!r}")

    def deco(factory):
        old = _FACTORIES.get(name)
        if old is not None and old is not factory and _qualname(old) != _qualname(factory):
            raise ValueError(f"backbone {name!r} is already registered by {_qualname(old)}")
        _FACTORIES[name] = factory
        return factory

    return deco


def _qualname(f) -> str:
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}"


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    for mod in BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # the module exists but something it needs does not: a real error
                raise
    _builtins_loaded = True


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`, sorted."""
    _load_builtins()
    return sorted(_FACTORIES)


def create_backbone(
    name: str,
    weights: str | Path | None = "default",
    precision: str = "auto",
    config: dict | None = None,
    *,
    seed: int = 0,
    device: str = "cpu",
    **options: Any,
) -> "Backbone":
    """Build the backbone ``name`` (see :func:`list_backbones`).

    ``weights``: ``"default"``, a hub id, a local folder/file or ``"none"`` (see
    :mod:`humwatch.models.weights`); ``precision``: ``auto`` (bf16 where the hardware does it
    natively: :mod:`humwatch.models.precision`), ``fp32`` or ``bf16``; ``config``: architecture
    overrides (tiny test models); ``seed``: the random initialisation's seed (used with
    ``weights="none"``); ``options``: backbone-specific, e.g. ``attention="eager"`` for ``ast``.

    The backbone's ``recipe`` holds these arguments, resolved (``create_backbone(**recipe)``
    builds the same backbone again, e.g. in another process).
    """
    bb = plan_backbone(name, weights, precision, config, seed=seed, device=device, **options)
    return bb.get()


def plan_backbone(
    name: str,
    weights: str | Path | None = "default",
    precision: str = "auto",
    config: dict | None = None,
    *,
    seed: int = 0,
    device: str = "cpu",
    **options: Any,
) -> LazyBackbone:
    """The backbone of :func:`create_backbone`'s arguments, its network not built until needed
    (:mod:`humwatch.models.lazy`); its weights are resolved and its settings checked now."""
    factory, kwargs = _checked_call(name, weights, precision, config, seed, device, options)
    out = factory(**kwargs, **options)
    lazy = out if isinstance(out, LazyBackbone) else LazyBackbone.of(out)
    recipe = {"name": name, **kwargs, **options}
    recipe.update(seed=seed, device=kwargs.get("device", "cpu"))
    recipe["weights"] = "default" if weights is None else str(weights)
    lazy.recipe = recipe
    if lazy.built:
        lazy.get().recipe = recipe
    return lazy


def _checked_call(name, weights, precision, config, seed, device, options) -> tuple[Callable, dict]:
    """The factory of ``name`` and its keyword arguments, checked (one-line ConfigErrors) and resolved."""
    if not isinstance(name, str):
        raise ConfigError(f"backbone name must be a string, got {name!r}")
    _load_builtins()
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError(f"unknown backbone {name!r} (choose from {', '.join(sorted(_FACTORIES))})")
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"backbone config must be a mapping of architecture settings, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    kwargs = dict(weights=weights, precision=precision, config=dict(config or {}), seed=seed, device=device)
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        # seed and device may be left out of a factory's signature while they keep their defaults
        for k, default in (("seed", 0), ("device", "cpu")):
            if k not in params and kwargs[k] == default:
                del kwargs[k]
        unknown = sorted((set(options) | set(kwargs)) - set(params))
        if unknown:
            takes = sorted(set(params) - {"weights", "precision", "config", "seed", "device"})
            raise ConfigError(
                f"backbone {name!r} takes no option {unknown[0]!r}"
                + (f" (options: {', '.join(takes)})" if takes else " (it has no options)")
            )
    return factory, kwargs


DEVICES = ("auto", "cpu", "cuda", "mps")
"""What ``--device`` takes (``cuda:1`` and the like too); ``auto`` is the GPU when there is one."""


def resolve_device(device: Any) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is usable, else ``mps`` (Apple), else ``cpu``; any other
    value is checked (one-line ConfigError for an unknown or unavailable device)."""
    if device is None:
        return "cpu"
    if not isinstance(device, str):
        device = str(device)
    if device == "cpu":
        return device
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    try:
        d = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {device!r} (use {', '.join(DEVICES)})") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine")
    if d.type == "mps" and not has_mps:
        raise ConfigError(f"device {device!r}: Apple MPS is not available on this machine")
    if d.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {device!r} (use {', '.join(DEVICES)})")
    return device


def check_config(name: str, config: dict, allowed: dict) -> dict:
    """Reject architecture overrides not in ``allowed`` (a dict of the defaults), one line."""
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(f"backbone {name!r}: unknown config key {unknown[0]!r} (choose from {', '.join(sorted(allowed))})")
    return dict(config)


class Backbone(BackboneIdentity):
    """A network that turns a batch of frontend outputs into one embedding per clip.

    Attributes: ``name``, ``frontend`` (:class:`humwatch.features.Frontend`), ``embedding_dim``,
    ``precision`` (``fp32``/``bf16``), ``weights`` (:class:`WeightsInfo`), ``module`` (a
    differentiable ``torch.nn.Module``: float tensor batch -> (B, D)), ``config`` (the full
    architecture, JSON-able), ``device``.

    Subclasses supply :meth:`_block_modules` (for :meth:`blocks`) and may override
    :meth:`_save_weights` / :meth:`_check_input`; a CNN whose module is in channels-last memory
    format sets :attr:`channels_last` so that :meth:`embed` gives it its input in that format.

    Example::

        >>> x = bb.frontend.batch([y1, y2])      # mono 16 kHz signals -> model input
        >>> bb.embed(x).shape                    # (2, bb.embedding_dim), float32
    """

    channels_last = False
    """The module is in channels-last memory format (oneDNN's fast layout for convolutions on CPU)."""

    def __init__(
        self,
        *,
        name: str,
        frontend,
        module,
        embedding_dim: int,
        precision: str,
        weights: WeightsInfo,
        config: dict,
        device: str = "cpu",
        seed: int = 0,
    ):
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
        super().__init__(
            name=name,
            frontend=frontend,
            embedding_dim=embedding_dim,
            precision=precision,
            weights=weights,
            config=config,
            device=device,
            seed=seed,
        )
        self.module = module
        self._cache_key: str | None = None

    # -- inference ---------------------------------------------------------------------------------
    def autocast(self):
        """The autocast context :meth:`embed` uses (bf16) or a no-op (fp32); fine-tuning code can reuse it."""
        if self.precision != "bf16":
            return nullcontext()
        import torch

        return torch.autocast(device_type=_device_type(self.device), dtype=torch.bfloat16)

    def _check_input(self, x: np.ndarray) -> None:
        """Raise ConfigError when ``x`` is not a batch this backbone accepts."""

    def embed(self, x: np.ndarray) -> np.ndarray:
        """(B, D) float32 embeddings of a batch of frontend outputs; no gradients, eval mode."""
        import torch

        x = np.asarray(x, dtype=np.float32)
        self._check_input(x)
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.no_grad(), self.autocast():
                out = self.module(t)
        finally:
            self.module.train(was_training)
        out = out.detach().float().cpu().numpy()
        release_freed_memory()
        if out.shape != (x.shape[0], self.embedding_dim):  # a bug, not a user error
            raise RuntimeError(f"{self.name}: module returned {out.shape}, expected ({x.shape[0]}, {self.embedding_dim})")
        return np.ascontiguousarray(out, dtype=np.float32)

    # -- fine-tuning -------------------------------------------------------------------------------
    def _block_modules(self, unit: str = "stage") -> list[tuple[str, list]]:
        return [("all", [self.module])]

    def blocks(self, unit: str = "stage") -> list[tuple[str, list]]:
        """``[(name, [parameters])]`` from the input (lowest) to the top; every parameter of
        ``module`` is in exactly one block (frozen ones too, so they can be unfrozen).

        ``unit``: ``stage`` (the network's natural stages: ResNeXt's ``layer1``..``layer4``, AST's
        transformer layers) or ``bottleneck`` (ResNeXt's single Bottleneck modules,
        ``layer4.2`` and so on; backbones without a finer unit give their stages)."""
        if unit not in ("stage", "bottleneck"):
            raise ConfigError(f"block unit must be stage or bottleneck, got {unit!r}")
        out = []
        seen: set[int] = set()
        for bname, mods in self._block_modules(unit):
            params = []
            for m in mods:
                for p in m.parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        params.append(p)
            out.append((bname, params))
        missing = [n for n, p in self.module.named_parameters() if id(p) not in seen]
        if missing:  # a bug in _block_modules
            raise RuntimeError(f"{self.name}: parameters outside every block: {', '.join(missing[:5])}")
        return out

    def mark_trained(self, note: str) -> None:
        """Record that the weights were trained further (e.g. fine-tuned), before :meth:`save`."""
        prev = self.weights.describe()
        self.weights = WeightsInfo(
            source=self.weights.source,
            random_init=False,
            description=f"{note}; started from {prev}",
            identity=f"trained:{state_fingerprint(self.module)}",
        )
        self._cache_key = None

    # -- saving ------------------------------------------------------------------------------------
    def _save_weights(self, directory: Path) -> None:
        from safetensors.torch import save_file

        from humwatch.io import atomic_path

        sd = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        with atomic_path(directory / "model.safetensors", suffix=".safetensors") as tmp:
            save_file(sd, str(tmp), metadata={"format": "pt"})

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``humwatch_backbone.json`` (no pickle) to ``directory``;
        ``create_backbone(self.name, weights=directory)`` loads it back with identical embeddings."""
        from humwatch._version import __version__
        from humwatch.io import write_json, write_manifest

        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"{directory}: exists and is not a folder")
        directory.mkdir(parents=True, exist_ok=True)
        self._save_weights(directory)
        write_json(
            directory / META_FILE,
            {
                "format": "humwatch-backbone",
                "format_version": 1,
                "backbone": self.name,
                "config": self.config,
                "embedding_dim": self.embedding_dim,
                "frontend": {"name": self.frontend.name, "params": self.frontend.params, "key": self.frontend.key},
                "origin": self.weights.to_dict(),
                "random_init": self.weights.random_init,
                "humwatch_version": __version__,
            },
        )
        write_manifest(directory)  # sealed: a changed file is refused when loaded
        return directory

    # -- identity ----------------------------------------------------------------------------------
    @property
    def cache_key(self) -> str:
        """``<name>-<hash>`` of the name, weights identity, architecture, frontend key and precision."""
        if self._cache_key is None:
            self._cache_key = cache_key_for(self.name, self.weights.identity, self.config, self.frontend.key, self.precision)
        return self._cache_key

    def __repr__(self) -> str:
        return f"<Backbone {self.describe()}>"


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where there is no glibc."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Give the memory a forward pass freed back to the system (glibc only; elsewhere nothing).

    glibc keeps a batch's freed activation buffers (hundreds of MiB for AST) in its heap, where
    they fragment, so a long embedding run's resident memory crept up from batch to batch (AST bf16
    on 4 clips at a time: peak 1716 MiB after one batch, 2124 MiB after eight). Trimming after each
    batch keeps most of that back (1458 MiB after one batch, 1641 MiB after eleven: docs/benchmarks.md)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _device_type(device: str) -> str:
    return device.split(":")[0] if device else "cpu"


@contextmanager
def random_init_context(seed: int):
    """Seed torch for a repeatable random initialisation without disturbing the caller's RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextmanager
def quiet_hf_loading():
    """Silence transformers' load report and progress bars while loading (restored after)."""
    from transformers.utils import logging as tlog

    verbosity = tlog.get_verbosity()
    bars = tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()


def state_fingerprint(module) -> str:
    """SHA-256 of a module's state dict (names, shapes, dtypes and values)."""
    import torch

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}:{tuple(v.shape)}:{t.dtype}".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
