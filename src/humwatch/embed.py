"""Embed clips with a backbone: batched, streaming, cached on disk.

:func:`embed_clips` reads the audio and computes the frontend one batch at a time, so memory holds
one batch of inputs plus the (N, D) result, whatever N is.

The cache (``cache_dir``) keeps one small file per clip, keyed by

* the SHA-256 of the audio file's bytes (so renamed or copied files still hit, edited ones miss),
* the backbone's ``cache_key`` (name, weights identity, architecture, frontend key, precision),
* the :class:`~humwatch.audio.AudioSettings` (sample rate, length, channel).

Layout: ``<cache_dir>/<backbone.cache_key>/<k[:2]>/<k>.emb`` with a ``backbone.json`` describing
the backbone beside the shards. Each entry is ``MAGIC + header length + JSON header (key, dim,
dtype, sha256 of the payload) + float32 payload``; an entry that is truncated, corrupt, of the
wrong key or of the wrong size is detected, logged and recomputed. Entries are written to a
temporary file in the same folder and moved into place with ``os.replace`` (atomic on POSIX), so
runs sharing a cache at the same time never see a half-written entry; two runs computing the same
clip just write the same bytes twice. No lock is needed for that, and none is taken.

Example::

    >>> from humwatch.embed import embed_clips, EmbeddingSet
    >>> emb = embed_clips(clips, backbone, cache_dir="~/.cache/humwatch", on_bad="skip")
    >>> emb.X.shape, len(emb.skipped)
    ((118, 768), 2)
    >>> emb.save_npz("runs/x/embeddings/ast.npz"); EmbeddingSet.load_npz("runs/x/embeddings/ast.npz")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from humwatch.audio import AudioSettings
from humwatch.data.clips import Clip
from humwatch.errors import AudioError, ConfigError, DatasetError, one_line
from humwatch.reader import ClipReader
from humwatch.settings import Int, check_value

log = logging.getLogger("humwatch")

MAGIC = b"HUMWEMB\x01"
"""First bytes of every cache entry (format version in the last byte)."""
NPZ_FIELDS = ("X", "path", "label", "machine_type", "machine_id", "split")
"""Arrays every embeddings .npz holds (``snr``, ``domain``, ``skipped_path``, ``skipped_reason`` too)."""


@dataclass
class EmbeddingSet:
    """Embeddings of clips: ``X`` (N, D) float32, row i for ``clips[i]``; ``skipped`` lists the
    (path, reason) of bad files left out; ``stats`` counts cache hits, computed and damaged entries."""

    X: np.ndarray
    clips: list[Clip]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.X = np.asarray(self.X, dtype=np.float32)
        if self.X.ndim != 2 or self.X.shape[0] != len(self.clips):
            raise ValueError(f"X has shape {self.X.shape} for {len(self.clips)} clips")

    def __len__(self) -> int:
        return len(self.clips)

    @classmethod
    def concat(cls, sets: "Iterable[EmbeddingSet]", dim: int = 0) -> "EmbeddingSet":
        """One set from several (rows in order; a clip in more than one set is kept once)."""
        X, clips, skipped, seen = [], [], [], set()
        for s in sets:
            for c, x in zip(s.clips, s.X):
                if c.key not in seen:
                    seen.add(c.key)
                    clips.append(c)
                    X.append(x)
            skipped += [k for k in s.skipped if k not in skipped]
        return cls(np.stack(X) if X else np.zeros((0, dim), np.float32), clips, skipped)

    def save_npz(self, path: str | os.PathLike) -> None:
        """Write arrays X, path, label, machine_type, machine_id, split (+ snr, domain, skipped_*)
        as an uncompressed .npz without pickled objects (strings are unicode arrays); atomic."""
        from humwatch.io import atomic_path

        c = self.clips

        def strings(values) -> np.ndarray:
            values = [str(v) for v in values]
            return np.array(values, dtype=str) if values else np.zeros(0, dtype="<U1")

        arrays = {
            "X": self.X,
            "path": strings(x.path for x in c),
            "label": np.array([x.label for x in c], dtype=np.int64),
            "machine_type": strings(x.machine_type for x in c),
            "machine_id": strings(x.machine_id for x in c),
            "split": strings(x.split for x in c),
            "snr": strings(x.snr for x in c),
            "domain": strings(x.domain for x in c),
            "start": np.array([x.start for x in c], dtype=np.float64),
            "skipped_path": strings(p for p, _ in self.skipped),
            "skipped_reason": strings(r for _, r in self.skipped),
        }
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> "EmbeddingSet":
        """Read a file written by :meth:`save_npz` (DatasetError when missing, DamagedFileError when
        unusable: one line)."""
        from humwatch.io import damaged

        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{path}: no such embeddings file")
        try:
            with np.load(path, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise damaged(path, f"not a readable embeddings .npz: {one_line(e)}") from None
        missing = [k for k in NPZ_FIELDS if k not in a]
        if missing:
            raise damaged(path, f"the embeddings file lacks array(s) {', '.join(missing)}")
        n = len(a["path"])
        X = a["X"]
        if X.ndim != 2 or X.shape[0] != n or any(len(a[k]) != n for k in NPZ_FIELDS[1:]):
            raise damaged(path, "the embeddings file's arrays disagree in length")
        empty = [""] * n
        snr = a.get("snr", empty)
        domain = a.get("domain", empty)
        start = a.get("start", np.zeros(n))
        clips = [
            Clip(
                str(a["path"][i]),
                str(a["machine_type"][i]),
                str(a["machine_id"][i]),
                int(a["label"][i]),
                snr=str(snr[i]),
                split=str(a["split"][i]),
                domain=str(domain[i]),
                start=float(start[i]),
            )
            for i in range(n)
        ]
        skipped = list(zip(map(str, a.get("skipped_path", [])), map(str, a.get("skipped_reason", []))))
        return cls(X.astype(np.float32, copy=False), clips, skipped)


# -- hashing ---------------------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of an audio file's bytes; AudioError (one line) when it is not a regular file of a sane
    size (:func:`humwatch.audio.check_file`: nothing that could hang is opened) or cannot be read."""
    from humwatch.audio import check_file
    from humwatch.io import file_sha256 as sha

    try:
        return sha(check_file(path))
    except OSError as e:
        raise AudioError(f"{path}: not readable ({e.strerror or type(e).__name__})") from None


