"""Methods: the ways humwatch turns clips into anomaly scores, one module each, one registry.

``METHODS`` maps a name to the module:class that implements it (imported on first use, so listing
the names is cheap). Every method has the same face (:class:`~humwatch.methods.base.Method`)::

    >>> from humwatch.methods import create_method, method_settings
    >>> s = method_settings("embed-detect", {"backbone": "ast", "weights": "none", "detector": "knn"})
    >>> m = create_method("embed-detect", s).fit(train_clips)      # checked before any work
    >>> m.score(test_clips)                                         # higher = more anomalous
    >>> m.save("models/fan"); load_method("models/fan").score(new_clips)

Adding a method is one new module with a settings dataclass and a :class:`Method` subclass, and one
line here (docs/architecture.md walks through an example).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

from humwatch.errors import ConfigError
from humwatch.methods.base import METHOD_FILE, BackboneSettings, Context, Method, load_saved, read_method_json
from humwatch.methods.registry import METHODS, list_methods, method_class

__all__ = [
    "METHODS",
    "METHOD_FILE",
    "BackboneSettings",
    "Context",
    "Method",
    "create_method",
    "list_methods",
    "load_method",
    "method_class",
    "method_settings",
]


def method_settings(name: str, values: Any = None):
    """Checked settings of method ``name`` from a mapping (or its Settings object); nothing is built."""
    cls = method_class(name)
    if isinstance(values, cls.Settings):
        return values.validate()
    return cls.Settings.from_dict(values, where=name)


def create_method(name: str, settings: Any = None, context: Context | None = None, title: str = "") -> Method:
    """A new, unfitted method ``name`` with ``settings`` (a mapping or its Settings object)."""
    return method_class(name)(method_settings(name, settings), context, title=title)


def load_method(
    directory: str | Path, context: Context | None = None, *, checked: bool = False, device: str = "cpu", **overrides: Any
) -> Method:
    """A method saved by :meth:`Method.save`, after checking its manifest (unless the caller already
    did: ``checked``). Without a ``context`` it reads clips as it was fitted, on ``device``.
    ``overrides`` are method-specific (``weights``: where the backbone's weights are now)."""
    from humwatch.io import check_manifest

    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: no such folder")
    if not checked:
        check_manifest(d)
    doc = read_method_json(d)
    return load_saved(method_class(doc["method"]), d, doc, context, device, **overrides)


class _CallableRegistry(types.ModuleType):
    """``humwatch.methods()`` (docs/api.md): this package, called, lists the method names."""

    def __call__(self) -> list[str]:
        return list_methods()


sys.modules[__name__].__class__ = _CallableRegistry
