"""How long does `humwatch fit` take beside embedding the clips once (issue 22, item 3)?

Targets: the default ``fit`` (no weights here: ``embed-detect`` on the weight-free ``features``
backbone with ``mahalanobis``, what ``humwatch fit`` picks offline) on 100 clips within 1.5x the time
of embedding them once; the autoencoder ``fit`` on 30 clips at least 2x faster with parallel folds
than serial, with the same threshold to within the calibration's own spread.

    .venv/bin/python benchmarks/bench_fit.py --clips 100 --ae-clips 30 --json bench_fit.json

The built-in generator writes ``--clips`` normal 10 s clips (mono, 16 kHz, one fan) into a temporary
folder. Each row runs in a fresh process (spawned), timed on the wall clock after the libraries are
imported (the same imports in every row, paid once per process, not part of the comparison):

* ``embed once``: every clip embedded by the default method's backbone into an empty cache, as the
  fit's own embedding does (:func:`humwatch.embed.embed_clips`);
* ``fit``: :func:`humwatch.monitor.fit_monitor` with the default method, 5 folds, an empty cache
  (a first ``humwatch fit``), and with ``--generic`` also the way every fit went before (a new
  method per fold: six embeddings, six full detector fits);
* ``autoencoder fit, jobs 1`` and ``jobs N`` (``--jobs``, default: the cores here) on the first
  ``--ae-clips`` clips (``--epochs``, default the study's 50).

Reported: seconds per row, the ratios, the thresholds, and the spread of the threshold itself: the
standard deviation of the threshold rule over bootstrap resamples of the out-of-fold scores (the
serial autoencoder fit's), against which the parallel fit's threshold difference is judged. The
load average is printed with the results: on a shared machine the seconds are only comparable
within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

WARM = (
    "librosa",
    "sklearn.covariance",
    "scipy.stats",
    "torch",
    "humwatch.features",
    "humwatch.metrics",
    "humwatch.monitor",
    "humwatch.calibrate",
    "humwatch.explain.alarm",
)


def _worker(row: dict, data: str, result: str) -> None:
    import importlib

    for name in WARM:
        importlib.import_module(name)
    import librosa.feature  # noqa: F401  (lazily loaded submodules: imported here, not in the timing)

    from humwatch.data import load_dataset
    from humwatch.io import write_json

    clips = load_dataset(data)[: row["clips"]]
    cache = tempfile.mkdtemp(prefix="bench-fit-cache-")
    out: dict = {"n_clips": len(clips)}
    if row["kind"] == "embed":
        from humwatch.methods import Context, create_method
        from humwatch.runtime import Runtime

        m = create_method("embed-detect", row["settings"], Context())
        t = time.perf_counter()
        emb = m.embed(clips, Runtime(progress=False, cache_dir=cache))
        out.update(seconds=time.perf_counter() - t, n_embedded=len(emb))
    else:
        import numpy as np

        import humwatch.calibrate
        from humwatch.calibrate import fit_monitor

        oof = {}
        real = humwatch.calibrate.cross_fit

        def keep(*a, **kw):  # keeps the out-of-fold scores (the threshold's own spread); --generic's way
            got = real(*a, **kw, shortcuts=row.get("shortcuts", True))
            oof["scores"] = got[0]
            return got

        humwatch.calibrate.cross_fit = keep
        t = time.perf_counter()
        _, summary = fit_monitor(clips, row["method"], row["settings"], cache_dir=cache, progress=False, jobs=row.get("jobs"))
        out.update(
            seconds=time.perf_counter() - t,
            threshold=summary["threshold"],
            label=summary["label"],
            n_windows=summary["n_windows"],
            oof=[float(v) for v in np.asarray(oof["scores"])],
        )
    write_json(result, out)


def threshold_spread(scores, rate: float = 0.05, method: str = "gamma", n: int = 200) -> float:
    """Standard deviation of the threshold rule over ``n`` bootstrap resamples of the scores."""
    import numpy as np

    from humwatch.metrics import threshold_from_scores

    s = np.asarray([v for v in scores if np.isfinite(v)])
    rng = np.random.default_rng(0)
    return float(np.std([threshold_from_scores(rng.choice(s, len(s)), false_alarm_rate=rate, method=method) for _ in range(n)]))


def main() -> None:
    import multiprocessing as mp

    from humwatch.data.synth import synthesize
    from humwatch.folds import available_cores
    from humwatch.methods.embed_detect import WEIGHT_FREE
    from humwatch.runinfo import cpu_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=100, help="normal 10 s clips for the default method's rows (0: none)")
    ap.add_argument("--ae-clips", type=int, default=30, help="clips for the autoencoder rows (0: none)")
    ap.add_argument("--epochs", type=int, default=50, help="autoencoder epochs (the study: 50)")
    ap.add_argument("--jobs", type=int, default=None, help="the parallel autoencoder row's --jobs (default: the cores here)")
    ap.add_argument("--generic", action="store_true", help="also time the default fit the generic way (as before)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    jobs = args.jobs or min(available_cores(), 6)
    ae = {"epochs": args.epochs}
    rows = (
        [
            {"name": "embed once", "kind": "embed", "clips": args.clips, "settings": WEIGHT_FREE},
            {"name": "fit (default)", "kind": "fit", "clips": args.clips, "method": "embed-detect", "settings": WEIGHT_FREE},
        ]
        if args.clips
        else []
    )
    if args.clips and args.generic:
        rows.append(
            {
                "name": "fit (default, generic folds)",
                "kind": "fit",
                "clips": args.clips,
                "method": "embed-detect",
                "settings": WEIGHT_FREE,
                "shortcuts": False,
            }
        )
    if args.ae_clips:
        rows += [
            {"name": "autoencoder fit, jobs 1", "kind": "fit", "clips": args.ae_clips, "method": "autoencoder", "settings": ae, "jobs": 1},
            {
                "name": f"autoencoder fit, jobs {jobs}",
                "kind": "fit",
                "clips": args.ae_clips,
                "method": "autoencoder",
                "settings": ae,
                "jobs": jobs,
            },
        ]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as tmp:
        t = time.perf_counter()
        synthesize(
            Path(tmp) / "data",
            machines=("fan",),
            ids=("00",),
            n_normal=max(args.clips, args.ae_clips),
            n_anomalous=0,
            snr_db=6.0,
            seed=0,
            channels=1,
            progress=False,
        )
        print(f"generated the clips in {time.perf_counter() - t:.0f} s", flush=True)
        for row in rows:
            res = Path(tmp) / "result.json"
            res.unlink(missing_ok=True)
            p = mp.get_context("spawn").Process(target=_worker, args=(row, str(Path(tmp) / "data"), str(res)))
            p.start()
            p.join()
            if not res.is_file():
                print(f"{row['name']}: failed (exit code {p.exitcode})", flush=True)
                continue
            r = {**{k: v for k, v in row.items() if k != "settings"}, **json.loads(res.read_text())}
            results.append(r)
            print(
                f"{r['name']}: {r['seconds']:.1f} s on {r['n_clips']} clips"
                + (f", threshold {r['threshold']:.6g}" if "threshold" in r else ""),
                flush=True,
            )
    by = {r["name"]: r for r in results}
    summary = {}
    if "embed once" in by and "fit (default)" in by:
        summary["fit_over_embed"] = by["fit (default)"]["seconds"] / by["embed once"]["seconds"]
        print(f"default fit / embedding once: {summary['fit_over_embed']:.2f}x (target: at most 1.5x)")
    if "fit (default, generic folds)" in by and "fit (default)" in by:
        g, f = by["fit (default, generic folds)"], by["fit (default)"]
        summary["generic_over_fit"] = g["seconds"] / f["seconds"]
        print(
            f"generic folds / embed once: {summary['generic_over_fit']:.2f}x slower; thresholds {g['threshold']:.10g} "
            f"and {f['threshold']:.10g}"
        )
    serial, parallel = by.get("autoencoder fit, jobs 1"), by.get(f"autoencoder fit, jobs {jobs}")
    if serial and parallel:
        spread = threshold_spread(serial["oof"])
        summary.update(
            ae_speedup=serial["seconds"] / parallel["seconds"],
            ae_threshold_spread=spread,
            ae_threshold_difference=abs(parallel["threshold"] - serial["threshold"]),
        )
        print(
            f"autoencoder: jobs {jobs} is {summary['ae_speedup']:.2f}x faster than jobs 1 (target: at least 2x); "
            f"thresholds differ by {summary['ae_threshold_difference']:.3g}, the threshold's own spread "
            f"(bootstrap std) is {spread:.3g}"
        )
    load = os.getloadavg()
    print(
        f"machine: {cpu_model()}, {available_cores()} cores for this process; load average {load[0]:.2f} / "
        f"{load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) at the end"
    )
    if args.json:
        for r in results:
            r.pop("oof", None)
        args.json.write_text(
            json.dumps(
                {
                    "rows": results,
                    "summary": summary,
                    "machine": cpu_model(),
                    "cores": available_cores(),
                    "load": load,
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
