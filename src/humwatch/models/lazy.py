"""A backbone known by its identity before its network is built.

Embedding is cached per clip under the backbone's ``cache_key`` (name, weights identity,
architecture, frontend key, precision). All of that is known from the settings and the weights'
files alone, so a run whose embeddings are all cached needs no network at all: building AST
(86 M parameters) costs seconds and hundreds of MiB for nothing.

A factory registered with :func:`~humwatch.models.registry.register_backbone` may therefore return a
:class:`LazyBackbone` (identity now, ``build`` later) instead of a built
:class:`~humwatch.models.registry.Backbone`. :func:`~humwatch.models.create_backbone` builds it at once;
:func:`~humwatch.models.plan_backbone` (what a run's methods get from ``Context.backbone``) leaves it
lazy: the network is built on the first :meth:`LazyBackbone.embed` (or the first use of anything
only the network has: ``module``, ``blocks``, ``save``...).

Example::

    >>> from humwatch.models import plan_backbone
    >>> bb = plan_backbone("ast", weights="none")
    >>> bb.cache_key, bb.built            # no network yet
    ('ast-…', False)
    >>> bb.embed(x).shape; bb.built
    (1, 768)
    True
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any, Callable

CACHE_FORMAT = 1
"""Bumped whenever the embedding a cache key stands for could change for the same inputs."""


def cache_key_for(name: str, weights_identity: str, config: dict, frontend_key: str, precision: str) -> str:
    """``<name>-<hash>``: the one definition of a backbone's cache key (built or lazy)."""
    payload = {
        "backbone": name,
        "weights": weights_identity,
        "config": config,
        "frontend": frontend_key,
        "precision": precision,
        "format": CACHE_FORMAT,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return f"{name}-{digest[:24]}"


IDENTITY = ("name", "frontend", "embedding_dim", "precision", "weights", "config", "device", "seed")
"""What a lazy backbone knows without its network (the attributes of a built one that it shares)."""


class BackboneIdentity:
    """The :data:`IDENTITY` attributes every backbone has, built (:class:`~humwatch.models.registry.Backbone`)
    or not (:class:`LazyBackbone`), and the line that describes them."""

    def __init__(
        self, *, name: str, frontend, embedding_dim: int, precision: str, weights, config: dict, device: str = "cpu", seed: int = 0
    ):
        self.name = name
        self.frontend = frontend
        self.embedding_dim = int(embedding_dim)
        self.precision = precision
        self.weights = weights
        self.config = dict(config)
        self.device = device
        self.seed = seed

    def describe(self) -> str:
        return f"{self.name} ({self.embedding_dim}-d, {self.precision}, {self.weights.describe()})"


_BUILD_LOCK = threading.RLock()
"""Held while a lazy backbone builds its network (rare: once per backbone)."""


class LazyBackbone(BackboneIdentity):
    """A backbone's identity (:data:`IDENTITY` attributes and ``cache_key``) plus how to build it.

    ``build`` is a function of no arguments returning the :class:`~humwatch.models.registry.Backbone`;
    it is called once, on first need. The built backbone must have the same ``cache_key`` (a
    RuntimeError otherwise: the factory's identity and its network disagree, a bug). Anything not
    in :data:`IDENTITY` is taken from the built backbone.
    """

    def __init__(self, *, build: Callable[[], Any], **identity):
        super().__init__(**identity)
        self.recipe: dict | None = None
        self._build = build
        self._backbone = None

    @classmethod
    def of(cls, backbone) -> "LazyBackbone":
        """An already built backbone behind the same face (for factories that are not lazy)."""
        lazy = cls(**{k: getattr(backbone, k) for k in IDENTITY}, build=lambda: backbone)
        lazy._backbone = backbone
        lazy.recipe = getattr(backbone, "recipe", None)
        return lazy

    @property
    def cache_key(self) -> str:
        if self._backbone is not None:
            return self._backbone.cache_key
        return cache_key_for(self.name, self.weights.identity, self.config, self.frontend.key, self.precision)

    @property
    def built(self) -> bool:
        """Whether the network exists yet."""
        return self._backbone is not None

    def get(self):
        """The built backbone (built now if it is not yet)."""
        if self._backbone is not None:
            return self._backbone
        with _BUILD_LOCK:  # one build, however many threads score at once
            if self._backbone is None:
                self._backbone = self._build_checked()
        return self._backbone

    def _build_checked(self):
        key = self.cache_key
        bb = self._build()
        if bb.cache_key != key:  # the factory's identity and its network disagree
            raise RuntimeError(f"{self.name}: built backbone's cache key {bb.cache_key} differs from its plan's {key}")
        if self.recipe is not None and getattr(bb, "recipe", None) is None:
            bb.recipe = self.recipe
        return bb

    def embed(self, x):
        return self.get().embed(x)

    def __getattr__(self, attr: str):
        if attr.startswith("_"):  # not found the usual way; never build for private names (copy, pickle probes)
            raise AttributeError(attr)
        return getattr(self.get(), attr)

    def __repr__(self) -> str:
        return f"<LazyBackbone {self.describe()}{'' if self.built else ', not built'}>"
