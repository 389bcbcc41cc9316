"""Where per-clip work runs: in this process (``local``) or on a Ray cluster (``ray``).

Per-clip work is what grows with the data: reading a clip, its frontend, the network, and for a
monitor the detector's score. Everything else (splitting, fitting a detector on the embeddings,
metrics, writing the run folder) stays in the calling process, the *driver*, whatever the engine,
so every engine writes the same files with the same numbers in the same order.

The interface the callers use (:class:`Engine`)::

    with get_engine("ray", address="ray://head:10001") as engine:     # or "local"
        emb = engine.embed(clips, backbone, cache_dir=..., batch_size=8, reader=reader)   # EmbeddingSet
        for kept, arrays in engine.batches(reader, clips, 64, "features", transform=frontend): ...
        windows, scores, skipped = engine.score_windows(monitor, recordings, skip_bad=True, ...)

A method reaches the engine through its :class:`~humwatch.runtime.Runtime` (``runtime.engine``); the
command line chooses it with ``--engine local|ray`` and ``--ray-address`` (or ``RAY_ADDRESS``).
Bad clips follow the caller's reader policy in both engines: skipped ones are counted once each in
clip order, and with ``on_bad="error"`` the first bad clip in clip order raises.
"""

from __future__ import annotations

from humwatch.engine.base import Engine
from humwatch.engine.local import LocalEngine
from humwatch.errors import ConfigError

ENGINES = ("local", "ray")
"""What ``--engine`` takes."""

__all__ = ["ENGINES", "Engine", "LocalEngine", "get_engine"]


def get_engine(name: str = "local", address: str | None = None, **options) -> Engine:
    """The engine ``name``: ``local`` (this process), or ``ray`` (a local Ray started on demand, or
    the cluster at ``address`` / ``$RAY_ADDRESS``; ``options`` go to :class:`~humwatch.engine.ray.RayEngine`)."""
    if name == "local":
        if address:
            raise ConfigError("--ray-address applies to --engine ray only")
        return LocalEngine()
    if name == "ray":
        from humwatch.engine.ray import RayEngine

        return RayEngine(address, **options)
    raise ConfigError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")
