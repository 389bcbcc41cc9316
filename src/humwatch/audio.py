"""Reading machine recordings.

MIMII clips are 8-channel, 16 kHz, 10 s WAV files. :func:`load_audio` turns any readable file into
the mono 16 kHz float32 signal the frontends expect: the channels are averaged (as the study does)
or one is picked, other sample rates are resampled, and the clip is padded or cut to the expected
length with a note (the study's fixed-length clips; a monitor never pads: it refuses a recording
shorter than its window, :mod:`humwatch.fitcheck`). Anything unusable raises :class:`~humwatch.errors.AudioError` with one line that
names the file; features never see NaN.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf

from humwatch.errors import AudioError, one_line
from humwatch.io import AUDIO_SUFFIXES, atomic_path
from humwatch.settings import CHANNEL, SAMPLE_RATE_HZ, WINDOW_SECONDS, Optional, Real, Settings, check_fields, setting

log = logging.getLogger("humwatch")

SAMPLE_RATE = 16_000
"""MIMII's sample rate; every frontend works at this rate."""
CLIP_SECONDS = 10.0
"""MIMII's clip length."""
SILENCE_PEAK = 1e-6
"""A clip whose peak amplitude is below this (full scale = 1.0) is treated as silent."""
WINDOW_SLACK = 1e-3
"""Seconds a recording may fall short of a window (or run past its last one) and still count as
covering it: sample-count rounding, never padding worth the name."""

MAX_FILE_BYTES = 4 << 30
"""The largest audio file humwatch opens (4 GiB: 37 hours of 16 kHz 16-bit mono, 9 hours of MIMII's 8 channels)."""
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = SAMPLE_RATE_HZ.low, SAMPLE_RATE_HZ.high
"""The sample rates humwatch reads (1 to 384 kHz: :data:`humwatch.settings.SAMPLE_RATE_HZ`). A header
outside them is refused before anything is decoded: a WAV whose header says 1 Hz crashed the resampler
(a segfault: 16,000 output samples per input sample), and in training data one such file multiplied
the threshold by about 2,100."""

READ_SECONDS = Real(0.0, WINDOW_SECONDS.high, open_low=True)
"""How long a clip may be read as (any length above 0, at most the longest window); what a saved
monitor or method records is a window length (:data:`humwatch.settings.WINDOW_SECONDS`)."""


@dataclass(frozen=True)
class AudioSettings(Settings):
    """How a file becomes the signal a model sees; checked when made (one ConfigError line naming the
    setting), by the same rules as a saved monitor's ``audio`` and every option that sets them."""

    where: ClassVar[str] = "audio"

    sample_rate: int = setting(SAMPLE_RATE, SAMPLE_RATE_HZ, "the rate the signal is read at (Hz)")
    seconds: float | None = setting(CLIP_SECONDS, Optional(READ_SECONDS), "clip length; None keeps the file's own length")
    channel: int | None = setting(None, Optional(CHANNEL), "one microphone; None averages all channels (the study's choice)")

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_samples(self) -> int | None:
        return None if self.seconds is None else int(round(self.seconds * self.sample_rate))


def saved_audio_settings(doc, where, seconds_required: bool = False) -> AudioSettings:
    """The audio settings a saved monitor or method records (``{"sample_rate", "seconds",
    "channel"}``), every field checked by :class:`AudioSettings`' rules (one ConfigError line naming
    it; an unknown field refused)."""
    rules = {**AudioSettings.rules(), "seconds": WINDOW_SECONDS if seconds_required else Optional(WINDOW_SECONDS)}
    return AudioSettings(**check_fields(doc, rules, where, "audio."))


def load_audio(
    path: str | os.PathLike, settings: AudioSettings | None = None, *, notes: list[str] | None = None, start: float = 0.0
) -> np.ndarray:
    """Read ``path`` as a mono float32 signal at ``settings.sample_rate``; with ``start`` (seconds),
    the window of ``settings.seconds`` that begins there (a window of a long recording).

    Padding, cutting and resampling are reported as notes (appended to ``notes`` when given, and
    logged at INFO level). Raises :class:`AudioError` for an unusable file.
    """
    s = settings or AudioSettings()
    path = check_file(path)
    info = _header(path)
    try:
        first = int(round(start * info.samplerate)) if start else 0
        if first and not 0 <= first < info.frames:
            raise AudioError(f"{path}: no audio at {start:g} s (it is {info.frames / info.samplerate:.2f} s long)")
        count = -1 if s.seconds is None or not first else min(info.frames - first, int(np.ceil(s.seconds * info.samplerate)))
        data, sr = sf.read(os.fsencode(path), dtype="float32", always_2d=True, start=first, frames=count)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        reason = one_line(e)
        raise AudioError(f"{path}: not readable audio ({reason})") from None
    if info.format in ("WAV", "WAVEX"):
        short = _wav_data_shortfall(path)
        if short:
            raise AudioError(f"{path}: truncated (header says {short[0]} bytes of audio, file holds {short[1]})")
    if data.shape[0] == 0:
        raise AudioError(f"{path}: holds no samples")
    if info.frames > 0 and data.shape[0] < (info.frames - first if count < 0 else count):
        raise AudioError(f"{path}: truncated (header says {info.frames} frames, file holds {data.shape[0]})")
    return _signal(data, sr, s, path, notes)


