"""The MIMII layout.

The full dataset is ``<root>/<snr>_<machine>/<machine>/id_XX/{normal,abnormal}/*.wav``, e.g.
``6dB_fan/fan/id_00/normal/00000000.wav`` (noise levels ``6dB``, ``0dB``, ``-6dB``). The root may
also be one ``<snr>_<machine>`` folder, a folder holding ``<machine>`` folders, one ``<machine>``
folder, or one ``id_XX`` folder; the noise level and machine type are then read from the folders
above it where they say so. Only names are read, never audio.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from humwatch.data.clips import ANOMALOUS, NORMAL, Clip
from humwatch.data.common import audio_files, check_root, normalize_snr, pick_ids, pick_machines, sort_clips, subdirs
from humwatch.errors import DatasetError

SNR_DIR_RE = re.compile(r"^(?P<snr>[+-]?\d+(?:\.\d+)?)_?dB_(?P<machine>.+)$", re.IGNORECASE)
"""``6dB_fan``, ``-6dB_valve`` (also ``6_dB_fan`` as in the download's zip names)."""
ID_DIR_RE = re.compile(r"^id_\d+$")
LABEL_DIRS = {"normal": NORMAL, "abnormal": ANOMALOUS}


@dataclass(frozen=True)
class _MachineDir:
    path: Path
    machine_type: str
    snr: str  # "" when no folder says it
    only_id: str | None = None  # the root was one id_XX folder


def _snr_of(folder: Path) -> str:
    m = SNR_DIR_RE.match(folder.name)
    return normalize_snr(m["snr"]) if m else ""


def _has_id_dirs(folder: Path) -> bool:
    return any(ID_DIR_RE.match(d.name) for d in subdirs(folder))


def _is_id_dir(folder: Path) -> bool:
    return bool(ID_DIR_RE.match(folder.name)) and any((folder / n).is_dir() for n in LABEL_DIRS)


def _machine_dir(folder: Path, only_id: str | None = None) -> _MachineDir:
    """A folder holding ``id_XX`` folders: ``fan`` (inside ``6dB_fan``) or a flattened ``6dB_fan``."""
    m = SNR_DIR_RE.match(folder.name)
    if m:
        return _MachineDir(folder, m["machine"], normalize_snr(m["snr"]), only_id)
    return _MachineDir(folder, folder.name, _snr_of(folder.parent), only_id)


def _machines_in(folder: Path) -> list[_MachineDir]:
    """Machine folders directly inside ``folder`` (a ``<snr>_<machine>`` folder or a plain one)."""
    if _has_id_dirs(folder):
        return [_machine_dir(folder)]
    snr = _snr_of(folder)
    return [_MachineDir(d, d.name, snr) for d in subdirs(folder) if _has_id_dirs(d)]


def _find_machine_dirs(root: Path) -> list[_MachineDir] | None:
    """Every machine folder at or below ``root`` as the MIMII layout places them; None if not MIMII."""
    if _is_id_dir(root):
        return [_machine_dir(root.parent, only_id=root.name)]
    if _has_id_dirs(root):
        return [_machine_dir(root)]
    snr_dirs = [d for d in subdirs(root) if SNR_DIR_RE.match(d.name)]
    if snr_dirs:
        found = [md for d in snr_dirs for md in _machines_in(d)]
        return found or None
    found = _machines_in(root)
    return found or None


def looks_like_mimii(root: str | os.PathLike) -> bool:
    """Whether ``root`` has MIMII's folder names (one of the accepted root levels)."""
    return _find_machine_dirs(Path(root)) is not None


def load_mimii(root: str | os.PathLike, machines=None, ids=None, snr=None) -> list[Clip]:
    """The clips of a MIMII tree, sorted by path.

    ``machines``: machine types to keep (``"fan"``...); ``ids``: ``"00"`` or ``"id_00"``...;
    ``snr``: ``"6dB"``/``6``/``"-6dB"``, or ``"all"``. When one machine type is present at several
    noise levels, ``snr`` must say which (or ``"all"``): the same recordings are mixed at each level,
    so loading them together would put near-copies of a clip on both sides of a split.
    """
    root = check_root(root)
    mdirs = _find_machine_dirs(root)
    if mdirs is None:
        raise DatasetError(f"{root}: not a MIMII folder (expected <snr>_<machine>/<machine>/id_XX/{{normal,abnormal}}/*.wav)")

    keep = pick_machines((m.machine_type for m in mdirs), machines, root)
    mdirs = [m for m in mdirs if m.machine_type in keep]

    if snr is not None and str(snr).strip().lower() != "all":
        want = normalize_snr(snr)
        found = sorted({m.snr for m in mdirs if m.snr})
        mdirs = [m for m in mdirs if m.snr == want]
        if not mdirs:
            raise DatasetError(f"{root}: no MIMII data at snr {want} (found: {', '.join(found) or 'none'})")
    elif snr is None:
        levels: dict[str, set[str]] = {}
        for m in mdirs:
            levels.setdefault(m.machine_type, set()).add(m.snr)
        multi = {k: v for k, v in levels.items() if len(v) > 1}
        if multi:
            name, lv = sorted(multi.items())[0]
            raise DatasetError(
                f"{root}: {name} is present at several noise levels ({', '.join(sorted(lv))}); choose one with snr (e.g. snr='6dB') or snr='all'"
            )

    id_dirs: list[tuple[_MachineDir, Path]] = []
    for m in mdirs:
        for d in subdirs(m.path):
            if ID_DIR_RE.match(d.name) and (m.only_id is None or d.name == m.only_id):
                id_dirs.append((m, d))
    where = f" for {', '.join(sorted(keep))}" if machines is not None else ""
    keep_ids = pick_ids((d.name for _, d in id_dirs), ids, root, where)

    clips: list[Clip] = []
    for m, d in id_dirs:
        if d.name not in keep_ids:
            continue
        label_dirs = [(d / name, label) for name, label in LABEL_DIRS.items() if (d / name).is_dir()]
        if not label_dirs:
            raise DatasetError(f"{d}: no normal/ or abnormal/ folder")
        for folder, label in label_dirs:
            for f in audio_files(folder):
                clips.append(Clip(str(f), m.machine_type, d.name, label, snr=m.snr))
    if not clips:
        raise DatasetError(f"{root}: no .wav files in the MIMII folders")
    return sort_clips(clips)
