"""`humwatch export` (a monitor's network as ONNX, for devices without PyTorch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from humwatch.commands import options as o


def export_cmd(
    monitor: Annotated[Path, typer.Argument(help="A monitor folder written by `humwatch fit`.")],
    out: Annotated[Path, typer.Option("--out", help="The exported monitor folder to write (new or empty).")],
    format: Annotated[Literal["onnx"], typer.Option("--format", help="Model format (onnx).")] = "onnx",
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Quantise the network's weights to int8 (ONNX Runtime dynamic quantisation): smaller and often faster on CPUs, slightly different scores.",
        ),
    ] = False,
    weights: Annotated[
        Optional[str],
        typer.Option(help="Where the backbone weights are now, if not where they were at fit time (they must be the same weights)."),
    ] = None,
    overwrite: o.Overwrite = False,
):
    """Export a monitor's network as ONNX (plus the monitor's JSON), to score on devices without PyTorch: `humwatch score OUT ...` then runs on ONNX Runtime."""
    from humwatch.export import export_monitor

    doc = export_monitor(monitor, out, fmt=format, int8=int8, weights=weights, overwrite=overwrite)
    size = (out / doc["model"]).stat().st_size / 2**20
    check = doc["check"]
    line = (
        f"exported {doc['method']} ({doc['precision']}, {size:.1f} MiB) -> {out}; ONNX Runtime vs PyTorch: "
        f"relative difference {check['fp32_relative_error']:.1e} in fp32"
    )
    if "int8_relative_error" in check:
        line += f", {check['int8_relative_error']:.1e} in int8"
    o.console().print(line)
    if doc["source_precision"] != "fp32":
        o.console().print(
            f"[yellow]the monitor ran in {doc['source_precision']}; the exported network runs in "
            f"{doc['precision']}, so its scores differ by rounding[/]"
        )


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