def audio_key(settings: AudioSettings) -> str:
    return hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode()).hexdigest()[:16]


# -- the cache -------------------------------------------------------------------------------------
class EmbeddingCache:
    """One backbone's cache entries below ``root``; see the module docstring for the format."""

    def __init__(self, root: str | os.PathLike, backbone, audio: AudioSettings):
        self.root = Path(root).expanduser()
        self.folder = self.root / backbone.cache_key
        self.dim = int(backbone.embedding_dim)
        self.audio_key = audio_key(audio)
        self.hits = self.damaged = self.written = 0
        self._write_failed = False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            info = self.folder / "backbone.json"
            if not info.is_file():
                from humwatch.io import write_json

                write_json(
                    info,
                    {
                        "backbone": backbone.name,
                        "cache_key": backbone.cache_key,
                        "weights": backbone.weights.describe(),
                        "random_init": backbone.weights.random_init,
                        "config": backbone.config,
                        "frontend": backbone.frontend.name,
                        "frontend_key": backbone.frontend.key,
                        "precision": backbone.precision,
                        "embedding_dim": self.dim,
                    },
                )
        except OSError as e:
            raise ConfigError(f"{self.root}: cache folder not writable ({e.strerror or type(e).__name__})") from None

    def key(self, content_sha256: str, start: float = 0.0) -> str:
        """The entry of a file's content (and, for a window of a long recording, where it starts)."""
        where = f"|{start:g}" if start else ""
        return hashlib.sha256(f"{content_sha256}|{self.audio_key}{where}".encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.emb"

    def get(self, key: str) -> np.ndarray | None:
        p = self.path(key)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("embedding cache: %s unreadable (%s); recomputing", p, e.strerror)
            self.damaged += 1
            return None
        vec = self._decode(data, key)
        if vec is None:
            log.warning("embedding cache: damaged entry %s; recomputing", p)
            self.damaged += 1
            return None
        self.hits += 1
        return vec

    def _decode(self, data: bytes, key: str) -> np.ndarray | None:
        n = len(MAGIC)
        if len(data) < n + 4 or data[:n] != MAGIC:
            return None
        (hlen,) = struct.unpack("<I", data[n : n + 4])
        if hlen > 4096 or len(data) < n + 4 + hlen:
            return None
        try:
            head = json.loads(data[n + 4 : n + 4 + hlen].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        payload = data[n + 4 + hlen :]
        if (
            not isinstance(head, dict)
            or head.get("key") != key
            or head.get("dtype") != "<f4"
            or head.get("dim") != self.dim
            or len(payload) != 4 * self.dim
            or hashlib.sha256(payload).hexdigest() != head.get("sha256")
        ):
            return None
        vec = np.frombuffer(payload, dtype="<f4").astype(np.float32)
        return vec if np.isfinite(vec).all() else None

    def put(self, key: str, vec: np.ndarray) -> None:
        payload = np.ascontiguousarray(vec, dtype="<f4").tobytes()
        head = json.dumps({"key": key, "dim": int(vec.shape[0]), "dtype": "<f4", "sha256": hashlib.sha256(payload).hexdigest()}).encode()
        p = self.path(key)
        tmp = None
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + struct.pack("<I", len(head)) + head + payload)
            os.replace(tmp, p)
            tmp = None
            self.written += 1
        except OSError as e:  # a cache that cannot be written costs time, not results
            if not self._write_failed:
                log.warning("embedding cache: cannot write %s (%s); continuing without caching", p, e.strerror)
                self._write_failed = True
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


# -- embedding -------------------------------------------------------------------------------------
def embed_clips(
    clips: Iterable[Clip],
    backbone,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 8,
    audio: AudioSettings | None = None,
    on_bad: str = "error",
    progress: bool = True,
    reader: ClipReader | None = None,
) -> EmbeddingSet:
    """Embed ``clips`` with ``backbone`` (a :class:`humwatch.models.Backbone`), ``batch_size`` at a time.

    Clips are read by ``reader`` (a :class:`~humwatch.reader.ClipReader`; by default one made from
    ``audio``, ``on_bad`` and ``progress``): ``on_bad="error"`` raises the :class:`AudioError` of
    the first unusable file, ``"skip"`` leaves it out and records ``(path, reason)`` in
    ``skipped``. With ``cache_dir`` a clip whose embedding is cached is neither read nor computed
    again.
    """
    check_value(batch_size, Int(1), "batch size")
    if reader is None:
        reader = ClipReader(audio, on_bad, progress)
    clips = list(clips)
    n, dim = len(clips), int(backbone.embedding_dim)
    cache = EmbeddingCache(cache_dir, backbone, reader.audio) if cache_dir is not None else None
    if backbone.weights.random_init and not getattr(backbone, "_said_random_init", False):
        log.warning("embedding with %s: %s", backbone.name, backbone.weights.describe())
        backbone._said_random_init = True  # once per backbone, not once per call

    X = np.empty((n, dim), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    n_skipped = len(reader.skipped)
    computed = 0
    index = {id(c): i for i, c in enumerate(clips)}
    label = f"embedding ({backbone.name}{', RANDOM INIT' if backbone.weights.random_init else ''})"
    for chunk in reader.chunks(clips, batch_size, label):
        todo: list[tuple[int, str | None]] = []
        for c in chunk:
            i = index[id(c)]
            if reader.is_bad(c):
                continue
            key = None
            if cache is not None:
                try:
                    key = cache.key(c.samples.digest if c.in_memory else file_sha256(c.path), c.start)
                except AudioError as e:
                    reader.fail(c, e)
                    continue
                vec = cache.get(key)
                if vec is not None:
                    X[i] = vec
                    ok[i] = True
                    continue
            todo.append((i, key))
        inputs, keep = [], []
        for i, key in todo:
            x = reader.read(clips[i], backbone.frontend)
            if x is not None:
                inputs.append(x)
                keep.append((i, key))
        if inputs:
            E = backbone.embed(np.stack(inputs))
            del inputs
            for (i, key), vec in zip(keep, E):
                if not np.isfinite(vec).all():  # finite input the model could not turn into finite numbers
                    reader.fail(clips[i], AudioError(f"{clips[i].key}: the {backbone.name} embedding is not finite"))
                    continue
                X[i] = vec
                ok[i] = True
                if cache is not None and key is not None:
                    cache.put(key, vec)
            computed += len(keep)

    skipped = reader.skipped[n_skipped:]
    stats = {"computed": computed, "skipped": len(skipped)}
    if cache is not None:
        stats.update(cache_hits=cache.hits, cache_damaged=cache.damaged, cache_written=cache.written)
    if ok.all():
        return EmbeddingSet(X, clips, skipped, stats)
    kept = np.flatnonzero(ok)
    return EmbeddingSet(X[kept], [clips[i] for i in kept], skipped, stats)
