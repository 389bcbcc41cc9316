"""The monitors a server holds: every monitor under one folder, loaded once, one per machine.

``MONITORS/<machine>/`` is the monitor of the machine named ``<machine>`` (a folder written by
``humwatch fit``, or a fine-tuned model folder with a threshold of its own); a folder that is itself
a monitor serves one machine named after it. Other files and folders (the default SQLite store,
kept audio, hidden folders such as a monitor ``humwatch fit`` is still writing) are left alone.

Scoring is blocking work (decoding audio, a model's forward pass) and never runs on the event loop.
A monitor's scoring is thread-safe (each call hands the method a :class:`~humwatch.runtime.Runtime`
of its own, and nothing is kept while scoring); no lock.

Micro-batching (:class:`Batcher`, ``humwatch serve --max-batch 16 --batch-wait-ms 5``): an upload's
worker thread decodes and checks its clip, then hands it to its machine's scoring thread and waits.
That thread takes the clips waiting for the machine (up to ``max_batch``; after the first it waits
at most ``batch_wait_ms`` for more) and scores them in one call of the monitor
(:meth:`MonitorPool.score_many`: one :meth:`~humwatch.monitor.Monitor.score_clips` call, so the
method's own batches run one forward pass over all of them). Each clip's result is what scoring it
alone gives: bit for bit with the autoencoder, to the last bits of a network's float32 products
otherwise (an AST embedding batch of several clips: about 1e-11 relative; tests/test_service_batching.py); a clip that cannot be scored gets its own error and
its batch-mates their scores. Clips of different machines are scored side by side (one scoring
thread per machine). ``--max-batch 1`` scores each clip alone in its upload's worker thread.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from humwatch.errors import AudioError, ConfigError, one_line

log = logging.getLogger("humwatch.service")
MACHINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""What a machine name may be (it is a folder name and a URL path segment)."""


@dataclass
class Entry:
    """One machine's monitor."""

    name: str
    path: Path
    monitor: object

    @property
    def threshold(self) -> float:
        return float(self.monitor.threshold)

    def describe(self) -> dict:
        m = self.monitor
        return {
            "method": m.settings.method,
            "label": m.settings.label or m.settings.method,
            "threshold": self.threshold,
            "random_init": bool(m.random_init),
            "seconds": m.audio.seconds,
            "sample_rate": m.audio.sample_rate,
        }


def is_monitor_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "monitor.json").is_file() or (path / "method.json").is_file())


