"""A monitor's cross-validation folds, without training the method six times over when once will do.

:func:`humwatch.calibrate.fit_monitor` needs an out-of-fold score for every normal window (each of
``k`` groups scored by the method fitted on the others) and then the method fitted on every window.
Done literally that is ``k + 1`` fits; :func:`cross_fit` picks the cheapest way that gives the
same numbers:

* **embed once** (a method whose network is fixed, :attr:`EmbeddingMethod.fixed_embedder`:
  ``embed-detect``): every window is embedded once; each fold fits only a new detector on the
  in-fold rows and scores the held-out ones, and the final detector is fitted on all the rows.
  The detectors see exactly the rows the generic way gives them, in the same order, so the
  scores are the same (bit for bit; a test compares them). Leave-one-out shortcuts (a kNN on all
  windows minus the window itself) are not used: they would put windows of the same recording
  on both sides of a fold, which the calibration's grouping exists to prevent.
* **parallel folds** (a method that trains a network, :attr:`Method.trains_network`: the
  autoencoder, ``idnet``, ``aux-finetune``, ``finetune``), with ``jobs`` above 1: the folds are
  trained in ``jobs - 1`` worker processes (spawned: no forked torch state) while this process
  fits the final method and then takes the folds no worker has started. Every fold is trained as
  the serial run trains it (same clips, same seed, the same early stopping), with torch and BLAS
  limited to ``cores // jobs`` threads per process so the processes do not fight over cores.
  ``jobs`` defaults to the cores this process may use (its CPU affinity), at most ``k + 1``; on a
  GPU to 1 (several trainings would share one device's memory). Why not :mod:`humwatch.engine`:
  its engines spread per-clip work (reading, embedding, scoring), not whole trainings, and a Ray
  cluster is not what a ``humwatch fit`` on one machine should need.
* otherwise the **generic** way: a new method per fold, then the final fit (as always).
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Callable, Sequence

import numpy as np

from humwatch.data.clips import Clip
from humwatch.errors import DatasetError
from humwatch.settings import Int, check_value

log = logging.getLogger("humwatch")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def fold_jobs(jobs: int | None, folds: int, device: str = "cpu") -> int:
    """How many trainings run at once: ``jobs`` (checked), else the available cores on a CPU and 1 on
    an accelerator; never more than ``folds + 1`` (the folds and the final fit)."""
    if jobs is not None:
        return min(check_value(jobs, Int(1), "jobs"), folds + 1)
    if device != "cpu":
        from humwatch.models.registry import resolve_device

        if resolve_device(device) != "cpu":
            return 1
    return min(available_cores(), folds + 1)


def cross_fit(
    m,
    make_fold: Callable[[int], object],
    windows: Sequence[Clip],
    groups: np.ndarray,
    bad: Sequence[Clip],
    bad_groups: np.ndarray,
    k: int,
    *,
    jobs: int = 1,
    worker: dict | None = None,
    shortcuts: bool = True,
):
    """Out-of-fold scores of ``windows`` (and, for a supervised method, of the anomalous ``bad``
    windows), and ``m`` fitted on every window (plus ``bad`` when it learns from them).
    ``make_fold(f)`` is a new unfitted method for fold ``f``; ``worker`` what a worker process needs
    to build one (``method``, ``settings``, ``audio``, ``on_bad``, ``cache_dir``, ``seed``, ``device``).
    ``shortcuts=False``: the generic way whatever the method (tests compare the two).
    Returns ``(oof, oof_bad)``; NaN where a window was skipped as bad."""
    from humwatch.methods.embedding import EmbeddingMethod

    if shortcuts and isinstance(m, EmbeddingMethod) and m.fixed_embedder:
        return _embed_once(m, windows, groups, k), np.full(len(bad), np.nan)
    plan = _Plan(m, windows, groups, bad, bad_groups, k)
    if shortcuts and jobs > 1 and m.trains_network and worker is not None:
        _parallel(plan, make_fold, worker, jobs)
    else:
        for f in range(k):
            plan.run_here(f, make_fold(f))
        plan.fit_final()
    return plan.oof, plan.oof_bad


# -- embed once --------------------------------------------------------------------------------------
def _embed_once(m, windows: Sequence[Clip], groups: np.ndarray, k: int) -> np.ndarray:
    emb = m.embed(windows)
    row = {c.key: i for i, c in enumerate(emb.clips)}
    at = np.array([row.get(w.key, -1) for w in windows], dtype=int)
    oof = np.full(len(windows), np.nan)
    for f in range(k):
        train = at[(groups != f) & (at >= 0)]
        if len(train) == 0:
            raise DatasetError(f"{m.title}: fold {f + 1}/{k}: no normal training clips could be read")
        held = np.flatnonzero((groups == f) & (at >= 0))
        oof[held] = m.heldout_scores(emb.X[train], [emb.clips[i] for i in train], emb.X[at[held]], [emb.clips[i] for i in at[held]])
    m.fit_embedded(emb)
    return oof


# -- a fold at a time ----------------------------------------------------------------------------------
class _Plan:
    """The folds' clips and where their scores go."""

    def __init__(self, m, windows, groups, bad, bad_groups, k):
        self.m, self.k = m, k
        self.windows, self.bad = list(windows), list(bad)
        self.groups, self.bad_groups = np.asarray(groups), np.asarray(bad_groups)
        self.oof = np.full(len(self.windows), np.nan)
        self.oof_bad = np.full(len(self.bad), np.nan)

    def clips(self, f: int) -> tuple[list[Clip], list[int], list[int]]:
        """(training clips, held-out normal indices, held-out anomalous indices) of fold ``f``."""
        train = [w for w, g in zip(self.windows, self.groups) if g != f]
        held_bad: list[int] = []
        if self.m.supervised:
            train += [w for w, g in zip(self.bad, self.bad_groups) if g != f]
            held_bad = [i for i in range(len(self.bad)) if self.bad_groups[i] == f]
        return train, [i for i in range(len(self.windows)) if self.groups[i] == f], held_bad

    def run_here(self, f: int, fm) -> None:
        train, held, held_bad = self.clips(f)
        self.put(f, _fit_and_score(fm, train, [self.windows[i] for i in held], [self.bad[i] for i in held_bad]))

    def put(self, f: int, scores: tuple[np.ndarray, np.ndarray]) -> None:
        _, held, held_bad = self.clips(f)
        self.oof[held], self.oof_bad[held_bad] = scores

    def fit_final(self) -> None:
        self.m.fit(self.windows + (self.bad if self.m.supervised else []))


