"""Small file helpers: every file humwatch writes is written whole or not at all."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from humwatch.errors import DamagedFileError, one_line

log = logging.getLogger("humwatch")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", mode: int = 0o666) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step, with
    ``mode`` (less the umask; 0o600 for a secret: the temporary file is 0600 from the start).

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{_short(path.name)}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600, and some writers (safetensors) recreate the file: every file humwatch
        # writes gets the usual mode, the same for JSON and weights
        os.chmod(tmp_path, mode & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def file_sha256(path: str | os.PathLike, h=None) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB pieces; OSError when it cannot be read.
    With ``h`` (a hashlib object) the bytes are added to it instead, and its hex digest so far returned."""
    h = h if h is not None else hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")
"""The file suffixes humwatch reads as audio (:mod:`humwatch.audio`)."""
MANIFEST = "manifest.json"
"""The file that lists the SHA-256 of every other file of a saved model folder."""


def write_manifest(directory: str | os.PathLike) -> None:
    """Seal a saved folder: ``manifest.json`` lists every file below it with its SHA-256 (written last)."""
    d = Path(directory)
    files = {
        p.relative_to(d).as_posix(): file_sha256(p)
        for p in sorted(d.rglob("*"))
        if p.is_file() and p != d / MANIFEST and not p.name.startswith(".")
    }
    write_json(d / MANIFEST, {"format": "humwatch.manifest/1", "files": files})


def _refuse_foreign(where: Path, fmt: object) -> None:
    """A ``"format"`` of another program (``"other.monitor/1"``): one ConfigError line that names it."""
    from humwatch.errors import ConfigError

    if isinstance(fmt, str) and "." in fmt and not fmt.startswith("humwatch."):
        program = fmt.split(".", 1)[0][:40]
        raise ConfigError(
            f"{where}: written by another program ({program!r}, format {fmt[:60]!r}), not by humwatch; fit it again with humwatch"
        )


def check_manifest(directory: str | os.PathLike) -> None:
    """Refuse (ConfigError, one line) a sealed folder whose files are missing, changed or added."""
    from humwatch.errors import ConfigError

    d = Path(directory)
    m = d / MANIFEST
    if not m.is_file():
        raise ConfigError(f"{d}: {MANIFEST} is missing (not a complete saved folder)")
    doc = read_json(m, dict)
    files = doc.get("files")
    if doc.get("format") != "humwatch.manifest/1" or not isinstance(files, dict):
        _refuse_foreign(d, doc.get("format"))
        raise damaged(m, "not a humwatch manifest")
    present = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and p != d / MANIFEST and not p.name.startswith(".")}
    for name in sorted(set(files) | present):
        if name not in present:
            raise ConfigError(f"{d / name}: missing (listed in {MANIFEST})")
        if name not in files:
            raise ConfigError(f"{d / name}: not listed in {MANIFEST} (added after saving)")
        if file_sha256(d / name) != files[name]:
            raise ConfigError(f"{d / name}: checksum does not match {MANIFEST} (file changed or damaged)")