def find_monitors(folder: str | Path) -> dict[str, Path]:
    """Machine name -> monitor folder under ``folder`` (or ``folder`` itself when it is one)."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder of monitors")
    found = (
        {root.name: root}
        if is_monitor_folder(root)
        else {  # hidden: a monitor being written (staged)
            p.name: p for p in sorted(root.iterdir()) if not p.name.startswith(".") and is_monitor_folder(p)
        }
    )
    if not found:
        raise ConfigError(f"{root}: no monitors in this folder (expected {root}/<machine>/monitor.json, written by `humwatch fit --out`)")
    bad = [n for n in found if not MACHINE_RE.match(n)]
    if bad:
        raise ConfigError(f"{found[bad[0]]}: {bad[0]!r} cannot name a machine (use letters, digits, '.', '_' or '-')")
    return found


class MonitorPool:
    """The loaded monitors of a folder, by machine name."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        from humwatch.models.registry import resolve_device
        from humwatch.monitor import load_monitor

        self.folder = Path(folder)
        self.device = resolve_device(device)
        self.entries: dict[str, Entry] = {}
        for name, path in find_monitors(folder).items():
            mon = load_monitor(path, device=self.device)
            self.entries[name] = Entry(name, path, mon)
            log.info(
                "monitor %s: %s, threshold %.4g%s", name, mon.settings.label, mon.threshold, " (RANDOM INIT)" if mon.random_init else ""
            )

    def warm_up(self) -> None:
        """Score a generated clip with every monitor once, so that the first real clip does not
        pay for the lazy imports and first-call compilation (librosa, numba, torch) behind it."""
        import numpy as np

        from humwatch.data.clips import Clip

        for name, e in self.entries.items():
            sr, seconds = e.monitor.audio.sample_rate, e.monitor.audio.seconds or 10.0
            ch = (e.monitor.settings.recordings.get("channels") or [1])[0]  # as the monitor's recordings: no mismatch warning
            noise = 0.01 * np.random.default_rng(0).standard_normal((int(sr * seconds), ch)).astype(np.float32)
            self.score(name, Clip.from_array(noise, sr, f"{name}.wav", "service", name))

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, machine: str) -> Entry | None:
        return self.entries.get(machine)

    def score(self, machine: str, clip) -> tuple[float, float, bool]:
        """(score, threshold, anomalous) of ``clip`` (a :class:`~humwatch.data.clips.Clip`, in memory
        or a file, or an audio file's path); AudioError when unusable."""
        from humwatch.data.clips import Clip

        e = self.entries[machine]
        if not isinstance(clip, Clip):
            clip = Clip(str(clip), "service", machine, 0)
        kept, scores, skipped = e.monitor.score_clips([clip], progress=False)
        if not len(scores):  # pragma: no cover - score_clips raises first (on_bad="error")
            raise AudioError(skipped[0][1] if skipped else f"{clip.path}: could not be scored")
        score = float(scores[0])
        return score, e.threshold, bool(e.monitor.decide([score])[0])

    def score_many(self, machine: str, clips: list) -> list:
        """Score ``clips`` (in-memory :class:`~humwatch.data.clips.Clip` objects of one machine) in one
        call of the machine's monitor: per clip, ``(score, threshold, anomalous)`` as :meth:`score`
        gives it alone, or the exception :meth:`score` would raise for it (an AudioError with the
        same line), never one clip's error for the others. Should the call fail as a whole (an
        error no skip accounts for), each clip is scored alone instead."""
        from humwatch.data.clips import MEMORY, Clip

        clips = [c if isinstance(c, Clip) else Clip(str(c), "service", machine, 0) for c in clips]
        if len(clips) <= 1:
            return [self._score_or_error(machine, c) for c in clips]
        e = self.entries[machine]
        # one name each in this call (uploads are often all called "upload"): <memory>/<i>/<name>
        named = [replace(c, path=f"{MEMORY}/{i}/{c.path.removeprefix(MEMORY + '/')}") if c.in_memory else c for i, c in enumerate(clips)]
        try:
            kept, scores, skipped = e.monitor.score_clips(named, skip_bad=True, progress=False)
        except Exception as err:  # not one clip's fault that a skip records: find out clip by clip
            log.warning("a batch of %d clips of %s failed (%s): scoring them one by one", len(clips), machine, one_line(err, 300))
            return [self._score_or_error(machine, c) for c in clips]
        got = dict(zip((c.path for c in kept), (float(v) for v in scores)))
        why = {}
        for key, reason in skipped:  # a window's key is its clip's path, or path#start
            why.setdefault(key.split("#", 1)[0], reason)
        out: list = []
        for i, n in enumerate(named):
            if n.path in got:
                score = got[n.path]
                out.append((score, e.threshold, bool(e.monitor.decide([score])[0])))
            else:
                reason = why.get(n.path, f"{n.path}: could not be scored")
                out.append(AudioError(reason.replace(f"{MEMORY}/{i}/", f"{MEMORY}/")))
        return out

    def _score_or_error(self, machine: str, clip):
        try:
            return self.score(machine, clip)
        except Exception as err:
            return err

    def warnings(self, machine: str, clip) -> list[str]:
        """Warning lines of an in-memory ``clip`` whose channel count or sample rate is not one of the
        recordings the machine's monitor was fitted on (:func:`humwatch.fitcheck.mismatch_warnings`)."""
        from humwatch.fitcheck import mismatch_warnings, recording_format

        fitted = self.entries[machine].monitor.settings.recordings
        return [w.removeprefix("warning: ") for w in mismatch_warnings(recording_format(clip), fitted, clip.path.rsplit("/", 1)[-1])]

    def explain(self, machine: str, path: str | Path, name: str | None = None):
        """The "why did it alarm" figure of a clip (:func:`humwatch.explain.alarm.explain_alarm`: an
        object with ``.png`` and ``.summary``); ``name`` is the file name the figure shows (the
        clip's own, not the name it is kept under): the kept file is read into an in-memory clip
        of that name."""
        from humwatch.audio import check_file, decode_bytes
        from humwatch.data.clips import Clip
        from humwatch.explain.alarm import explain_alarm
        from humwatch.service.ingest import safe_filename

        e = self.entries[machine]
        shown = safe_filename(Path(name).name if name else Path(path).name)
        try:
            blob = check_file(path).read_bytes()
        except AudioError as err:  # named as the clip is shown, not where it is kept
            raise AudioError(str(err).replace(str(Path(path)), shown)) from None
        except OSError as err:
            raise AudioError(f"{shown}: not readable ({err.strerror or type(err).__name__})") from None
        samples, rate = decode_bytes(blob, shown)
        return explain_alarm(e.monitor, Clip.from_array(samples, rate, shown, "service", machine))


