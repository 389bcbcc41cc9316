"""`asdkit fit` (a monitor from healthy recordings, with any method) and `asdkit score` (new recordings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Literal, Optional

import typer

from asdkit.commands import options as o
from asdkit.errors import ConfigError

MonitorOut = Annotated[Path, typer.Option("--out", help="Monitor folder to write.")]
FalseAlarmRate = Annotated[float, typer.Option(help="Share of normal validation clips allowed to raise an alarm.", min=0.0, max=1.0)]
ThresholdMethod = Annotated[Literal["gamma", "percentile"], typer.Option(help="gamma (a gamma distribution fitted to the normal scores) or percentile (their empirical quantile).")]


@o.with_method_options()
def fit_cmd(
    data: Annotated[Path, typer.Option("--data", help="Recordings of one machine (or type): a dataset root, a folder or a manifest.")],
    out: MonitorOut,
    method: o.Method = "embed-detect",
    layout: o.Layout = "auto",
    machines: o.Machines = None,
    ids: o.Ids = None,
    snr: o.Snr = None,
    false_alarm_rate: FalseAlarmRate = 0.05,
    threshold_method: ThresholdMethod = "gamma",
    seed: o.Seed = 0,
    cache: o.Cache = None,
    channel: o.Channel = None,
    skip_bad: o.SkipBad = False,
    device: o.Device = "auto",
    quiet: o.Quiet = False,
    method_options: dict | None = None,
):
    """Learn a monitor from healthy recordings with any method; the threshold comes from normal validation clips only."""
    from asdkit.audio import AudioSettings
    from asdkit.data import load_dataset
    from asdkit.monitor import fit_monitor

    settings = o.method_settings_from_options(method, method_options)
    clips = load_dataset(data, layout=layout, machines=o.csv_list(machines), ids=o.csv_list(ids), snr=snr)
    mon, summary = fit_monitor(
        clips, method, settings, false_alarm_rate=false_alarm_rate, threshold_method=threshold_method, seed=seed,
        audio=AudioSettings(channel=channel), skip_bad=skip_bad, cache_dir=cache or o.default_cache_dir(), progress=not quiet,
        device=device,
    )
    mon.save(out)
    con = o.console()
    if summary["random_init"]:
        con.print(f"[bold red]{summary['label']}: {summary['weights']}[/]")
    con.print(
        f"monitor -> {out}: {summary['label']}, fitted on {summary['n_train']} clips, threshold "
        f"{summary['threshold']:.4g} from {summary['n_val']} normal validation clips ({threshold_method}, "
        f"false-alarm rate {false_alarm_rate:g})"
    )
    if summary["n_anomalous_ignored"]:
        con.print(f"ignored {summary['n_anomalous_ignored']} anomalous clip(s): this method learns from normal clips only")


def score_cmd(
    monitor: Annotated[Path, typer.Argument(help="A monitor folder written by `asdkit fit`, or a fine-tuned model (RUN/models/<group> of `asdkit finetune --save-model`).")],
    inputs: Annotated[List[Path], typer.Argument(help="Audio files or folders to score.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="CSV to write (default: scores.csv in the current folder).")] = None,
    weights: Annotated[Optional[str], typer.Option(help="Where the backbone weights are now, if not where they were at fit time (they must be the same weights).")] = None,
    skip_bad: o.SkipBad = False,
    cache: o.Cache = None,
    device: o.Device = "auto",
    quiet: o.Quiet = False,
):
    """Score new recordings with a monitor: file, score, threshold, decision."""
    from rich.table import Table

    from asdkit.audio import find_audio
    from asdkit.data.clips import Clip
    from asdkit.io import write_csv
    from asdkit.monitor import load_monitor

    mon = load_monitor(monitor, weights=weights, device=device)
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
    kept, scores, skipped = mon.score_clips(clips, skip_bad=skip_bad, progress=not quiet, cache_dir=cache or o.default_cache_dir())
    alarms = mon.decide(scores)
    out = out or Path("scores.csv")
    write_csv(out, ["file", "score", "threshold", "decision"],
              ([c.path, f"{s:.6g}", f"{mon.threshold:.6g}", "anomalous" if a else "normal"] for c, s, a in zip(kept, scores, alarms)))
    con = o.console()
    t = Table(title=f"asdkit score ({monitor})")
    for col in ("file", "score", "decision"):
        t.add_column(col)
    for c, s, a in zip(kept, scores, alarms):
        t.add_row(c.path, f"{s:.4g}", "[bold red]ANOMALOUS[/]" if a else "normal")
    con.print(t)
    if mon.random_init:
        con.print("[bold red]this monitor's backbone started from RANDOM INIT (no pretrained weights)[/]")
    con.print(f"{int(alarms.sum())} of {len(kept)} clip(s) above the threshold {mon.threshold:.4g}; written to {out}")
    if skipped:
        con.print(f"[yellow]skipped {len(skipped)} bad file(s)[/]")
        for p, r in skipped:
            con.print(f"  {r}")


def register(app: typer.Typer) -> None:
    app.command("fit")(fit_cmd)
    app.command("score")(score_cmd)