def decode_array(
    samples,
    sample_rate: int,
    settings: AudioSettings | None = None,
    *,
    name: str = "<memory>",
    notes: list[str] | None = None,
    start: float = 0.0,
) -> np.ndarray:
    """:func:`load_audio` of samples already in memory (``samples``: frames, or frames x channels, at
    ``sample_rate``): the same channel, resampling, padding and cutting rules and the same errors,
    naming the clip ``name``."""
    s = settings or AudioSettings()
    data, sr = check_samples(samples, sample_rate, name)
    data = data.reshape(len(data), -1)
    first = int(round(start * sr)) if start else 0
    if first:
        if not 0 <= first < data.shape[0]:
            raise AudioError(f"{name}: no audio at {start:g} s (it is {data.shape[0] / sr:.2f} s long)")
        data = data[first : first + (data.shape[0] if s.seconds is None else int(np.ceil(s.seconds * sr)))]
    if data.shape[0] == 0:
        raise AudioError(f"{name}: holds no samples")
    return _signal(data, sr, s, name, notes)


def check_samples(samples, sample_rate, name: str) -> tuple[np.ndarray, int]:
    """``(float32 samples, sample rate)`` of in-memory audio, or AudioError naming ``name``: the
    samples a 1-D (frames) or 2-D (frames x channels) array of numbers (integers are PCM, scaled
    as soundfile scales them), the rate within what humwatch reads."""
    try:
        data = np.asarray(samples)
    except (TypeError, ValueError):
        data = np.asarray(None)
    if data.dtype.kind not in "fi" or data.ndim not in (1, 2):
        raise AudioError(
            f"{name}: samples must be a 1-D (frames) or 2-D (frames x channels) array of numbers, got {data.dtype} of shape {data.shape}"
        )
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, (int, np.integer))
        or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE
    ):
        raise AudioError(
            f"{name}: sample rate {sample_rate!r} is outside the {MIN_SAMPLE_RATE // 1000}-{MAX_SAMPLE_RATE // 1000} kHz humwatch reads"
        )
    if data.dtype.kind == "i":  # integer PCM as soundfile scales it
        data = data.astype(np.float32) / float(2 ** (8 * data.dtype.itemsize - 1))
    return data.astype(np.float32, copy=False), int(sample_rate)


def decode_bytes(blob: bytes, name: str) -> tuple[np.ndarray, int]:
    """``(samples frames x channels, sample rate)`` of an audio file's bytes (an upload), decoded in
    memory with the checks :func:`load_audio` makes of a file; AudioError naming ``name``."""
    import io

    if not blob:
        raise AudioError(f"{name}: empty file")
    if len(blob) > MAX_FILE_BYTES:
        raise AudioError(f"{name}: {len(blob) / 2**30:.1f} GiB, larger than the {MAX_FILE_BYTES / 2**30:.0f} GiB humwatch reads")
    try:
        info = sf.info(io.BytesIO(blob))
        if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
            raise AudioError(
                f"{name}: sample rate {info.samplerate} Hz in its header is outside the "
                f"{MIN_SAMPLE_RATE // 1000}-{MAX_SAMPLE_RATE // 1000} kHz humwatch reads (a damaged header?)"
            )
        data, sr = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        reason = one_line(e)
        raise AudioError(f"{name}: not readable audio ({reason})") from None
    if info.format in ("WAV", "WAVEX"):
        short = _wav_shortfall(io.BytesIO(blob), len(blob))
        if short:
            raise AudioError(f"{name}: truncated (header says {short[0]} bytes of audio, file holds {short[1]})")
    if info.frames > 0 and data.shape[0] < info.frames:
        raise AudioError(f"{name}: truncated (header says {info.frames} frames, file holds {data.shape[0]})")
    return data, int(sr)


def _signal(data: np.ndarray, sr: int, s: AudioSettings, path, notes: list[str] | None) -> np.ndarray:
    """Decoded samples (frames x channels at ``sr``) as the mono signal ``s`` asks for."""
    if data.shape[0] == 0:
        raise AudioError(f"{path}: holds no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")

    n_ch = data.shape[1]
    if s.channel is not None:
        if not 0 <= s.channel < n_ch:
            raise AudioError(f"{path}: has {n_ch} channel(s), channel {s.channel} asked for")
        y = data[:, s.channel]
    else:
        y = data.mean(axis=1)
    y = np.ascontiguousarray(y, dtype=np.float32)
    peak = float(np.max(np.abs(y)))
    if peak < SILENCE_PEAK:
        raise AudioError(
            f"{path}: silent (all samples are zero)"
            if peak == 0
            else f"{path}: silent (peak amplitude {peak:.2g}, below {SILENCE_PEAK:g} of full scale)"
        )

    def note(msg: str) -> None:
        log.info("%s: %s", path, msg)
        if notes is not None:
            notes.append(f"{path}: {msg}")

    if sr != s.sample_rate:
        import librosa

        y = librosa.resample(y, orig_sr=sr, target_sr=s.sample_rate, res_type="soxr_hq")
        y = np.ascontiguousarray(y, dtype=np.float32)
        note(f"resampled from {sr} Hz to {s.sample_rate} Hz")
    n = s.n_samples
    if n is not None and len(y) != n:
        if len(y) < n:
            note(f"padded with silence from {len(y) / s.sample_rate:.2f} s to {n / s.sample_rate:.2f} s")
            y = np.pad(y, (0, n - len(y)))
        else:
            note(f"cut from {len(y) / s.sample_rate:.2f} s to {n / s.sample_rate:.2f} s")
            y = y[:n]
    return y


