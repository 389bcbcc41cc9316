"""Datasets as lists of :class:`~asdkit.data.clips.Clip` records."""

from asdkit.data.clips import Clip, read_clips_csv, write_clips_csv
from asdkit.data.loading import LAYOUTS, detect_layout, load_dataset
from asdkit.data.split import drop_anomalies, split_counts, study_split

__all__ = [
    "Clip",
    "read_clips_csv",
    "write_clips_csv",
    "LAYOUTS",
    "detect_layout",
    "load_dataset",
    "study_split",
    "drop_anomalies",
    "split_counts",
]
