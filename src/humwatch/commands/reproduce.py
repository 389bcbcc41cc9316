"""`humwatch reproduce` (the study's Table III) and `humwatch demo` (the same on the built-in data, small)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from humwatch.commands import options as o
from humwatch.commands.options import console, csv_list


def print_table3(table) -> None:
    """Table III on the terminal: our AUC above the published one in each cell (failed cells in red);
    plain tab-separated lines when the output is not a terminal."""
    rows = list(dict.fromkeys(c["row"] for c in table.cells))
    cols = list(dict.fromkeys(c["column"] for c in table.cells))
    grid = []
    for row in rows:
        cells = []
        for col in cols:
            c = next((x for x in table.cells if x["row"] == row and x["column"] == col), None)
            if c is None:
                cells.append("")
            elif c["status"] != "ok":
                cells.append("[red]failed[/]")
            else:
                ours = "n/a" if c.get("auc") is None else f"{c['auc']:.4f}"
                votes = "" if c.get("auc_votes") is None else f"\nvotes {c['auc_votes']:.4f}"
                pub = "" if c.get("published") is None else f"\n[dim]{c['published']:.4f}[/]"
                cells.append(ours + votes + pub)
        grid.append([row, *cells])
    con = console()
    o.print_table(con, "Table III: AUC, ours (LOF rows: also the vote count's) / published", ["row", *cols], grid, show_lines=True)
    if table.meta.get("note"):
        con.print(f"[bold red]{table.meta['note']}[/]")
    elif any(c.get("random_init") for c in table.cells):
        con.print("[bold red]some cells used RANDOM INIT backbones (see the weights column of table3.md)[/]")


def reproduce_cmd(
    data: Optional[Path] = typer.Option(None, "--data", help="MIMII root (<snr>_<machine>/<machine>/id_XX/{normal,abnormal})."),
    out: Path = typer.Option(..., "--out", help="Folder for the table, one run directory per cell, the cache."),
    config: Optional[Path] = typer.Option(None, "--config", help="Study settings (default: the packaged configs/study.yaml)."),
    machines: o.Machines = None,
    snr: o.Snr = None,
    rows: Optional[str] = typer.Option(None, help="Only these rows (comma separated, e.g. autoencoder,ast-lof)."),
    weights_dir: Optional[Path] = typer.Option(
        None, "--weights-dir", help="Local weights: DIR/ast (save_pretrained folder), DIR/resnext101_32x8d (folder or .safetensors/.pth)."
    ),
    synthetic: bool = typer.Option(False, "--synthetic", help="Built-in generated data and random-init tiny backbones (not comparable)."),
    precision: o.Precision = None,
    threads: Optional[int] = typer.Option(
        None, help="CPU threads for torch (default: torch's choice, 1 with --synthetic; 1 is far faster on a busy shared machine)."
    ),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the explanations and report.html."),
    device: o.Device = "auto",
    quiet: o.Quiet = False,
):
    """Run every cell of the study's Table III (resumable) and compare with the published AUCs."""
    from humwatch.reproduce import reproduce

    con = console()

    def show(rec: dict) -> None:
        auc = "n/a" if rec.get("auc") is None else f"{rec['auc']:.4f}"
        if rec.get("reused"):
            con.print(f"{rec['row']} / {rec['column']}: finished earlier, AUC {auc}")
        elif rec["status"] == "ok":
            pub = f" (published {rec['published']:.4f})" if rec.get("published") is not None else ""
            con.print(f"{rec['row']} / {rec['column']}: AUC {auc}{pub}, {rec['seconds']:.0f} s")
        else:
            con.print(f"[red]{rec['row']} / {rec['column']}: failed: {rec['reason']}[/]")

    table = reproduce(
        data,
        out,
        config,
        machines=csv_list(machines),
        rows=csv_list(rows),
        weights_dir=weights_dir,
        synthetic=synthetic,
        precision=precision,
        progress=not quiet,
        on_cell=show,
        threads=threads,
        snr=snr,
        report=not no_report,
        device=device,
    )
    print_table3(table)
    con.print(f"table in {out / 'table3.md'} (also .csv, .json); {table.meta['seconds']:.0f} s")
    if table.failed:
        con.print(f"[bold red]{len(table.failed)} cell(s) failed; run the same command again to retry them[/]")
        raise typer.Exit(1)


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the data, the table and the report go."),
    normal: int = typer.Option(30, help="Normal clips per machine id.", min=1),
    anomalous: int = typer.Option(10, help="Anomalous clips per machine id.", min=1),
    epochs: int = typer.Option(50, help="Autoencoder epochs (the study's 50).", min=1),
    seed: o.Seed = 0,
    device: o.Device = "auto",
    quiet: o.Quiet = False,
):
    """The study end to end on generated data (no downloads): Table III, report.html, and a short
    comparison of the methods that need no downloaded weights."""
    from humwatch.commands.compare import print_leaderboard
    from humwatch.demo import run_demo

    table, cmp = run_demo(out, n_normal=normal, n_anomalous=anomalous, epochs=epochs, seed=seed, progress=not quiet, device=device)
    print_table3(table)
    con = console()
    con.print(f"table in {Path(out) / 'table3.md'} (also .csv, .json); {table.meta['seconds']:.0f} s")
    report = Path(out) / "explain" / "report.html"
    if report.is_file():
        con.print(f"report: {report}")
    if cmp is not None:
        print_leaderboard(cmp)
        con.print(f"comparison in {Path(out) / 'compare' / 'compare.md'} (also .png); {cmp.meta['seconds']:.0f} s")
    failed = len(table.failed) + (len(cmp.failed) if cmp is not None else 0)
    if failed:
        con.print(f"[bold red]{failed} cell(s) or method(s) failed; run the same command again to retry them[/]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce_cmd)
    app.command("demo")(demo_cmd)
