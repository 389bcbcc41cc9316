"""`asdkit demo`: the main job on built-in generated data, no downloads, a few minutes on 2 cores.

It is the study end to end at a small size: :mod:`asdkit.data.synth` writes a MIMII-layout dataset
(4 machine types x 4 ids), every cell of Table III runs on it (autoencoder baseline, supervised
fine-tuning and LOF on embeddings, with random-initialised tiny backbones, said in the table), and
the explanations and ``report.html`` are drawn. Run again, it reuses the data and finished cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from asdkit.progress import console


def run_demo(out: str | Path, n_normal: int = 30, n_anomalous: int = 10, epochs: int = 50, seed: int = 0,
             progress: bool = True, on_cell: Callable[[dict], None] | None = None, device: str = "cpu"):
    """Generate (or reuse) the data in ``out/data`` and run Table III into ``out``; returns the Table3."""
    from asdkit.reproduce import reproduce, reproduce_synthetic_defaults

    synth = reproduce_synthetic_defaults(n_normal=n_normal, n_anomalous=n_anomalous, seed=seed, autoencoder_epochs=epochs)
    table = reproduce(None, out, synthetic=synth, progress=progress, on_cell=on_cell, device=device)
    console.print(f"demo results in {out}")
    return table
