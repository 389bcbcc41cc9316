"""The report's figures from chosen clips and models: spectrograms, t-SNE, attention and Grad-CAM."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from humwatch.audio import AudioSettings, load_audio
from humwatch.errors import HumwatchError
from humwatch.explain.clips import ClipRef

if TYPE_CHECKING:
    from humwatch.explain.run import ExplainModel  # run.py imports this module

TITLES = {
    "spectrograms_linear": "Linear spectrograms",
    "spectrograms_mel": "Mel spectrograms",
    "tsne_label": "t-SNE: normal vs anomalous",
    "tsne_machine_id": "t-SNE: machine ids",
    "attention_distance": "AST mean attention distance",
    "attention_maps": "AST attention beside CNN Grad-CAM",
}

CAPTIONS = {
    "spectrograms_linear": "Linear-frequency spectrograms (|STFT| in dB, 64 ms windows) of one normal (left) and one "
    "anomalous (right) clip of each machine type; frequency in Hz up to the Nyquist frequency (8 kHz), time in seconds.",
    "spectrograms_mel": "The same clips as mel spectrograms (128 mel bands, dB): the mel scale spends its resolution on "
    "the low frequencies, where most machine sound lies, and compresses the high ones.",
    "tsne_label": "t-SNE of the clip embeddings the run saved, one row per machine type, the transformer beside the CNN; "
    "blue normal, red anomalous. Anomalies lying apart from the normal cloud are the ones a neighbour-based detector "
    "(LOF) can find.",
    "tsne_machine_id": "The same t-SNE coloured by machine id: when the embeddings fall into one cluster per machine, "
    "the detector can compare a clip with its own machine's normal sound.",
    "attention_distance": "Mean attention distance of every head (dots) in every AST layer: the attention-weighted "
    "distance in input pixels between a patch and the patches it attends to, averaged over patches and clips (class "
    "tokens left out, attention renormalised over the patches). Small distances are local, convolution-like heads; "
    "large ones integrate over the whole clip, which a CNN's early layers cannot do. The dashed line is the distance "
    "of uniform attention (what an untrained head does).",
    "attention_maps": "For one anomalous clip per machine type (at most four): left, the AST's attention rollout "
    "(the class tokens' attention over the patches through all layers) over the AST input; right, Grad-CAM of the "
    "CNN's last block (layer4, target: the embedding's norm) over the CNN input. Red: where the model looks most, "
    "blue: least; each map is resized to its input and scaled to [0, 1] (the colour bar). The AST panel shows only "
    "the clip's own frames: the zero padding that fills its 1024-frame input past the clip's end is cropped (it "
    "drew a stripe at the right edge). attention_maps.npz holds every map (a middle and the last layer too), uncropped.",
}


def _load(clip: ClipRef, settings: AudioSettings) -> np.ndarray:
    return load_audio(clip.path, settings)


def make_spectrogram_figures(rows: dict[str, list[ClipRef]], out_dir: Path, audio: AudioSettings, notes: list[str]) -> dict[str, Path]:
    """``spectrograms_linear.png`` and ``spectrograms_mel.png`` from {machine type: clips}."""
    from humwatch.explain._plot import save_figure
    from humwatch.explain.spectrograms import Panel, spectrogram_figure

    panels = []
    for clips in rows.values():
        row = []
        for c in clips:
            try:
                row.append(Panel(_load(c, AudioSettings(audio.sample_rate, None, audio.channel)), c.title))
            except HumwatchError as e:
                notes.append(f"spectrograms: {e}")
        if row:
            panels.append(row)
    if not panels:
        notes.append("spectrograms: no readable clips, figures skipped")
        return {}
    out = {}
    for kind in ("linear", "mel"):
        fig = spectrogram_figure(panels, kind, title=f"{kind} spectrograms: normal (left) vs anomalous (right)")
        out[f"spectrograms_{kind}"] = save_figure(fig, out_dir / f"spectrograms_{kind}.png")
    return out


def make_tsne_figures(run_dir: Path, out_dir: Path, notes: list[str], seed: int = 0, splits=None) -> tuple[dict[str, Path], dict]:
    """``tsne_label.png`` and ``tsne_machine_id.png`` from the run's saved embeddings (no model)."""
    from humwatch.explain._plot import save_figure
    from humwatch.explain.tsne import concat_tables, find_embedding_files, load_embeddings, tsne_figure, tsne_panels

    files = find_embedding_files(run_dir)
    if not files:
        notes.append(f"t-SNE: {run_dir} holds no embeddings/<backbone>.npz (only embedding runs save them); skipped")
        return {}, {}
    tables = []
    for name, fs in files.items():
        try:
            tables.append(concat_tables([load_embeddings(f, name) for f in fs]))
        except HumwatchError as e:
            notes.append(f"t-SNE: {e}")
    res = tsne_panels(tables, splits=splits, seed=seed)
    notes.extend(res.notes)
    if not res.panels:
        return {}, {}
    out = {
        "tsne_label": save_figure(tsne_figure(res, "label", "t-SNE of the embeddings: normal vs anomalous"), out_dir / "tsne_label.png"),
        "tsne_machine_id": save_figure(
            tsne_figure(res, "machine_id", "t-SNE of the embeddings: machine ids"), out_dir / "tsne_machine_id.png"
        ),
    }
    data = {
        "files": {k: [str(f) for f in v] for k, v in files.items()},
        "panels": [{"backbone": p.backbone, "machine_type": p.machine_type, "n": int(len(p.coords))} for p in res.panels],
    }
    return out, data


