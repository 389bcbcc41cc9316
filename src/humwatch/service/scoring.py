"""The monitors a server holds: every monitor under one folder, loaded once, one per machine.

``MONITORS/<machine>/`` is the monitor of the machine named ``<machine>`` (a folder written by
``humwatch fit``, or a fine-tuned model folder with a threshold of its own); a folder that is itself
a monitor serves one machine named after it. Other files and folders (the default SQLite store,
kept audio, hidden folders such as a monitor ``humwatch fit`` is still writing) are left alone.

Scoring is blocking work (decoding audio, a model's forward pass) and runs in the server's worker
threads, never on the event loop. A monitor's scoring is thread-safe (each call hands the method a
:class:`~humwatch.runtime.Runtime` of its own, and nothing is kept while scoring), so clips of one
machine are scored at the same time as well as clips of different machines; no lock.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from humwatch.errors import AudioError, ConfigError

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


def one_blas_thread() -> None:
    """Numpy's BLAS (OpenBLAS) on one thread in this process. A clip's matrices are small (a mel
    filterbank times a spectrogram of seconds) and the server scores in several threads of its own:
    BLAS threads only fight them, and other programs, for the cores. On the project's 2-core
    machine under load (benchmarks/field_trial.py, docs/service.md) a 2 s clip's features +
    knn-ldn scoring took 160 ms with two BLAS threads and 32 ms with one. PyTorch's own threads (a
    transformer's forward pass) are left as they are."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class MonitorPool:
    """The loaded monitors of a folder, by machine name (numpy's BLAS on one thread: :func:`one_blas_thread`)."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        from humwatch.models.registry import resolve_device
        from humwatch.monitor import load_monitor

        one_blas_thread()
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
