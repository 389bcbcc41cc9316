"""The registry of methods: a name -> the ``module:class`` that implements it, imported on first
use (listing the names is cheap). A leaf: :mod:`humwatch.methods.base` checks a saved method's
name against it without importing the methods themselves."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from humwatch.errors import ConfigError

if TYPE_CHECKING:
    from humwatch.methods.base import Method

METHODS: dict[str, str] = {
    "autoencoder": "humwatch.methods.autoencoder:AutoencoderMethod",
    "embed-detect": "humwatch.methods.embed_detect:EmbedDetectMethod",
    "finetune": "humwatch.methods.finetune:FinetuneMethod",
    "idnet": "humwatch.methods.idnet:IdNetMethod",
    "aux-finetune": "humwatch.methods.aux_finetune:AuxFinetuneMethod",
    "embed-fusion": "humwatch.methods.fusion:EmbedFusionMethod",
    "score-fusion": "humwatch.methods.fusion:ScoreFusionMethod",
}
"""Method name -> ``module:class``, in the order the command line lists them."""


def list_methods() -> list[str]:
    return list(METHODS)


def method_class(name: str) -> type[Method]:
    """The class of method ``name`` (a one-line error naming the choices when unknown)."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r} (choose from {', '.join(METHODS)})")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)