def weight_fingerprints(directory: str | os.PathLike) -> dict[str, str]:
    """``{path below directory: SHA-256}`` of every weights file (``*.safetensors``) below ``directory``:
    what a saved method or monitor records of its weights in its own JSON, beside the manifest."""
    d = Path(directory)
    return {
        p.relative_to(d).as_posix(): file_sha256(p)
        for p in sorted(d.rglob("*.safetensors"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts)
    }


def check_weight_fingerprints(directory: str | os.PathLike, recorded: Any, where: str | os.PathLike) -> None:
    """Refuse (ConfigError, one line) weights below ``directory`` that are not the ones ``where`` (a
    method.json or monitor.json) records in ``recorded`` (:func:`weight_fingerprints` at saving):
    changed, swapped, zeroed, missing or added. Independent of the manifest, so weights edited
    and the manifest recomputed over them ("resealed") are refused too."""
    from humwatch.errors import ConfigError

    d, name = Path(directory), Path(where).name
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        raise ConfigError(f"{where}: no fingerprints of its weights (written by an older humwatch, or edited); fit or save it again")
    now = weight_fingerprints(d)
    for f in sorted(set(recorded) | set(now)):
        if f not in now:
            raise ConfigError(f"{d / f}: missing (its fingerprint is in {name})")
        if f not in recorded:
            raise ConfigError(f"{d / f}: weights that {name} does not record (added after saving)")
        if now[f] != recorded[f]:
            raise ConfigError(f"{d / f}: the weights differ from the fingerprint {name} records (changed, swapped or damaged after saving)")


@contextmanager
def staged_folder(target: str | os.PathLike, kind: str | None = None) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``target``; when the block ends without an error it takes
    ``target``'s place in one rename (an older ``target`` is moved aside first, then removed), so a
    folder is never half old and half new, and an error or a kill leaves ``target`` as it was (a
    killed run leaves only a hidden ``.NAME.tmp-*`` folder beside it). With ``kind`` the finished
    folder carries humwatch's :data:`MARKER` of that kind (what ``--overwrite`` may replace)."""
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_short(target.name)}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if kind is not None:
            mark_folder(tmp, kind)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{_short(target.name)}.old-", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


MARKER = ".humwatch"
"""The file every output folder humwatch makes carries (``{"format": "humwatch.output/1", "kind": ...}``):
``--overwrite`` replaces only a folder with this marker, of the same kind. A dot-file, so manifests
(:func:`write_manifest`, :func:`check_manifest`) and dataset listings skip it."""

MARKER_FORMAT = "humwatch.output/1"
KINDS = {
    "run": "a run directory",
    "monitor": "a monitor",
    "export": "an exported monitor",
    "compare": "a comparison",
    "reproduce": "a reproduce folder",
    "explain": "an explain folder",
    "data": "generated data",
}
"""The kinds of output folder, and how a message names each."""


