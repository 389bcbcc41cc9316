"""The `asdkit` command line. Every command is a thin call into the library; every user error is
one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from asdkit.commands.options import BACKBONE_CONFIG_HELP, csv_list as _csv_list, json_dict as _json_dict
from asdkit.errors import AsdkitError, ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="asdkit: tell from a machine's sound whether it is healthy.",
)


def _out():
    from rich.console import Console

    return Console()


def default_cache_dir() -> Path:
    """Where the command line caches embeddings: $ASDKIT_CACHE, else ~/.cache/asdkit."""
    import os

    return Path(os.environ.get("ASDKIT_CACHE") or Path.home() / ".cache" / "asdkit")


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write the MIMII-layout tree into."),
    machines: str = typer.Option("fan,pump,valve,slider", help="Machine types, comma separated."),
    ids: str = typer.Option("00,02,04,06", help="Machine ids, comma separated."),
    normal: int = typer.Option(40, help="Normal clips per machine id."),
    anomalous: int = typer.Option(12, help="Anomalous clips per machine id."),
    snr: float = typer.Option(6.0, help="Machine-to-background SNR in dB (MIMII: 6, 0, -6)."),
    seed: int = typer.Option(0, help="Random seed: the same seed writes the same bytes."),
    seconds: float = typer.Option(10.0, help="Clip length in seconds."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Generate physically motivated machine sounds in the MIMII layout (the built-in data)."""
    from asdkit.data.synth import synthesize

    clips = synthesize(
        out, machines=_csv_list(machines), ids=_csv_list(ids), n_normal=normal, n_anomalous=anomalous,
        snr_db=snr, seed=seed, seconds=seconds, progress=not quiet,
    )
    n_anom = sum(c.label for c in clips)
    _out().print(f"wrote {len(clips)} clips ({len(clips) - n_anom} normal, {n_anom} anomalous) to {out}")


@app.command()
def features(
    file: Path = typer.Argument(..., help="An audio file."),
    frontend: str = typer.Option("ae", help="ae (autoencoder), cnn (ResNeXt) or ast (AST)."),
    out: Path = typer.Option(..., "--out", help="Where to write the .npy array."),
    channel: Optional[int] = typer.Option(None, help="Use one channel instead of the mean of all."),
):
    """Export a clip's model input (log-mel features) as a .npy array."""
    import numpy as np

    from asdkit.audio import AudioSettings, load_audio
    from asdkit.features import get_frontend
    from asdkit.io import atomic_path

    fe = get_frontend(frontend)
    notes: list[str] = []
    x = fe(load_audio(file, AudioSettings(channel=channel), notes=notes))
    with atomic_path(out, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, x)
    for n in notes:
        _out().print(f"note: {n}")
    _out().print(f"{file}: {frontend} features {tuple(x.shape)} -> {out}")


def _print_results(result) -> None:
    from rich.table import Table

    t = Table(title=f"asdkit run: {result.info['label']}")
    for col in ("machine type", "id", "AUC", "pAUC", "normal", "anomalous"):
        t.add_column(col, justify="right" if col not in ("machine type", "id") else "left")
    for r in result.rows:
        fmt = lambda v: "n/a" if v != v else f"{v:.4f}"  # noqa: E731  (NaN when a group lacks a class)
        t.add_row(r["machine_type"], r["machine_id"], fmt(r["auc"]), fmt(r["pauc"]), str(r["n_normal"]), str(r["n_anomalous"]))
    con = _out()
    con.print(t)
    if result.info.get("random_init"):
        con.print(f"[bold red]{result.info['weights']}[/]")
    if result.skipped:
        con.print(f"[yellow]skipped {len(result.skipped)} bad file(s); see results.json[/]")


