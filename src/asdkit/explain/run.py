"""`asdkit explain`: a run's (or some clips') pictures and one report page.

:func:`explain_run` reads a run directory (or a reproduce directory holding several runs) and writes
into ``out_dir``:

* ``spectrograms_linear.png``, ``spectrograms_mel.png`` - a normal and an anomalous test clip of each
  machine type side by side (needs the run's audio files);
* ``tsne_label.png``, ``tsne_machine_id.png`` - t-SNE of the run's saved embeddings (no model time);
* ``attention_distance.png`` - AST's mean attention distance per head and layer;
* ``attention_maps.png`` - AST class-token attention (middle layer, last layer, rollout) beside
  Grad-CAM of the CNN (layer2, layer4) for one anomalous clip per machine type;
* ``explain.json`` (the numbers behind the model figures and the notes) and ``report.html``.

:func:`explain_clips` does the same for a list of audio files (no tables, no t-SNE).
A figure that cannot be made (no audio files, no embeddings, no model weights) is skipped with a
note in the report instead of stopping the rest.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from asdkit.audio import AudioSettings, load_audio
from asdkit.errors import AsdkitError, ConfigError
from asdkit.explain.report import Figure, Section, table_sections, write_report

log = logging.getLogger("asdkit")

DEFAULT_BACKBONES = ("ast", "resnext101_32x8d")
TINY_CONFIGS: dict[str, dict] = {
    "ast": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128),
    "resnext101_32x8d": dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], cardinality=4, base_width=32, stem_width=8),
}
"""Architecture overrides for quick random-init pictures (``--tiny``): the AST keeps the study's
input grid (128 x 1024, 12 x 101 patches), so its attention distances are in the same pixels."""

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
    "attention_maps": "For one anomalous clip per machine type: the AST input, the class tokens' attention over the "
    "patches (a middle layer, the last layer, attention rollout), then the CNN input with Grad-CAM of a middle block "
    "(layer2) and the last block (layer4), target: the embedding's norm. Each map is resized to its input and scaled "
    "to [0, 1] and drawn over the input spectrogram.",
}


# ----------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class ClipRef:
    """A clip to draw: its file, machine type and id, and label (None when not known)."""

    path: str
    machine_type: str = "clip"
    machine_id: str = ""
    label: int | None = None
    split: str = ""

    @property
    def label_name(self) -> str:
        return {0: "normal", 1: "anomalous"}.get(self.label, "unlabelled")

    @property
    def title(self) -> str:
        bits = [self.machine_type, self.machine_id, self.label_name, Path(self.path).name]
        return " / ".join(b for b in bits if b)


def clips_from_run(run_dir: str | Path) -> list[ClipRef]:
    """The clips a run used: its ``split.csv`` (or ``scores.csv``), merged over the run directories
    below ``run_dir`` (a reproduce directory's cells), each path once."""
    import csv

    from asdkit.data.clips import read_clips_csv
    from asdkit.explain.tsne import run_dirs

    seen: dict[str, ClipRef] = {}
    for d in run_dirs(run_dir):
        if (d / "split.csv").is_file():
            refs = [ClipRef(c.path, c.machine_type, c.machine_id, c.label, c.split) for c in read_clips_csv(d / "split.csv")]
        elif (d / "scores.csv").is_file():
            with open(d / "scores.csv", newline="", encoding="utf-8") as fh:
                refs = [ClipRef(r["file"], r.get("machine_type") or "clip", r.get("machine_id", ""), int(r["label"]), r.get("split") or "test")
                        for r in csv.DictReader(fh)]
        else:
            continue
        for r in refs:
            seen.setdefault(r.path, r)
    return list(seen.values())


def clip_from_path(path: str | Path) -> ClipRef:
    """Machine type, id and label guessed from a MIMII / DCASE / normal-abnormal folder path."""
    p = Path(path)
    parts = [s.lower() for s in p.parts]
    name = p.stem.lower()
    label = None
    if "abnormal" in parts[:-1] or "anomaly" in parts[:-1] or "anomalous" in parts[:-1] or "_anomaly_" in f"_{name}_":
        label = 1
    elif "normal" in parts[:-1] or "_normal_" in f"_{name}_":
        label = 0
    mid = next((s for s in reversed(p.parts[:-1]) if s.lower().startswith("id_")), "")
    if not mid and name.startswith("section_"):
        mid = "_".join(p.stem.split("_")[:2])
    mtype = "clip"
    if len(p.parts) >= 4 and mid and p.parts[-3] == mid:  # <machine>/id_XX/<label>/file.wav
        mtype = p.parts[-4]
    elif len(p.parts) >= 3 and p.parts[-2].lower() in ("train", "test", "normal", "abnormal", "anomaly", "anomalous"):
        mtype = p.parts[-3]
    return ClipRef(str(p), mtype, mid, label)


def pick_examples(clips: Sequence[ClipRef], seed: int = 0, prefer_split: str = "test") -> dict[str, list[ClipRef]]:
    """Per machine type: one normal and one anomalous clip (from ``prefer_split`` where it has them),
    of the same machine id where one has both, so the pair differs by the fault and not the product."""
    rng = random.Random(seed)
    out: dict[str, list[ClipRef]] = {}
    for mtype in sorted({c.machine_type for c in clips}):
        of_type = [c for c in clips if c.machine_type == mtype]
        both = sorted({c.machine_id for c in of_type if c.label == 0} & {c.machine_id for c in of_type if c.label == 1})
        if both:
            mid = rng.choice(both)
            of_type = [c for c in of_type if c.machine_id == mid]
        row = []
        for label in (0, 1):
            cands = [c for c in of_type if c.label == label]
            pref = [c for c in cands if c.split == prefer_split] or cands
            if pref:
                row.append(rng.choice(sorted(pref, key=lambda c: c.path)))
        if row:
            out[mtype] = row
    return out


def pick_clips(clips: Sequence[ClipRef], n: int, seed: int = 0) -> list[ClipRef]:
    """Up to ``n`` clips spread evenly over machine types and labels (test split first)."""
    rng = random.Random(seed)
    groups: dict[tuple, list[ClipRef]] = {}
    for c in sorted(clips, key=lambda c: (c.split != "test", c.path)):
        groups.setdefault((c.machine_type, c.label), []).append(c)
    for g in groups.values():
        test = [c for c in g if c.split == "test"]
        rest = [c for c in g if c.split != "test"]
        rng.shuffle(test)
        rng.shuffle(rest)
        g[:] = test + rest
    out: list[ClipRef] = []
    keys = sorted(groups, key=str)
    while len(out) < n and any(groups[k] for k in keys):
        for k in keys:
            if groups[k] and len(out) < n:
                out.append(groups[k].pop(0))
    return out


# ----------------------------------------------------------------------------- models


@dataclass
class ExplainModel:
    """A model to explain: ``kind`` is ``ast`` or ``cnn``; ``model`` a Backbone or torch module."""

    name: str
    model: Any
    kind: str
    frontend: Any
    random_init: bool | None = None
    weights: str = ""

    @property
    def label(self) -> str:
        from asdkit.explain.tsne import display_name

        return display_name(self.name) + (" (RANDOM INIT)" if self.random_init else "")


def as_explain_model(name: str, obj, random_init: bool | None = None) -> ExplainModel:
    """Wrap a Backbone, an ``ASTModel``, a timm ResNet(-like) module, or an :class:`ExplainModel`."""
    from asdkit.explain.attention import find_ast_model
    from asdkit.explain.gradcam import find_resnet
    from asdkit.features import get_frontend

    if isinstance(obj, ExplainModel):
        return obj
    if find_ast_model(obj, required=False) is not None:
        kind = "ast"
    elif find_resnet(obj, required=False) is not None:
        kind = "cnn"
    else:
        raise ConfigError(f"{name}: neither an AST nor a ResNet-type CNN; nothing to explain")
    frontend = getattr(obj, "frontend", None)
    if frontend is None:
        if kind == "ast":
            from asdkit.explain.attention import PatchGrid

            grid = PatchGrid.from_config(find_ast_model(obj).config)
            frontend = get_frontend("ast") if grid.max_length == 1024 else get_frontend("ast", max_length=grid.max_length)
        else:
            frontend = get_frontend("cnn")
    w = getattr(obj, "weights", None)
    if random_init is None and w is not None:
        random_init = getattr(w, "random_init", None)
    desc = w.describe() if w is not None and hasattr(w, "describe") else ("RANDOM INIT" if random_init else "")
    return ExplainModel(name, obj, kind, frontend, random_init, desc)


def build_model(name: str, weights: str = "default", config: dict | None = None, precision: str = "fp32") -> ExplainModel:
    """Build backbone ``name`` with :func:`asdkit.models.create_backbone` (AST with eager attention)."""
    try:
        from asdkit.models import create_backbone
    except ImportError as e:  # pragma: no cover - the models package is part of asdkit
        raise ConfigError(f"backbones are not available ({e})") from None
    if name.lower().startswith("ast"):
        try:  # eager attention returns the weights (the figures switch a model to eager anyway)
            bb = create_backbone(name, weights=weights, precision=precision, config=config, attention="eager")
        except ConfigError as e:
            if "attention" not in str(e):
                raise
            bb = create_backbone(name, weights=weights, precision=precision, config=config)
    else:
        bb = create_backbone(name, weights=weights, precision=precision, config=config)
    return as_explain_model(name, bb)


def _run_backbone_settings(run_dir: Path | None) -> dict[str, dict]:
    """{backbone: {weights, config}} of the embedding runs in ``run_dir`` (and one level below)."""
    from asdkit.explain.tsne import run_dirs

    found: dict[str, dict] = {}
    if run_dir is None:
        return found
    for d in run_dirs(run_dir):
        f = d / "config.json"
        if not f.is_file():
            continue
        try:
            cfg = json.loads(f.read_text(encoding="utf-8")).get("config", {})
        except ValueError:
            continue
        if cfg.get("method") == "embed-detect" and cfg.get("backbone"):
            found.setdefault(cfg["backbone"], {"weights": cfg.get("weights", "default"), "config": cfg.get("backbone_config")})
    return found


# ----------------------------------------------------------------------------- figures


@dataclass
class ExplainResult:
    """What :func:`explain_run` / :func:`explain_clips` wrote."""

    out_dir: Path
    report: Path
    figures: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)


