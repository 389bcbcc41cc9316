"""The Ray engine: per-clip work on a Ray cluster (or a Ray started on this machine).

Each operation is one Ray Data pipeline over the clips' paths: ``map_batches`` with a pool of
actors, each holding the model once (the backbone, or the whole monitor) and working through batches
of clips; results stream back to the driver, which puts every row at its clip's index, applies the
bad-file policy in clip order, and writes the same files as the local engine.

Joining a cluster: ``address`` (``--ray-address``) or ``$RAY_ADDRESS``; without either, a Ray is
started on this machine (and stopped again by :meth:`RayEngine.close`). Every worker needs the same
humwatch and libraries, and must see the clips, the weights and the embedding cache at the same paths
as the driver (shared storage such as NFS, or an object store mounted at the same path): the cache
writes each entry atomically, so workers on many machines can fill it at once. docs/scale.md shows
a cluster run.

The driver resolves the device and the precision and the workers build exactly that backbone: each
worker checks that its backbone's cache key is the driver's (same weights, same architecture) and
refuses to work otherwise.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import asdict, replace

import numpy as np

from humwatch.engine.base import Engine
from humwatch.errors import AudioError, ConfigError, HumwatchError, one_line

log = logging.getLogger("humwatch")

RAY_REQUIREMENT = "ray[data]>=2.50,<2.64"


class RayEngine(Engine):
    """Per-clip work on Ray (see the module docstring).

    ``workers``: actors per pipeline (default: the cluster's CPUs / ``cpus_per_worker``, or its
    GPUs when the device is a GPU); ``cpus_per_worker``: CPUs each actor reserves (its torch
    threads); ``init``: extra ``ray.init`` arguments for a Ray started here (tests pass
    ``num_cpus=2``)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, workers: int | None = None, cpus_per_worker: float = 1.0, init: dict | None = None):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"ray workers must be a positive integer, got {workers!r}")
        if not isinstance(cpus_per_worker, (int, float)) or cpus_per_worker <= 0:
            raise ConfigError(f"CPUs per ray worker must be positive, got {cpus_per_worker!r}")
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.workers = workers
        self.cpus_per_worker = float(cpus_per_worker)
        self.init_options = dict(init or {})
        self._started = False
        _ray_modules()  # a missing Ray is a one-line error now, not after the data are loaded

    def describe(self) -> str:
        return f"ray ({self.address or 'local'})"

    def spec(self) -> dict:
        """The cluster this engine joined, or the address of the Ray it started here (started now if
        not yet), so that another process joins the same Ray instead of starting its own."""
        if self.address:
            return {"name": self.name, "address": self.address}
        ray, _ = self._ray()
        return {"name": self.name, "address": ray.get_runtime_context().gcs_address}

    # -- Ray itself ----------------------------------------------------------------------------
    def _ray(self):
        ray, data = _ray_modules()
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # "progress bars disabled" and the like
        if not ray.is_initialized():
            # a Ray of our own on this machine: its start-up notices (token authentication...) are noise
            level = logging.WARNING if self.address else logging.ERROR
            kw = dict(include_dashboard=False, logging_level=level, log_to_driver=False)
            try:
                if self.address:
                    ray.init(address=self.address, **kw)
                else:
                    ray.init(**{**kw, **self.init_options})
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = self.address or "a local Ray"
                raise ConfigError(f"ray: cannot start or join {where} ({one_line(e, 300)})") from None
            self._started = True
        ctx = data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = True
        return ray, data

    def close(self) -> None:
        if self._started:
            ray, _ = _ray_modules()
            ray.shutdown()
            self._started = False

    def _pool(self, device: str) -> dict:
        """``map_batches`` arguments for an actor pool on ``device``."""
        ray, data = self._ray()
        gpu = str(device).startswith("cuda")
        if self.workers is not None:
            size = self.workers
        else:
            res = ray.cluster_resources()
            size = int(res.get("GPU", 0)) if gpu else int(res.get("CPU", 1) // self.cpus_per_worker)
        size = max(1, size)
        # on a cluster a lost actor is restarted (a node may go away); on one machine its death is a crash
        restarts = {} if self.address else {"max_restarts": 0}
        return dict(compute=data.ActorPoolStrategy(size=size), num_cpus=self.cpus_per_worker, num_gpus=1 if gpu else 0, **restarts)

    def _run(self, ds, fn, *, description: str, total: int, progress: bool, **kwargs):
        """Rows of ``ds.map_batches(fn, ...)`` as numpy batches, under one progress bar; a worker's
        humwatch error comes back as the same one-line error."""
        from humwatch.progress import bar

        _, data = self._ray()
        with warnings.catch_warnings():  # max_restarts goes as a plain remote argument, deprecated in 2.60
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            out = ds.map_batches(fn, batch_format="numpy", **kwargs)
        try:
            with bar(description, total, progress) as b:
                for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
                    yield batch
                    b.advance(len(batch["i"]))
        except Exception as e:  # Ray wraps a worker's exception (RayTaskError, ActorDiedError...)
            raise _unwrap(e) from None

    def _paths(self, clips, reader) -> tuple[list[int], object]:
        _, data = self._ray()
        todo = [i for i, c in enumerate(clips) if not reader.is_bad(c)]
        items = [{"i": i, "path": clips[i].path, "start": float(clips[i].start)} for i in todo]
        blocks = max(1, min(len(items), 200))
        return todo, data.from_items(items, override_num_blocks=blocks) if items else None

    # -- the work ------------------------------------------------------------------------------
    def embed(self, clips, backbone, *, cache_dir=None, batch_size=8, reader):
        from humwatch.embed import EmbeddingSet

        recipe = getattr(backbone, "recipe", None)
        if recipe is None:
            raise ConfigError(
                f"the ray engine rebuilds the backbone in each worker: {backbone.name} must come from "
                "create_backbone or plan_backbone (a backbone changed in memory cannot be shipped)"
            )
        clips = _files_only(clips)
        n, dim = len(clips), int(backbone.embedding_dim)
        if backbone.weights.random_init:
            log.warning("embedding with %s: %s", backbone.name, backbone.weights.describe())
        X = np.zeros((n, dim), dtype=np.float32)
        reasons: dict[int, str] = {}
        ok = np.zeros(n, dtype=bool)
        stats = {"computed": 0, "cache_hits": 0, "cache_damaged": 0, "cache_written": 0, "workers_built": 0}
        n_skipped = len(reader.skipped)
        todo, ds = self._paths(clips, reader)
        if ds is not None:
            worker = dict(
                recipe=recipe,
                cache_key=backbone.cache_key,
                audio=asdict(reader.audio),
                cache_dir=str(cache_dir) if cache_dir is not None else None,
            )
            label = f"embedding ({backbone.name}{', RANDOM INIT' if backbone.weights.random_init else ''}, ray)"
            for b in self._run(
                ds,
                _EmbedWorker,
                description=label,
                total=len(todo),
                progress=reader.progress,
                fn_constructor_kwargs=worker,
                batch_size=batch_size,
                **self._pool(recipe["device"]),
            ):
                for k, i in enumerate(b["i"]):
                    i = int(i)
                    if b["ok"][k]:
                        X[i], ok[i] = b["x"][k], True
                    else:
                        reasons[i] = str(b["reason"][k])
                for key in stats:
                    stats[key] += int(np.sum(b[key]))
        for i in sorted(reasons):
            reader.fail(clips[i], AudioError(reasons[i]))  # raises the first, in clip order, with on_bad="error"
        stats["skipped"] = len(reader.skipped) - n_skipped
        if cache_dir is None:
            for key in ("cache_hits", "cache_damaged", "cache_written"):
                stats.pop(key)
        kept = np.flatnonzero(ok)
        return EmbeddingSet(X[kept], [clips[i] for i in kept], reader.skipped[n_skipped:], stats)

    def batches(self, reader, clips, size, description, transform=None):
        clips = _files_only(clips)
        todo, ds = self._paths(clips, reader)
        if ds is None:
            return
        fn_kwargs = dict(audio=asdict(reader.audio), transform=transform)
        pending: dict[int, tuple[np.ndarray | None, str]] = {}
        order = iter(todo)
        nxt = next(order, None)
        kept, arrays = [], []
        for b in self._run(
            ds,
            _read_batch,
            description=f"{description} (ray)",
            total=len(todo),
            progress=reader.progress,
            fn_kwargs=fn_kwargs,
            batch_size=size,
            num_cpus=self.cpus_per_worker,
        ):
            for k, i in enumerate(b["i"]):
                pending[int(i)] = (_unpack(b, k) if b["ok"][k] else None, str(b["reason"][k]))
            while nxt is not None and nxt in pending:  # in clip order, whatever order results came in
                x, reason = pending.pop(nxt)
                if x is None:
                    reader.fail(clips[nxt], AudioError(reason))
                else:
                    kept.append(clips[nxt])
                    arrays.append(x)
                if len(kept) == size:
                    yield kept, arrays
                    kept, arrays = [], []
                nxt = next(order, None)
        if kept:
            yield kept, arrays

    def score_windows(self, monitor, clips, *, skip_bad=False, progress=True, cache_dir=None):
        recipe = getattr(monitor, "recipe", None)
        if recipe is None:
            raise ConfigError("the ray engine scores a monitor loaded from its folder (save it, then load it)")
        clips = _files_only(clips)
        n = len(clips)
        found: dict[int, list[tuple[float, float]]] = {}
        reasons: dict[int, list[tuple[str, str]]] = {}
        if clips:
            _, data = self._ray()
            items = [{"i": i, "path": c.path, "start": float(c.start)} for i, c in enumerate(clips)]
            ds = data.from_items(items, override_num_blocks=max(1, min(n, 200)))
            worker = dict(recipe=recipe, cache_dir=str(cache_dir) if cache_dir is not None else None)
            for b in self._run(
                ds,
                _ScoreWorker,
                description="scoring (ray)",
                total=n,
                progress=progress,
                fn_constructor_kwargs=worker,
                batch_size=4,
                **self._pool(recipe.device or "cpu"),
            ):
                for k, i in enumerate(b["i"]):  # one row per window scored, or per bad window
                    if b["ok"][k]:
                        found.setdefault(int(i), []).append((float(b["start"][k]), float(b["score"][k])))
                    else:
                        reasons.setdefault(int(i), []).append((str(b["key"][k]), str(b["reason"][k])))
        windows, scores, skipped = [], [], []
        for i, c in enumerate(clips):  # in the order of the recordings, as the local engine gives them
            for key, reason in reasons.get(i, []):
                if not skip_bad:
                    raise AudioError(reason)
                skipped.append((key, reason))
            for start, score in found.get(i, []):
                windows.append(replace(c, start=start))
                scores.append(score)
        return windows, np.asarray(scores, dtype=np.float64), skipped


# -- what runs in the workers ------------------------------------------------------------------
def _quiet_worker() -> None:
    os.environ.setdefault("HUMWATCH_PROGRESS", "0")
    logging.getLogger("humwatch").setLevel(logging.ERROR)


class _EmbedWorker:
    """An actor: the backbone (built on its first uncached clip, once) and the embedding cache."""

    def __init__(self, recipe: dict, cache_key: str, audio: dict, cache_dir: str | None):
        from humwatch.audio import AudioSettings
        from humwatch.models import plan_backbone

        _quiet_worker()
        self.backbone = plan_backbone(**recipe)
        if self.backbone.cache_key != cache_key:
            raise ConfigError(
                f"ray worker: backbone {recipe['name']} here is not the driver's (cache key "
                f"{self.backbone.cache_key} vs {cache_key}); workers need the same weights and humwatch"
            )
        self.audio = AudioSettings(**audio)
        self.cache_dir = cache_dir
        self.reported_build = False

    def __call__(self, batch: dict) -> dict:
        from humwatch.embed import embed_clips
        from humwatch.reader import ClipReader

        clips = _clips(batch)
        reader = ClipReader(self.audio, "skip", progress=False)
        emb = embed_clips(clips, self.backbone, cache_dir=self.cache_dir, batch_size=max(1, len(clips)), reader=reader)
        pos = {id(c): k for k, c in enumerate(clips)}
        m = len(clips)
        x = np.zeros((m, self.backbone.embedding_dim), dtype=np.float32)
        ok = np.zeros(m, dtype=bool)
        for c, v in zip(emb.clips, emb.X):
            x[pos[id(c)]], ok[pos[id(c)]] = v, True
        why = dict(emb.skipped)
        first = np.arange(m) == 0  # batch totals ride on the batch's first row
        st = emb.stats
        built_now = self.backbone.built and not self.reported_build
        self.reported_build = self.backbone.built
        return {
            "i": batch["i"],
            "x": x,
            "ok": ok,
            "reason": np.array([why.get(c.key, "") for c in clips], dtype=str),
            "computed": first * st.get("computed", 0),
            "cache_hits": first * st.get("cache_hits", 0),
            "cache_damaged": first * st.get("cache_damaged", 0),
            "cache_written": first * st.get("cache_written", 0),
            "workers_built": first * int(built_now),
        }


def _clips(batch: dict, machine: str = "") -> list:
    """The batch's clips (a window of a long recording keeps its start)."""
    from humwatch.data.clips import Clip

    return [Clip(str(p), machine, machine, 0, start=float(s)) for p, s in zip(batch["path"], batch["start"])]


def _read_batch(batch: dict, audio: dict, transform) -> dict:
    """A task: read clips (and apply ``transform``) with a skipping reader; arrays are returned
    flattened with their shapes (clips may differ in shape)."""
    from humwatch.audio import AudioSettings
    from humwatch.reader import ClipReader

    _quiet_worker()
    reader = ClipReader(AudioSettings(**audio), "skip", progress=False)
    flat, shapes, ok, reasons = [], [], [], []
    for clip in _clips(batch):
        x = reader.read(clip, transform)
        if x is None:
            flat.append(np.zeros(0, np.float32)), shapes.append(""), ok.append(False), reasons.append(reader.skipped[-1][1])
        else:
            x = np.asarray(x)
            flat.append(x.reshape(-1)), shapes.append(",".join(map(str, x.shape))), ok.append(True), reasons.append("")
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return {
        "i": batch["i"],
        "x": out,
        "shape": np.array(shapes, dtype=str),
        "dtype": np.array([str(f.dtype) for f in flat]),
        "ok": np.array(ok),
        "reason": np.array(reasons, dtype=str),
    }


def _unpack(b: dict, k: int) -> np.ndarray:
    shape = tuple(int(s) for s in str(b["shape"][k]).split(",") if s)
    return np.array(b["x"][k], dtype=str(b["dtype"][k])).reshape(shape)  # a writable copy, as the local engine gives


class _ScoreWorker:
    """An actor: the whole monitor, loaded once, scoring the windows of batches of recordings."""

    def __init__(self, recipe, cache_dir: str | None):
        _quiet_worker()
        self.monitor = recipe.build()  # humwatch.monitor.MonitorRecipe: the monitor's folder and how it was loaded
        self.cache_dir = cache_dir

    def __call__(self, batch: dict) -> dict:
        clips = _clips(batch, "unknown")
        index = {c.path: int(i) for c, i in zip(clips, batch["i"])}
        wins, scores, skipped = self.monitor.score_windows(clips, skip_bad=True, progress=False, cache_dir=self.cache_dir)
        rows = [(index[w.path], w.start, float(s), True, w.key, "") for w, s in zip(wins, scores)]
        for key, reason in skipped:  # a bad recording (its key: its path) or window (path#start)
            owner = next((c for c in clips if key == c.path or key.startswith(c.path + "#")), clips[0])
            rows.append((index[owner.path], 0.0, math.nan, False, key, reason))
        i, start, score, ok, key, reason = zip(*rows) if rows else ((),) * 6
        return {
            "i": np.array(i, dtype=np.int64),
            "start": np.array(start, dtype=np.float64),
            "score": np.array(score, dtype=np.float64),
            "ok": np.array(ok, dtype=bool),
            "key": np.array(key, dtype=str),
            "reason": np.array(reason, dtype=str),
        }


# -- helpers -----------------------------------------------------------------------------------
def _files_only(clips) -> list:
    """``clips`` as a list; a ConfigError for an in-memory clip (the workers read files by path)."""
    clips = list(clips)
    mem = next((c for c in clips if c.in_memory), None)
    if mem is not None:
        raise ConfigError(f"{mem.path}: the ray engine reads files in its workers; score in-memory clips with the local engine")
    return clips


def _ray_modules():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError(f"--engine ray needs Ray: pip install '{RAY_REQUIREMENT}'") from None
    return ray, ray.data


def _unwrap(e: BaseException) -> BaseException:
    """The humwatch error a worker raised (Ray wraps it, sometimes twice), else one line about ``e``."""
    seen = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, HumwatchError):
            return type(cur)(one_line(cur))
        cur = getattr(cur, "cause", None) or cur.__cause__
    text = str(e)
    for line in text.splitlines():  # the original message is in the text when the cause is not kept
        for kind in (AudioError, ConfigError, HumwatchError):
            tag = f"{kind.__name__}: "
            if tag in line:
                return kind(line.split(tag, 1)[1].strip())
    return ConfigError(f"ray: {one_line(e, 300)}")
