"""Why did it alarm? One figure per recording: its spectrogram beside the monitor's normal reference,
where in time and frequency it departs from normal, and the per-window scores against the threshold.

The **normal reference** is computed when a monitor is fitted (:meth:`NormalReference.from_signals`)
from the normal training windows, on the MIMII baseline's log-mel (64 mel bands, n_fft 1024, hop
512, ``10 log10`` power, so values are in dB): the mean and the spread of every band over all
frames, and one typical normal window's spectrogram (the one whose mean spectrum is closest to the
overall mean) to show beside the clip. The departure map is the clip's log-mel minus the reference
mean, in units of the reference spread (a z-score per band and frame).

The summary says how far the recording's mean level in a band is from normal **and how far normal
windows themselves stray** (``+5.6 dB, normal clips vary by ±4.0 dB there``), so that a normal
recording does not read as a fault. ``clip_spread`` is, per band, the range within which the normal
windows' mean levels lie: their standard deviation across windows times one factor, chosen so that
every normal window stays within it in every band at once (the summary looks at the most unusual of
64 bands, so a per-band 95 % range would flag most normal clips somewhere; a 95 % range over the
fitted windows still flagged one fresh normal clip in five in the tests). The bands
that differ most are the ones furthest out in units of that range (in dB where a reference has none:
monitors fitted before it was kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from humwatch.audio import AudioSettings

N_MELS = 64
"""Bands of the reference log-mel (the autoencoder frontend's)."""
COVERAGE = 100.0
"""Percent of the normal windows that lie within ``clip_spread`` in every band."""
MIN_SPREAD_DB = 0.25
"""The least spread (dB) of a band's mean level across normal windows: no division by ~0."""


def logmel(y: np.ndarray, sr: int) -> np.ndarray:
    """(64, T) log-mel energies in dB (:func:`humwatch.features.ae_logmel`)."""
    from humwatch.features import ae_logmel

    return ae_logmel(y, sr)


def band_edges(sr: int, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, 2) low and high frequency (Hz) of every mel band (librosa's triangular filters)."""
    import librosa

    f = librosa.mel_frequencies(n_mels + 2, fmin=0.0, fmax=sr / 2)
    return np.stack([f[:-2], f[2:]], axis=1)


@dataclass
class NormalReference:
    """Per-band mean and spread of normal log-mel frames, and one typical normal spectrogram."""

    mean: np.ndarray  # (bands,) dB
    std: np.ndarray  # (bands,) dB
    example: np.ndarray  # (bands, frames) dB
    n_windows: int = 0
    clip_spread: np.ndarray | None = None  # (bands,) dB: how far normal windows' mean levels stray (None: not kept)

    @classmethod
    def from_signals(cls, signals: Iterable[np.ndarray], sr: int) -> "NormalReference":
        total = total_sq = None
        count = 0
        spectra, examples = [], []
        for y in signals:
            m = logmel(y, sr).astype(np.float64)
            total = m.sum(axis=1) if total is None else total + m.sum(axis=1)
            total_sq = (m**2).sum(axis=1) if total_sq is None else total_sq + (m**2).sum(axis=1)
            count += m.shape[1]
            spectra.append(m.mean(axis=1))
            examples.append(m.astype(np.float16))  # kept until the typical one is known: half the memory
        if not count:
            raise ValueError("no normal signals for the reference")
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0)) + 0.5  # at least 0.5 dB: no division by ~0
        closest = int(np.argmin([np.linalg.norm(s - mean) for s in spectra]))
        spread = clip_spread(np.stack(spectra) - mean)
        return cls(mean.astype(np.float32), std.astype(np.float32), examples[closest].astype(np.float32), len(examples), spread)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean, "std": self.std, "example": self.example}
        if self.clip_spread is not None:
            out["clip_spread"] = self.clip_spread
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_windows: int = 0) -> "NormalReference":
        return cls(
            np.asarray(arrays["mean"], np.float32),
            np.asarray(arrays["std"], np.float32),
            np.asarray(arrays["example"], np.float32),
            n_windows,
            np.asarray(arrays["clip_spread"], np.float32) if "clip_spread" in arrays else None,
        )


def clip_spread(departures: np.ndarray, coverage: float = COVERAGE) -> np.ndarray | None:
    """Per band, the range (dB) holding ``coverage`` % of the normal windows in every band at once,
    from their mean levels minus the overall mean (``(windows, bands)``); None under 2 windows."""
    d = np.asarray(departures, np.float64)
    if d.shape[0] < 2:
        return None
    sd = np.maximum(d.std(axis=0, ddof=1), MIN_SPREAD_DB)
    k = float(np.percentile(np.abs(d / sd).max(axis=1), coverage))
    return (max(k, 1.0) * sd).astype(np.float32)