def mark_folder(directory: str | os.PathLike, kind: str) -> None:
    """Write the marker that says ``directory`` is humwatch's output of ``kind`` (see :data:`MARKER`)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if folder_kind(d) != kind:
        write_json(d / MARKER, {"format": MARKER_FORMAT, "kind": kind})


def folder_kind(directory: str | os.PathLike) -> str | None:
    """The kind of output folder ``directory`` is by its marker; None when it has none (not ours)."""
    doc = read_record(Path(directory) / MARKER, "treated as a folder humwatch did not write")
    kind = doc.get("kind") if doc is not None and doc.get("format") == MARKER_FORMAT else None
    return kind if isinstance(kind, str) else None


def _what(p: Path) -> str:
    """What an existing path is, in a few words (for messages)."""
    import stat

    try:
        m = os.lstat(p).st_mode
    except OSError as e:
        return f"not readable ({e.strerror})"
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a file"),
    ):
        if test(m):
            return name
    return "not a file or folder"


def _exists(p: Path) -> bool:
    try:
        os.lstat(p)
        return True
    except OSError:
        return False


def _is_audio(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in AUDIO_SUFFIXES


def _inside(child: str, parent: str) -> bool:
    return child != parent and child.startswith(parent.rstrip(os.sep) + os.sep)


def _check_place(out: Path, inputs: Iterable, folder: bool, hosts: Iterable = ()) -> None:
    """What every output must pass: names the file system takes, a place that can be written, and no
    overlap with the command's ``inputs`` (an output equal to one, holding one, or, for a folder
    output, inside one that is not in ``hosts``; a file may sit in an input folder unless it is sealed)."""
    from humwatch.errors import ConfigError

    raw = os.fsencode(os.path.abspath(out))
    for part in raw.split(b"/"):
        if len(part) > 255:
            raise ConfigError(f"{out}: a name in this path is {len(part)} bytes long (at most 255); choose a shorter one")
    if len(raw) > 4000:
        raise ConfigError(f"{out}: the path is {len(raw)} bytes long (at most 4000); choose a shorter one")
    real = os.path.realpath(out)
    host_reals = {os.path.realpath(h) for h in hosts if h is not None}
    for given in inputs:
        if given is None or str(given) in ("", "-"):
            continue
        src = os.path.realpath(given)
        same = real == src
        if not same and _exists(out) and _exists(Path(given)):
            try:
                same = os.path.samefile(out, given)  # a hard link is the same file under another name
            except OSError:
                pass
        if same:
            raise ConfigError(f"{out}: is {given} itself, an input of this command; choose another output")
        if _inside(src, real):
            raise ConfigError(f"{out}: holds {given}, an input of this command; choose another output")
        if _inside(real, src) and src not in host_reals and (folder or (Path(src) / MANIFEST).is_file()):
            raise ConfigError(f"{out}: is inside {given}, an input of this command; write it elsewhere")
        if _inside(real, src) and not folder and _exists(out) and _is_audio(real):
            raise ConfigError(f"{out}: is a recording in {given}, an input of this command; choose another output")
    p = Path(os.path.abspath(out)).parent
    while not _exists(p):
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"{out}: {p} is {_what(p)}, not a folder")
    try:  # root passes every os.access test: only making something there tells
        os.rmdir(tempfile.mkdtemp(prefix=".humwatch-probe-", dir=p))
    except OSError as e:
        raise ConfigError(f"{out}: {p} is not writable ({e.strerror or type(e).__name__})") from None


def check_out_file(out: str | os.PathLike, suffix: str | None = None, inputs: Iterable = ()) -> None:
    """Refuse (one ConfigError line), before any work, an output file that cannot or must not be
    written: the wrong ``suffix``, an existing path that is not a regular file (a folder, a device
    such as /dev/full, a FIFO, a symbolic link), one of ``inputs``, a name too long, or a place that
    cannot be written (under a file, a read-only folder)."""
    from humwatch.errors import ConfigError

    out = Path(out)
    if _exists(out) and not out.is_symlink() and out.is_dir():
        raise ConfigError(f"{out}: is a folder; give a {suffix or 'file'} name")
    if suffix and not str(out).endswith(suffix):
        raise ConfigError(f"{out}: the output must be a {suffix} file")
    if _exists(out) and _what(out) != "a file":
        raise ConfigError(f"{out}: exists and is {_what(out)}, not a regular file; humwatch replaces only files")
    _check_place(out, inputs, folder=False)


def check_out_folder(
    out: str | os.PathLike,
    overwrite: bool = True,
    *,
    kind: str | None = None,
    inputs: Iterable = (),
    replace: bool = True,
    legacy: Iterable[str] = (),
    hosts: Iterable = (),
) -> None:
    """Refuse (one ConfigError line), before any work, an output folder that cannot or must not be
    written: an existing path that is not a folder, a place that cannot be written, a name too long,
    a folder that is, holds or sits in one of ``inputs`` (see :func:`_check_place`), and one that
    holds files humwatch did not write. ``replace`` (the folder is replaced whole,
    :func:`staged_folder`): a folder that holds files is replaced only with ``overwrite`` and only when
    it carries humwatch's :data:`MARKER` of ``kind`` (any kind when None). Otherwise (written into and
    resumed: compare, reproduce, explain) a folder that holds files must carry that marker, or one of
    the ``legacy`` names older versions wrote there."""
    from humwatch.errors import ConfigError

    out = Path(out)
    if _exists(out) and (not out.is_dir() or (replace and out.is_symlink())):
        raise ConfigError(f"{out}: exists and is {_what(out)}, not a folder")
    _check_place(out, inputs, folder=True, hosts=hosts)
    try:
        full = out.is_dir() and any(out.iterdir())
    except OSError as e:
        raise ConfigError(f"{out}: cannot be listed ({e.strerror})") from None
    if not full:
        return
    found = folder_kind(out)
    want = KINDS.get(kind, kind) if kind else "humwatch's output"
    ours = found is not None and (kind is None or found == kind)
    if replace:
        if not overwrite:
            raise ConfigError(f"{out}: exists and holds files; pass --overwrite to replace it, or choose another --out")
        if ours:
            return
    elif ours or any((out / n).exists() for n in legacy):
        return
    if found is not None:
        raise ConfigError(f"{out}: is {KINDS.get(found, found)}, not {want}; choose another --out")
    raise ConfigError(
        f"{out}: holds files humwatch did not write (no {MARKER} marker); "
        f"{'--overwrite replaces only a folder humwatch wrote; ' if replace else ''}"
        "choose another --out, or empty it yourself"
    )


def _short(name: str) -> str:
    """``name`` cut to 200 bytes, for the hidden temporary names made from it (a 255-byte name plus
    a prefix and a suffix would be too long for the file system)."""
    raw = os.fsencode(name)
    return name if len(raw) <= 200 else os.fsdecode(raw[:200])


def check_holds_none(out: str | os.PathLike, paths: Iterable, option: str = "--out") -> None:
    """Refuse (one ConfigError line) an existing output folder that holds one of ``paths`` (the
    clips a manifest lists, say): replacing it would delete them."""
    from humwatch.errors import ConfigError

    if not Path(out).is_dir():
        return
    real = os.path.realpath(out)
    for p in paths:
        if _inside(os.path.realpath(p), real):
            raise ConfigError(f"{out}: holds {p}, an input of this command; choose another {option}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text, whole or not at all; file names that are not UTF-8 (kept by Python as surrogate
    escapes) are written back as their original bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def damaged(path: str | os.PathLike, why: BaseException | str) -> DamagedFileError:
    """The one error for a file humwatch wrote that cannot be read back: ``PATH: damaged (why)``."""
    return DamagedFileError(f"{path}: damaged ({why if isinstance(why, str) else one_line(why, typed=True)})")


def read_json(path: str | os.PathLike, kind: type | None = None) -> Any:
    """The JSON document of a file humwatch wrote (a ``kind``, e.g. dict, when given); a
    :class:`~humwatch.errors.DamagedFileError` (one line) when it cannot be read as one."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise damaged(path, e.strerror or type(e).__name__) from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise damaged(path, f"not readable JSON: {one_line(e)}") from None
    if kind is not None and not isinstance(doc, kind):
        raise damaged(path, f"not a JSON {'object' if kind is dict else kind.__name__}")
    return doc