def _load(clip: ClipRef, settings: AudioSettings) -> np.ndarray:
    return load_audio(clip.path, settings)


def make_spectrogram_figures(rows: dict[str, list[ClipRef]], out_dir: Path, audio: AudioSettings, notes: list[str]) -> dict[str, Path]:
    """``spectrograms_linear.png`` and ``spectrograms_mel.png`` from {machine type: clips}."""
    from asdkit.explain._plot import save_figure
    from asdkit.explain.spectrograms import Panel, spectrogram_figure

    panels = []
    for mtype, clips in rows.items():
        row = []
        for c in clips:
            try:
                row.append(Panel(_load(c, AudioSettings(audio.sample_rate, None, audio.channel)), c.title))
            except AsdkitError as e:
                notes.append(f"spectrograms: {e}")
        if row:
            panels.append(row)
    if not panels:
        notes.append("spectrograms: no readable clips, figures skipped")
        return {}
    out = {}
    for kind in ("linear", "mel"):
        fig = spectrogram_figure(panels, kind, title=f"{kind} spectrograms: normal (left) vs anomalous (right)")
        out[f"spectrograms_{kind}"] = save_figure(fig, out_dir / f"spectrograms_{kind}.png", dpi=70)
    return out


def make_tsne_figures(run_dir: Path, out_dir: Path, notes: list[str], seed: int = 0, splits=None) -> tuple[dict[str, Path], dict]:
    """``tsne_label.png`` and ``tsne_machine_id.png`` from the run's saved embeddings (no model)."""
    from asdkit.explain._plot import save_figure
    from asdkit.explain.tsne import concat_tables, find_embedding_files, load_embeddings, tsne_figure, tsne_panels

    files = find_embedding_files(run_dir)
    if not files:
        notes.append(f"t-SNE: {run_dir} holds no embeddings/<backbone>.npz (only embedding runs save them); skipped")
        return {}, {}
    tables = []
    for name, fs in files.items():
        try:
            tables.append(concat_tables([load_embeddings(f, name) for f in fs]))
        except AsdkitError as e:
            notes.append(f"t-SNE: {e}")
    res = tsne_panels(tables, splits=splits, seed=seed)
    notes.extend(res.notes)
    if not res.panels:
        return {}, {}
    out = {
        "tsne_label": save_figure(tsne_figure(res, "label", "t-SNE of the embeddings: normal vs anomalous"), out_dir / "tsne_label.png", dpi=70),
        "tsne_machine_id": save_figure(tsne_figure(res, "machine_id", "t-SNE of the embeddings: machine ids"), out_dir / "tsne_machine_id.png", dpi=70),
    }
    data = {"files": {k: [str(f) for f in v] for k, v in files.items()},
            "panels": [{"backbone": p.backbone, "machine_type": p.machine_type, "n": int(len(p.coords))} for p in res.panels]}
    return out, data


