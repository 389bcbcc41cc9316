"""The engine interface (see :mod:`humwatch.engine`)."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from humwatch.data.clips import Clip
from humwatch.reader import collect


class Engine:
    """Runs per-clip work. Subclasses implement :meth:`embed`, :meth:`batches` and
    :meth:`score_windows`; :meth:`close` releases what the engine started."""

    name = ""

    def embed(self, clips: Sequence[Clip], backbone, *, cache_dir=None, batch_size: int = 8, reader):
        """:func:`humwatch.embed.embed_clips` of ``clips``: an EmbeddingSet, rows in clip order."""
        raise NotImplementedError  # pragma: no cover

    def batches(
        self, reader, clips: Sequence[Clip], size: int, description: str, transform: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> Iterator[tuple[list[Clip], list[np.ndarray]]]:
        """:meth:`humwatch.reader.ClipReader.batches`: ``(kept clips, arrays)`` in clip order."""
        raise NotImplementedError  # pragma: no cover

    def read_all(
        self, reader, clips: Sequence[Clip], description: str, transform: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> tuple[list[Clip], list[np.ndarray]]:
        """Every readable clip and its array (memory holds them all: for small per-clip arrays)."""
        return collect(self.batches(reader, clips, 64, description, transform))

    def score_windows(self, monitor, clips: Sequence[Clip], *, skip_bad: bool = False, progress: bool = True, cache_dir=None):
        """``monitor.score_windows(clips, ...)``: every window of the recordings ``clips`` and its
        score, in the recordings' order: (windows, scores, skipped [(key, reason)]). A worker
        rebuilds the monitor from ``monitor.recipe`` (:class:`humwatch.monitor.MonitorRecipe`: its
        folder and how it was loaded; ``recipe.build()``), so the engine never imports the monitor."""
        raise NotImplementedError  # pragma: no cover

    def describe(self) -> str:
        return self.name

    def spec(self) -> dict:
        """``get_engine(**spec)`` in another process gives an engine on the same resources (for
        ``humwatch compare``'s one process per method)."""
        return {"name": self.name}

    def close(self) -> None:
        """Release what the engine started (a local Ray); the engine may be used again after."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
