"""Sensor checks: is this recording a microphone's fault rather than the machine's sound?

Pure functions on decoded samples (frames x channels, or one channel, floats at full scale 1.0),
each returning a reason string (one line) when it finds a fault, else None. The service runs
:func:`sensor_fault` on every upload before scoring it: a clip with a sensor fault is stored with
its finding and is not scored as an anomaly (it opens a ``sensor`` alert instead).

The thresholds (module constants, so the docs and the tests quote the same numbers):

* digital silence: the loudest sample under :data:`SILENCE_PEAK` (1e-4, -80 dBFS; 16-bit's
  smallest step is 3e-5);
* clipping: at least :data:`CLIP_SHARE` (1 %) of the samples at or above :data:`CLIP_LEVEL`
  (0.999 of full scale) in a channel;
* DC offset: a channel's mean beyond :data:`DC_LIMIT` (0.1 of full scale) and larger than half the
  channel's RMS (the signal rides on the offset);
* dropouts: a run of at least :data:`DROPOUT_S` (20 ms) of exact zeros inside the clip (in any
  channel; a live microphone's noise is never exactly zero that long);
* level: the clip's level (the mean power of its log-mel energies, in dB) more than :data:`LEVEL_DB`
  (30 dB) above or below the level of the normal clips the monitor was fitted on (its normal reference,
  :class:`humwatch.explain.alarm.NormalReference`); skipped for a monitor without one.
"""

from __future__ import annotations

import numpy as np

SILENCE_PEAK = 1e-4
CLIP_LEVEL = 0.999
CLIP_SHARE = 0.01
DC_LIMIT = 0.1
DROPOUT_S = 0.020
LEVEL_DB = 30.0


def _frames(samples: np.ndarray) -> np.ndarray:
    y = np.asarray(samples, dtype=np.float32)
    return y[:, None] if y.ndim == 1 else y


def check_silence(samples: np.ndarray) -> str | None:
    """Digital silence: every sample under :data:`SILENCE_PEAK`."""
    y = _frames(samples)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak < SILENCE_PEAK:
        return f"digital silence (loudest sample {peak:.1e}, under {SILENCE_PEAK:g} of full scale)"
    return None


def check_clipping(samples: np.ndarray) -> str | None:
    """Clipping: at least :data:`CLIP_SHARE` of a channel's samples at full scale."""
    y = _frames(samples)
    if not y.size:
        return None
    share = float(np.max(np.mean(np.abs(y) >= CLIP_LEVEL, axis=0)))
    if share >= CLIP_SHARE:
        return f"clipping ({share:.1%} of the samples at full scale, {CLIP_SHARE:.0%} or more is a fault)"
    return None


def check_dc_offset(samples: np.ndarray) -> str | None:
    """DC offset: a channel's mean beyond :data:`DC_LIMIT` and above half its RMS."""
    y = _frames(samples).astype(np.float64)
    if not y.size:
        return None
    mean = y.mean(axis=0)
    rms = np.sqrt((y**2).mean(axis=0))
    bad = (np.abs(mean) > DC_LIMIT) & (np.abs(mean) > 0.5 * rms)
    if bad.any():
        worst = float(mean[np.argmax(np.abs(mean) * bad)])
        return f"DC offset (mean {worst:+.3f} of full scale; beyond {DC_LIMIT:g} is a fault)"
    return None


def longest_zero_run(x: np.ndarray) -> int:
    """The longest run of exact zeros in one channel (samples)."""
    z = np.concatenate(([0], (x == 0).astype(np.int8), [0]))
    d = np.diff(z)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return int((ends - starts).max()) if starts.size else 0


def check_dropouts(samples: np.ndarray, sample_rate: int) -> str | None:
    """Dropouts: a run of at least :data:`DROPOUT_S` of exact zeros in a channel (not all of it:
    that is silence)."""
    y = _frames(samples)
    need = max(2, int(round(DROPOUT_S * sample_rate)))
    for c in range(y.shape[1]):
        run = longest_zero_run(y[:, c])
        if need <= run < y.shape[0]:
            return f"dropout ({run / sample_rate * 1000:.0f} ms of exact zeros; {DROPOUT_S * 1000:.0f} ms or more is a fault)"
    return None


def power_db(db: np.ndarray) -> float:
    """The level (dB) of the mean power of log-mel energies given in dB (loud bands weigh most, so
    the spectrum's shape hardly matters, only how loud the sound is)."""
    d = np.asarray(db, dtype=np.float64)
    top = float(d.max())
    return top + 10.0 * float(np.log10(np.mean(10.0 ** ((d - top) / 10.0))))


def clip_level_db(samples: np.ndarray, sample_rate: int) -> float:
    """The clip's level (dB, :func:`power_db` of its log-mel energies, the channels' mean), as the
    normal reference measures its clips."""
    import warnings

    from humwatch.explain.alarm import logmel

    y = _frames(samples).mean(axis=1)
    with warnings.catch_warnings():  # librosa warns of a clip shorter than its FFT (such clips are refused elsewhere)
        warnings.simplefilter("ignore", UserWarning)
        return power_db(logmel(y, sample_rate))


def check_level(samples: np.ndarray, sample_rate: int, reference) -> str | None:
    """A level more than :data:`LEVEL_DB` from the normal reference's (None without a reference)."""
    if reference is None:
        return None
    ref = power_db(reference.mean)
    level = clip_level_db(samples, sample_rate)
    if abs(level - ref) > LEVEL_DB:
        side = "above" if level > ref else "below"
        return f"level {abs(level - ref):.0f} dB {side} the monitor's normal clips (more than {LEVEL_DB:g} dB is a fault)"
    return None


def sensor_fault(samples: np.ndarray, sample_rate: int, reference=None) -> str | None:
    """The first sensor fault found (silence, clipping, DC offset, dropouts, level), or None. A
    clip with NaN or infinite samples is none of these: None (the audio reader refuses it)."""
    if not np.isfinite(np.asarray(samples)).all():
        return None
    return (
        check_silence(samples)
        or check_clipping(samples)
        or check_dc_offset(samples)
        or check_dropouts(samples, sample_rate)
        or check_level(samples, sample_rate, reference)
    )
