"""The one resumable orchestrator behind ``humwatch compare`` and ``humwatch reproduce``.

A *job* is a method spec (:class:`humwatch.methods.spec.MethodSpec`: a method and its settings,
named) and the run it makes (:class:`humwatch.pipeline.RunConfig`: the data, the split, the seed).
:func:`run_jobs` runs a list of them, each into ``OUT/runs/<name>/`` with its record in
``OUT/<records>/<name>.json`` (``methods`` for compare, ``cells`` for reproduce, a cell being named
``<row>__<column>``):

* a job whose record says it finished (``status: ok``) with the same :func:`fingerprint` is kept
  and not run again (its record comes back with ``reused: True``);
* any other job runs (a stale or failed run directory is replaced whole); a job that fails, with
  any error, gets a ``failed`` record with its one-line reason and the others still run, so the
  next call retries it.

:func:`fingerprint` is the one definition of what decides a job's numbers, for both commands.
:func:`execute` runs a job's pipeline run, here or in a fresh process of its own.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from humwatch.errors import HumwatchError, one_line
from humwatch.io import read_record, write_json
from humwatch.methods.spec import MethodSpec
from humwatch.progress import console

NOT_DECIDING: dict[str, tuple[str, ...]] = {"embed-detect": ("batch_size",)}
"""Method settings that do not change the numbers (clips per forward pass of an embedding): left
out of the fingerprint, so changing them keeps finished runs."""

DATA_IDENTITY = ("data", "layout", "machines", "ids", "snr", "test_fraction", "val_fraction", "dataset_split", "dataset_val_fraction")
"""The RunConfig fields that say which clips are used and how they are split, when no saved split
(its SHA-256) says it."""

DECIDING = ("seed", "per_id", "channel", "skip_bad")
"""The other RunConfig fields that decide the numbers (not the cache folder, the device, the
thread count, the engine, saving the models or DCASE's files)."""


def fingerprint(spec: MethodSpec, rc: Any, split_hash: str | None = None) -> str:
    """A hash of what decides a job's numbers: the method and its settings (as completed and checked;
    less :data:`NOT_DECIDING`), the data and split (``split_hash``, the SHA-256 of the saved
    split.csv every job shares, or else the fields of :data:`DATA_IDENTITY`), and :data:`DECIDING`."""
    run = asdict(rc) if not isinstance(rc, dict) else dict(rc)
    skip = NOT_DECIDING.get(spec.method, ())
    settings = {k: v for k, v in (spec.settings or {}).items() if k not in skip}
    if split_hash is not None:
        data: dict = {"split": split_hash}
    else:
        data = {k: run.get(k) for k in DATA_IDENTITY}
        if not data.get("dataset_val_fraction"):
            data.pop("dataset_val_fraction")  # unused by a study split
    payload = {"method": spec.method, "settings": settings, "data": data, **{k: run.get(k) for k in DECIDING}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Job:
    """One run of the orchestrator: a named method spec and its run (``run_config.method`` and
    ``.settings`` are the spec's); ``error``: a reason known before running (e.g. no local weights)."""

    spec: MethodSpec
    run_config: Any  # humwatch.pipeline.RunConfig
    split_hash: str | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def fingerprint(self) -> str:
        return fingerprint(self.spec, self.run_config, self.split_hash)


def run_jobs(
    jobs: Sequence[Job],
    out: str | Path,
    *,
    records: str,
    run: Callable[[Job, Path], dict],
    failed: Callable[[Job, str, float], dict],
    on_record: Callable[[dict], None] | None = None,
    title: Callable[[Job], str] = lambda job: f"[bold]{job.name}[/]",
    check_run_dir: bool = True,
) -> list[dict]:
    """Run (or keep) every job, in order; returns their records (module doc). ``run(job, run_dir)``
    runs one job and returns its record; ``failed(job, reason, seconds)`` is the record of one that
    raised. ``check_run_dir``: a finished record is kept only while its run's results.json is there.
    Each record is written atomically as the job ends, with its fingerprint; ``on_record`` sees it."""
    out = Path(out)
    done = []
    for job in jobs:
        path = out / records / f"{job.name}.json"
        run_dir = out / "runs" / job.name
        fp = job.fingerprint()
        old = read_record(path, f"running {job.name} again")
        if (
            old is not None
            and old.get("status") == "ok"
            and old.get("fingerprint") == fp
            and (not check_run_dir or (run_dir / "results.json").is_file())
        ):
            rec = {**old, "reused": True}
        else:
            console.print(title(job))
            t = time.time()
            try:
                if job.error:
                    raise HumwatchError(job.error)
                rec = run(job, run_dir)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - a failed job is reported and the others still run
                rec = failed(job, one_line(e, typed=True), time.time() - t)
                console.print(f"[red]{job.name} failed: {rec.get('reason')}[/]")
            rec["fingerprint"] = fp
            write_json(path, rec)
            rec = {**rec, "reused": False}
        done.append(rec)
        if on_record:
            on_record(rec)
    return done


@contextmanager
def torch_threads(n: int | None):
    """torch's CPU threads set to ``n`` for the block (restored after); None leaves them alone."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def execute(job: Job, run_dir: Path, *, isolate: bool = False, threads: int | None = None, progress: bool = True, engine=None):
    """Run ``job``'s pipeline run into ``run_dir`` (replacing a stale or failed one). Here: returns
    the :class:`humwatch.pipeline.RunResult`. ``isolate``: in a fresh process, so that its peak
    memory is its own and a crash cannot take the caller down; returns ``{"seconds",
    "peak_rss_mb"}`` (``engine``: the caller's engine, which the process joins)."""
    if isolate:
        return _isolated(job.run_config, run_dir, threads, progress, engine.spec() if engine is not None else None)
    from humwatch.pipeline import run

    with torch_threads(threads):
        return run(job.run_config, run_dir, progress=progress, overwrite=True, engine=engine)


def _child(cfg: dict, run_dir: str, threads: int | None, progress: bool, result: str, engine: dict | None) -> None:
    """The body of an isolated run (a fresh process; ``engine``: the parent engine's spec)."""
    import resource
    import sys

    from humwatch.engine import get_engine
    from humwatch.pipeline import RunConfig, run

    try:
        t = time.time()
        with get_engine(**(engine or {"name": "local"})) as eng, torch_threads(threads):
            run(RunConfig(**cfg), Path(run_dir), progress=progress, overwrite=True, engine=eng)
        got: dict = {"seconds": time.time() - t}
        got["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 if sys.platform != "darwin" else 1024.0**2)
    except HumwatchError as e:
        got = {"error": str(e)}
    except Exception as e:  # noqa: BLE001 - reported to the parent as the job's failure
        got = {"error": one_line(e, typed=True)}
    write_json(result, got)


def _isolated(rc, run_dir: Path, threads: int | None, progress: bool, engine: dict | None = None) -> dict:
    import multiprocessing as mp
    import tempfile

    with tempfile.TemporaryDirectory(prefix="humwatch-run-") as tmp:
        result = Path(tmp) / "result.json"
        p = mp.get_context("spawn").Process(target=_child, args=(asdict(rc), str(run_dir), threads, progress, str(result), engine))
        p.start()
        try:
            p.join()
        except KeyboardInterrupt:
            p.terminate()
            p.join()
            raise
        got = read_record(result, "no result")
    if got is None:
        raise HumwatchError(f"the method's process ended without a result (exit code {p.exitcode}; out of memory?)")
    if "error" in got:
        raise HumwatchError(got["error"])
    return got
