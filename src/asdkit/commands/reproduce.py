"""`asdkit reproduce` (the study's Table III) and `asdkit finetune` (one supervised run).

Plain functions with typer annotations; :mod:`asdkit.cli` registers them::

    app.command("reproduce")(reproduce_cmd)
    app.command("finetune")(finetune_cmd)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from asdkit.commands.options import console, csv_list, json_dict
from asdkit.errors import ConfigError





def print_table3(table) -> None:
    """Table III on the terminal: our AUC above the published one in each cell (failed cells in red)."""
    from rich.table import Table

    rows = list(dict.fromkeys(c["row"] for c in table.cells))
    cols = list(dict.fromkeys(c["column"] for c in table.cells))
    t = Table(title="Table III: AUC, ours / published", show_lines=True)
    t.add_column("row")
    for col in cols:
        t.add_column(col, justify="right")
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
                pub = "" if c.get("published") is None else f"\n[dim]{c['published']:.4f}[/]"
                cells.append(ours + pub)
        t.add_row(row, *cells)
    con = console()
    con.print(t)
    if table.meta.get("note"):
        con.print(f"[bold red]{table.meta['note']}[/]")
    elif any(c.get("random_init") for c in table.cells):
        con.print("[bold red]some cells used RANDOM INIT backbones (see the weights column of table3.md)[/]")


def reproduce_cmd(
    data: Optional[Path] = typer.Option(None, "--data", help="MIMII root (<snr>_<machine>/<machine>/id_XX/{normal,abnormal})."),
    out: Path = typer.Option(..., "--out", help="Folder for the table, one run directory per cell, the cache."),
    config: Optional[Path] = typer.Option(None, "--config", help="Study settings (default: the packaged configs/study.yaml)."),
    machines: Optional[str] = typer.Option(None, help="Only the columns of these machine types (comma separated)."),
    snr: Optional[str] = typer.Option(None, help="MIMII noise level (6dB, 0dB, -6dB) when --data holds several; default from the config."),
    rows: Optional[str] = typer.Option(None, help="Only these rows (comma separated, e.g. autoencoder,ast-lof)."),
    weights_dir: Optional[Path] = typer.Option(
        None, "--weights-dir", help="Local weights: DIR/ast (save_pretrained folder), DIR/resnext101_32x8d (folder or .safetensors/.pth)."
    ),
    synthetic: bool = typer.Option(False, "--synthetic", help="Built-in generated data and random-init tiny backbones (not comparable)."),
    precision: Optional[str] = typer.Option(None, help="fp32 or bf16 (CPU autocast) for the backbones; default from the config."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: torch's choice, 1 with --synthetic; 1 is far faster on a busy shared machine)."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the explanations and report.html."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Run every cell of the study's Table III (resumable) and compare with the published AUCs."""
    from asdkit.reproduce import reproduce

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
        data, out, config, machines=csv_list(machines), rows=csv_list(rows), weights_dir=weights_dir,
        synthetic=synthetic, precision=precision, progress=not quiet, on_cell=show, threads=threads, snr=snr,
        report=not no_report,
    )
    print_table3(table)
    con.print(f"table in {out / 'table3.md'} (also .csv, .json); {table.meta['seconds']:.0f} s")
    if table.failed:
        con.print(f"[bold red]{len(table.failed)} cell(s) failed; run the same command again to retry them[/]")
        raise typer.Exit(1)


def finetune_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset root (MIMII, DCASE, a normal/abnormal folder) or a CSV manifest."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    backbone: str = typer.Option("ast", help="ast or resnext101_32x8d."),
    weights: str = typer.Option("default", help="Hub id, local dir/file, or 'none' for random initialisation."),
    backbone_config: Optional[str] = typer.Option(None, help="Architecture overrides as JSON (e.g. '{\"num_hidden_layers\": 2}')."),
    precision: str = typer.Option("fp32", help="fp32 or bf16 (autocast on CPU)."),
    layout: str = typer.Option("auto", help="auto, mimii, dcase, folder or csv."),
    machines: Optional[str] = typer.Option(None, help="Only these machine types (comma separated)."),
    ids: Optional[str] = typer.Option(None, help="Only these machine ids (comma separated)."),
    snr: Optional[str] = typer.Option(None, help="MIMII noise level when the tree holds several (6dB, 0dB, -6dB, or all)."),
    per_id: bool = typer.Option(False, "--per-id", help="One model per machine id instead of one per type."),
    epochs: int = typer.Option(1, help="Fine-tuning epochs (the study: 1)."),
    lr: float = typer.Option(1e-3, help="Head learning rate; the top block gets lr/10, the next lr/100 ..."),
    batch_size: int = typer.Option(8, help="Clips per training step."),
    trainable_blocks: int = typer.Option(2, help="Backbone blocks fine-tuned from the top (the rest frozen)."),
    seed: int = typer.Option(0, help="Seed for the split, the head and the batch order."),
    split: Optional[Path] = typer.Option(None, help="Reuse a saved split.csv instead of splitting."),
    channel: Optional[int] = typer.Option(None, help="Use one microphone instead of the mean of all channels."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable files instead of stopping."),
    save_model: bool = typer.Option(False, "--save-model", help="Also save each fine-tuned model to OUT/models/<group>/."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Fine-tune a backbone with the study's head on train clips of both labels; score the test clips."""
    from dataclasses import asdict

    from asdkit.finetune import FinetuneSettings
    from asdkit.pipeline import RunConfig, run

    settings = FinetuneSettings(epochs=epochs, lr=lr, batch_size=batch_size, trainable_blocks=trainable_blocks,
                                precision=precision, seed=seed).validate()
    cfg = RunConfig(
        data=str(data), method="finetune", layout=layout, machines=csv_list(machines), ids=csv_list(ids), snr=snr,
        per_id=per_id, seed=seed, split_csv=str(split) if split else None, channel=channel, skip_bad=skip_bad,
        backbone=backbone, weights=weights, precision=precision,
        backbone_config=json_dict(backbone_config, "--backbone-config"), finetune=asdict(settings), save_models=save_model,
    )
    res = run(cfg, out, progress=not quiet)
    con = console()
    con.print((out / "results.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    for name, rep in res.info.get("groups", {}).items():
        val = rep.get("val") or {}
        if val:
            con.print(f"{name}: validation AUC {val['auc']:.4f}, loss {val['loss']:.4f} ({val['n']} clips)")
    if res.info.get("random_init"):
        con.print(f"[bold red]{res.info['weights']}[/]")
    con.print(f"results in {out}")