def write_audio(path: str | os.PathLike, y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write ``y`` (samples, or samples x channels) as 16-bit PCM WAV, whole or not at all."""
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(os.fsencode(tmp), np.asarray(y), sample_rate, subtype="PCM_16", format="WAV")


def check_file(path: str | os.PathLike) -> Path:
    """``path`` if it is a regular file (through symlinks) of 1 byte to :data:`MAX_FILE_BYTES`;
    otherwise AudioError at once. Nothing else is ever opened: a FIFO, a device such as /dev/zero
    or a socket would make a read hang or never end."""
    import stat

    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except OSError as e:  # a symlink loop, a name too long, no permission to look
        raise AudioError(f"{path}: not accessible ({e.strerror or type(e).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{path}: is a folder, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "not a regular file"
        )
        raise AudioError(f"{path}: {kind}, not an audio file")
    if st.st_size == 0:
        raise AudioError(f"{path}: empty file")
    if st.st_size > MAX_FILE_BYTES:
        raise AudioError(f"{path}: {st.st_size / 2**30:.1f} GiB, larger than the {MAX_FILE_BYTES / 2**30:.0f} GiB humwatch reads")
    return path


def header(path: str | os.PathLike):
    """An audio file's header (soundfile's info: ``frames``, ``samplerate``, ``format``...; nothing
    decoded); AudioError saying why when ``path`` is not a readable audio file."""
    return _header(check_file(path))


def _header(path: Path):
    try:
        info = sf.info(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        reason = one_line(e)
        raise AudioError(f"{path}: not readable audio ({reason})") from None
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{path}: sample rate {info.samplerate} Hz in its header is outside the "
            f"{MIN_SAMPLE_RATE // 1000}-{MAX_SAMPLE_RATE // 1000} kHz humwatch reads (a damaged header?)"
        )
    return info


def duration(path: str | os.PathLike) -> float | None:
    """A file's length in seconds from its header (None when it is not a readable audio file)."""
    try:
        info = header(path)
    except (AudioError, OSError):
        return None
    return info.frames / info.samplerate if info.samplerate else None


def window_starts(total: float, seconds: float, hop: float) -> list[float]:
    """Where the ``seconds``-long windows of a ``total``-second recording begin, ``hop`` apart; when
    the last of them ends before the recording does (by more than :data:`WINDOW_SLACK`), one more
    window ends at the recording's end (overlapping the one before), so the windows cover all of it
    and none runs past its end (none is ever padded). A recording no longer than one window has
    one window, at 0 (a monitor refuses one shorter than its window: :func:`humwatch.monitor.too_short`)."""
    if total <= seconds + WINDOW_SLACK:
        return [0.0]
    starts = [round(k * hop, 6) for k in range(int(np.floor((total - seconds) / hop + 1e-9)) + 1)]
    if total - (starts[-1] + seconds) > WINDOW_SLACK:
        starts.append(round(total - seconds, 6))
    return starts


def find_audio(folder: str | os.PathLike) -> list[Path]:
    """All audio files below ``folder``, sorted; a link that leads nowhere (a symbolic link loop, a
    dangling link) with an audio suffix is listed too, so that reading it fails clearly (and
    ``--skip-bad`` counts it) instead of it vanishing. (``rglob`` does not follow links to folders,
    so a link back up cannot loop.)"""
    folder = Path(folder)
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and (p.is_file() or (p.is_symlink() and not p.exists()))
    )


def _wav_data_shortfall(path: Path) -> tuple[int, int] | None:
    """``(declared, present)`` byte counts of a RIFF WAV's data chunk when the file ends before it
    does (libsndfile then quietly shortens its frame count), else None."""
    with open(path, "rb") as f:
        return _wav_shortfall(f, os.fstat(f.fileno()).st_size)


def _wav_shortfall(f, size: int) -> tuple[int, int] | None:
    """:func:`_wav_data_shortfall` of an open binary file of ``size`` bytes."""
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    endian = "<" if head[:4] == b"RIFF" else ">"
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk, length = struct.unpack(endian + "4sI", f.read(8))
        if chunk == b"data":
            if length in (0, 0xFFFFFFFF):  # streamed: length not written
                return None
            present = size - (pos + 8)
            return (length, present) if length > present else None
        pos += 8 + length + (length & 1)
    return None