@app.command()
def run(
    data: Path = typer.Option(..., "--data", help="Dataset root (MIMII, DCASE, a normal/abnormal folder) or a CSV manifest."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    method: str = typer.Option("autoencoder", help="autoencoder or embed-detect."),
    layout: str = typer.Option("auto", help="auto, mimii, dcase, folder or csv."),
    machines: Optional[str] = typer.Option(None, help="Only these machine types (comma separated)."),
    ids: Optional[str] = typer.Option(None, help="Only these machine ids (comma separated, e.g. 00,02)."),
    snr: Optional[str] = typer.Option(None, help="MIMII noise level when the tree holds several (6dB, 0dB, -6dB, or all)."),
    per_id: bool = typer.Option(False, "--per-id", help="Train one model per machine id (the MIMII baseline) instead of one per type."),
    seed: int = typer.Option(0, help="Seed for the split and the models."),
    split: Optional[Path] = typer.Option(None, help="Reuse a saved split.csv instead of splitting."),
    channel: Optional[int] = typer.Option(None, help="Use one microphone instead of the mean of all channels."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable files (counted in the results) instead of stopping."),
    epochs: int = typer.Option(50, help="Autoencoder epochs."),
    backbone: str = typer.Option("ast", help="Embedding backbone (embed-detect)."),
    weights: str = typer.Option("default", help="Hub id, local dir/file, or 'none' for random initialisation."),
    precision: str = typer.Option("fp32", help="fp32 or bf16 (autocast on CPU)."),
    backbone_config: Optional[str] = typer.Option(None, help=BACKBONE_CONFIG_HELP),
    detector: str = typer.Option("lof-vote", help="lof-vote, lof, knn, mahalanobis, gmm, iforest."),
    standardize: bool = typer.Option(False, "--standardize", help="Standardise embeddings before the detector."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache folder (default: $ASDKIT_CACHE or ~/.cache/asdkit)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Run one method over a dataset: results.json, results.md, scores.csv and split.csv in OUT."""
    from asdkit.pipeline import RunConfig, run as run_pipeline

    cfg = RunConfig(
        data=str(data), method=method, layout=layout, machines=_csv_list(machines), ids=_csv_list(ids), snr=snr,
        per_id=per_id, seed=seed, split_csv=str(split) if split else None, channel=channel, skip_bad=skip_bad,
        epochs=epochs, backbone=backbone, weights=weights, precision=precision, detector=detector,
        backbone_config=_json_dict(backbone_config, '--backbone-config'),
        standardize=standardize, cache_dir=str(cache or default_cache_dir()),
    )
    result = run_pipeline(cfg, out, progress=not quiet)
    _print_results(result)
    _out().print(f"results in {out}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the data, the table and the report go."),
    normal: int = typer.Option(30, help="Normal clips per machine id."),
    anomalous: int = typer.Option(10, help="Anomalous clips per machine id."),
    epochs: int = typer.Option(50, help="Autoencoder epochs (the study's 50)."),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """The study end to end on generated data (no downloads): Table III and report.html."""
    from asdkit.commands.reproduce import print_table3
    from asdkit.demo import run_demo

    table = run_demo(out, n_normal=normal, n_anomalous=anomalous, epochs=epochs, seed=seed, progress=not quiet)
    print_table3(table)
    con = _out()
    con.print(f"table in {Path(out) / 'table3.md'} (also .csv, .json); {table.meta['seconds']:.0f} s")
    report = Path(out) / "explain" / "report.html"
    if report.is_file():
        con.print(f"report: {report}")
    if table.failed:
        con.print(f"[bold red]{len(table.failed)} cell(s) failed; run the same command again to retry them[/]")
        raise typer.Exit(1)


@app.command()
def embed(
    data: Path = typer.Option(..., "--data", help="Dataset root or CSV manifest."),
    backbone: str = typer.Option(..., help="ast or resnext101_32x8d."),
    out: Path = typer.Option(..., "--out", help="Where to write the .npz (X, path, label, machine_type, machine_id, split)."),
    weights: str = typer.Option("default", help="Hub id, local dir/file, or 'none' for random initialisation."),
    precision: str = typer.Option("fp32", help="fp32 or bf16 (autocast on CPU)."),
    backbone_config: Optional[str] = typer.Option(None, help=BACKBONE_CONFIG_HELP),
    layout: str = typer.Option("auto", help="auto, mimii, dcase, folder or csv."),
    machines: Optional[str] = typer.Option(None, help="Only these machine types."),
    ids: Optional[str] = typer.Option(None, help="Only these machine ids."),
    snr: Optional[str] = typer.Option(None, help="MIMII noise level when the tree holds several."),
    batch_size: int = typer.Option(8, help="Clips per forward pass."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache folder (default: $ASDKIT_CACHE or ~/.cache/asdkit)."),
    channel: Optional[int] = typer.Option(None, help="Use one microphone instead of the mean."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable files instead of stopping."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Embed every clip of a dataset with a backbone (batched, cached on disk)."""
    from asdkit.audio import AudioSettings
    from asdkit.data import load_dataset
    from asdkit.embed import embed_clips
    from asdkit.models import create_backbone

    if not str(out).endswith(".npz"):
        raise ConfigError(f"{out}: the output must be a .npz file")
    clips = load_dataset(data, layout=layout, machines=_csv_list(machines), ids=_csv_list(ids), snr=snr)
    bb = create_backbone(backbone, weights=weights, precision=precision, config=_json_dict(backbone_config, '--backbone-config'))
    con = _out()
    if bb.weights.random_init:
        con.print(f"[bold red]{backbone}: {bb.weights.describe()}[/]")
    emb = embed_clips(clips, bb, cache_dir=cache or default_cache_dir(), batch_size=batch_size, audio=AudioSettings(channel=channel),
                      on_bad="skip" if skip_bad else "error", progress=not quiet)
    emb.save_npz(out)
    con.print(f"{len(emb.clips)} embeddings of {bb.embedding_dim} values ({bb.weights.describe()}) -> {out}")
    if emb.skipped:
        con.print(f"[yellow]skipped {len(emb.skipped)} bad file(s)[/]")


@app.command()
def fit(
    data: Path = typer.Option(..., "--data", help="Recordings of one machine (or type): a dataset root, a folder or a manifest."),
    out: Path = typer.Option(..., "--out", help="Monitor directory to write."),
    backbone: str = typer.Option("ast", help="ast or resnext101_32x8d."),
    detector: str = typer.Option("lof-vote", help="lof-vote, lof, knn, mahalanobis, gmm, iforest."),
    weights: str = typer.Option("default", help="Hub id, local dir/file, or 'none' for random initialisation."),
    precision: str = typer.Option("fp32", help="fp32 or bf16."),
    backbone_config: Optional[str] = typer.Option(None, help=BACKBONE_CONFIG_HELP),
    layout: str = typer.Option("auto", help="auto, mimii, dcase, folder or csv."),
    machines: Optional[str] = typer.Option(None, help="Only these machine types."),
    ids: Optional[str] = typer.Option(None, help="Only these machine ids."),
    snr: Optional[str] = typer.Option(None, help="MIMII noise level when the tree holds several."),
    false_alarm_rate: float = typer.Option(0.05, help="Share of normal validation clips allowed to raise an alarm."),
    threshold_method: str = typer.Option("gamma", help="gamma (fitted distribution) or percentile."),
    standardize: bool = typer.Option(False, "--standardize", help="Standardise embeddings before the detector."),
    seed: int = typer.Option(0),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache folder (default: $ASDKIT_CACHE or ~/.cache/asdkit)."),
    channel: Optional[int] = typer.Option(None, help="Use one microphone instead of the mean."),
    skip_bad: bool = typer.Option(False, "--skip-bad"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Learn a monitor from healthy recordings; the threshold comes from normal validation clips only."""
    from asdkit.audio import AudioSettings
    from asdkit.data import load_dataset
    from asdkit.monitor import fit_monitor

    clips = load_dataset(data, layout=layout, machines=_csv_list(machines), ids=_csv_list(ids), snr=snr)
    mon, summary = fit_monitor(
        clips, backbone, detector, weights=weights, precision=precision, standardize=standardize,
        backbone_config=_json_dict(backbone_config, '--backbone-config'),
        false_alarm_rate=false_alarm_rate, threshold_method=threshold_method, seed=seed,
        audio=AudioSettings(channel=channel), skip_bad=skip_bad, cache_dir=cache or default_cache_dir(), progress=not quiet,
    )
    mon.save(out)
    con = _out()
    if summary["random_init"]:
        con.print(f"[bold red]{backbone}: {summary['weights']}[/]")
    con.print(
        f"monitor -> {out}: {backbone} + {detector}, fitted on {summary['n_train']} normal clips, threshold "
        f"{summary['threshold']:.4g} from {summary['n_val']} validation clips ({threshold_method}, "
        f"false-alarm rate {false_alarm_rate:g})"
    )
    if summary["n_anomalous_ignored"]:
        con.print(f"ignored {summary['n_anomalous_ignored']} anomalous clip(s): a monitor learns from normal clips only")


@app.command()
def score(
    monitor: Path = typer.Argument(..., help="A monitor directory written by `asdkit fit`, or a fine-tuned model (RUN/models/<group> of `asdkit finetune --save-model`)."),
    inputs: List[Path] = typer.Argument(..., help="Audio files or folders to score."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV to write (default: scores.csv in the current folder)."),
    weights: Optional[str] = typer.Option(None, help="Where the backbone weights are now, if not where they were at fit time."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable files instead of stopping."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache folder (default: $ASDKIT_CACHE or ~/.cache/asdkit)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Score new recordings with a monitor: file, score, threshold, decision."""
    from rich.table import Table

    from asdkit.audio import find_audio
    from asdkit.data.clips import Clip
    from asdkit.io import write_csv
    from asdkit.monitor import load_monitor

    mon = load_monitor(monitor, weights=weights)
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = find_audio(p)
            if not found:
                raise ConfigError(f"{p}: no audio files in this folder")
            files += found
        else:
            files.append(p)
    clips = [Clip(str(f), "unknown", "unknown", 0) for f in files]
    kept, scores, skipped = mon.score_clips(clips, skip_bad=skip_bad, progress=not quiet, cache_dir=cache or default_cache_dir())
    alarms = mon.decide(scores)
    out = out or Path("scores.csv")
    write_csv(out, ["file", "score", "threshold", "decision"],
              ([c.path, f"{s:.6g}", f"{mon.threshold:.6g}", "anomalous" if a else "normal"] for c, s, a in zip(kept, scores, alarms)))
    con = _out()
    t = Table(title=f"asdkit score ({monitor})")
    for col in ("file", "score", "decision"):
        t.add_column(col)
    for c, s, a in zip(kept, scores, alarms):
        t.add_row(c.path, f"{s:.4g}", "[bold red]ANOMALOUS[/]" if a else "normal")
    con.print(t)
    if mon.settings.get("backbone", {}).get("random_init"):
        con.print("[bold red]this monitor's backbone started from RANDOM INIT (no pretrained weights)[/]")
    con.print(f"{int(alarms.sum())} of {len(kept)} clip(s) above the threshold {mon.threshold:.4g}; written to {out}")
    if skipped:
        con.print(f"[yellow]skipped {len(skipped)} bad file(s)[/]")
        for p, r in skipped:
            con.print(f"  {r}")


def _register_commands() -> None:
    from asdkit.commands import finetune_cmd, reproduce_cmd
    from asdkit.commands.explain import explain_cmd

    app.command("reproduce", help=reproduce_cmd.__doc__)(reproduce_cmd)
    app.command("finetune", help=finetune_cmd.__doc__)(finetune_cmd)
    app.command("explain", help=explain_cmd.__doc__)(explain_cmd)


_register_commands()


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        app(args=argv, prog_name="asdkit")  # standalone: usage errors print themselves and exit 2
    except AsdkitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

if __name__ == "__main__":  # pragma: no cover
    main()