@dataclass
class AlarmExplanation:
    """What :func:`explain_alarm` found: the one-line ``summary``, the figure (``png`` bytes, and
    ``path`` when written), per-window ``(start, score)`` and the bands that differ most."""

    summary: str
    alarm: bool
    score: float
    threshold: float
    windows: list[tuple[float, float]]
    bands: list[dict] = field(default_factory=list)
    png: bytes = b""
    path: Path | None = None


def explain_alarm(monitor, path, out: str | Path | None = None, top_bands: int = 3) -> AlarmExplanation:
    """Score ``path`` (a file, or a :class:`~humwatch.data.clips.Clip`: an in-memory one shows its
    own name) with ``monitor`` window by window and draw why it alarmed (or did not)."""
    from humwatch.data.clips import Clip
    from humwatch.errors import ConfigError

    ref = getattr(monitor, "reference", None)
    if ref is None:
        raise ConfigError("this monitor has no normal reference (fit it again with this humwatch)")
    clip = path if isinstance(path, Clip) else Clip(str(path), "clip", "", 0)
    windows, scores, _ = monitor.score_windows([clip], skip_bad=False, progress=False)
    audio = monitor.audio
    y = clip.load(AudioSettings(audio.sample_rate, None, audio.channel))
    m = logmel(y, audio.sample_rate)
    z = (m - ref.mean[:, None]) / ref.std[:, None]
    per_window = [(w.start, float(s)) for w, s in zip(windows, scores)]
    best = int(np.argmax(scores))
    score, thr = float(scores[best]), float(monitor.threshold)
    alarm = score > thr
    seconds = audio.seconds or len(y) / audio.sample_rate
    # the departure is measured over the highest-scoring window, as the reference's normal windows were
    frames = window_frames(windows[best].start, seconds, audio.sample_rate, m.shape[1])
    delta = (m[:, frames] - ref.mean[:, None]).mean(axis=1)
    edges = band_edges(audio.sample_rate)
    spread = ref.clip_spread
    order = np.argsort(-np.abs(delta if spread is None else delta / spread))[:top_bands]
    bands = [{"low_hz": float(edges[i, 0]), "high_hz": float(edges[i, 1]), "delta_db": float(delta[i])} for i in order]
    if spread is not None:
        for b, i in zip(bands, order):
            b["normal_db"] = float(spread[i])
            b["beyond_normal"] = bool(abs(delta[i]) > spread[i])
    summary = (
        f"{'ALARM' if alarm else 'normal'}: score {score:.4g} {'>' if alarm else '<='} threshold {thr:.4g}"
        f"{f' in {windows[best].start:g}-{windows[best].start + seconds:g} s' if len(windows) > 1 else ''}; " + band_phrase(bands[0])
    )
    res = AlarmExplanation(summary, alarm, score, thr, per_window, bands)
    fig = alarm_figure(m, ref, z, per_window, thr, seconds, len(y) / audio.sample_rate, edges, bands, summary, Path(clip.path).name, delta)
    from humwatch.explain._plot import figure_png

    res.png = figure_png(fig)
    if out is not None:
        from humwatch.io import atomic_path

        with atomic_path(out, suffix=".png") as tmp:
            tmp.write_bytes(res.png)
        res.path = Path(out)
    return res


def band_phrase(b: dict) -> str:
    """The summary's words on the most unusual band, with the normal variation when it is known."""
    where = f"{b['low_hz']:.0f}-{b['high_hz']:.0f} Hz, {b['delta_db']:+.1f} dB against normal"
    if "normal_db" not in b:
        return f"most different: {where}"
    vary = f"normal clips vary by ±{b['normal_db']:.1f} dB there"
    if b["beyond_normal"]:
        return f"most different: {where}, beyond normal variation ({vary})"
    return f"every band within normal variation (most unusual: {where}; {vary})"


def window_frames(start: float, seconds: float, sr: int, n_frames: int) -> slice:
    """The log-mel frames (hop 512) of the window ``[start, start + seconds)``, at least one."""
    hop = 512
    a = min(int(round(start * sr / hop)), n_frames - 1)
    return slice(a, max(a + 1, min(n_frames, int(round((start + seconds) * sr / hop)))))


