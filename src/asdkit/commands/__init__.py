"""The command line's commands, one module per group; :mod:`asdkit.cli` registers them in order.

Each module has a ``register(app)`` that adds its commands; every option is defined once in
:mod:`asdkit.commands.options`. Names are imported lazily, so loading one command module never
imports another.
"""

from __future__ import annotations

MODULES = ("data", "run", "monitor", "export", "reproduce", "compare", "explain", "service")
"""Command modules in the order their commands appear in ``asdkit --help``."""

_LAZY = {
    "run_cmd": "asdkit.commands.run",
    "finetune_cmd": "asdkit.commands.run",
    "fit_cmd": "asdkit.commands.monitor",
    "score_cmd": "asdkit.commands.monitor",
    "export_cmd": "asdkit.commands.export",
    "reproduce_cmd": "asdkit.commands.reproduce",
    "demo_cmd": "asdkit.commands.reproduce",
    "compare_cmd": "asdkit.commands.compare",
    "explain_cmd": "asdkit.commands.explain",
    "serve_cmd": "asdkit.commands.service",
    "listen_cmd": "asdkit.commands.service",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'asdkit.commands' has no attribute {name!r}")
