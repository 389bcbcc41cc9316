"""Where a backbone's weights come from: the study's default, a hub id, a local copy, or none.

``weights`` (the ``--weights`` option) is one of

* ``"default"``  - the study's checkpoint for that backbone (a Hugging Face hub id);
* ``"org/name"`` - any hub id, optionally ``"org/name@revision"``; fetched into the Hugging Face
  cache only when the hub is reachable, otherwise taken from that cache or refused at once;
* a local folder (written by ``save_pretrained``, by :meth:`Backbone.save`, or a downloaded hub
  snapshot) or a local checkpoint file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``);
* ``"none"`` - random initialisation (seeded, so repeatable), reported loudly as RANDOM INIT.

Nothing here may hang on a missing network: ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` are
honoured, and otherwise the hub endpoint is probed with a short TCP connect
(:data:`HUB_PROBE_TIMEOUT` seconds) before any download is tried, because huggingface_hub itself
retries for about 20 s when there is no network.

Example::

    >>> from humwatch.models.weights import resolve_weights
    >>> w = resolve_weights("none", default="MIT/ast-finetuned-audioset-10-10-0.4593")
    >>> w.kind, w.request
    ('none', 'none')
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from humwatch.errors import ConfigError, one_line
from humwatch.io import file_sha256

log = logging.getLogger("humwatch")

RANDOM_INIT_BANNER = "RANDOM INIT (no pretrained weights)"
"""What every output says about a randomly initialised backbone."""


def random_init_warning(what: str = "the backbone") -> str:
    """The one sentence every table, report and summary gives when ``what`` had random weights."""
    return f"RANDOM INIT: {what} had no pretrained weights; these numbers say nothing about the pretrained models."


HUB_PROBE_TIMEOUT = 3.0
"""Seconds allowed for the TCP connect that decides whether the hub is reachable."""

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
"""Local checkpoint files accepted (safetensors preferred: it holds no pickle)."""

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""File names looked for in a folder or hub repository, in order of preference."""

