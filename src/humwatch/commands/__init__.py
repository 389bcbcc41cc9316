"""The command line's commands, one module per group; :mod:`humwatch.cli` registers them in order.

Each module has a ``register(app)`` that adds its commands; every option is defined once in
:mod:`humwatch.commands.options`. Names are imported lazily, so loading one command module never
imports another.
"""

from __future__ import annotations

MODULES = ("data", "run", "monitor", "export", "reproduce", "compare", "explain", "service")
"""Command modules in the order their commands appear in ``humwatch --help``."""

_LAZY = {
    "run_cmd": "humwatch.commands.run",
    "finetune_cmd": "humwatch.commands.run",
    "fit_cmd": "humwatch.commands.monitor",
    "score_cmd": "humwatch.commands.monitor",
    "export_cmd": "humwatch.commands.export",
    "reproduce_cmd": "humwatch.commands.reproduce",
    "demo_cmd": "humwatch.commands.reproduce",
    "compare_cmd": "humwatch.commands.compare",
    "explain_cmd": "humwatch.commands.explain",
    "serve_cmd": "humwatch.commands.service",
    "listen_cmd": "humwatch.commands.service",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'humwatch.commands' has no attribute {name!r}")
