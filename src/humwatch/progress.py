"""One progress-bar style for every long step (rich), silent when asked or when ``HUMWATCH_PROGRESS=0``.

Every loop that shows progress uses :func:`bar` (a context manager that is a no-op when disabled)
or :func:`track` (an iterator over it)::

    with bar("fan: autoencoder", total=epochs, enabled=progress) as b:
        for epoch in range(epochs):
            ...
            b.advance(1, description=f"fan: autoencoder loss {loss:.3f}")
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

console = Console(stderr=True)


def progress_enabled(enabled: bool = True) -> bool:
    return enabled and os.environ.get("HUMWATCH_PROGRESS", "1") != "0"


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class Bar:
    """A started progress bar with one task (or nothing at all when disabled)."""

    def __init__(self, progress: Progress | None, task) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: float = 1, description: str | None = None) -> None:
        if self._progress is not None:
            kw = {} if description is None else {"description": description}
            self._progress.update(self._task, advance=n, **kw)


@contextmanager
def bar(description: str, total: float | None, enabled: bool = True) -> Iterator[Bar]:
    """A progress bar for ``total`` steps, stopped (and left on screen) when the block ends."""
    if not progress_enabled(enabled) or total == 0:
        yield Bar(None, None)
        return
    p = make_progress()
    task = p.add_task(description, total=total)
    p.start()
    try:
        yield Bar(p, task)
    finally:
        p.stop()


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a progress bar (or without, when disabled)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with bar(description, total, enabled) as b:
        for item in items:
            yield item
            b.advance()