def alarm_figure(m, ref: NormalReference, z, windows, threshold, seconds, total, edges, bands, summary, name, delta=None):
    """The figure: clip and normal reference spectrograms, the departure map, window scores, band departures."""
    from humwatch.explain._plot import pyplot

    plt = pyplot()
    fig = plt.figure(figsize=(12, 8.5), constrained_layout=True)
    grid = fig.add_gridspec(3, 3, width_ratios=[1, 1, 0.45], height_ratios=[1, 1, 0.8])
    vmin, vmax = np.percentile(np.concatenate([m.ravel(), ref.example.ravel()]), [2, 99.5])

    def spec(ax, data, span, title):
        im = ax.imshow(data, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, extent=(0, span, 0, data.shape[0]))
        _mel_ticks(ax, edges)
        ax.set_xlabel("time (s)")
        ax.set_title(title)
        return im

    im = spec(fig.add_subplot(grid[0, 0]), m, total, f"this recording: {name}")
    spec(fig.add_subplot(grid[0, 1]), ref.example, seconds, f"normal reference (typical of {ref.n_windows} normal windows)")
    fig.colorbar(im, ax=fig.axes[:2], label="log-mel energy (dB)", shrink=0.9)
    ax = fig.add_subplot(grid[1, 0:2])
    zi = ax.imshow(np.clip(z, -6, 6), origin="lower", aspect="auto", cmap="RdBu_r", vmin=-6, vmax=6, extent=(0, total, 0, z.shape[0]))
    _mel_ticks(ax, edges)
    ax.set_title("departure from normal (per band: (clip - normal mean) / normal spread)")
    ax.set_xlabel("time (s)")
    fig.colorbar(zi, ax=ax, label="spreads above (red) / below (blue) normal")
    axb = fig.add_subplot(grid[1, 2])
    delta = (m - ref.mean[:, None]).mean(axis=1) if delta is None else delta
    if ref.clip_spread is not None:
        yy = np.arange(len(delta) + 1)
        sp = np.append(ref.clip_spread, ref.clip_spread[-1])
        axb.fill_betweenx(yy, -sp, sp, step="post", color="0.85", label="normal variation")
        axb.legend(loc="lower right", fontsize=8)
    axb.barh(np.arange(len(delta)) + 0.5, delta, height=1.0, color=["#c0392b" if d > 0 else "#2e86c1" for d in delta])
    axb.set_ylim(0, len(delta))
    _mel_ticks(axb, edges)
    for b in bands:
        axb.axhline(np.searchsorted(edges[:, 0], b["low_hz"]) + 0.5, color="k", lw=0.6, ls=":")
    axb.set_xlabel("mean departure (dB)" + (" in the top window" if len(windows) > 1 else ""))
    axb.set_title("bands")
    axw = fig.add_subplot(grid[2, 0:2])
    starts = [w[0] for w in windows]
    scores = [w[1] for w in windows]
    axw.step(starts + [starts[-1] + seconds], scores + [scores[-1]], where="post", color="k", label="window score")
    axw.axhline(threshold, color="#c0392b", ls="--", label=f"threshold {threshold:.4g}")
    axw.set_xlim(0, max(total, seconds))
    axw.set_xlabel("time (s)")
    axw.set_ylabel("anomaly score")
    axw.set_title(f"scores of the {len(windows)} window(s) of {seconds:g} s (the recording's score is their maximum)")
    axw.legend(loc="upper right", fontsize=8)
    axt = fig.add_subplot(grid[2, 2])
    axt.axis("off")
    axt.text(
        0,
        1,
        ("most unusual bands\n(dB; normal: ±range):\n" if "normal_db" in bands[0] else "most different bands:\n")
        + "\n".join(
            f"{b['low_hz']:.0f}-{b['high_hz']:.0f} Hz {b['delta_db']:+.1f}" + (f" (±{b['normal_db']:.1f})" if "normal_db" in b else " dB")
            for b in bands
        ),
        va="top",
        fontsize=9,
        family="monospace",
        transform=axt.transAxes,
    )
    import textwrap

    fig.suptitle("\n".join(textwrap.wrap(summary, 130)), fontsize=11)
    return fig


def _mel_ticks(ax, edges) -> None:
    """Label a mel-band axis in Hz at a few bands."""
    idx = np.linspace(0, len(edges) - 1, 5).astype(int)
    ax.set_yticks(idx + 0.5)
    ax.set_yticklabels([f"{(edges[i, 0] + edges[i, 1]) / 2:.0f}" for i in idx], fontsize=8)
    ax.set_ylabel("Hz (mel scale)", fontsize=9)