def attention_distance_figure(distances: np.ndarray, label: str, n_clips: int, uniform: float | None = None):
    """A dot per head, layers on the x-axis, mean attention distance (input pixels) on the y-axis;
    ``uniform``: the distance of uniform attention (the mean distance between patches), dashed."""
    from asdkit.explain._plot import pyplot

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
    ax.set_title(f"{label}: mean attention distance ({n_clips} clip{'s' if n_clips != 1 else ''})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def attention_maps_figure(rows: list[dict]):
    """One row per clip: each entry ``{"title", "panels": [(name, input [F, T], map [F, T] or None, seconds)]}``."""
    from asdkit.explain._plot import pyplot

    plt = pyplot()
    n_cols = max(len(r["panels"]) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.6 * n_cols, 1.9 * len(rows) + 0.4), squeeze=False, constrained_layout=True)
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
                ax.imshow(heat, origin="lower", aspect="auto", cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, extent=extent)
            ax.set_title(name, fontsize=7)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(f"{r['title']}\nmel bin", fontsize=7)
            if i == len(rows) - 1:
                ax.set_xlabel("time (s)", fontsize=7)
    return fig


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
    from asdkit.explain._plot import save_figure
    from asdkit.explain.attention import PatchGrid, ast_attention_maps, attention_distances, find_ast_model, pairwise_distances
    from asdkit.explain.gradcam import gradcam_maps

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
            except AsdkitError as e:
                notes.append(f"model figures: {e}")
        return ok

    distance_clips, map_clips = readable(distance_clips), readable(map_clips)
    if asts and distance_clips:
        m = asts[0]
        d = attention_distances(m.model, (m.frontend(signal(c)) for c in distance_clips))
        grid = PatchGrid.from_config(find_ast_model(m.model).config)
        uniform = float(pairwise_distances(grid.coords()).mean())
        data["attention_distance"] = {"backbone": m.name, "random_init": m.random_init, "clips": [c.path for c in distance_clips],
                                      "grid": [grid.f_dim, grid.t_dim], "uniform_pixels": round(uniform, 4),
                                      "pixels": np.round(d, 4).tolist(), "layers": int(d.shape[0]), "heads": int(d.shape[1])}
        fig = attention_distance_figure(d, m.label, len(distance_clips), uniform)
        figures["attention_distance"] = save_figure(fig, out_dir / "attention_distance.png", dpi=80)
    elif not asts:
        notes.append("attention figures: no AST model, skipped")

    if map_clips and (asts or cnns):
        rows, arrays = [], {}
        for k, c in enumerate(map_clips):
            panels = []
            y = signal(c)
            if asts:
                m = asts[0]
                x = m.frontend(y)  # [frames, mel bins]
                grid = PatchGrid.from_config(find_ast_model(m.model).config)
                seconds = grid.max_length * 0.01  # 10 ms frame shift
                maps = ast_attention_maps(m.model, x, rollout=rollout)
                inp = x.T  # [mel bins, frames]
                panels.append((f"{m.label} input", inp, None, seconds))
                for name, mp in maps.items():
                    panels.append((f"AST {name}", inp, mp, seconds))
                    arrays[f"clip{k}_ast_{name.replace(' ', '')}"] = mp
            if cnns:
                m = cnns[0]
                x = m.frontend(y)  # [3, mels, frames]
                seconds = len(y) / audio.sample_rate
                cams = gradcam_maps(m.model, x, layers=cam_layers)
                panels.append((f"{m.label} input", x[0], None, seconds))
                for name, mp in cams.items():
                    panels.append((f"Grad-CAM {name}", x[0], mp, seconds))
                    arrays[f"clip{k}_cnn_{name}"] = mp
            rows.append({"title": f"{c.machine_type} {c.label_name}", "panels": panels})
        figures["attention_maps"] = save_figure(attention_maps_figure(rows), out_dir / "attention_maps.png", dpi=64)
        from asdkit.io import atomic_path

        with atomic_path(out_dir / "attention_maps.npz", suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **{k: v.astype(np.float16) for k, v in arrays.items()})
        data["attention_maps"] = {"clips": [c.path for c in map_clips], "maps": sorted(arrays)}
    return figures, data


