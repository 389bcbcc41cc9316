"""`humwatch fit` (a monitor from healthy recordings, with any method) and `humwatch score` (new recordings).

`humwatch score` exits like grep: 0 when every recording is normal, 1 when at least one raises an
alarm, 2 on an error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, List, Literal, Optional

import typer

from humwatch.commands import options as o
from humwatch.errors import ConfigError
from humwatch.io import check_out_folder
from humwatch.settings import FALSE_ALARM_RATE, FOLDS, WINDOW_SECONDS

MonitorOut = Annotated[Path, typer.Option("--out", help="Monitor folder to write.")]
FalseAlarmRate = Annotated[
    float,
    typer.Option(
        help=o.ranged("Share of normal windows allowed to raise an alarm (per window of --window-seconds)", FALSE_ALARM_RATE),
        callback=o.checked(FALSE_ALARM_RATE, "--false-alarm-rate"),
    ),
]
ThresholdMethod = Annotated[
    Literal["gamma", "percentile"],
    typer.Option(help="gamma (a gamma distribution fitted to the normal scores) or percentile (their empirical quantile)."),
]
Folds = Annotated[
    int,
    typer.Option(
        help=o.ranged("Cross-validation folds for calibrating the threshold on every normal recording", FOLDS),
        callback=o.checked(FOLDS, "--folds"),
    ),
]
WindowSeconds = Annotated[
    float,
    typer.Option(
        "--window-seconds",
        help=o.ranged(
            "Window length in seconds: longer recordings are scored window by window (never padded: recordings shorter than it make the window their length)",
            WINDOW_SECONDS,
        ),
        callback=o.checked(WINDOW_SECONDS, "--window-seconds"),
    ),
]
Hop = Annotated[Optional[float], typer.Option(help="Seconds between window starts (default: the window length, no overlap).", min=0.01)]
Jobs = Annotated[
    Optional[int],
    typer.Option(
        help="Trainings at once for a method that trains a network (the calibration folds and the final fit; default: the CPU cores here, 1 on a GPU).",
        min=1,
    ),
]


@o.with_method_options()
def fit_cmd(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Healthy recordings of one machine: a folder (any length, any sample rate; an abnormal/ subfolder only reports an AUC), a dataset root or a manifest.",
        ),
    ],
    out: MonitorOut,
    method: o.MonitorMethod = None,
    layout: o.Layout = "auto",
    machines: o.Machines = None,
    ids: o.Ids = None,
    snr: o.Snr = None,
    false_alarm_rate: FalseAlarmRate = 0.05,
    threshold_method: ThresholdMethod = "gamma",
    folds: Folds = 5,
    window_seconds: WindowSeconds = 10.0,
    hop: Hop = None,
    seed: o.Seed = 0,
    cache: o.Cache = None,
    channel: o.Channel = None,
    skip_bad: o.SkipBad = False,
    overwrite: o.Overwrite = False,
    device: o.Device = "auto",
    jobs: Jobs = None,
    quiet: o.Quiet = False,
    method_options: dict | None = None,
):
    """Learn a monitor from healthy recordings with any method; the threshold is calibrated on every normal recording (cross-validated)."""
    from humwatch.audio import AudioSettings
    from humwatch.calibrate import fit_monitor
    from humwatch.data import load_dataset
    from humwatch.io import check_holds_none

    defaults, note = {}, None
    if method is None:  # no pretrained weights here: the weight-free features, never a random network
        from humwatch.methods.embed_detect import monitor_defaults

        method = "embed-detect"
        defaults, note = monitor_defaults(method_options)
    settings = o.method_settings_from_options(method, method_options, defaults)
    check_out_folder(out, overwrite, kind="monitor", inputs=[data])
    if note:
        o.console().print(note)
    clips = load_dataset(data, layout=layout, machines=o.csv_list(machines), ids=o.csv_list(ids), snr=snr)
    check_holds_none(out, (c.path for c in clips))
    mon, summary = fit_monitor(
        clips,
        method,
        settings,
        false_alarm_rate=false_alarm_rate,
        threshold_method=threshold_method,
        folds=folds,
        seconds=window_seconds,
        hop=hop,
        seed=seed,
        audio=AudioSettings(channel=channel),
        skip_bad=skip_bad,
        cache_dir=cache or o.default_cache_dir(),
        progress=not quiet,
        device=device,
        jobs=jobs,
    )
    mon.save(out)
    con = o.console()
    if summary["random_init"]:
        con.print(f"[bold red]{summary['label']}: {summary['weights']}[/]")
    con.print(
        f"monitor -> {out}: {summary['label']}, fitted on {summary['n_train']} normal windows of {summary['seconds']:g} s "
        f"from {summary['n_recordings']} recording(s)\n"
        f"threshold {summary['threshold']:.4g}: calibrated on {summary['n_calibration']} out-of-fold normal windows "
        f"({summary['folds']} folds, {threshold_method}); expected false alarms: {false_alarm_rate:.1%} of normal "
        f"windows ({summary['oof_alarm_share']:.1%} of the calibration windows were above it)"
    )
    if summary["anomalous_auc"] is not None:
        con.print(
            f"{summary['n_anomalous']} anomalous recording(s) against the out-of-fold normal ones: "
            f"AUC {summary['anomalous_auc']:.3f} (reported only; the threshold never sees them)"
        )
    if summary["skipped"]:
        con.print(f"[yellow]skipped {len(summary['skipped'])} bad file(s) or window(s)[/]")


Out = Annotated[
    Optional[str], typer.Option("--out", help="CSV to write; '-' writes it to stdout (default: scores.csv in the current folder).")
]
Json = Annotated[bool, typer.Option("--json", help="Write JSON lines (one object per recording) instead of CSV.")]
Windows = Annotated[bool, typer.Option("--windows", help="One row per window (file, start, end, score) instead of one per recording.")]


def score_cmd(
    monitor: Annotated[
        Path,
        typer.Argument(
            help="A monitor folder written by `humwatch fit`, or a fine-tuned model (RUN/models/<group> of `humwatch finetune --save-model`)."
        ),
    ],
    inputs: Annotated[List[Path], typer.Argument(help="Audio files or folders to score.")],
    out: Out = None,
    json_lines: Json = False,
    windows: Windows = False,
    weights: Annotated[
        Optional[str],
        typer.Option(help="Where the backbone weights are now, if not where they were at fit time (they must be the same weights)."),
    ] = None,
    skip_bad: o.SkipBad = False,
    cache: o.Cache = None,
    device: o.Device = "auto",
    runtime: o.Runtime = "auto",
    engine: o.EngineName = "local",
    ray_address: o.RayAddress = None,
    quiet: o.Quiet = False,
):
    """Score new recordings with a monitor: file, score, threshold, decision. Exit status 0: all normal, 1: an alarm, 2: an error."""
    from humwatch.audio import find_audio
    from humwatch.data.clips import Clip
    from humwatch.engine import get_engine
    from humwatch.io import check_out_file
    from humwatch.monitor import load_monitor

    to_stdout = out == "-"
    target = None if to_stdout else Path(out or "scores.csv")
    if target is not None:  # before any work: a result that cannot be written is said now, not after scoring
        check_out_file(target, inputs=[monitor, *inputs, weights])
    mon = load_monitor(monitor, weights=weights, device=device, runtime=runtime, cache_dir=cache or o.default_cache_dir())
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
    progress = not quiet and out != "-"
    with get_engine(engine, ray_address) as eng:
        rows, alarms, skipped = _rows(mon, clips, windows, skip_bad, progress, cache or o.default_cache_dir(), eng)
    _write(rows, target, json_lines)
    con = o.console(stderr=to_stdout)
    if con.is_terminal and not to_stdout:
        _table(con, rows, monitor)
    if mon.random_init:
        con.print("[bold red]this monitor's backbone started from RANDOM INIT (no pretrained weights)[/]")
    n_rec = len({r["file"] for r in rows})
    con.print(f"{alarms} of {n_rec} recording(s) above the threshold {mon.threshold:.4g}" + ("" if to_stdout else f"; written to {target}"))
    if skipped:
        con.print(f"[yellow]skipped {len(skipped)} bad file(s)[/]")
        for _, r in skipped:
            con.print(f"  {r}", markup=False, highlight=False)
    raise typer.Exit(1 if alarms else 0)


def _rows(mon, clips, per_window: bool, skip_bad: bool, progress: bool, cache, engine) -> tuple[list[dict], int, list]:
    """Result rows (per recording, or per window), the number of recordings that alarm, and the skipped
    files; the windows are scored by ``engine`` (:mod:`humwatch.engine`; a worker rebuilds the
    monitor from its recipe)."""
    from humwatch.monitor import max_per_recording

    wins, scores, skipped = engine.score_windows(mon, clips, skip_bad=skip_bad, progress=progress, cache_dir=cache)
    thr = mon.threshold
    per = max_per_recording(wins, scores)
    alarms = sum(1 for v in per.values() if v > thr)
    if per_window:
        seconds = mon.audio.seconds
        return (
            [
                {
                    "file": w.path,
                    "start": w.start,
                    "end": w.start + seconds,
                    "score": float(s),
                    "threshold": thr,
                    "decision": "anomalous" if s > thr else "normal",
                }
                for w, s in zip(wins, scores)
            ],
            alarms,
            skipped,
        )
    return (
        [
            {"file": c.path, "score": per[c.path], "threshold": thr, "decision": "anomalous" if per[c.path] > thr else "normal"}
            for c in clips
            if c.path in per
        ],
        alarms,
        skipped,
    )


def _write(rows: list[dict], target: Path | None, json_lines: bool) -> None:
    import csv
    import io

    from humwatch.io import write_text

    buf = io.StringIO()
    if json_lines:
        for r in rows:
            buf.write(json.dumps(r) + "\n")
    else:
        cols = list(rows[0]) if rows else ["file", "score", "threshold", "decision"]
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in (r[c] for c in cols)])
    if target is None:
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
    else:
        write_text(target, buf.getvalue())


def _table(con, rows: list[dict], monitor: Path) -> None:
    from rich.markup import escape  # a file name such as "pump[a].wav" is text, not markup

    cols = [c for c in rows[0] if c != "threshold"] if rows else ["file", "score", "decision"]
    o.print_table(
        con,
        f"humwatch score ({monitor})",
        cols,
        [
            [
                ("[bold red]ANOMALOUS[/]" if r[c] == "anomalous" else r[c])
                if c == "decision"
                else (f"{r[c]:.4g}" if isinstance(r[c], float) else escape(str(r[c])))
                for c in cols
            ]
            for r in rows
        ],
    )


def register(app: typer.Typer) -> None:
    app.command("fit")(fit_cmd)
    app.command("score")(score_cmd)