META_FILE = "humwatch_backbone.json"
"""Written by :meth:`Backbone.save` beside the weights: backbone name, architecture, provenance."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_./-]+)?$")
_TRUE = {"1", "true", "yes", "on"}
_LOCAL_HINT = "pass a local copy with --weights /path/to/dir, or --weights none for random init"


@dataclass(frozen=True)
class WeightsInfo:
    """Provenance of a backbone's weights.

    ``source`` is ``"hub:<id>@<commit>"``, ``"local:<path>"`` or ``"none"``; ``identity`` is what
    caches key on (hub commit, content hash of local files, or the random seed).

    Example::

        >>> WeightsInfo("none", True, "seed 0").describe()
        'RANDOM INIT (no pretrained weights): seed 0'
    """

    source: str
    random_init: bool
    description: str = ""
    identity: str = ""

    def describe(self) -> str:
        """One line for logs, reports and CLI output; random weights are said out loud."""
        if self.random_init:
            return f"{RANDOM_INIT_BANNER}: {self.description}" if self.description else RANDOM_INIT_BANNER
        return f"{self.source} ({self.description})" if self.description else self.source

    def to_dict(self) -> dict:
        return {"source": self.source, "random_init": self.random_init, "description": self.description, "identity": self.identity}


@dataclass(frozen=True)
class ResolvedWeights:
    """Where to load from: ``kind`` is ``none``, ``hub`` (``path`` = local snapshot folder),
    ``dir`` or ``file``. ``request`` is what the user asked for."""

    kind: str
    request: str
    path: Path | None = None
    repo_id: str = ""
    commit: str = ""

    @property
    def source(self) -> str:
        if self.kind == "none":
            return "none"
        if self.kind == "hub":
            return f"hub:{self.repo_id}@{self.commit}" if self.commit else f"hub:{self.repo_id}"
        return f"local:{self.path}"

    def identity(self) -> str:
        """A string that changes whenever the weights could (for cache keys)."""
        if self.kind == "hub":
            if self.commit:
                return f"hub:{self.repo_id}@{self.commit}"
            return f"hub:{self.repo_id}:{content_fingerprint(self.path)}"
        if self.kind in ("dir", "file"):
            return f"sha256:{content_fingerprint(self.path)}"
        return "none"


def resolve_weights(
    weights: str | os.PathLike | None,
    default: str,
    *,
    hub_files: tuple[str, ...] = ("config.json",),
    optional_hub_files: tuple[str, ...] = (),
) -> ResolvedWeights:
    """Turn a ``--weights`` value into something loadable (downloading hub files if allowed).

    ``hub_files`` must exist in a hub repository; one of :data:`WEIGHT_FILES` is fetched too.
    Raises :class:`ConfigError` (one line) for anything unusable.
    """
    if weights is None:
        weights = "default"
    request = os.fspath(weights).strip() if isinstance(weights, (str, os.PathLike)) else weights
    if not isinstance(request, str) or not request:
        raise ConfigError(f"weights must be 'default', 'none', a hub id or a path, got {weights!r}")
    if request.lower() == "none":
        return ResolvedWeights("none", "none")
    name = default if request == "default" else request
    local = Path(name).expanduser()
    if local.exists():
        local = local.resolve()
        if local.is_dir():
            return ResolvedWeights("dir", request, local)
        if local.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ConfigError(f"weights {local}: not a checkpoint (use a folder or a {', '.join(CHECKPOINT_SUFFIXES)} file)")
        return ResolvedWeights("file", request, local)
    if _looks_like_path(name) or not _HUB_ID.match(name):
        if _looks_like_path(name):
            raise ConfigError(f"weights {name}: no such file or folder")
        raise ConfigError(f"weights {name!r}: not 'default', 'none', an existing file or folder, or a hub id like org/name")
    repo_id, _, revision = name.partition("@")
    snapshot = fetch_from_hub(repo_id, revision or None, hub_files, optional_hub_files)
    commit = snapshot.name if re.fullmatch(r"[0-9a-f]{40}", snapshot.name) else ""
    return ResolvedWeights("hub", request, snapshot, repo_id=repo_id, commit=commit)


def _looks_like_path(s: str) -> bool:
    return (
        os.path.isabs(s)
        or s.startswith(("./", "../", "~", ".\\"))
        or s.endswith(("/", "\\"))
        or Path(s).suffix.lower() in CHECKPOINT_SUFFIXES
        or s.count("/") > 1
    )


# -- the hub ---------------------------------------------------------------------------------------
def hub_offline() -> bool:
    """True when the user said not to use the network (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except (ImportError, AttributeError):  # pragma: no cover
        return False


def hub_endpoint() -> str:
    ep = os.environ.get("HF_ENDPOINT")
    if ep:
        return ep.rstrip("/")
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT.rstrip("/")
    except (ImportError, AttributeError):  # pragma: no cover
        return "https://huggingface.co"


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """A quick TCP connect to the hub endpoint (or True when a proxy is configured: the proxy decides)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    return _probe(hub_endpoint(), timeout)


@lru_cache(maxsize=8)
def _probe(endpoint: str, timeout: float) -> bool:
    u = urlparse(endpoint)
    host = u.hostname
    if not host:
        return False
    port = u.port or (443 if u.scheme == "https" else 80)
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    # the socket timeout does not bound the DNS lookup, so the whole probe runs in a thread
    t = threading.Thread(target=connect, name="humwatch-hub-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def fetch_from_hub(
    repo_id: str, revision: str | None, files: tuple[str, ...] = ("config.json",), optional_files: tuple[str, ...] = ()
) -> Path:
    """Download (or find in the Hugging Face cache) ``files`` and one of :data:`WEIGHT_FILES`;
    return the snapshot folder that holds them."""
    try:
        from huggingface_hub import errors as hf_errors
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover
        raise ConfigError(f"weights {repo_id!r}: huggingface_hub is not installed; {_LOCAL_HINT}") from None

    offline = hub_offline()
    reachable = not offline and hub_reachable()
    local_only = offline or not reachable
    why = "HF_HUB_OFFLINE is set" if offline else "the hub is unreachable"
    name = f"{repo_id}@{revision}" if revision else repo_id

    def get(filename: str) -> Path:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=local_only, etag_timeout=10))

    def fail(e: Exception) -> ConfigError:
        if isinstance(e, hf_errors.GatedRepoError):
            return ConfigError(f"weights {name!r}: the hub repository is gated (log in with `hf auth login`) or {_LOCAL_HINT}")
        if isinstance(e, hf_errors.RepositoryNotFoundError):
            return ConfigError(f"weights {name!r}: no such repository on the Hugging Face hub (or it is private)")
        if isinstance(e, hf_errors.RevisionNotFoundError):
            return ConfigError(f"weights {name!r}: no such revision on the Hugging Face hub")
        if local_only:
            return ConfigError(
                f"weights {name!r}: no such local folder, and not in the local Hugging Face cache while {why}; {_LOCAL_HINT}"
            )
        reason = one_line(e, 200)
        return ConfigError(f"weights {name!r}: download failed ({reason}); {_LOCAL_HINT}")

    not_there = (hf_errors.EntryNotFoundError, hf_errors.LocalEntryNotFoundError)
    try:
        paths = [get(f) for f in files]
        weight = None
        for wf in WEIGHT_FILES:
            try:
                weight = get(wf)
                break
            except not_there:  # not in the repository (or not cached): try the next name
                continue
        if weight is None:
            if local_only:
                raise ConfigError(
                    f"weights {name!r}: no model file ({', '.join(WEIGHT_FILES)}) in the local Hugging Face cache while {why}; {_LOCAL_HINT}"
                )
            raise ConfigError(f"weights {name!r}: the repository holds none of {', '.join(WEIGHT_FILES)}")
        for f in optional_files:
            try:
                get(f)
            except not_there:
                pass
    except ConfigError:
        raise
    except Exception as e:  # network, HTTP and cache errors of every kind
        raise fail(e) from None
    folder = weight.parent
    if any(p.parent != folder for p in paths):  # pragma: no cover - hf keeps one snapshot folder per commit
        raise ConfigError(f"weights {name!r}: hub files landed in different snapshot folders")
    if local_only:
        log.info("weights %s: taken from the local Hugging Face cache (%s)", name, why)
    return folder


# -- local files -----------------------------------------------------------------------------------
_FP_CACHE: dict[tuple, str] = {}


def content_fingerprint(path: Path | None) -> str:
    """SHA-256 over the relative names and contents of a file or of every file below a folder.

    Memoised per process on (name, size, mtime) of every file, so a second backbone from the same
    folder does not re-read gigabytes.
    """
    if path is None:
        return ""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp in _FP_CACHE:
        return _FP_CACHE[stamp]
    h = hashlib.sha256()
    for p in files:
        rel = p.name if p == path else p.relative_to(path).as_posix()
        h.update(rel.encode() + b"\0")
        file_sha256(p, h)
        h.update(b"\0")
    digest = h.hexdigest()
    _FP_CACHE[stamp] = digest
    return digest


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


def read_meta(folder: Path) -> dict | None:
    """The :data:`META_FILE` of a folder written by :meth:`Backbone.save`, or None; a folder that
    humwatch sealed (``manifest.json``) is checked first: a changed, missing or added file is refused."""
    from humwatch.io import MANIFEST, check_manifest, read_json

    f = Path(folder) / META_FILE
    if not f.is_file():
        return None
    if (Path(folder) / MANIFEST).is_file():
        check_manifest(folder)
    meta = read_json(f, dict)
    if meta.get("format") != "humwatch-backbone":
        raise ConfigError(f"{f}: not a humwatch backbone description")
    return meta


def check_meta_backbone(meta: dict | None, name: str, folder: Path) -> None:
    if meta is not None and meta.get("backbone") != name:
        raise ConfigError(f"weights {folder}: holds a {meta.get('backbone')!r} backbone, not {name!r}")


def find_weight_file(folder: Path) -> Path:
    """The weights file of a folder (safetensors preferred)."""
    for wf in WEIGHT_FILES:
        if (folder / wf).is_file():
            return folder / wf
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(f"weights {folder}: holds no weights file ({', '.join(WEIGHT_FILES)})")
    raise ConfigError(f"weights {folder}: holds several checkpoints ({', '.join(p.name for p in found)}); pass one file")


def load_state_dict(path: Path) -> dict:
    """Tensors of a checkpoint file: safetensors, or a torch file read with ``weights_only=True``
    (no arbitrary pickle). Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` and ``module.``."""
    import torch

    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors, pickle and zip errors all mean "not a usable checkpoint"
        reason = one_line(e, 160)
        raise ConfigError(f"weights {path}: not a readable checkpoint ({reason})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"weights {path}: not a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd
