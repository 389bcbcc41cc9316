"""How one call of a method runs: a :class:`Runtime`, handed to ``fit`` and ``score``.

What a fit leaves (the detector, the network, the seed, the device, the shared backbones) is the
method's (:class:`humwatch.methods.base.Context`); how a call runs is not, and is handed in, so one
fitted method (a served monitor) can be called from several threads at once::

    rt = Runtime(on_bad="skip", progress=False, cache_dir="cache")
    scores = method.score(clips, runtime=rt)
    rt.skipped                       # [(key, reason)] of this call's bad clips only

A :class:`Runtime` is immutable; the one thing it gathers is its own skip count (``skips``), new
for every Runtime, so a caller that wants a call's skips makes a Runtime for that call (a method
called without one makes a default one per call). The audio settings stay with the method (it was
fitted on them); the runtime says what to do with a bad file (``on_bad``), whether to draw progress
bars, where per-clip work runs (``engine``: :mod:`humwatch.engine`), where embeddings are cached,
and whether the method keeps the embeddings it computes (``keep_embeddings``: a run's t-SNE; a
monitor never does, so nothing accumulates while it scores).

Inside a call, the method's own code (and the methods it is built of) reach the call's runtime as
``self.runtime`` and its reader as ``self.reader``: :func:`active` / :func:`current` keep it per
thread (a :mod:`contextvars` variable), never on the method.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from humwatch.audio import AudioSettings
from humwatch.engine.local import LocalEngine
from humwatch.reader import ON_BAD, ClipReader, Skips


@dataclass(frozen=True)
class Runtime:
    """How one call runs (see the module docstring)."""

    on_bad: str = "error"
    """``error``: the first unusable clip raises; ``skip``: it is left out, with a NaN score, and
    recorded in :attr:`skipped`."""
    progress: bool = True
    engine: Any = field(default_factory=LocalEngine)
    """Where per-clip work (reading, frontend, network) runs: :mod:`humwatch.engine` (local or Ray)."""
    cache_dir: str | None = None
    keep_embeddings: bool = False
    """The method keeps every embedding set it computes (``method.embeddings()``: a run's t-SNE)."""
    skips: Skips = field(default_factory=Skips, compare=False, repr=False)

    def __post_init__(self):
        from humwatch.errors import ConfigError

        if self.on_bad not in ON_BAD:
            raise ConfigError(f"on_bad must be one of {', '.join(ON_BAD)}, got {self.on_bad!r}")
        if self.cache_dir is not None and not isinstance(self.cache_dir, str):
            object.__setattr__(self, "cache_dir", str(self.cache_dir))

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(key, reason)`` of every clip this runtime's calls left out as bad, once each."""
        return list(self.skips.items)

    def reader(self, audio: AudioSettings) -> ClipReader:
        """A clip reader of ``audio`` with this runtime's policy, recording into its skip count."""
        return ClipReader(audio, self.on_bad, self.progress, skips=self.skips)


_CURRENT: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar("humwatch_runtime", default=None)


def current() -> Runtime | None:
    """The runtime of the call this thread is in, if any."""
    return _CURRENT.get()


@contextmanager
def active(runtime: Runtime | None) -> Iterator[Runtime]:
    """Run the block as one call with ``runtime`` (None: the enclosing call's, else a new default
    one); what the block calls without a runtime of its own runs with it."""
    rt = runtime or _CURRENT.get() or Runtime()
    token = _CURRENT.set(rt)
    try:
        yield rt
    finally:
        _CURRENT.reset(token)
