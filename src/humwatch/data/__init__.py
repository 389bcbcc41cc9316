"""Datasets as lists of :class:`~humwatch.data.clips.Clip` records."""

from humwatch.data.clips import Clip, read_clips_csv, write_clips_csv
from humwatch.data.loading import LAYOUTS, detect_layout, load_dataset
from humwatch.data.split import drop_anomalies, split_counts, study_split

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
