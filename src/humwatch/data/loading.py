"""One entry point for every dataset layout: :func:`load_dataset`.

Layouts (``layout=``):

- ``mimii``: ``<root>/<snr>_<machine>/<machine>/id_XX/{normal,abnormal}/*.wav`` (or a root that is one
  ``<snr>_<machine>``, ``<machine>`` or ``id_XX`` folder), see :mod:`humwatch.data.mimii`;
- ``dcase``: DCASE Task 2 development sets 2020-2024, ``<root>/<machine>/{train,test}/*.wav`` with the
  label in the file name, see :mod:`humwatch.data.dcase`;
- ``folder``: ``<root>/normal/*.wav`` and ``<root>/abnormal/*.wav`` (or ``anomaly/``, ``anomalous/``),
  optionally one subfolder per machine id, see :mod:`humwatch.data.folder`;
- ``recordings``: a folder of one machine's recordings, all normal except those in an ``abnormal/``
  folder (any length, any sample rate; what ``humwatch fit`` takes), see :func:`humwatch.data.folder.load_recordings`;
- ``csv``: a manifest read by :func:`humwatch.data.clips.read_clips_csv`;
- ``auto`` (default): tells them apart by their folder and file names. No audio is read.

Every loader returns clips sorted by path, with absolute paths, and raises
:class:`~humwatch.errors.DatasetError` (one line naming the folder) when nothing usable is found.
"""

from __future__ import annotations

import os
from typing import Iterable

from humwatch.data.clips import Clip, read_clips_csv
from humwatch.data.common import check_root, filter_clips, sort_clips
from humwatch.data.dcase import load_dcase, looks_like_dcase
from humwatch.data.folder import load_folder, load_recordings, looks_like_folder, looks_like_recordings
from humwatch.data.mimii import load_mimii, looks_like_mimii
from humwatch.errors import ConfigError, DatasetError

LAYOUTS = ("auto", "mimii", "dcase", "folder", "recordings", "csv")
KNOWN_LAYOUTS_TEXT = (
    "MIMII (<snr>_<machine>/<machine>/id_XX/{normal,abnormal}/*.wav), "
    "DCASE Task 2 (<machine>/{train,test}/ with labelled file names), "
    "a folder with normal/ and abnormal/ subfolders, a folder of recordings, or a .csv manifest"
)


def load_dataset(
    root: str | os.PathLike,
    layout: str = "auto",
    machines: str | Iterable[str] | None = None,
    ids: str | int | Iterable[str | int] | None = None,
    snr: str | int | None = None,
    *,
    keep_split: bool = False,
    machine_type: str | None = None,
) -> list[Clip]:
    """Every clip of the dataset at ``root`` (a folder, or a ``.csv`` manifest), sorted by path.

    ``machines`` and ``ids`` keep only those machine types / ids (``"00"``, ``0`` and ``"id_00"``
    are the same id; for DCASE ``"00"`` also matches ``section_00``); asking for one that is not
    there is an error. ``snr`` picks a MIMII noise level (``"6dB"``, ``6``, ``"-6dB"``, or ``"all"``).
    ``keep_split`` keeps DCASE's own train/test (or a manifest's split column) as the clips' split;
    ``machine_type`` names the machine of a plain ``folder`` layout (default: the folder's name).
    """
    if not isinstance(layout, str) or layout.lower() not in LAYOUTS:
        raise ConfigError(f"unknown dataset layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    layout = layout.lower()
    root = check_root(root, allow_file=layout in ("auto", "csv"))
    if layout == "auto":
        layout = detect_layout(root)

    if layout == "csv":
        if not root.is_file():
            raise DatasetError(f"{root}: is a folder; the csv layout needs a .csv manifest file")
        clips = read_clips_csv(root)
        if not keep_split:
            clips = [c.with_split("") for c in clips]
        clips = filter_clips(clips, root, machines=machines, ids=ids, snr=snr)
        return sort_clips(clips)
    if snr is not None and layout != "mimii":
        raise ConfigError(f"snr={snr!r} only applies to the MIMII layout, not {layout} ({root})")
    if layout == "mimii":
        return load_mimii(root, machines=machines, ids=ids, snr=snr)
    if layout == "dcase":
        return load_dcase(root, machines=machines, ids=ids, keep_split=keep_split)
    if layout == "recordings":
        return filter_clips(load_recordings(root, machine_type), root, machines=machines, ids=ids)
    return load_folder(root, machines=machines, ids=ids, machine_type=machine_type)


def detect_layout(root: str | os.PathLike) -> str:
    """``"csv"``, ``"mimii"``, ``"dcase"``, ``"folder"`` or ``"recordings"`` for ``root``, judged by
    names only: a folder with audio files directly inside is ``recordings``."""
    root = check_root(root, allow_file=True)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "csv"
        raise DatasetError(f"{root}: is a file, not a data folder or a .csv manifest")
    if looks_like_recordings(root):
        return "recordings"
    if looks_like_mimii(root):
        return "mimii"
    if looks_like_dcase(root):
        return "dcase"
    if looks_like_folder(root):
        return "folder"
    if not any(True for _ in os.scandir(root)):
        raise DatasetError(f"{root}: empty folder")
    raise DatasetError(f"{root}: cannot tell the dataset layout; known layouts: {KNOWN_LAYOUTS_TEXT}")
