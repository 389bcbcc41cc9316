"""`humwatch export` (a monitor's network as ONNX or OpenVINO, for devices without PyTorch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from humwatch.commands import options as o


def export_cmd(
    monitor: Annotated[Path, typer.Argument(help="A monitor folder written by `humwatch fit`.")],
    out: Annotated[Path, typer.Option("--out", help="The exported monitor folder to write (new or empty).")],
    format: Annotated[
        Literal["onnx", "openvino"],
        typer.Option("--format", help="Model format: onnx (ONNX Runtime) or openvino (OpenVINO IR: bf16 where the CPU has it, else f32)."),
    ] = "onnx",
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Quantise the network to int8 (onnx: weights, ONNX Runtime dynamic quantisation; openvino: weights and activations, NNCF, calibrated on --data): smaller and often faster on CPUs, slightly different scores.",
        ),
    ] = False,
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data", help="With --format openvino --int8: the dataset the monitor was fitted on (its normal clips calibrate int8)."
        ),
    ] = None,
    weights: Annotated[
        Optional[str],
        typer.Option(help="Where the backbone weights are now, if not where they were at fit time (they must be the same weights)."),
    ] = None,
    overwrite: o.Overwrite = False,
):
    """Export a monitor's network as ONNX or OpenVINO (plus the monitor's JSON), to score on devices without PyTorch: `humwatch score OUT ...` then runs on ONNX Runtime or OpenVINO."""
    from humwatch.export import export_monitor

    doc = export_monitor(monitor, out, fmt=format, int8=int8, weights=weights, overwrite=overwrite, data=data)
    size = sum((out / doc[k]).stat().st_size for k in ("model", "weights") if k in doc) / 2**20
    check = doc["check"]
    who, err = (
        ("OpenVINO", check["openvino_f32_relative_error"]) if format == "openvino" else ("ONNX Runtime", check["fp32_relative_error"])
    )
    kind = doc["precision"] if format == "onnx" else f"openvino {doc['precision']}"
    line = f"exported {doc['method']} ({kind}, {size:.1f} MiB) -> {out}; {who} vs PyTorch: relative difference {err:.1e} in fp32"
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
