"""Throughput, peak memory and bf16 fidelity of the full-size backbones on CPU.

Speed and fidelity: for each backbone (full-size ``ast`` and ``resnext101_32x8d``) one worker
process builds the model once, then times one batch of clips in fp32 and in bf16 autocast
*alternately* (fp32, bf16, bf16, fp32, ...) after a warm-up pass of each, so that load from other
processes on a shared machine hits both precisions alike. Reported: model clips/s (median over
repeats; the frontend is timed separately), the median of the per-pair bf16/fp32 speed ratios,
and the cosine similarity of bf16 vs fp32 embeddings per clip.

Memory: one fresh process per (backbone, precision) builds the model, embeds the batch twice and
reports its peak resident memory (``ru_maxrss``: a process's peak never goes down, and tracemalloc
does not see torch's allocations).

Weights are random (no download here), seeded, so both precisions see the same network:

* AST: transformers' initialisation (weights N(0, 0.02)).
* ResNeXt: timm's initialisation zeroes the last BatchNorm of every block (so residual branches
  start silent); to measure bf16 on a network whose branches all contribute, every BN scale is
  set to 1 and the BN statistics are calibrated on the benchmark batch (one train-mode pass).

Run::

    .venv/bin/python benchmarks/bench_backbones.py --batch 4 --repeats 3 --threads 2 --json bench.json

Target (issue): AST bf16 >= 1.5x fp32 clips/s with cosine >= 0.99.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BACKBONES = ("ast", "resnext101_32x8d")
PRECISIONS = ("fp32", "bf16")
AST_TARGET_SPEEDUP = 1.5
AST_TARGET_COSINE = 0.99


def _clips(n: int, seconds: float = 10.0, sr: int = 16000) -> list[np.ndarray]:
    """Machine-like test clips: a hum with harmonics, a modulated tone and noise (seeded)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for i in range(n):
        f0 = 50.0 * (i + 1)
        y = sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) for k in range(1, 6))
        y = y + 0.1 * np.sin(2 * np.pi * (1000 + 300 * i) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        y = y + 0.03 * rng.standard_normal(t.size)
        out.append(y.astype(np.float32))
    return out


def _calibrate_bn(module, x) -> None:
    """BN scales to 1, then BN statistics measured on ``x`` (see the module docstring)."""
    import torch

    bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.fill_(1.0)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass gives the batch statistics exactly
        module.train()
        module(torch.from_numpy(x))
        module.eval()


def _setup(name: str, batch: int, threads: int, precision: str = "fp32"):
    import torch

    torch.set_num_threads(threads)
    from humwatch.models import create_backbone

    t = time.perf_counter()
    bb = create_backbone(name, weights="none", precision=precision)
    build_s = time.perf_counter() - t
    ys = _clips(batch)
    bb.frontend.batch(ys[:1])  # first call pays for imports / JIT; not part of the per-clip time
    t = time.perf_counter()
    x = bb.frontend.batch(ys)
    frontend_s = (time.perf_counter() - t) / batch
    if name == "resnext101_32x8d":
        _calibrate_bn(bb.module, x)
    return bb, x, build_s, frontend_s


def speed_worker(name: str, batch: int, repeats: int, threads: int, out: str) -> dict:
    """Alternate fp32 / bf16 timings on one model; save both embeddings to ``out`` (.npz)."""
    import torch

    bb, x, build_s, frontend_s = _setup(name, batch, threads)
    emb, times = {}, {p: [] for p in PRECISIONS}
    for p in PRECISIONS:  # warm-up (oneDNN kernel selection, allocator)
        bb.precision = p
        bb.embed(x)
    for r in range(repeats):
        for p in PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]:
            bb.precision = p
            t = time.perf_counter()
            emb[p] = bb.embed(x)
            times[p].append(time.perf_counter() - t)
    np.savez(out, **emb)
    ratios = [a / b for a, b in zip(times["fp32"], times["bf16"])]
    return {
        "backbone": name,
        "batch": batch,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "params_m": round(sum(p.numel() for p in bb.module.parameters()) / 1e6, 1),
        "build_s": build_s,
        "frontend_s_per_clip": frontend_s,
        "batch_s": times,
        "clips_per_s": {p: batch / statistics.median(times[p]) for p in PRECISIONS},
        "speedup_median_pair": statistics.median(ratios),
    }