class Batcher:
    """Scores concurrent clips of one machine together (see the module's docstring).

    :meth:`score` has :meth:`MonitorPool.score`'s face and blocks its caller (an upload's worker
    thread) until the clip's batch is scored; ``on_batch(n)`` is told each batch's size (the
    ``humwatch_score_batch_clips`` histogram); ``batches`` counts the batches scored."""

    def __init__(self, pool: MonitorPool, max_batch: int = 16, wait_s: float = 0.005, on_batch: Callable[[int], None] | None = None):
        self.pool, self.max_batch, self.wait_s = pool, int(max_batch), float(wait_s)
        self.on_batch = on_batch
        self.batches = 0
        self._queues: dict[str, queue.SimpleQueue] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def score(self, machine: str, clip) -> tuple[float, float, bool]:
        job: Future = Future()
        if self.max_batch <= 1 or not self._submit(machine, clip, job):  # each clip alone, in the caller's thread
            result = self.pool.score(machine, clip)
            self._done(1)
            return result
        return job.result()  # the clip's own result, or its own error raised here

    def _submit(self, machine: str, clip, job: Future) -> bool:
        """Queue the clip for its machine's scoring thread (started on the machine's first clip);
        False once the batcher is closed."""
        with self._lock:
            if self._closed:
                return False
            q = self._queues.get(machine)
            if q is None:
                q = self._queues[machine] = queue.SimpleQueue()
                t = threading.Thread(target=self._run, args=(machine, q), name=f"humwatch-score-{machine}", daemon=True)
                t.start()
                self._threads.append(t)
            q.put((clip, job))
            return True

    def _run(self, machine: str, q: queue.SimpleQueue) -> None:
        while True:
            first = q.get()
            if first is None:
                return
            batch, stop = [first], False
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:  # those waiting already, then up to wait_s for more
                left = deadline - time.monotonic()
                try:
                    job = q.get(timeout=left) if left > 0 else q.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._score(machine, batch)
            if stop:
                return

    def _score(self, machine: str, batch: list) -> None:
        try:
            results = self.pool.score_many(machine, [clip for clip, _ in batch])
        except BaseException as err:  # pragma: no cover - score_many answers per clip; this thread must not die
            results = [err] * len(batch)
        self._done(len(batch))
        for (_, job), r in zip(batch, results):
            if isinstance(r, BaseException):
                job.set_exception(r)
            else:
                job.set_result(r)

    def _done(self, n: int) -> None:
        with self._lock:
            self.batches += 1
        if self.on_batch is not None:
            try:
                self.on_batch(n)
            except Exception as err:  # pragma: no cover - a metric must not fail a clip
                log.error("batch metric: %s", one_line(err, 300))

    def close(self, timeout: float = 30.0) -> None:
        """Score what is waiting, then stop the scoring threads (later clips are scored alone)."""
        with self._lock:
            self._closed = True
            queues, threads = list(self._queues.values()), list(self._threads)
        for q in queues:
            q.put(None)
        for t in threads:
            t.join(timeout)
