"""DCASE Task 2 development sets (2020-2024).

``<root>/<machine>/{train,test}/*.wav`` (2021 also ``source_test``/``target_test``), the root being
the folder of machine folders or one machine folder. The label, id and domain are in the file name:

- 2020: ``normal_id_00_00000000.wav``, ``anomaly_id_00_00000000.wav`` -> machine_id ``id_00``;
- 2021-2024: ``section_00_source_train_normal_0000_<attributes>.wav``,
  ``section_00_target_test_anomaly_0003_<attributes>.wav`` -> machine_id ``section_00``, domain
  ``source``/``target``.

Evaluation sets name test files without a label (``section_00_0000.wav``, ``id_01_00000000.wav``);
such a file cannot be scored against a label, so it is an error (give a CSV manifest with labels).
Only names are read, never audio.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from humwatch.data.clips import ANOMALOUS, NORMAL, Clip
from humwatch.data.common import audio_files, check_root, pick_ids, pick_machines, sort_clips, subdirs
from humwatch.errors import DatasetError

SPLIT_DIRS = {"train": "train", "test": "test", "source_test": "test", "target_test": "test"}
_LABELS = {"normal": NORMAL, "anomaly": ANOMALOUS}

NAME_2020 = re.compile(r"^(?P<label>normal|anomaly)_(?P<id>id_\d+)_\d+$")
NAME_2021 = re.compile(r"^(?P<id>section_\d+)_(?P<domain>source|target)_(?:train|test)_(?P<label>normal|anomaly)_\d+(?:_(?P<attr>.*))?$")
NAME_UNLABELLED = re.compile(r"^(?P<id>(?:section|id)_\d+)_(?:(?:source|target)_(?:train|test)_)?\d+(?:_.*)?$")


def parse_name(stem: str) -> tuple[str, int | None, str]:
    """``(machine_id, label or None when the name gives none, domain)`` for a DCASE file name
    (without its suffix); raises ``ValueError`` for a name in no DCASE format."""
    m = NAME_2021.match(stem)
    if m:
        return m["id"], _LABELS[m["label"]], m["domain"]
    m = NAME_2020.match(stem)
    if m:
        return m["id"], _LABELS[m["label"]], ""
    m = NAME_UNLABELLED.match(stem)
    if m:
        dom = "source" if "_source_" in stem else "target" if "_target_" in stem else ""
        return m["id"], None, dom
    raise ValueError(stem)


NO_ATTRIBUTE = "noAttribute"
"""What DCASE 2024 writes in place of attributes for machines recorded without any."""


def attributes_of(path: str | os.PathLike) -> str:
    """The operating-condition attributes a DCASE 2021-2024 file name carries after its index
    (``section_00_source_train_normal_0000_vel_4_loc_A.wav`` -> ``vel_4_loc_A``); ``""`` when it
    carries none (or is not such a name). Used as extra classes by the ID-learning methods."""
    m = NAME_2021.match(Path(path).stem)
    attr = (m["attr"] or "") if m else ""
    return "" if attr == NO_ATTRIBUTE else attr


def _split_dirs(machine_dir: Path) -> list[Path]:
    return [d for d in subdirs(machine_dir) if d.name in SPLIT_DIRS]


def _find_machine_dirs(root: Path) -> list[Path]:
    if _split_dirs(root):
        return [root]
    return [d for d in subdirs(root) if _split_dirs(d)]


def looks_like_dcase(root: str | os.PathLike) -> bool:
    """Whether ``root`` has machine folders with train/test folders of DCASE-named files."""
    for mdir in _find_machine_dirs(Path(root)):
        for sdir in _split_dirs(mdir):
            for f in audio_files(sdir)[:5]:
                try:
                    parse_name(f.stem)
                    return True
                except ValueError:
                    pass
    return False


def load_dcase(root: str | os.PathLike, machines=None, ids=None, keep_split: bool = False) -> list[Clip]:
    """The clips of a DCASE Task 2 development set, sorted by path.

    ``machines``: machine types (folder names, e.g. ``ToyCar``, ``fan``, ``gearbox``);
    ``ids``: ``"00"`` (matches ``id_00`` and ``section_00``), ``"id_00"`` or ``"section_00"``.
    ``keep_split=True`` records DCASE's own train/test as each clip's ``split``.
    """
    root = check_root(root)
    mdirs = _find_machine_dirs(root)
    if not mdirs:
        raise DatasetError(f"{root}: not a DCASE Task 2 folder (expected <machine>/train/ and <machine>/test/)")
    keep = pick_machines((d.name for d in mdirs), machines, root)

    parsed: list[tuple[Path, str, str, int | None, str, str]] = []  # path, machine, id, label, split, domain
    for mdir in mdirs:
        if mdir.name not in keep:
            continue
        for sdir in _split_dirs(mdir):
            split = SPLIT_DIRS[sdir.name]
            for f in audio_files(sdir):
                try:
                    mid, label, domain = parse_name(f.stem)
                except ValueError:
                    raise DatasetError(
                        f"{f}: not a DCASE Task 2 file name (expected e.g. normal_id_00_00000000.wav or section_00_source_train_normal_0000.wav)"
                    ) from None
                parsed.append((f, mdir.name, mid, label, split if keep_split else "", domain))

    where = f" for {', '.join(sorted(keep))}" if machines is not None else ""
    keep_ids = pick_ids((p[2] for p in parsed), ids, root, where)
    clips = []
    for f, machine, mid, label, split, domain in parsed:
        if mid not in keep_ids:
            continue
        if label is None:
            raise DatasetError(
                f"{f}: DCASE file name gives no normal/anomaly label (an evaluation set?); use the development set or a CSV manifest with labels"
            )
        clips.append(Clip(str(f), machine, mid, label, split=split, domain=domain))
    if not clips:
        raise DatasetError(f"{root}: no .wav files in the DCASE train/test folders")
    return sort_clips(clips)
