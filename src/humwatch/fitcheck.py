"""What a monitor checks of recordings before it scores them (and ``fit`` before it fits on them).

**Never padded.** A monitor's features depend on its window length, so a recording shorter than the
monitor's window is not scored: it is refused, for that recording, with the reason
(:func:`too_short`; an error, or a counted skip with ``skip_bad``; a 422 in the service), never
padded with silence (a healthy 4 s clip padded to 10 s scored about 20,000 times the threshold).
A recording at least a window long is scored window by window, the last window ending at the
recording's end (:func:`humwatch.audio.window_starts`). A recording short of the window by at
most :data:`humwatch.audio.WINDOW_SLACK` (a millisecond: sample-count rounding) counts as a
window long.

**Warned.** A recording with another channel count or sample rate than the ones the monitor was
fitted on (``monitor.json``'s ``recordings``: :func:`fitted_recordings`) is scored (channels are
averaged or one is picked, other rates resampled) with a warning line saying so
(:func:`mismatch_warnings`): a mono clip scored by a monitor fitted on 8-channel recordings can
score far above the threshold for that reason alone.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

from humwatch.audio import WINDOW_SLACK, AudioSettings
from humwatch.data.clips import Clip
from humwatch.settings import WINDOW_SECONDS

log = logging.getLogger("humwatch")


def recording_format(clip: Clip) -> tuple[float, int, int] | None:
    """``(seconds, sample rate, channels)`` of a recording from its header (or its in-memory samples);
    None when the header cannot be read (reading the file says why)."""
    if clip.in_memory:
        d = clip.samples.data
        return d.shape[0] / clip.samples.sample_rate, clip.samples.sample_rate, 1 if d.ndim == 1 else d.shape[1]
    from humwatch.audio import header

    try:
        info = header(clip.path)
    except Exception:  # noqa: BLE001 - an unusable file is reported when it is read
        return None
    return info.frames / info.samplerate, int(info.samplerate), int(info.channels)


def too_short(seconds: float, window: float | None, name: str) -> str | None:
    """The reason a ``seconds``-long recording cannot be scored with ``window``-second windows, or None."""
    if window is None or seconds >= window - WINDOW_SLACK:
        return None
    fit = math.floor(seconds * 10 + 1e-6) / 10
    hint = (
        f"fit a monitor with --window-seconds {fit:g} for clips this short"
        if fit >= WINDOW_SECONDS.low
        else f"a monitor's window is at least {WINDOW_SECONDS.low:g} s"
    )
    return f"{name}: recording is {seconds:.1f} s, shorter than the monitor's {window:g} s window ({hint})"


def fitted_recordings(clips: Sequence[Clip]) -> dict:
    """What ``monitor.json`` records of the recordings a monitor was fitted on: their channel counts
    and sample rates (each sorted, once); empty where no header could be read."""
    formats = [f for f in (recording_format(c) for c in clips) if f is not None]
    if not formats:
        return {}
    return {"channels": sorted({f[2] for f in formats}), "sample_rates": sorted({f[1] for f in formats})}


def _channels(n: int) -> str:
    return "mono" if n == 1 else "stereo" if n == 2 else f"{n}-channel"


def mismatch_warnings(fmt: tuple[float, int, int] | None, fitted: dict | None, name: str) -> list[str]:
    """Warning lines for a recording of format ``fmt`` (:func:`recording_format`) whose channel count
    or sample rate is not one of those the monitor was fitted on (``fitted``: :func:`fitted_recordings`)."""
    if fmt is None or not fitted:
        return []
    _, rate, ch = fmt
    out = []
    chans, rates = fitted.get("channels") or [], fitted.get("sample_rates") or []
    if chans and ch not in chans:
        out.append(
            f"warning: {name}: {_channels(ch)} recording, the monitor was fitted on {' and '.join(_channels(c) for c in chans)} recordings"
        )
    if rates and rate not in rates:
        out.append(f"warning: {name}: recorded at {rate} Hz, the monitor was fitted on {' and '.join(f'{r} Hz' for r in rates)} recordings")
    return out


def check_recordings(clips: Sequence[Clip], audio: AudioSettings, fitted: dict | None = None) -> tuple[dict[str, str], list[str]]:
    """``(refused, warnings)`` of recordings about to be scored: ``{path: reason}`` of those shorter
    than the window (:func:`too_short`), and warning lines (other channel counts or sample rates than
    the monitor's recordings). One note line (logged) per sample rate that is resampled."""
    refused: dict[str, str] = {}
    warnings: list[str] = []
    rates: dict[int, int] = {}
    for c in clips:
        fmt = recording_format(c)
        if fmt is None:
            continue
        name = c.key if c.in_memory else c.path
        reason = too_short(fmt[0], audio.seconds, name)
        if reason:
            refused[c.path] = reason
            continue
        warnings += mismatch_warnings(fmt, fitted, name)
        if fmt[1] != audio.sample_rate:
            rates[fmt[1]] = rates.get(fmt[1], 0) + 1
    for sr, n in sorted(rates.items()):
        log.warning("note: %d recording(s) at %d Hz are resampled to %d Hz", n, sr, audio.sample_rate)
    return refused, warnings
