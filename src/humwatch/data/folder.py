"""A plain folder of labelled recordings, or of healthy recordings as people have them.

``<root>/normal/*.wav`` and ``<root>/abnormal/*.wav`` (``anomalous/`` and ``anomaly/`` are accepted
too; names are case-insensitive and files in subfolders of them count). The machine type is the
root folder's name unless given; the machine id is ``id_00``. With one subfolder per machine,
``<root>/<id>/normal/*.wav``, each subfolder's name is its machine id. Only names are read.

The ``recordings`` layout (:func:`load_recordings`) is a folder of one machine's recordings as a
plant engineer has them: every audio file in it or below it is normal, except those in an
``abnormal/`` (``anomalous/``, ``anomaly/``) folder, which are anomalous.
"""

from __future__ import annotations

import os
from pathlib import Path

from humwatch.data.clips import ANOMALOUS, NORMAL, Clip
from humwatch.data.common import audio_files, check_root, pick_ids, pick_machines, sort_clips, subdirs
from humwatch.errors import ConfigError, DatasetError

LABEL_DIR_NAMES = {"normal": NORMAL, "abnormal": ANOMALOUS, "anomalous": ANOMALOUS, "anomaly": ANOMALOUS}
DEFAULT_ID = "id_00"


def _label_dirs(folder: Path) -> list[tuple[Path, int]]:
    return [(d, LABEL_DIR_NAMES[d.name.lower()]) for d in subdirs(folder) if d.name.lower() in LABEL_DIR_NAMES]


def _groups(root: Path) -> list[tuple[str, list[tuple[Path, int]]]]:
    """``[(machine_id, label folders)]``: the root itself, or one entry per id subfolder."""
    own = _label_dirs(root)
    if own:
        return [(DEFAULT_ID, own)]
    out = []
    for d in subdirs(root):
        dirs = _label_dirs(d)
        if dirs:
            out.append((d.name, dirs))
    return out


def looks_like_folder(root: str | os.PathLike) -> bool:
    """Whether ``root`` (or its subfolders) holds normal/abnormal folders."""
    return bool(_groups(Path(root)))


def load_folder(root: str | os.PathLike, machines=None, ids=None, machine_type: str | None = None) -> list[Clip]:
    """The clips of a normal/abnormal folder, sorted by path."""
    root = check_root(root)
    if machine_type is not None and (not isinstance(machine_type, str) or not machine_type.strip()):
        raise ConfigError(f"machine_type: {machine_type!r} is not a machine name")
    machine = machine_type.strip() if machine_type else root.name
    groups = _groups(root)
    if not groups:
        raise DatasetError(f"{root}: no normal/ or abnormal/ folder (nor <id>/normal/ subfolders)")
    pick_machines([machine], machines, root)
    keep_ids = pick_ids((g[0] for g in groups), ids, root)
    clips = []
    for mid, dirs in groups:
        if mid not in keep_ids:
            continue
        for folder, label in dirs:
            for f in audio_files(folder, recursive=True):
                clips.append(Clip(str(f), machine, mid, label))
    if not clips:
        raise DatasetError(f"{root}: no audio files in its normal/ or abnormal/ folders")
    return sort_clips(clips)


def looks_like_recordings(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds audio files directly (the ``recordings`` layout)."""
    return bool(audio_files(Path(root)))


def load_recordings(root: str | os.PathLike, machine_type: str | None = None) -> list[Clip]:
    """Every audio file below ``root`` as a clip of one machine: anomalous inside an
    ``abnormal/``-like folder, normal everywhere else; sorted by path."""
    root = check_root(root)
    machine = machine_type.strip() if isinstance(machine_type, str) and machine_type.strip() else root.name
    clips = []
    for f in audio_files(root, recursive=True):
        parts = {p.lower() for p in f.relative_to(root).parts[:-1]}
        label = ANOMALOUS if parts & {k for k, v in LABEL_DIR_NAMES.items() if v == ANOMALOUS} else NORMAL
        clips.append(Clip(str(f), machine, DEFAULT_ID, label))
    if not clips:
        raise DatasetError(f"{root}: no audio files in this folder")
    return sort_clips(clips)
