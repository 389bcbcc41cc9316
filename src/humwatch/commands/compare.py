"""`humwatch compare`: several methods on the same split, one leaderboard (compare.md/.csv/.json/.png)."""

from __future__ import annotations

from pathlib import Path

import typer

from humwatch.commands import options as o


def print_leaderboard(cmp) -> None:
    """The ranking on the console (box-drawn on a terminal, tab-separated lines for a pipe or a file)."""
    from rich.markup import escape

    from humwatch.compare_report import leaderboard

    columns, rows = leaderboard(cmp.records, digits=3, mark=lambda text: f"[red]{escape(text)}[/]", per_id=bool(cmp.meta.get("per_id")))
    o.print_table(o.console(), cmp.meta.get("title", "humwatch compare"), columns, rows)


def compare_cmd(
    data: o.Data,
    out: o.CompareOut,
    methods: o.CompareMethods = None,
    methods_file: o.MethodsFile = None,
    layout: o.Layout = "auto",
    machines: o.Machines = None,
    ids: o.Ids = None,
    snr: o.Snr = None,
    per_id: o.PerId = False,
    seed: o.Seed = 0,
    dataset_split: o.DatasetSplit = None,
    dataset_val: o.DatasetVal = 0.0,
    channel: o.Channel = None,
    skip_bad: o.SkipBad = False,
    cache: o.Cache = None,
    device: o.Device = "auto",
    threads: o.Threads = None,
    in_process: o.InProcess = False,
    engine: o.EngineName = "local",
    ray_address: o.RayAddress = None,
    quiet: o.Quiet = False,
):
    """Run several methods on the same split and rank them: AUC and pAUC per machine type, id and
    domain, DCASE's harmonic mean, time and memory; compare.md/.csv/.json and compare.png in OUT."""
    from humwatch.compare import DEFAULT_METHODS, compare, plan
    from humwatch.engine import get_engine
    from humwatch.methods.spec import read_spec_file, split_method_list

    specs: list = split_method_list(methods or [])
    if methods_file is not None:
        specs += read_spec_file(methods_file)
    if not specs:
        specs = list(DEFAULT_METHODS)
    con = o.console()

    def show(rec: dict) -> None:
        if rec["status"] != "ok":
            con.print(f"[red]{rec['name']}: failed: {rec['reason']}[/]")
            return
        how = "finished earlier" if rec.get("reused") else f"{rec['seconds']:.0f} s"
        con.print(f"{rec['name']}: score (hmean) {rec['official_score']:.4f}, AUC (amean of ids) {rec['mean_auc']:.4f} ({how})")

    plan(specs)  # every method's settings checked before an engine (a Ray cluster) is started
    with get_engine(engine, ray_address) as eng:
        cmp = compare(
            data,
            specs,
            out,
            layout=layout,
            machines=o.csv_list(machines),
            ids=o.csv_list(ids),
            snr=snr,
            per_id=per_id,
            seed=seed,
            dataset_split=dataset_split,
            dataset_val_fraction=dataset_val,
            channel=channel,
            skip_bad=skip_bad,
            cache_dir=cache or o.default_cache_dir(),
            device=device,
            threads=threads,
            isolate=not in_process,
            progress=not quiet,
            on_method=show,
            engine=eng,
        )
    print_leaderboard(cmp)
    con.print(f"leaderboard in {Path(out) / 'compare.md'} (also .csv, .json, .png); {cmp.meta['seconds']:.0f} s")
    if cmp.failed:
        con.print(f"[bold red]{len(cmp.failed)} method(s) failed; run the same command again to retry them[/]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_cmd)
