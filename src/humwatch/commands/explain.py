"""`humwatch explain`: the study's pictures (spectrograms, t-SNE, attention distance, attention maps
beside Grad-CAM) and one self-contained report page.

A plain function with typer annotations; :mod:`humwatch.cli` registers it::

    app.command("explain")(explain_cmd)
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from humwatch.commands import options as o
from humwatch.errors import ConfigError
from humwatch.settings import Int


def parse_weights(values: Optional[List[str]], backbones: List[str]) -> "str | dict[str, str] | None":
    """``--weights W`` (every backbone) or ``--weights NAME=W`` (one backbone), repeatable."""
    if not values:
        return None
    per: dict[str, str] = {}
    every: Optional[str] = None
    for v in values:
        name, sep, w = v.partition("=")
        if sep and name in backbones:
            if not w:
                raise ConfigError(f"--weights {v}: no weights after '='")
            per[name] = w
        else:
            if every is not None:
                raise ConfigError(f"--weights given twice for every backbone ({every!r}, {v!r}); use NAME=W for one backbone")
            every = v
    if not per:
        return every
    if every is not None:
        per = {b: per.get(b, every) for b in backbones}
    return per


def explain_cmd(
    run: Optional[Path] = typer.Option(None, "--run", help="A run directory (humwatch run) or a reproduce directory."),
    clips: Optional[List[Path]] = typer.Option(
        None, "--clips", help="An audio file to explain (repeat the option, or list files after the options)."
    ),
    files: Optional[List[Path]] = typer.Argument(
        None, help="Audio files (same as --clips); or MONITOR CLIP...: why a monitor alarms on these clips.", show_default=False
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the PNGs and report.html (default: RUN/explain)."),
    backbone: Optional[List[str]] = typer.Option(
        None, "--backbone", help="Backbone(s) to explain (repeatable; default: ast and resnext101_32x8d)."
    ),
    weights: Optional[List[str]] = typer.Option(
        None,
        "--weights",
        help="Hub id, local dir/file or 'none', for every backbone or as NAME=W for one (repeatable; default: what the run used, else the study's).",
    ),
    tiny: bool = typer.Option(False, "--tiny", help="Tiny random-init models (quick pictures that say nothing about pretrained models)."),
    no_models: bool = typer.Option(
        False, "--no-models", help="No model figures: only tables, spectrograms and the t-SNE of saved embeddings."
    ),
    distance_clips: int = typer.Option(
        8, "--distance-clips", help="Clips the attention distances are averaged over.", callback=o.checked(Int(1), "--distance-clips")
    ),
    map_clips: int = typer.Option(
        4, "--map-clips", help="Clips (rows) in the attention-map figure.", callback=o.checked(Int(1), "--map-clips")
    ),
    rollout: bool = typer.Option(True, "--rollout/--no-rollout", help="Add the attention-rollout map."),
    channel: Optional[int] = typer.Option(None, help="Use one microphone instead of the mean of all channels (--clips)."),
    link_images: bool = typer.Option(False, "--link-images", help="Link the PNGs beside report.html instead of embedding them."),
    seed: int = typer.Option(0, help="Seed for picking clips and for t-SNE."),
    device: o.Device = "auto",
):
    """Draw what the models see and write report.html (opens from disk, no network)."""
    from rich.console import Console

    from humwatch.explain.run import DEFAULT_BACKBONES, explain_clips, explain_run
    from humwatch.models import TINY_CONFIGS

    con = Console()
    if files and files[0].is_dir() and (files[0] / "monitor.json").is_file():
        return _explain_alarms(files[0], list(files[1:]) + list(clips or []), out, device, con)
    paths = list(clips or []) + list(files or [])
    if run is None and not paths:
        raise ConfigError("give --run RUN_DIR or audio files (--clips FILE ...)")
    if run is not None and paths:
        raise ConfigError("use --run or --clips, not both")
    backbones = list(backbone) if backbone else list(DEFAULT_BACKBONES)
    w = parse_weights(weights, backbones)
    configs = None
    if tiny:
        if w is not None and w != "none":
            raise ConfigError("--tiny uses random-init models; leave out --weights (or pass --weights none)")
        w = "none"
        configs = {b: dict(TINY_CONFIGS[b]) for b in backbones if b in TINY_CONFIGS}
    common = dict(
        backbones=backbones,
        weights=w,
        configs=configs,
        use_models=not no_models,
        rollout=rollout,
        embed_images=not link_images,
        n_map_clips=map_clips,
        device=device,
    )
    if run is not None:
        res = explain_run(run, out, n_distance_clips=distance_clips, seed=seed, **common)
    else:
        if out is None:
            raise ConfigError("--out is required with --clips")
        res = explain_clips(paths, out, channel=channel, **common)
    for n in res.notes:
        con.print(f"note: {n}", markup=False, highlight=False)
    for m in res.data.get("models", []):
        if m.get("random_init"):
            con.print(f"[bold red]{m['name']}: RANDOM INIT (no pretrained weights)[/]")
    for name, p in res.figures.items():
        con.print(f"{name}: {p}")
    con.print(f"report: {res.report}")


def _explain_alarms(monitor: Path, paths: List[Path], out: Optional[Path], device: str, con) -> None:
    """`humwatch explain MONITOR CLIP...`: one "why did it alarm" figure and summary line per clip."""
    from humwatch.explain.alarm import explain_alarm
    from humwatch.io import check_out_file
    from humwatch.monitor import load_monitor

    if not paths:
        raise ConfigError(f"give the clip(s) to explain after the monitor: humwatch explain {monitor} CLIP.wav")
    folder = out or Path(".")
    for p in paths:  # every figure's place checked before any work
        check_out_file(folder / f"{p.stem}_why.png", ".png", inputs=[monitor, *paths])
    mon = load_monitor(monitor, device=device)
    for p in paths:
        res = explain_alarm(mon, p, folder / f"{p.stem}_why.png")
        con.print(f"{p}: {res.summary}", markup=False, highlight=False)
        con.print(f"  figure: {res.path}")


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_cmd)
