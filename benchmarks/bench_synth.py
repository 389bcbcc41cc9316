"""Speed of the built-in generator (`humwatch synth`): clips per second on one core.

Target (issue #2): at least 20 ten-second, 8-channel, 16 kHz clips per second on one core.

    .venv/bin/python benchmarks/bench_synth.py --clips-per-id 6

Runs with one BLAS/OpenMP thread (set before numpy loads) and reports CPU-time and wall-clock rates
for all four machine types x four ids, files written to a temporary folder.
"""

from __future__ import annotations

import argparse
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips-per-id", type=int, default=6, help="normal clips per id (anomalous: a third of it)")
    args = ap.parse_args()
    from humwatch.data.synth import synthesize
    from humwatch.runinfo import cpu_model

    out = tempfile.mkdtemp(prefix="bench-synth-")
    try:
        synthesize(out, machines=("fan",), ids=("00",), n_normal=1, n_anomalous=0, progress=False)  # warm-up
        n_anom = max(1, args.clips_per_id // 3)
        t, c = time.perf_counter(), time.process_time()
        clips = synthesize(out, ids=("00", "02", "04", "06"), n_normal=args.clips_per_id, n_anomalous=n_anom, progress=False)
        cpu, wall = time.process_time() - c, time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; one thread")
    print(f"{len(clips)} clips: {len(clips) / cpu:.1f} clips per CPU-second, {len(clips) / wall:.1f} clips/s wall")


if __name__ == "__main__":
    main()
