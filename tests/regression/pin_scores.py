"""Write (or check) tests/regression/pinned_scores.json: the test scores of every method on a small
built-in dataset with a fixed seed, through the command line.

Run once before a change that must keep the numbers (``python tests/regression/pin_scores.py
--write``); ``tests/test_regression.py`` then checks every later version against the file.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
PINNED = HERE / "pinned_scores.json"

TINY_AST = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_RESNEXT = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "cardinality": 2, "base_width": 32, "stem_width": 8}
DATA = dict(machines=["fan", "pump"], ids=["00", "02"], n_normal=8, n_anomalous=3, snr_db=6.0, seed=3, seconds=10.0)

RUNS = {
    "autoencoder": ["run", "--method", "autoencoder", "--epochs", "3"],
    "embed-detect-ast-lof": [
        "run",
        "--method",
        "embed-detect",
        "--backbone",
        "ast",
        "--weights",
        "none",
        "--backbone-config",
        json.dumps(TINY_AST),
        "--detector",
        "lof",
    ],
    "embed-detect-resnext-knn": [
        "run",
        "--method",
        "embed-detect",
        "--backbone",
        "resnext101_32x8d",
        "--weights",
        "none",
        "--backbone-config",
        json.dumps(TINY_RESNEXT),
        "--detector",
        "knn",
    ],
    "finetune-resnext": [
        "finetune",
        "--backbone",
        "resnext101_32x8d",
        "--weights",
        "none",
        "--backbone-config",
        json.dumps(TINY_RESNEXT),
        "--epochs",
        "1",
        "--trainable-blocks",
        "2",
    ],
}


def make_data(root: Path) -> Path:
    from humwatch.data.synth import synthesize

    synthesize(root, progress=False, channels=2, **DATA)
    return root


def run_all(data: Path, work: Path, cache: Path) -> dict[str, dict[str, float]]:
    """{run name: {clip path relative to data: score}} for every run of :data:`RUNS`."""
    from humwatch.cli import main

    out: dict[str, dict[str, float]] = {}
    for name, args in RUNS.items():
        run_dir = work / name
        try:
            main(
                [*args, "--data", str(data), "--out", str(run_dir), "--seed", "0", "--quiet"]
                + (["--cache", str(cache)] if args[0] == "run" else [])
            )
        except SystemExit as e:
            if e.code not in (0, None):
                raise
        with open(run_dir / "scores.csv", newline="", encoding="utf-8") as f:
            out[name] = {str(Path(r["file"]).relative_to(data)): float(r["score"]) for r in csv.DictReader(f)}
    return out


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scores = run_all(make_data(tmp / "data"), tmp / "runs", tmp / "cache")
    if "--write" in sys.argv:
        PINNED.write_text(json.dumps({"data": DATA, "scores": scores}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {PINNED}")
    else:
        print(json.dumps(scores, indent=1)[:2000])
