"""`asdkit demo`: the main job on built-in generated data, no downloads, a few minutes on 2 cores.

It writes a small MIMII-layout dataset with :mod:`asdkit.data.synth` (reused when it is already there
with the same settings) and runs the study's methods on it, each into its own run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from asdkit.io import read_json, write_json
from asdkit.progress import console

DEMO_MACHINES = ("fan", "pump", "valve", "slider")
DEMO_IDS = ("00", "02", "04", "06")


def demo_data(out: Path, n_normal: int, n_anomalous: int, seed: int, snr_db: float = 6.0, progress: bool = True) -> Path:
    """Generate (or reuse) the demo dataset under ``out/data``."""
    from asdkit.data.synth import synthesize

    data = out / "data"
    params = {"machines": list(DEMO_MACHINES), "ids": list(DEMO_IDS), "n_normal": n_normal,
              "n_anomalous": n_anomalous, "seed": seed, "snr_db": snr_db}
    stamp = data / "demo-params.json"
    if stamp.exists() and read_json(stamp) == params:
        console.print(f"reusing the generated data in {data}")
        return data
    console.print(f"generating {len(DEMO_MACHINES) * len(DEMO_IDS) * (n_normal + n_anomalous)} clips in {data}")
    synthesize(data, machines=DEMO_MACHINES, ids=DEMO_IDS, n_normal=n_normal, n_anomalous=n_anomalous,
               snr_db=snr_db, seed=seed, progress=progress)
    write_json(stamp, params)
    return data


def run_demo(out: str | Path, n_normal: int = 24, n_anomalous: int = 8, epochs: int = 30, seed: int = 0,
             progress: bool = True, print_result: Callable | None = None) -> dict:
    """Generate the data and run each method; returns {method label: RunResult}."""
    from asdkit.pipeline import RunConfig, run

    out = Path(out)
    data = demo_data(out, n_normal, n_anomalous, seed, progress=progress)
    results = {}
    cfg = RunConfig(data=str(data), method="autoencoder", epochs=epochs, seed=seed)
    results["autoencoder"] = run(cfg, out / "autoencoder", progress=progress)
    for res in results.values():
        if print_result:
            print_result(res)
    console.print(f"demo results in {out}")
    return results
