"""Datasets as lists of :class:`~asdkit.data.clips.Clip` records."""

from asdkit.data.clips import Clip, read_clips_csv, write_clips_csv

__all__ = ["Clip", "read_clips_csv", "write_clips_csv"]
