"""Training and scoring speed of the methods that need no downloaded weights (issue 11).

Target: ``idnet`` trains on 1,000 ten-second clips in at most about 10 minutes on 2 CPU cores.

    .venv/bin/python benchmarks/bench_methods.py --train 1000 --test 200 --threads 2 --json bench_methods.json

The built-in generator writes ``--train`` normal training clips (mono, 10 s, 16 kHz; four machines:
fan and pump, ids 00 and 02, as equal shares) and ``--test`` clips to score (half anomalous) into a
temporary folder. Each method then runs in a fresh process (so that its peak memory, the process's
maximum resident set, is its own): ``fit`` on the training clips and ``score`` on the test clips,
each timed on the wall clock, through the method interface exactly as ``humwatch run`` calls it (one
model for the four machines, no embedding cache, so the features are computed, not read). Reported
per method: seconds, clips per second and minutes per 1,000 clips for fitting and for scoring, and
the peak memory. ``--methods`` takes method specs (``humwatch compare``'s syntax).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

DEFAULT_METHODS = (
    "embed-detect:backbone=features,detector=mahalanobis,standardize=true",
    "idnet",
    "tiny-aux=aux-finetune:backbone=resnext101_32x8d,weights=none,backbone_config={layers: [1, 1, 1, 1], "
    "channels: [8, 16, 32, 64], cardinality: 2, base_width: 32, stem_width: 8},epochs=2",
    "autoencoder",
)


def _worker(spec: dict, data: str, threads: int, result: str) -> None:
    import resource

    import torch

    from humwatch.data import load_dataset
    from humwatch.data.clips import Clip
    from humwatch.io import write_json
    from humwatch.methods import Context, create_method
    from humwatch.reader import ClipReader

    torch.set_num_threads(threads)
    # one training group of four machines (as one machine type with four ids)
    train, test = (
        [Clip(c.path, "machines", f"{c.machine_type}_{c.machine_id}", c.label) for c in load_dataset(Path(data) / part)]
        for part in ("train", "test")
    )
    m = create_method(spec["method"], spec["settings"], Context(reader=ClipReader(progress=False)), title=spec["name"])
    t = time.perf_counter()
    m.fit(train)
    fit = time.perf_counter() - t
    t = time.perf_counter()
    s = m.score(test)
    score = time.perf_counter() - t
    from humwatch.metrics import auc

    write_json(
        result,
        {
            "fit_s": fit,
            "score_s": score,
            "n_train": len(train),
            "n_test": len(test),
            "auc": auc([c.label for c in test], s),
            "training": m.info().get("training"),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        },
    )


def make_data(root: Path, n_train: int, n_test: int) -> None:
    """``root/train/<snr>_<machine>/...`` and ``root/test/...`` in the MIMII layout (mono clips)."""
    from humwatch.data.synth import synthesize

    per = max(1, n_train // 4)
    for part, n_normal, n_anom, seed in (("train", per, 0, 0), ("test", max(1, n_test // 8), max(1, n_test // 8), 1)):
        synthesize(
            root / part,
            machines=("fan", "pump"),
            ids=("00", "02"),
            n_normal=n_normal,
            n_anomalous=n_anom,
            snr_db=6.0,
            seed=seed,
            channels=1,
            progress=False,
        )


def main() -> None:
    import multiprocessing as mp

    from humwatch.methods.spec import spec_from_entry
    from humwatch.runinfo import cpu_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=1000, help="normal training clips (10 s each)")
    ap.add_argument("--test", type=int, default=200, help="clips to score (half anomalous)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--methods", nargs="*", default=list(DEFAULT_METHODS), help="method specs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-methods-") as tmp:
        t = time.perf_counter()
        make_data(Path(tmp) / "data", args.train, args.test)
        print(f"generated the clips in {time.perf_counter() - t:.0f} s", flush=True)
        for text in args.methods:
            sp = spec_from_entry(text)
            res = Path(tmp) / f"{sp.name}.json"
            p = mp.get_context("spawn").Process(target=_worker, args=(sp.to_dict(), str(Path(tmp) / "data"), args.threads, str(res)))
            p.start()
            p.join()
            if not res.is_file():
                print(f"{sp.name}: failed (exit code {p.exitcode})", flush=True)
                continue
            r = json.loads(res.read_text())
            r.update(
                name=sp.name,
                spec=text,
                fit_clips_per_s=r["n_train"] / r["fit_s"],
                score_clips_per_s=r["n_test"] / r["score_s"],
                fit_min_per_1000=r["fit_s"] / r["n_train"] * 1000 / 60,
                score_min_per_1000=r["score_s"] / r["n_test"] * 1000 / 60,
            )
            rows.append(r)
            tr = r.get("training") or {}
            print(
                f"{sp.name}: fit {r['fit_s']:.0f} s ({r['fit_min_per_1000']:.2f} min per 1,000 clips"
                + (f"; {tr.get('epochs')} epochs, best {tr.get('best_epoch')}" if tr.get("epochs") else "")
                + f"), score {r['score_clips_per_s']:.1f} clips/s, peak {r['peak_rss_mb']:.0f} MB, AUC {r['auc']:.3f}",
                flush=True,
            )
    load = os.getloadavg()
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; torch threads {args.threads}; "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) at the end"
    )
    print("| method | train clips | fit s | fit clips/s | fit min / 1,000 clips | score clips/s | score min / 1,000 clips | peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['n_train']} | {r['fit_s']:.0f} | {r['fit_clips_per_s']:.2f} | {r['fit_min_per_1000']:.2f} | "
            f"{r['score_clips_per_s']:.2f} | {r['score_min_per_1000']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"rows": rows, "machine": cpu_model(), "threads": args.threads, "load": load, "date": time.strftime("%Y-%m-%d %H:%M")},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
