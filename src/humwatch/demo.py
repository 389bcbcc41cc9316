"""`humwatch demo`: the main job on built-in generated data, no downloads, a few minutes on 2 cores.

It is the study end to end at a small size: :mod:`humwatch.data.synth` writes a MIMII-layout dataset
(4 machine types x 4 ids), every cell of Table III runs on it (autoencoder baseline, supervised
fine-tuning and LOF on embeddings, with random-initialised tiny backbones, said in the table), and
the explanations and ``report.html`` are drawn. Then a short ``humwatch compare`` of the methods that
need no downloaded weights (:data:`DEMO_METHODS`) ranks them on the same data, in ``compare/``.
Run again, it reuses the data and the finished cells and methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from humwatch.progress import console

DEMO_METHODS = (
    "embed-detect:backbone=features,detector=mahalanobis,standardize=true",
    "idnet:epochs=8,epoch_crops={crops}",
    "features+cnn=embed-fusion:backbones=[features, {backbone: resnext101_32x8d, weights: none, "
    "backbone_config: {layers: [1, 1, 1, 1], channels: [8, 16, 32, 64], cardinality: 2, base_width: 32, "
    "stem_width: 8}}]",
)
"""The demo's comparison: the weight-free statistics (the default monitor offline), an ID network
trained from scratch (8 short epochs of ``{crops}`` = 10 crops per normal clip of an id: 300 at the
default size), and those statistics fused with the tiny random CNN of Table III (its embeddings come
from the cache Table III filled)."""


def run_demo(
    out: str | Path,
    n_normal: int = 30,
    n_anomalous: int = 10,
    epochs: int = 50,
    seed: int = 0,
    progress: bool = True,
    on_cell: Callable[[dict], None] | None = None,
    device: str = "cpu",
    compare_methods=DEMO_METHODS,
    on_method: Callable[[dict], None] | None = None,
):
    """Generate (or reuse) the data in ``out/data``, run Table III into ``out`` and compare
    ``compare_methods`` into ``out/compare`` (none: no comparison); returns (Table3, Comparison or None)."""
    from humwatch.compare import compare
    from humwatch.reproduce import reproduce, reproduce_synthetic_defaults

    synth = reproduce_synthetic_defaults(n_normal=n_normal, n_anomalous=n_anomalous, seed=seed, autoencoder_epochs=epochs)
    table = reproduce(None, out, synthetic=synth, progress=progress, on_cell=on_cell, device=device)
    cmp = None
    if compare_methods:
        console.print("[bold]comparing the methods that need no downloaded weights[/]")
        methods = [m.replace("{crops}", str(10 * n_normal)) for m in compare_methods]
        cmp = compare(
            Path(out) / "data",
            methods,
            Path(out) / "compare",
            seed=seed,
            cache_dir=Path(out) / "cache",
            device=device,
            threads=1,
            progress=progress,
            on_method=on_method,
            title="humwatch demo: methods without downloaded weights (built-in data, 6 dB)",
        )
    console.print(f"demo results in {out}")
    return table, cmp
