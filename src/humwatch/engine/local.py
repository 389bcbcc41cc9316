"""The local engine: per-clip work in this process (what humwatch always did)."""

from __future__ import annotations

from humwatch.engine.base import Engine


class LocalEngine(Engine):
    """Everything in this process, one batch at a time (memory holds one batch of inputs)."""

    name = "local"

    def embed(self, clips, backbone, *, cache_dir=None, batch_size=8, reader):
        from humwatch.embed import embed_clips

        return embed_clips(clips, backbone, cache_dir=cache_dir, batch_size=batch_size, reader=reader)

    def batches(self, reader, clips, size, description, transform=None):
        return reader.batches(clips, size, description, transform)

    def score_windows(self, monitor, clips, *, skip_bad=False, progress=True, cache_dir=None):
        return monitor.score_windows(clips, skip_bad=skip_bad, progress=progress, cache_dir=cache_dir)