# ----------------------------------------------------------------------------- entry points


def _resolve_models(
    models: Mapping[str, Any] | None,
    backbones: Sequence[str],
    weights: str | Mapping[str, str] | None,
    configs: Mapping[str, dict] | None,
    run_dir: Path | None,
    notes: list[str],
) -> list[ExplainModel]:
    if models is not None:
        return [as_explain_model(n, o) for n, o in models.items()]
    from_run = _run_backbone_settings(run_dir)
    out = []
    for name in backbones:
        if isinstance(weights, Mapping):
            w = weights.get(name)
        else:
            w = weights
        cfg = (configs or {}).get(name)
        if w is None:
            w = from_run.get(name, {}).get("weights", "default")
        if cfg is None:
            cfg = from_run.get(name, {}).get("config")
        try:
            out.append(build_model(name, w, cfg))
        except AsdkitError as e:
            notes.append(f"{name}: not loaded, its figures are skipped ({e})")
    return out


def _banner(models: Sequence[ExplainModel], run_dir: Path | None) -> str:
    from asdkit.explain.tsne import run_dirs

    random = [m.name for m in models if m.random_init]
    runs = []
    for d in run_dirs(run_dir) if run_dir is not None else []:
        f = d / "results.json"
        try:
            if f.is_file() and json.loads(f.read_text(encoding="utf-8")).get("random_init"):
                runs.append(d.name)
        except ValueError:
            pass
    if runs:
        random.append(f"the run in {runs[0]}/" if len(runs) == 1 else f"{len(runs)} runs ({runs[0]}/, ...)")
    if not random:
        return ""
    return ("RANDOM INIT: " + ", ".join(dict.fromkeys(random)) + " had no pretrained weights; these pictures and numbers "
            "say nothing about the pretrained models.")


