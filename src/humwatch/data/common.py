"""Helpers shared by the layout parsers (:mod:`humwatch.data.mimii`, :mod:`humwatch.data.dcase`,
:mod:`humwatch.data.folder`) and :mod:`humwatch.data.loading`: checking the root, listing folders and
audio files, picking the requested machine types / ids / noise level, sorting clips.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterable

from humwatch.audio import AUDIO_SUFFIXES
from humwatch.data.clips import Clip
from humwatch.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)


def check_root(root: str | os.PathLike, allow_file: bool = False) -> Path:
    """``root`` as an absolute path; a clear error when it is missing or a file."""
    if root is None or str(root) == "":
        raise DatasetError("no data folder given")
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise DatasetError(f"{path}: no such folder")
    if path.is_file() and not allow_file:
        raise DatasetError(f"{path}: is a file, expected a data folder")
    if not path.is_dir() and not path.is_file():
        raise DatasetError(f"{path}: not a folder")
    return path


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symbolic link loop is not a folder
        return False


def _loops(entry: os.DirEntry, here: str) -> bool:
    """True (and a warning) for a link to the folder ``here`` (a real path) or to one above it: a loop."""
    if not entry.is_symlink():
        return False
    target = os.path.realpath(entry.path)
    if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
        log.warning("%s: a symbolic link back to %s (a loop); not followed", entry.path, target)
        return True
    return False


def subdirs(folder: Path) -> list[Path]:
    """The folders directly inside ``folder``, sorted (hidden ones skipped)."""
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if not e.name.startswith(".") and _is_dir(e))
    except NotADirectoryError:
        raise DatasetError(f"{folder}: is a file, expected a folder") from None
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list folder ({e.strerror})") from None


def audio_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Audio files (by suffix only; nothing is opened) in ``folder``, sorted. A folder reached twice
    (a symbolic link back to a folder above it) is listed once and said in a warning; a link that
    leads nowhere (a loop, a dangling link) with an audio suffix is listed, so that reading it fails
    clearly (and ``--skip-bad`` counts it) instead of it vanishing."""
    out: list[Path] = []
    stack = [folder]
    seen: set[str] = set()
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in seen:
            log.warning("%s: a symbolic link to %s, listed already; not followed", d, real)
            continue
        seen.add(real)
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    try:
                        is_dir = e.is_dir()
                    except OSError:  # a symbolic link loop: not a folder
                        is_dir = False
                    if is_dir:
                        if recursive and not _loops(e, real):
                            stack.append(Path(e.path))
                    elif os.path.splitext(e.name)[1].lower() in AUDIO_SUFFIXES:
                        out.append(Path(e.path))
        except NotADirectoryError:
            raise DatasetError(f"{d}: is a file, expected a folder") from None
        except OSError as e:
            raise DatasetError(f"{d}: cannot list folder ({e.strerror})") from None
    return sorted(out)


def as_list(value, what: str) -> list[str] | None:
    """``None``, one value, or several values -> ``None`` or a list of non-empty strings."""
    if value is None:
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        values = [value]
    else:
        try:
            values = list(value)
        except TypeError:
            raise ConfigError(f"{what}: expected a name or a list of names, got {value!r}") from None
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise ConfigError(f"{what}: {v!r} is not a name")
        s = str(v).strip()
        if not s:
            raise ConfigError(f"{what}: empty name")
        out.append(s)
    return out or None


_ID_RE = re.compile(r"^(?:(?P<prefix>[A-Za-z]+)_?)?(?P<num>\d+)$")


def id_matches(wanted: str, machine_id: str) -> bool:
    """Whether a requested id (``"00"``, ``"0"``, ``"id_00"``, ``"section_00"``) names ``machine_id``."""
    if wanted == machine_id:
        return True
    w, m = _ID_RE.match(wanted), _ID_RE.match(machine_id)
    if not (w and m) or int(w["num"]) != int(m["num"]):
        return False
    return w["prefix"] is None or (w["prefix"] or "").lower() == (m["prefix"] or "").lower()


def pick_machines(found: Iterable[str], machines, root: Path) -> set[str]:
    """The found machine types that ``machines`` asks for (case-insensitive); all when ``None``.
    Raises when a requested machine is not there."""
    found = sorted(set(found))
    wanted = as_list(machines, "machines")
    if wanted is None:
        return set(found)
    by_lower = {f.lower(): f for f in found}
    missing = [w for w in wanted if w.lower() not in by_lower]
    if missing:
        raise DatasetError(f"{root}: no machine type {', '.join(missing)} (found: {', '.join(found) or 'none'})")
    return {by_lower[w.lower()] for w in wanted}


def pick_ids(found: Iterable[str], ids, root: Path, where: str = "") -> set[str]:
    """The found machine ids that ``ids`` asks for; all when ``None``. Raises when one is not there."""
    found = sorted(set(found))
    wanted = as_list(ids, "ids")
    if wanted is None:
        return set(found)
    keep: set[str] = set()
    missing = []
    for w in wanted:
        hit = {f for f in found if id_matches(w, f)}
        if not hit:
            missing.append(w)
        keep |= hit
    if missing:
        raise DatasetError(f"{root}: no machine id {', '.join(missing)}{where} (found: {', '.join(found) or 'none'})")
    return keep


def normalize_snr(value) -> str:
    """``6``, ``"6"``, ``"6dB"``, ``"6_dB"``, ``"+6 dB"`` -> ``"6dB"``; ``"-6"`` -> ``"-6dB"``."""
    s = str(value).strip().replace(" ", "").replace("_", "")
    m = re.fullmatch(r"([+-]?\d+(?:\.\d+)?)(?:db)?", s, flags=re.IGNORECASE)
    if isinstance(value, bool) or not m:
        raise ConfigError(f"snr: {value!r} is not a noise level like 6dB, 0dB or -6dB")
    x = float(m.group(1))
    return f"{int(x) if x.is_integer() else x:g}dB".replace("-0dB", "0dB")


def filter_clips(clips: list[Clip], root: Path, machines=None, ids=None, snr=None) -> list[Clip]:
    """Apply the machine/id/snr filters to already-parsed clips (csv manifests)."""
    keep_m = pick_machines((c.machine_type for c in clips), machines, root)
    clips = [c for c in clips if c.machine_type in keep_m]
    keep_i = pick_ids((c.machine_id for c in clips), ids, root)
    clips = [c for c in clips if c.machine_id in keep_i]
    if snr is not None and str(snr).lower() != "all":
        want = normalize_snr(snr)
        found = sorted({c.snr for c in clips if c.snr})
        clips = [c for c in clips if c.snr and _same_snr(c.snr, want)]
        if not clips:
            raise DatasetError(f"{root}: no clips at snr {want} (found: {', '.join(found) or 'none'})")
    return clips


def _same_snr(value: str, want: str) -> bool:
    try:
        return normalize_snr(value) == want
    except ConfigError:
        return False


def sort_clips(clips: Iterable[Clip]) -> list[Clip]:
    return sorted(clips, key=lambda c: c.path)
