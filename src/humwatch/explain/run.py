"""`humwatch explain`: a run's (or some clips') pictures and one report page.

:func:`explain_run` reads a run directory (or a reproduce directory holding several runs) and writes
into ``out_dir``:

* ``spectrograms_linear.png``, ``spectrograms_mel.png`` - a normal and an anomalous test clip of each
  machine type side by side (needs the run's audio files);
* ``tsne_label.png``, ``tsne_machine_id.png`` - t-SNE of the run's saved embeddings (no model time);
* ``attention_distance.png`` - AST's mean attention distance per head and layer;
* ``attention_maps.png`` - AST attention rollout beside Grad-CAM of the CNN's last block for one
  anomalous clip per machine type (at most four; ``attention_maps.npz`` holds every map);
* ``explain.json`` (the numbers behind the model figures and the notes) and ``report.html``.

:func:`explain_clips` does the same for a list of audio files (no tables, no t-SNE).
A figure that cannot be made (no audio files, no embeddings, no model weights) is skipped with a
note in the report instead of stopping the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from humwatch.audio import AudioSettings
from humwatch.errors import ConfigError, HumwatchError
from humwatch.explain.clips import ClipRef, clip_from_path, clips_from_run, pick_clips, pick_examples
from humwatch.explain.figures import CAPTIONS, TITLES, make_model_figures, make_spectrogram_figures, make_tsne_figures
from humwatch.explain.report import Figure, Section, table_sections, write_report
from humwatch.io import check_out_folder, mark_folder
from humwatch.models.weights import random_init_warning
from humwatch.rundir import RunDir

log = logging.getLogger("humwatch")

DEFAULT_BACKBONES = ("ast", "resnext101_32x8d")

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
        from humwatch.explain.tsne import display_name

        return display_name(self.name) + (" (RANDOM INIT)" if self.random_init else "")


def as_explain_model(name: str, obj, random_init: bool | None = None) -> ExplainModel:
    """Wrap a Backbone, an ``ASTModel``, a timm ResNet(-like) module, or an :class:`ExplainModel`."""
    from humwatch.explain.attention import find_ast_model
    from humwatch.explain.gradcam import find_resnet
    from humwatch.features import get_frontend

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
            from humwatch.explain.attention import PatchGrid

            grid = PatchGrid.from_config(find_ast_model(obj).config)
            frontend = get_frontend("ast") if grid.max_length == 1024 else get_frontend("ast", max_length=grid.max_length)
        else:
            frontend = get_frontend("cnn")
    w = getattr(obj, "weights", None)
    if random_init is None and w is not None:
        random_init = getattr(w, "random_init", None)
    desc = w.describe() if w is not None and hasattr(w, "describe") else ("RANDOM INIT" if random_init else "")
    return ExplainModel(name, obj, kind, frontend, random_init, desc)


def build_model(
    name: str, weights: str = "default", config: dict | None = None, precision: str = "fp32", device: str = "cpu"
) -> ExplainModel:
    """Build backbone ``name`` with :func:`humwatch.models.create_backbone` (AST with eager attention)."""
    try:
        from humwatch.models import create_backbone
    except ImportError as e:  # pragma: no cover - the models package is part of humwatch
        raise ConfigError(f"backbones are not available ({e})") from None
    if name.lower().startswith("ast"):
        try:  # eager attention returns the weights (the figures switch a model to eager anyway)
            bb = create_backbone(name, weights=weights, precision=precision, config=config, attention="eager", device=device)
        except ConfigError as e:
            if "attention" not in str(e):
                raise
            bb = create_backbone(name, weights=weights, precision=precision, config=config, device=device)
    else:
        bb = create_backbone(name, weights=weights, precision=precision, config=config, device=device)
    return as_explain_model(name, bb)


def _run_backbone_settings(run_dir: Path | None) -> dict[str, dict]:
    """{backbone: {weights, config}} of the embedding runs at and below ``run_dir``."""
    found: dict[str, dict] = {}
    for rd in RunDir.find(run_dir) if run_dir is not None else []:
        for name, spec in rd.backbones().items():
            found.setdefault(name, spec)
    return found


@dataclass
class ExplainResult:
    """What :func:`explain_run` / :func:`explain_clips` wrote."""

    out_dir: Path
    report: Path
    figures: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- entry points


def _check_backbones(backbones: Sequence[str]) -> None:
    from humwatch.models import list_backbones

    unknown = [b for b in backbones if b not in list_backbones()]
    if unknown:
        raise ConfigError(f"unknown backbone {unknown[0]!r} (choose from {', '.join(list_backbones())})")


def _resolve_models(
    models: Mapping[str, Any] | None,
    backbones: Sequence[str],
    weights: str | Mapping[str, str] | None,
    configs: Mapping[str, dict] | None,
    run_dir: Path | None,
    notes: list[str],
    device: str = "cpu",
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
            out.append(build_model(name, w, cfg, device=device))
        except HumwatchError as e:
            notes.append(f"{name}: not loaded, its figures are skipped ({e})")
    return out


def _banner(models: Sequence[ExplainModel], run_dir: Path | None) -> str:
    random = [m.name for m in models if m.random_init]
    runs = [rd.name for rd in (RunDir.find(run_dir) if run_dir is not None else []) if rd.random_init]
    if runs:
        random.append(f"the run in {runs[0]}/" if len(runs) == 1 else f"{len(runs)} runs ({runs[0]}/, ...)")
    if not random:
        return ""
    return random_init_warning(", ".join(dict.fromkeys(random)))


def _finish(
    out_dir: Path, title: str, sections: list[Section], figures: dict[str, Path], notes: list[str], data: dict, banner: str, embed: bool
) -> ExplainResult:
    from humwatch.io import write_json

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


def _check_out(out_dir: Path, inputs, hosts=()) -> None:
    """An explain folder: new, empty, or one humwatch's explain wrote (report.html and the figures
    replace theirs), never a folder of other files, never one of the inputs."""
    check_out_folder(out_dir, replace=False, kind="explain", inputs=inputs, hosts=hosts, legacy=("explain.json",))


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
    device: str = "cpu",
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
    _check_out(out_dir, [run_dir], hosts=[run_dir])  # the figures may go inside the run, never over it
    if use_models and models is None:
        _check_backbones(backbones)
    sections = table_sections(run_dir)
    if not sections and not RunDir.find(run_dir):
        raise ConfigError(f"{run_dir}: holds no run (results.json) and no reproduce table (table3.md)")
    mark_folder(out_dir, "explain")
    notes: list[str] = []
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
        loaded = _resolve_models(models, backbones, weights, configs, run_dir, notes, device)
        if loaded:
            anomalous = [c for c in clips if c.label == 1]
            examples = pick_examples(anomalous or clips, seed)
            map_clips = [cs[0] for cs in examples.values()][:n_map_clips]
            mfig, mdata = make_model_figures(loaded, pick_clips(clips, n_distance_clips, seed), map_clips, out_dir, audio, notes, rollout)
            figures.update(mfig)
            data.update(mdata)
    data["models"] = [{"name": m.name, "kind": m.kind, "weights": m.weights, "random_init": m.random_init} for m in loaded]
    return _finish(
        out_dir, title or f"humwatch report: {run_dir.name}", sections, figures, notes, data, _banner(loaded, run_dir), embed_images
    )


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
    title: str = "humwatch report: clips",
    device: str = "cpu",
) -> ExplainResult:
    """Spectrograms, attention distances and attention/Grad-CAM maps of some audio files."""
    if not clip_paths:
        raise ConfigError("no clips given")
    out_dir = Path(out_dir)
    _check_out(out_dir, clip_paths)
    if use_models and models is None:
        _check_backbones(backbones)
    from humwatch.audio import load_audio
    from humwatch.data.clips import Clip
    from humwatch.explain.spectrograms import spectrogram
    from humwatch.reader import checked

    for p in clip_paths:  # an unusable clip is an error, not a note
        checked(lambda y: spectrogram(y).db, load_audio(p, AudioSettings(seconds=None, channel=channel)), Clip(str(p), "clip", "", 0))
    mark_folder(out_dir, "explain")
    notes: list[str] = []
    clips = [clip_from_path(p) for p in clip_paths]
    audio = AudioSettings(channel=channel)
    rows: dict[str, list[ClipRef]] = {}
    for c in sorted(clips, key=lambda c: (c.machine_type, c.label if c.label is not None else 2, c.path)):
        rows.setdefault(c.machine_type, []).append(c)
    rows = {k: v[:4] for k, v in rows.items()}
    table = "| file | machine type | id | label |\n|---|---|---|---|\n" + "\n".join(
        f"| {Path(c.path).name} | {c.machine_type} | {c.machine_id} | {c.label_name} |" for c in clips
    )
    sections = [
        Section("Clips", text="Machine type, id and label are read from the folder and file names where they say them.", markdown=table)
    ]
    figures = make_spectrogram_figures(rows, out_dir, audio, notes)
    data: dict = {"clips": [str(p) for p in clip_paths]}
    loaded: list[ExplainModel] = []
    if use_models:
        loaded = _resolve_models(models, backbones, weights, configs, None, notes, device)
        if loaded:
            mfig, mdata = make_model_figures(loaded, clips, clips[:n_map_clips], out_dir, audio, notes, rollout)
            figures.update(mfig)
            data.update(mdata)
    data["models"] = [{"name": m.name, "kind": m.kind, "weights": m.weights, "random_init": m.random_init} for m in loaded]
    return _finish(out_dir, title, sections, figures, notes, data, _banner(loaded, None), embed_images)


def _run_audio(run_dir: Path) -> AudioSettings:
    """The audio settings (the channel) of the first run at or below ``run_dir``."""
    runs = RunDir.find(run_dir)
    return runs[0].audio if runs else AudioSettings()
