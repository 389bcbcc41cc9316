"""Command functions kept out of :mod:`asdkit.cli`; ``cli.py`` registers them on its app, e.g.
``app.command("reproduce")(reproduce_cmd)``. Names are imported lazily, so loading one command
module never imports another."""

from __future__ import annotations

_LAZY = {
    "reproduce_cmd": "asdkit.commands.reproduce",
    "finetune_cmd": "asdkit.commands.reproduce",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'asdkit.commands' has no attribute {name!r}")
