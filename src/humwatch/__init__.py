"""humwatch: anomalous machine sound detection.

Turn recordings of a machine into a fitted detector, score new recordings, and run the
AST-versus-CNN study (MIMII; autoencoder baseline, LOF on embeddings, supervised fine-tuning)
end to end.

The Python API (docs/api.md)::

    import humwatch

    mon = humwatch.fit("healthy/", out="monitor")    # a monitor from healthy recordings
    mon = humwatch.load_monitor("monitor")
    scores = mon.score(["new.wav", (samples, 16000)])  # typed results; higher = more anomalous
    humwatch.methods(), humwatch.backbones(), humwatch.detectors()

Every name is imported on first use, so ``import humwatch`` stays fast (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

from humwatch._version import __version__
from humwatch.errors import HumwatchError

_LAZY = {
    "fit": "humwatch.api",
    "load_monitor": "humwatch.api",
    "backbones": "humwatch.api",
    "Monitor": "humwatch.monitor",
    "Scores": "humwatch.recordings",
    "Result": "humwatch.recordings",
    "Window": "humwatch.recordings",
    "Skipped": "humwatch.recordings",
}
"""Public name -> the module that defines it (imported on first use)."""

_PACKAGES = ("methods", "detectors")
"""Registries that are packages of their own: ``humwatch.methods()`` calls the package (it lists its names)."""

__all__ = [
    "HumwatchError",
    "Monitor",
    "Result",
    "Scores",
    "Skipped",
    "Window",
    "__version__",
    "backbones",
    "detectors",
    "fit",
    "load_monitor",
    "methods",
]


def __getattr__(name: str) -> Any:
    if name in _PACKAGES:
        return importlib.import_module(f"humwatch.{name}")  # importing it also sets it here
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'humwatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
