"""Linear (STFT) and mel spectrograms of normal and anomalous clips, side by side (the study's
Figs. 2 and 3): one row per machine type, normal on the left, anomalous on the right, frequency
in Hz and time in seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from humwatch.audio import SAMPLE_RATE
from humwatch.errors import ConfigError

KINDS = ("linear", "mel")
DISPLAY = dict(n_fft=1024, hop_length=512, n_mels=128)
"""Display settings: 64 ms windows, 32 ms hop, 128 mel bands (the models' band count)."""


@dataclass
class Spectrogram:
    """A spectrogram in dB with its axes: ``db`` [bins, frames], ``freqs`` Hz [bins], ``times`` s [frames]."""

    db: np.ndarray
    freqs: np.ndarray
    times: np.ndarray
    kind: str
    sr: int
    duration: float
    hop_length: int


def spectrogram(y: np.ndarray, sr: int = SAMPLE_RATE, kind: str = "linear", **params) -> Spectrogram:
    """The ``linear`` (|STFT| in dB) or ``mel`` (mel power in dB) spectrogram of ``y``, dB relative
    to the clip's peak, floored 80 dB below it."""
    import librosa

    if kind not in KINDS:
        raise ConfigError(f"unknown spectrogram kind {kind!r} (choose from {', '.join(KINDS)})")
    p = {**DISPLAY, **params}
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or len(y) == 0:
        raise ConfigError(f"a mono signal is needed, got shape {y.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "linear":
            s = np.abs(librosa.stft(y, n_fft=p["n_fft"], hop_length=p["hop_length"]))
            db = librosa.amplitude_to_db(s, ref=np.max, top_db=80.0)
            freqs = librosa.fft_frequencies(sr=sr, n_fft=p["n_fft"])
        else:
            s = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=p["n_fft"], hop_length=p["hop_length"], n_mels=p["n_mels"])
            db = librosa.power_to_db(s, ref=np.max, top_db=80.0)
            freqs = librosa.mel_frequencies(n_mels=p["n_mels"], fmin=0.0, fmax=sr / 2.0)
    if not np.isfinite(db).all():
        from humwatch.errors import AudioError

        raise AudioError(f"the {kind} spectrogram is not finite (samples far outside -1..1?)")
    times = librosa.frames_to_time(np.arange(db.shape[1]), sr=sr, hop_length=p["hop_length"])
    return Spectrogram(db.astype(np.float32), freqs, times, kind, sr, len(y) / sr, p["hop_length"])


@dataclass
class Panel:
    """One spectrogram panel: a signal and its title."""

    y: np.ndarray
    title: str
    sr: int = SAMPLE_RATE


def draw_spectrogram(ax, spec: Spectrogram, title: str = "", colorbar: bool = False):
    """Draw ``spec`` on ``ax`` with librosa.display: frequency in Hz (up to Nyquist), time in s."""
    import librosa.display

    y_axis = "linear" if spec.kind == "linear" else "mel"
    img = librosa.display.specshow(
        spec.db,
        sr=spec.sr,
        hop_length=spec.hop_length,
        x_axis="s",
        y_axis=y_axis,
        ax=ax,
        fmax=spec.sr / 2.0 if spec.kind == "mel" else None,
        cmap="magma",
    )
    ax.set_xlim(0.0, spec.duration)
    ax.set_ylim(0.0, spec.sr / 2.0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(img, ax=ax, format="%+2.0f dB")
    return img


def spectrogram_figure(rows: Sequence[Sequence[Panel]], kind: str = "linear", title: str = "", **params):
    """A figure with one row of panels per entry of ``rows`` (e.g. a machine type's normal and
    anomalous clip). Returns the matplotlib Figure; each axis holds one spectrogram."""
    from humwatch.explain._plot import pyplot

    plt = pyplot()
    rows = [list(r) for r in rows if r]
    if not rows:
        raise ConfigError("no clips to draw spectrograms of")
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(4.2 * n_cols, 2.5 * len(rows)), squeeze=False, constrained_layout=True)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            if j >= len(row):
                ax.axis("off")
                continue
            spec = spectrogram(row[j].y, row[j].sr, kind, **params)
            img = draw_spectrogram(ax, spec, row[j].title)
            if i < len(rows) - 1:
                ax.set_xlabel("")
    fig.colorbar(img, ax=axes, format="%+2.0f dB", shrink=0.6)
    if title:
        fig.suptitle(title)
    return fig