def read_record(path: str | os.PathLike, then: str = "done again") -> dict | None:
    """A JSON object humwatch wrote that can be made again (a resume record, a cache's marker): None
    when it is missing, and when it is damaged, with one warning line ``PATH: damaged (...); then``."""
    if not Path(path).is_file():
        return None
    try:
        return read_json(path, dict)
    except DamagedFileError as e:
        log.warning("%s; %s", e, then)
        return None


def read_json_doc(path: str | os.PathLike, fmt: str | None = None, fields: dict | None = None, missing: str | None = None) -> dict:
    """A JSON object (saved by humwatch when ``fmt`` is given), checked: one ConfigError line when the
    file is missing (``missing`` says what that means), not a ``"format": fmt`` object, or when a
    field of ``fields`` ({name: type or tuple of types}) is missing or of another type; one
    DamagedFileError line (:func:`read_json`) when it cannot be read as a JSON object."""
    from humwatch.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(missing or f"{path}: no such file")
    doc = read_json(path, dict)
    if fmt is not None and doc.get("format") != fmt:
        _refuse_foreign(path, doc.get("format"))
        raise ConfigError(f"{path}: not a humwatch file of format {fmt!r}")
    for key, kind in (fields or {}).items():
        value = doc.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ConfigError(f"{path}: field {key!r} is missing or not a {names}")
    return doc


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
            w = csv.writer(f)
            if header:  # no header row at all when there is none (the DCASE files have none)
                w.writerow(header)
            for row in rows:
                w.writerow(row)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