def _finish(out_dir: Path, title: str, sections: list[Section], figures: dict[str, Path], notes: list[str], data: dict,
            banner: str, embed: bool) -> ExplainResult:
    from asdkit.io import write_json

    captions = {
        "Spectrograms": ["spectrograms_linear", "spectrograms_mel"],
        "t-SNE of the embeddings": ["tsne_label", "tsne_machine_id"],
        "What the models look at": ["attention_distance", "attention_maps"],
    }
    for title_, keys in captions.items():
        figs = [Figure(figures[k].name, CAPTIONS[k], TITLES[k]) for k in keys if k in figures]
        if figs:
            sections.append(Section(title_, figures=figs))
    if notes:
        sections.append(Section("Notes", markdown="\n".join(f"- {n}" for n in notes)))
    report = write_report(out_dir, sections, title=title, banner=banner, embed=embed)
    write_json(out_dir / "explain.json", {"figures": {k: v.name for k, v in figures.items()}, "notes": notes, **data})
    return ExplainResult(out_dir, report, figures, notes, data)


def explain_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    models: Mapping[str, Any] | None = None,
    backbones: Sequence[str] = DEFAULT_BACKBONES,
    weights: str | Mapping[str, str] | None = None,
    configs: Mapping[str, dict] | None = None,
    use_models: bool = True,
    n_distance_clips: int = 8,
    n_map_clips: int = 4,
    rollout: bool = True,
    seed: int = 0,
    embed_images: bool = True,
    title: str | None = None,
) -> ExplainResult:
    """Figures and ``report.html`` for a run (or reproduce) directory; returns what was written.

    ``out_dir`` defaults to ``run_dir/explain``. Models: ``models`` ({name: Backbone or module},
    e.g. ones already loaded), else each of ``backbones`` is built with ``weights`` (one value for
    all, or {name: weights}; default: what the run used, else the study's default) and ``configs``
    ({name: architecture overrides}); ``use_models=False`` skips the model figures (then nothing
    but files is read: tables, audio for the spectrograms, saved embeddings for the t-SNE).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "explain"
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    sections = table_sections(run_dir)
    if not sections:
        notes.append(f"{run_dir}: no results.md / results.json / table3.md found")
    audio = _run_audio(run_dir)
    clips = clips_from_run(run_dir)
    if not clips:
        notes.append(f"{run_dir}: no split.csv or scores.csv, so no clips to draw")
    figures: dict[str, Path] = {}
    data: dict = {"run_dir": str(run_dir)}
    if clips:
        figures.update(make_spectrogram_figures(pick_examples(clips, seed), out_dir, audio, notes))
    tfig, tdata = make_tsne_figures(run_dir, out_dir, notes, seed)
    figures.update(tfig)
    if tdata:
        data["tsne"] = tdata
    loaded: list[ExplainModel] = []
    if use_models and clips:
        loaded = _resolve_models(models, backbones, weights, configs, run_dir, notes)
        if loaded:
            anomalous = [c for c in clips if c.label == 1]
            examples = pick_examples(anomalous or clips, seed)
            map_clips = [cs[0] for cs in examples.values()][:n_map_clips]
            mfig, mdata = make_model_figures(loaded, pick_clips(clips, n_distance_clips, seed), map_clips, out_dir, audio, notes, rollout)
            figures.update(mfig)
            data.update(mdata)
    data["models"] = [{"name": m.name, "kind": m.kind, "weights": m.weights, "random_init": m.random_init} for m in loaded]
    return _finish(out_dir, title or f"asdkit report: {run_dir.name}", sections, figures, notes, data, _banner(loaded, run_dir), embed_images)


def explain_clips(
    clip_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    models: Mapping[str, Any] | None = None,
    backbones: Sequence[str] = DEFAULT_BACKBONES,
    weights: str | Mapping[str, str] | None = None,
    configs: Mapping[str, dict] | None = None,
    use_models: bool = True,
    n_map_clips: int = 4,
    rollout: bool = True,
    channel: int | None = None,
    embed_images: bool = True,
    title: str = "asdkit report: clips",
) -> ExplainResult:
    """Spectrograms, attention distances and attention/Grad-CAM maps of some audio files."""
    if not clip_paths:
        raise ConfigError("no clips given")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    clips = [clip_from_path(p) for p in clip_paths]
    audio = AudioSettings(channel=channel)
    rows: dict[str, list[ClipRef]] = {}
    for c in sorted(clips, key=lambda c: (c.machine_type, c.label if c.label is not None else 2, c.path)):
        rows.setdefault(c.machine_type, []).append(c)
    rows = {k: v[:4] for k, v in rows.items()}
    table = "| file | machine type | id | label |\n|---|---|---|---|\n" + "\n".join(
        f"| {Path(c.path).name} | {c.machine_type} | {c.machine_id} | {c.label_name} |" for c in clips)
    sections = [Section("Clips", text="Machine type, id and label are read from the folder and file names where they say them.", markdown=table)]
    figures = make_spectrogram_figures(rows, out_dir, audio, notes)
    data: dict = {"clips": [str(p) for p in clip_paths]}
    loaded: list[ExplainModel] = []
    if use_models:
        loaded = _resolve_models(models, backbones, weights, configs, None, notes)
        if loaded:
            mfig, mdata = make_model_figures(loaded, clips, clips[:n_map_clips], out_dir, audio, notes, rollout)
            figures.update(mfig)
            data.update(mdata)
    data["models"] = [{"name": m.name, "kind": m.kind, "weights": m.weights, "random_init": m.random_init} for m in loaded]
    return _finish(out_dir, title, sections, figures, notes, data, _banner(loaded, None), embed_images)


def _run_audio(run_dir: Path) -> AudioSettings:
    """The audio settings of the run (its channel), from config.json."""
    from asdkit.explain.tsne import run_dirs

    for d in run_dirs(run_dir):
        f = d / "config.json"
        if f.is_file():
            try:
                ch = json.loads(f.read_text(encoding="utf-8")).get("config", {}).get("channel")
            except ValueError:
                continue
            return AudioSettings(channel=ch if isinstance(ch, int) else None)
    return AudioSettings()
