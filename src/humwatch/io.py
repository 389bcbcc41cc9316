"""Small file helpers: every file humwatch writes is written whole or not at all."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", mode: int = 0o666) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step, with
    ``mode`` (less the umask; 0o600 for a secret: the temporary file is 0600 from the start).

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
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


MANIFEST = "manifest.json"
"""The file that lists the SHA-256 of every other file of a saved model folder."""


def write_manifest(directory: str | os.PathLike) -> None:
    """Seal a saved folder: ``manifest.json`` lists every file below it with its SHA-256 (written last)."""
    d = Path(directory)
    files = {p.relative_to(d).as_posix(): file_sha256(p) for p in sorted(d.rglob("*"))
             if p.is_file() and p != d / MANIFEST and not p.name.startswith(".")}
    write_json(d / MANIFEST, {"format": "humwatch.manifest/1", "files": files})


def _refuse_foreign(where: Path, fmt: object) -> None:
    """A ``"format"`` of another program (``"other.monitor/1"``): one ConfigError line that names it."""
    from humwatch.errors import ConfigError

    if isinstance(fmt, str) and "." in fmt and not fmt.startswith("humwatch."):
        program = fmt.split(".", 1)[0][:40]
        raise ConfigError(f"{where}: written by another program ({program!r}, format {fmt[:60]!r}), "
                          "not by humwatch; fit it again with humwatch")


def check_manifest(directory: str | os.PathLike) -> None:
    """Refuse (ConfigError, one line) a sealed folder whose files are missing, changed or added."""
    from humwatch.errors import ConfigError

    d = Path(directory)
    m = d / MANIFEST
    try:
        doc = json.loads(m.read_text(encoding="utf-8"))
        files = doc["files"]
        if doc.get("format") != "humwatch.manifest/1" or not isinstance(files, dict):
            _refuse_foreign(d, doc.get("format"))
            raise ValueError("not a humwatch manifest")
    except FileNotFoundError:
        raise ConfigError(f"{d}: {MANIFEST} is missing (not a complete saved folder)") from None
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{m}: damaged ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    present = {p.relative_to(d).as_posix() for p in d.rglob("*")
               if p.is_file() and p != d / MANIFEST and not p.name.startswith(".")}
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
    return {p.relative_to(d).as_posix(): file_sha256(p) for p in sorted(d.rglob("*.safetensors"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts)}


def check_weight_fingerprints(directory: str | os.PathLike, recorded: Any, where: str | os.PathLike) -> None:
    """Refuse (ConfigError, one line) weights below ``directory`` that are not the ones ``where`` (a
    method.json or monitor.json) records in ``recorded`` (:func:`weight_fingerprints` at saving):
    changed, swapped, zeroed, missing or added. Independent of the manifest, so weights edited
    and the manifest recomputed over them ("resealed") are refused too."""
    from humwatch.errors import ConfigError

    d, name = Path(directory), Path(where).name
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        raise ConfigError(f"{where}: no fingerprints of its weights (written by an older humwatch, or edited); "
                          "fit or save it again")
    now = weight_fingerprints(d)
    for f in sorted(set(recorded) | set(now)):
        if f not in now:
            raise ConfigError(f"{d / f}: missing (its fingerprint is in {name})")
        if f not in recorded:
            raise ConfigError(f"{d / f}: weights that {name} does not record (added after saving)")
        if now[f] != recorded[f]:
            raise ConfigError(f"{d / f}: the weights differ from the fingerprint {name} records "
                              "(changed, swapped or damaged after saving)")


@contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``target``; when the block ends without an error it takes
    ``target``'s place in one rename (an older ``target`` is moved aside first, then removed), so a
    folder is never half old and half new, and an error or a kill leaves ``target`` as it was (a
    killed run leaves only a hidden ``.NAME.tmp-*`` folder beside it)."""
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_out_folder(out: str | os.PathLike, overwrite: bool = True) -> None:
    """Refuse (one-line ConfigError) an output folder that cannot be one: an existing file, a path
    under a file, or under a folder that is not writable; or, unless ``overwrite``, one that holds files."""
    from humwatch.errors import ConfigError

    out = Path(out)
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and holds files; pass --overwrite to replace it, or choose another --out")
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"{out}: {'exists and is not a folder' if p == out else f'{p} is a file, not a folder'}")
            if not os.access(p, os.W_OK):
                raise ConfigError(f"{out}: {p} is not writable")
            return


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


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_doc(path: str | os.PathLike, fmt: str | None = None, fields: dict | None = None,
                  missing: str | None = None) -> dict:
    """A JSON object (saved by humwatch when ``fmt`` is given), checked: one ConfigError line when the
    file is missing (``missing`` says what that means), unreadable, not a JSON object, not a
    ``"format": fmt`` object, or when a field of ``fields`` ({name: type or tuple of types}) is
    missing or of another type."""
    from humwatch.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(missing or f"{path}: no such file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: damaged, not readable JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) and fmt is None:
        raise ConfigError(f"{path}: is not a JSON object")
    if not isinstance(doc, dict) or (fmt is not None and doc.get("format") != fmt):
        if isinstance(doc, dict):
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