def attention_distance_figure(distances: np.ndarray, label: str, n_clips: int, uniform: float | None = None):
    """A dot per head, layers on the x-axis, mean attention distance (input pixels) on the y-axis;
    ``uniform``: the distance of uniform attention (the mean distance between patches), dashed."""
    from humwatch.explain._plot import pyplot

    plt = pyplot()
    d = np.asarray(distances)
    layers, heads = d.shape
    fig, ax = plt.subplots(figsize=(max(4.5, 0.5 * layers + 2), 3.6), constrained_layout=True)
    for h in range(heads):
        ax.scatter(np.arange(1, layers + 1), d[:, h], s=16, color="tab:blue", alpha=0.75, label="head" if h == 0 else None)
    ax.plot(np.arange(1, layers + 1), d.mean(1), color="black", lw=1, label="mean over heads")
    if uniform is not None:
        ax.axhline(uniform, color="gray", ls="--", lw=1, label="uniform attention")
    ax.set_ylim(0, 1.08 * max(float(d.max()), uniform or 0.0))
    ax.set_xlabel("layer")
    ax.set_ylabel("mean attention distance (input pixels)")
    ax.set_xticks(np.arange(1, layers + 1))
    ax.set_title(f"{label}: mean attention distance ({n_clips} clip{'s' if n_clips != 1 else ''})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


MAX_MAP_ROWS = 4
"""Clips (rows) in the attention-map figure: few, large panels."""
PANEL_INCHES = (6.4, 2.5)
"""Width and height of one attention-map panel."""


def ast_real_frames(n_samples: int, max_length: int) -> int:
    """How many of the AST input's ``max_length`` frames hold the clip (25 ms windows every 10 ms,
    no centring); the rest are zero padding, which the figure crops (:func:`humwatch.features.ast_features`)."""
    return int(min(max_length, max(1, 1 + (n_samples - 400) // 160)))


def attention_maps_figure(rows: list[dict]):
    """One row per clip: each entry ``{"title", "panels": [(name, input [F, T], map [F, T] or None, seconds)]}``;
    the maps (in [0, 1]) drawn over their inputs, one colour bar for all."""
    from humwatch.explain._plot import pyplot

    plt = pyplot()
    n_cols = max(len(r["panels"]) for r in rows)
    w, h = PANEL_INCHES
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(w * n_cols + 1.2, h * len(rows) + 0.9), squeeze=False, constrained_layout=True)
    heat_img = None
    for i, r in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            if j >= len(r["panels"]):
                ax.axis("off")
                continue
            name, inp, heat, seconds = r["panels"][j]
            extent = (0.0, seconds, 0, inp.shape[0])
            ax.imshow(inp, origin="lower", aspect="auto", cmap="gray", extent=extent)
            if heat is not None:
                heat_img = ax.imshow(heat, origin="lower", aspect="auto", cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, extent=extent)
            ax.set_title(f"{r['title']}: {name}")
            ax.set_ylabel("mel bin")
            if i == len(rows) - 1:
                ax.set_xlabel("time (s)")
    if heat_img is not None:
        fig.colorbar(heat_img, ax=axes, label="attention / Grad-CAM (each map scaled to [0, 1])", shrink=0.8, aspect=30)
    return fig


def _rescale(mp: np.ndarray) -> np.ndarray:
    lo, hi = float(mp.min()), float(mp.max())
    return (mp - lo) / (hi - lo) if hi > lo else np.zeros_like(mp)


def make_model_figures(
    models: Sequence[ExplainModel],
    distance_clips: Sequence[ClipRef],
    map_clips: Sequence[ClipRef],
    out_dir: Path,
    audio: AudioSettings,
    notes: list[str],
    rollout: bool = True,
    cam_layers: Sequence[str] = ("layer2", "layer4"),
) -> tuple[dict[str, Path], dict]:
    """``attention_distance.png`` and ``attention_maps.png`` (+ ``attention_maps.npz`` with the maps)."""
    from humwatch.explain._plot import save_figure
    from humwatch.explain.attention import PatchGrid, ast_attention_maps, attention_distances, find_ast_model, pairwise_distances
    from humwatch.explain.gradcam import gradcam_maps

    figures: dict[str, Path] = {}
    data: dict = {}
    asts = [m for m in models if m.kind == "ast"]
    cnns = [m for m in models if m.kind == "cnn"]
    signals: dict[str, np.ndarray] = {}

    def signal(c: ClipRef):
        if c.path not in signals:
            signals[c.path] = _load(c, audio)
        return signals[c.path]

    def readable(clips):
        ok = []
        for c in clips:
            try:
                signal(c)
                ok.append(c)
            except HumwatchError as e:
                notes.append(f"model figures: {e}")
        return ok

    distance_clips, map_clips = readable(distance_clips), readable(map_clips)
    if asts and distance_clips:
        m = asts[0]
        d = attention_distances(m.model, (m.frontend(signal(c)) for c in distance_clips))
        grid = PatchGrid.from_config(find_ast_model(m.model).config)
        uniform = float(pairwise_distances(grid.coords()).mean())
        data["attention_distance"] = {
            "backbone": m.name,
            "random_init": m.random_init,
            "clips": [c.path for c in distance_clips],
            "grid": [grid.f_dim, grid.t_dim],
            "uniform_pixels": round(uniform, 4),
            "pixels": np.round(d, 4).tolist(),
            "layers": int(d.shape[0]),
            "heads": int(d.shape[1]),
        }
        fig = attention_distance_figure(d, m.label, len(distance_clips), uniform)
        figures["attention_distance"] = save_figure(fig, out_dir / "attention_distance.png")
    elif not asts:
        notes.append("attention figures: no AST model, skipped")

    if map_clips and (asts or cnns):
        rows, arrays = [], {}
        if len(map_clips) > MAX_MAP_ROWS:
            notes.append(
                f"attention maps: the figure shows the first {MAX_MAP_ROWS} of {len(map_clips)} clips; attention_maps.npz holds all"
            )
        for k, c in enumerate(map_clips):
            panels = []
            y = signal(c)
            if asts:
                m = asts[0]
                x = m.frontend(y)  # [frames, mel bins], zero-padded to max_length
                grid = PatchGrid.from_config(find_ast_model(m.model).config)
                n = ast_real_frames(len(y), grid.max_length)
                maps = ast_attention_maps(m.model, x, rollout=rollout)
                for name, mp in maps.items():
                    arrays[f"clip{k}_ast_{name.replace(' ', '')}"] = mp
                shown = "rollout" if "rollout" in maps else list(maps)[-1]
                # only the clip's frames: the padding is one flat value the class tokens attend to
                # differently (a stripe at the right edge); the map is rescaled over the clip
                panels.append((f"AST {shown}", x.T[:, :n], _rescale(maps[shown][:, :n]), n * 0.01))
            if cnns:
                m = cnns[0]
                x = m.frontend(y)  # [3, mels, frames]
                seconds = len(y) / audio.sample_rate
                cams = gradcam_maps(m.model, x, layers=cam_layers)
                for name, mp in cams.items():
                    arrays[f"clip{k}_cnn_{name}"] = mp
                shown = list(cams)[-1]
                panels.append((f"{m.label.split(' ')[0]} Grad-CAM {shown}", x[0], cams[shown], seconds))
            if k < MAX_MAP_ROWS:
                rows.append({"title": f"{c.machine_type} {c.label_name}", "panels": panels})
        fig = attention_maps_figure(rows)
        labels = " / ".join(dict.fromkeys(m.label for m in (asts[:1] + cnns[:1])))
        fig.suptitle(f"What the models look at: {labels}")
        figures["attention_maps"] = save_figure(fig, out_dir / "attention_maps.png")
        from humwatch.io import atomic_path

        with atomic_path(out_dir / "attention_maps.npz", suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **{k: v.astype(np.float16) for k, v in arrays.items()})
        data["attention_maps"] = {"clips": [c.path for c in map_clips], "maps": sorted(arrays)}
    return figures, data