def memory_worker(name: str, precision: str, batch: int, threads: int) -> dict:
    bb, x, _, _ = _setup(name, batch, threads, precision)
    for _ in range(2):
        bb.embed(x)
    return {"backbone": name, "precision": precision, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def _run(args: list[str], env: dict) -> dict:
    p = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(1)
    return json.loads(next(line for line in p.stdout.splitlines() if line.startswith("RESULT "))[7:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--speed-worker", metavar="BACKBONE", help=argparse.SUPPRESS)
    ap.add_argument("--memory-worker", nargs=2, metavar=("BACKBONE", "PRECISION"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.speed_worker:
        print("RESULT " + json.dumps(speed_worker(a.speed_worker, a.batch, a.repeats, a.threads, a.out)))
        return 0
    if a.memory_worker:
        print("RESULT " + json.dumps(memory_worker(*a.memory_worker, a.batch, a.threads)))
        return 0

    import tempfile

    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(a.threads),
        "MKL_NUM_THREADS": str(a.threads),
        "HF_HUB_OFFLINE": "1",
        "HUMWATCH_PROGRESS": "0",
    }
    common = ["--batch", str(a.batch), "--repeats", str(a.repeats), "--threads", str(a.threads)]
    load_start = os.getloadavg()[0]
    speed, memory, rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.backbones:
            out = str(Path(tmp) / f"{name}.npz")
            print(f"timing {name} (fp32 and bf16 alternately) ...", file=sys.stderr, flush=True)
            s = _run(["--speed-worker", name, "--out", out, *common], env)
            with np.load(out) as z:
                a32, a16 = z["fp32"].astype(np.float64), z["bf16"].astype(np.float64)
            cos = (a32 * a16).sum(1) / (np.linalg.norm(a32, axis=1) * np.linalg.norm(a16, axis=1))
            s["cosine"] = cos.tolist()
            speed.append(s)
            for prec in PRECISIONS:
                print(f"peak memory of {name} {prec} ...", file=sys.stderr, flush=True)
                memory.append(_run(["--memory-worker", name, prec, *common], env))
            mem = {m["precision"]: m["peak_rss_mib"] for m in memory if m["backbone"] == name}
            rows.append(
                {
                    "backbone": name,
                    "fp32_clips_per_s": s["clips_per_s"]["fp32"],
                    "bf16_clips_per_s": s["clips_per_s"]["bf16"],
                    "speedup": s["speedup_median_pair"],
                    "cosine_min": float(cos.min()),
                    "cosine_mean": float(cos.mean()),
                    "fp32_peak_rss_mib": mem["fp32"],
                    "bf16_peak_rss_mib": mem["bf16"],
                    "frontend_s_per_clip": s["frontend_s_per_clip"],
                }
            )
    import torch

    doc = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "settings": {"batch": a.batch, "repeats": a.repeats, "threads": a.threads},
        "loadavg_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "speed": speed,
        "memory": memory,
        "summary": rows,
    }
    for r in rows:
        if r["backbone"] == "ast":
            doc["ast_target_met"] = bool(r["speedup"] >= AST_TARGET_SPEEDUP and r["cosine_min"] >= AST_TARGET_COSINE)
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")

    la = doc["loadavg_1min_start_end"]
    print(
        f"\n{doc['date']}  {doc['cpu']}  ({doc['cores']} cores, torch {doc['torch']}, batch {a.batch}, "
        f"{a.repeats} repeats, {a.threads} threads; load average {la[0]} at start, {la[1]} at end)\n"
    )
    print(
        "| backbone | fp32 clips/s | bf16 clips/s | bf16/fp32 speed | cosine bf16 vs fp32 (min / mean) "
        "| peak RSS fp32 / bf16 (MiB) | frontend s/clip |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['backbone']} | {r['fp32_clips_per_s']:.2f} | {r['bf16_clips_per_s']:.2f} | {r['speedup']:.2f}x "
            f"| {r['cosine_min']:.5f} / {r['cosine_mean']:.5f} | {r['fp32_peak_rss_mib']:.0f} / {r['bf16_peak_rss_mib']:.0f} "
            f"| {r['frontend_s_per_clip']:.3f} |"
        )
    print("\nper-batch seconds:")
    for s in speed:
        print(f"  {s['backbone']}: " + "; ".join(f"{p} {', '.join(f'{t:.2f}' for t in s['batch_s'][p])}" for p in PRECISIONS))
    if "ast_target_met" in doc:
        print(
            f"\nAST target (bf16 >= {AST_TARGET_SPEEDUP}x fp32, cosine >= {AST_TARGET_COSINE}): "
            f"{'MET' if doc['ast_target_met'] else 'NOT MET'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
