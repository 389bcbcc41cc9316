"""The one clip reader: every step that turns clips into signals (the pipeline's methods, embedding,
fine-tuning, explanations, monitors) reads through a :class:`ClipReader`.

A reader holds the audio settings (mono mix or one channel, 16 kHz, 10 s: see
:class:`~humwatch.audio.AudioSettings`), the bad-file policy ``on_bad`` and one count of what it
skipped:

* ``on_bad="error"`` raises the :class:`~humwatch.errors.AudioError` of the first unusable file;
* ``on_bad="skip"`` leaves the file out, records ``(path, reason)`` in :attr:`ClipReader.skipped`
  once per clip (however often it is asked for again; a window of a long recording is recorded as
  ``path#start``) and logs it.

:meth:`ClipReader.batches` reads clips a batch at a time under one progress bar, so memory holds one
batch of signals (or model inputs) at a time::

    reader = ClipReader(AudioSettings(), on_bad="skip", progress=True)
    for clips, inputs in reader.batches(test_clips, 8, "fan: test", transform=frontend):
        ...
    reader.skipped        # [(path, reason), ...]
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Iterator, Sequence

import numpy as np

from humwatch.audio import AudioSettings, load_audio
from humwatch.data.clips import Clip
from humwatch.errors import AudioError, ConfigError, one_line
from humwatch.progress import bar

log = logging.getLogger("humwatch")

ON_BAD = ("error", "skip")


def checked(transform: Callable[[np.ndarray], np.ndarray], y: np.ndarray, clip: Clip) -> np.ndarray:
    """``transform(y)`` (a frontend), or AudioError naming the clip when it cannot make finite numbers
    of it (a valid-looking file with samples near 1e30 overflows the spectrogram)."""
    name = getattr(transform, "name", "frontend")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            x = transform(y)
    except AudioError as e:  # the frontend's own finiteness check: say which clip
        raise AudioError(f"{clip.key}: {e}") from None
    except (FloatingPointError, OverflowError, ValueError) as e:
        raise AudioError(f"{clip.key}: the {name} features cannot be computed ({one_line(e)})") from None
    if not np.isfinite(x).all():
        raise AudioError(f"{clip.key}: the {name} features are not finite (samples far outside -1..1?)")
    return x


def collect(batches) -> tuple[list[Clip], list[np.ndarray]]:
    """``(kept clips, arrays)`` of ``batches`` (an iterator of ``(clips, arrays)`` pairs) joined."""
    kept: list[Clip] = []
    arrays: list[np.ndarray] = []
    for k, a in batches:
        kept += k
        arrays += a
    return kept, arrays


class Skips:
    """One count of skipped clips: ``(key, reason)`` once per clip, in the order they were met
    (thread-safe: the readers of one call may share it across an engine's threads)."""

    def __init__(self):
        self.items: list[tuple[str, str]] = []
        self.keys: set[str] = set()
        self._lock = threading.Lock()

    def add(self, key: str, reason: str) -> bool:
        """Record a skip; False when ``key`` was already recorded."""
        with self._lock:
            if key in self.keys:
                return False
            self.keys.add(key)
            self.items.append((key, reason))
            return True


class ClipReader:
    """Reads clips as the models see them, with one bad-file policy and one skip count
    (``skips``: shared with the other readers of one call, see :class:`humwatch.runtime.Runtime`)."""

    def __init__(self, audio: AudioSettings | None = None, on_bad: str = "error", progress: bool = True, skips: Skips | None = None):
        if on_bad not in ON_BAD:
            raise ConfigError(f"on_bad must be one of {', '.join(ON_BAD)}, got {on_bad!r}")
        self.audio = audio or AudioSettings()
        self.on_bad = on_bad
        self.progress = progress
        self.skips = skips if skips is not None else Skips()

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.skips.items

    def is_bad(self, clip: Clip) -> bool:
        return clip.key in self.skips.keys

    def fail(self, clip: Clip, err: AudioError) -> None:
        """Apply the policy to ``err`` about ``clip``: raise it, or record the skip (once per clip)."""
        if self.on_bad == "error":
            raise err
        if self.skips.add(clip.key, str(err)):
            log.warning("skipped %s", err)

    def absorb(self, skipped) -> None:
        """Record the skips of another reader of the same clips (a worker process's ``skipped``),
        once per clip, as :meth:`fail` would have."""
        for key, reason in skipped:
            if self.skips.add(key, reason):
                log.warning("skipped %s", reason)

    def read(self, clip: Clip, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray | None:
        """The clip's signal (or ``transform`` of it); None when it is skipped as bad."""
        if clip.key in self.skips.keys:
            return None
        try:
            y = clip.load(self.audio) if clip.in_memory else load_audio(clip.path, self.audio, start=clip.start)
            return checked(transform, y, clip) if transform is not None else y
        except AudioError as e:
            self.fail(clip, e)
            return None

    def chunks(self, clips: Sequence[Clip], size: int, description: str) -> Iterator[list[Clip]]:
        """``clips`` in lists of ``size`` under one progress bar (advanced after each list)."""
        clips = list(clips)
        with bar(description, len(clips), self.progress) as b:
            for i in range(0, len(clips), size):
                chunk = clips[i : i + size]
                yield chunk
                b.advance(len(chunk))

    def batches(
        self, clips: Sequence[Clip], size: int, description: str, transform: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> Iterator[tuple[list[Clip], list[np.ndarray]]]:
        """``(kept clips, arrays)`` per batch of ``size`` clips; bad clips are left out (or raise)."""
        for chunk in self.chunks(clips, size, description):
            kept, arrays = [], []
            for c in chunk:
                x = self.read(c, transform)
                if x is not None:
                    kept.append(c)
                    arrays.append(x)
            if kept:
                yield kept, arrays

    def read_all(
        self, clips: Sequence[Clip], description: str, transform: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> tuple[list[Clip], list[np.ndarray]]:
        """Every readable clip and its array (memory holds them all: for small per-clip arrays)."""
        return collect(self.batches(clips, 64, description, transform))