def _fit_and_score(fm, train, held, held_bad) -> tuple[np.ndarray, np.ndarray]:
    fm.fit(train)
    return fm.score(held), (fm.score(held_bad) if held_bad else np.zeros(0))


@contextmanager
def limited_threads(n: int):
    """torch and the BLAS libraries use at most ``n`` threads inside the block (restored after)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def train_fold(job: dict) -> dict:
    """In a worker process: fit a new method on one fold's training clips and score its held-out
    ones. Skipped files come back to the parent's reader (which reports each once)."""
    from humwatch.methods import Context, create_method
    from humwatch.runtime import Runtime, active

    logging.getLogger("humwatch").setLevel(logging.ERROR)  # the parent says what was skipped
    rt = Runtime(on_bad=job["on_bad"], progress=False, cache_dir=job["cache_dir"])
    ctx = Context(audio=job["audio"], seed=job["seed"], device=job["device"])
    with limited_threads(job["threads"]), active(rt):
        fm = create_method(job["method"], job["settings"], ctx, title=job["title"])
        scores = _fit_and_score(fm, job["train"], job["held"], job["held_bad"])
    return {"scores": scores, "skipped": rt.skipped}


def _parallel(plan: _Plan, make_fold, worker: dict, jobs: int) -> None:
    """``jobs - 1`` worker processes train folds while this process fits the final method, then
    takes the folds no worker has started; each process with ``cores // jobs`` threads."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    threads = max(1, available_cores() // jobs)
    reader = plan.m.reader
    todo = list(range(plan.k))
    lock = threading.Lock()
    failures: list[BaseException] = []
    in_workers: list[int] = []

    def take() -> int | None:
        with lock:
            return todo.pop(0) if todo and not failures else None

    def job(f: int) -> dict:
        train, held, held_bad = plan.clips(f)
        return {
            **worker,
            "threads": threads,
            "title": f"monitor: fold {f + 1}/{plan.k}",
            "train": train,
            "held": [plan.windows[i] for i in held],
            "held_bad": [plan.bad[i] for i in held_bad],
        }

    log.info("monitor: training %d folds and the final fit, %d at a time (%d thread(s) each)", plan.k, jobs, threads)
    pool = ProcessPoolExecutor(jobs - 1, mp_context=get_context("spawn"))

    def drive() -> None:
        try:
            while (f := take()) is not None:
                out = pool.submit(train_fold, job(f)).result()
                with lock:
                    reader.absorb(out["skipped"])
                    plan.put(f, out["scores"])
                    in_workers.append(f)
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            with lock:
                failures.append(e)

    drivers = [threading.Thread(target=drive, name=f"humwatch-fold-{i}", daemon=True) for i in range(jobs - 1)]
    ok = False
    try:
        for t in drivers:
            t.start()
        with limited_threads(threads):  # progress: this process's own bars (rich shows one at a time)
            plan.fit_final()
            while (f := take()) is not None:
                plan.run_here(f, make_fold(f))
        for t in drivers:
            t.join()
        if failures:
            raise failures[0]
        ok = True
        log.info("monitor: %d of the %d folds were trained in worker processes", len(in_workers), plan.k)
    finally:
        with lock:
            todo.clear()
        if not ok:  # an error or an interrupt: do not wait minutes for folds nobody will use
            for p in list(getattr(pool, "_processes", {}).values()):
                p.terminate()
        pool.shutdown(wait=ok, cancel_futures=True)
