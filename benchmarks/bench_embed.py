"""Is it fast? AST embeddings of the same clips by the plain Hugging Face pipeline and by humwatch.

One run measures, on the same generated 10 s clips (read from WAV files, frontend included):

* ``plain``: what a user would write: ``ASTFeatureExtractor`` + ``ASTModel`` in fp32, one clip at a time;
* ``humwatch fp32`` / ``humwatch bf16``: :func:`humwatch.embed.embed_clips` (batched) with ``--precision fp32`` / ``bf16``;
* ``onnx fp32`` / ``onnx int8``: the same network exported by :mod:`humwatch.export`, on ONNX Runtime
  (int8: dynamic quantisation), frontend and reader as :mod:`humwatch.onnxrun` runs them;

and reports clips/s, the ratio to ``plain``, peak memory (one fresh process per row), the cosine of
each row's embeddings to humwatch fp32's, and the fraction of the machine's matrix-multiply peak the
model reaches (the peak measured here: fp32 and bf16 square matmuls, best of 5; the model's FLOPs
counted by torch's FlopCounterMode). Also: where the time goes in fp32 and bf16 (torch profiler),
``humwatch embed`` from the command line, first run and fully cached rerun (start-up included), and
peak memory as the number of clips grows 10x.

The rows take turns (round r starts with row r) in short rounds, so load from other processes on a
shared machine hits them alike, and the median round counts; each row's CPU time (all its threads)
is reported beside its wall time, and the load average at each phase. The AST is random-initialised (seed 0,
the same weights in every row): speed does not depend on the weights' values (the cosines might).

    .venv/bin/python benchmarks/bench_embed.py --clips 4 --batch 4 --rounds 4 --json bench_embed.json

Target (issue 13): humwatch AST embeddings at least 3x the plain pipeline's clips/s with cosine >= 0.999 to fp32.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS = ("plain", "humwatch-fp32", "humwatch-bf16", "onnx-fp32", "onnx-int8")
PEAK_OF = {"plain": "fp32", "humwatch-fp32": "fp32", "humwatch-bf16": "bf16", "onnx-fp32": "fp32", "onnx-int8": "fp32"}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni")
TARGET_RATIO, TARGET_COSINE = 3.0, 0.999


# -- the rows ------------------------------------------------------------------------------------------------
def plain_runner():
    """The pipeline a user writes from the Hugging Face docs (random weights instead of from_pretrained)."""
    import soundfile as sf
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    fe = ASTFeatureExtractor()
    torch.manual_seed(0)
    model = ASTModel(ASTConfig()).eval()

    def run(paths):
        out = []
        for p in paths:
            y, sr = sf.read(p, dtype="float32")
            inputs = fe(y.mean(axis=1) if y.ndim > 1 else y, sampling_rate=sr, return_tensors="pt")
            with torch.no_grad():
                out.append(model(**inputs).pooler_output[0].numpy())
        return np.stack(out)

    return run


def humwatch_runner(precision: str, batch: int):
    from humwatch.data.clips import Clip
    from humwatch.embed import embed_clips
    from humwatch.models import create_backbone
    from humwatch.reader import ClipReader

    bb = create_backbone("ast", weights="none", precision=precision)

    def run(paths):
        clips = [Clip(p, "fan", "id_00", 0) for p in paths]
        return embed_clips(clips, bb, batch_size=batch, reader=ClipReader(progress=False)).X

    return run


def onnx_runner(model: str, batch: int, threads: int):
    import onnxruntime as ort

    from humwatch.data.clips import Clip
    from humwatch.features import get_frontend
    from humwatch.reader import ClipReader

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not slow the next row
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    fe = get_frontend("ast")

    def run(paths):
        clips = [Clip(p, "fan", "id_00", 0) for p in paths]
        return np.concatenate(
            [sess.run(None, {"input": np.stack(xs)})[0] for _, xs in ClipReader(progress=False).batches(clips, batch, "", fe)]
        )

    return run


def runner(row: str, a, models: dict):
    if row == "plain":
        return plain_runner()
    if row.startswith("humwatch-"):
        return humwatch_runner(row.split("-")[1], a.batch)
    return onnx_runner(models[row], a.batch, a.threads)


# -- measurements in a worker process -----------------------------------------------------------------------
def matmul_peak(dtype: str, n: int = 2048, reps: int = 5) -> dict:
    """GFLOP/s of an n x n matrix product in ``dtype``, best of ``reps`` after a warm-up, by each
    library at hand: torch (MKL for fp32, oneDNN for bf16), numpy's BLAS and ONNX Runtime's MLAS
    (fp32). Libraries differ a lot on some CPUs (MKL on AMD), so the machine's peak is their best."""
    import torch

    def best(f) -> float:
        f()
        t_min = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            f()
            t_min = min(t_min, time.perf_counter() - t)
        return 2 * n**3 / t_min / 1e9

    d = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, b = torch.randn(n, n, dtype=d), torch.randn(n, n, dtype=d)
    out = {"torch": best(lambda: a @ b)}
    if dtype == "fp32":
        import onnx.helper as h
        import onnxruntime as ort

        an, bn = a.numpy(), b.numpy()
        out["numpy"] = best(lambda: an @ bn)
        spec = [h.make_tensor_value_info(k, 1, [n, n]) for k in "ABC"]
        g = h.make_graph([h.make_node("MatMul", ["A", "B"], ["C"])], "mm", spec[:2], spec[2:])
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(
            h.make_model(g, opset_imports=[h.make_opsetid("", 18)]).SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
        out["onnxruntime"] = best(lambda: sess.run(None, {"A": an, "B": bn}))
    return out


def flops_per_clip() -> float:
    """FLOPs of one AST forward pass (eager attention, so that its matrix products are counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from humwatch.models import create_backbone

    bb = create_backbone("ast", weights="none", precision="fp32", attention="eager")
    x = torch.zeros(1, *bb.input_shape)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        bb.module(x)
    return float(fc.get_total_flops())


def profile_split(precision: str, paths: list[str], batch: int) -> dict:
    """Share of the model's CPU time in linear layers, attention, copies/casts and the rest."""
    from torch.profiler import ProfilerActivity, profile

    from humwatch.models import create_backbone

    bb = create_backbone("ast", weights="none", precision=precision)
    from humwatch.audio import load_audio

    x = bb.frontend.batch([load_audio(p) for p in paths[:batch]])
    bb.embed(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        bb.embed(x)
    groups = {
        "linear": ("addmm", "mm", "matmul", "bmm", "linear"),
        "attention": ("scaled_dot_product", "softmax"),
        "copies and casts": ("copy_", "_to_copy", "clone", "contiguous"),
    }
    out = {k: 0.0 for k in (*groups, "other")}
    for e in prof.key_averages():
        name = e.key.split("::")[-1]
        key = next((g for g, names in groups.items() if any(n in name for n in names)), "other")
        out[key] += e.self_cpu_time_total
    total = sum(out.values()) or 1.0
    return {"seconds_per_clip": total / 1e6 / len(x), **{k: v / total for k, v in out.items()}}


def speed_worker(a, paths: list[str], models: dict) -> dict:
    """Every row, taking turns; embeddings saved to compare; the matmul peaks before and after."""
    peaks = {p: [matmul_peak(p)] for p in ("fp32", "bf16")}  # before and after the rows: load changes
    runs = {row: runner(row, a, models) for row in ROWS}
    for row in ROWS:  # warm-up: kernel selection, allocator, lazy imports
        runs[row](paths[:1])
    times = {row: [] for row in ROWS}
    cpu = {row: [] for row in ROWS}
    emb = {}
    for r in range(a.rounds):
        for row in ROWS[r % len(ROWS) :] + ROWS[: r % len(ROWS)]:
            t, c = time.perf_counter(), time.process_time()
            emb[row] = runs[row](paths)
            times[row].append(time.perf_counter() - t)
            cpu[row].append(time.process_time() - c)
            print(f"  round {r + 1}: {row} {times[row][-1]:.1f} s", file=sys.stderr, flush=True)
    del runs
    for p in peaks:
        peaks[p].append(matmul_peak(p))
    ref = emb["humwatch-fp32"].astype(np.float64)
    spread = float(np.linalg.norm(ref - ref.mean(0), axis=1).mean())
    out = {
        "times": times,
        "cpu_times": cpu,
        "peaks": {p: max(max(m.values()) for m in v) for p, v in peaks.items()},
        "peaks_all": peaks,
        "cosine": {},
        "deviation": {},
    }
    for row, e in emb.items():
        e = e.astype(np.float64)
        out["cosine"][row] = float(((e * ref).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(ref, axis=1)).min())
        out["deviation"][row] = float(np.linalg.norm(e - ref, axis=1).mean() / spread)
    out["flops_per_clip"] = flops_per_clip()
    if a.profile:
        out["profile"] = {p: profile_split(p, paths, a.batch) for p in ("fp32", "bf16")}
    return out


def memory_worker(a, row: str, paths: list[str], models: dict) -> dict:
    run = runner(row, a, models)
    run(paths)
    return {"row": row, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def grow_worker(a, paths: list[str]) -> dict:
    """humwatch's default (precision auto), no cache: peak memory after the first batch of clips and
    after all of them (10x as many), in one process, and the time the rest took."""
    from humwatch.data.clips import Clip
    from humwatch.embed import embed_clips
    from humwatch.models import create_backbone
    from humwatch.reader import ClipReader

    bb = create_backbone("ast", weights="none")
    clips = [Clip(p, "fan", "id_00", 0) for p in paths]

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    embed_clips(clips[: a.grow_from], bb, batch_size=a.batch, reader=ClipReader(progress=False))
    first = peak()
    t = time.perf_counter()
    embed_clips(clips, bb, batch_size=a.batch, reader=ClipReader(progress=False))
    return {
        "clips": [a.grow_from, len(clips)],
        "peak_rss_mib": [first, peak()],
        "precision": bb.precision,
        "clips_per_s": len(clips) / (time.perf_counter() - t),
    }


def export_worker(a, paths: list[str], out: str) -> dict:
    """The AST exported as ONNX fp32 and int8 (humwatch.export.write_onnx, checked against PyTorch)."""
    from humwatch.audio import load_audio
    from humwatch.export import write_onnx
    from humwatch.models import create_backbone

    bb = create_backbone("ast", weights="none", precision="fp32")
    x = bb.frontend.batch([load_audio(p) for p in paths[:2]])
    net = {"module": bb.module, "frontend": bb.frontend, "output": "embedding"}
    models, checks = {}, {}
    for row, int8 in (("onnx-fp32", False), ("onnx-int8", True)):
        models[row] = str(Path(out) / f"{row}.onnx")
        checks[row] = write_onnx(net, x, models[row], int8=int8)
    return {"models": models, "checks": checks}


# -- the driver ------------------------------------------------------------------------------------------
def _worker(args: list[str], env: dict) -> dict:
    p = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"worker {args[:2]} failed")
    return json.loads(next(line for line in p.stdout.splitlines() if line.startswith("RESULT "))[7:])


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def machine() -> dict:
    from humwatch.models.precision import resolve_precision
    from humwatch.runinfo import cpu_flags

    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if ln.startswith("Model name:")
        ),
        platform.processor(),
    )
    flags = cpu_flags()
    import onnxruntime
    import torch
    import transformers

    return {
        "cpu": model,
        "flags": [f for f in FLAGS if f in flags],
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "auto_precision": resolve_precision("auto", "cpu"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def cli_runs(data: Path, cache: Path, env: dict) -> dict:
    """`humwatch embed` twice with the same cache: start-up included; the second finds every clip cached."""
    out = {}
    for name in ("first", "cached"):
        argv = [
            sys.executable,
            "-m",
            "humwatch.cli",
            "embed",
            "--data",
            str(data),
            "--out",
            str(cache.parent / f"{name}.npz"),
            "--backbone",
            "ast",
            "--weights",
            "none",
            "--cache",
            str(cache),
            "-q",
        ]
        t = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise SystemExit(p.stderr[-2000:])
        out[name] = {"seconds": time.perf_counter() - t, "said": " ".join(p.stdout.split())[-200:]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=4, help="clips every row embeds in each round")
    ap.add_argument("--batch", type=int, default=4, help="humwatch's and ONNX Runtime's batch (the plain pipeline: 1)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds; the rows take turns, the median round counts")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument(
        "--grow-from",
        type=int,
        help="memory growth: this many clips, then 10x (default: one batch, so that both runs hold batches of the same size)",
    )
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.grow_from = a.grow_from or a.batch
    if a.worker:
        import torch

        torch.set_num_threads(a.threads)
        kind, spec = a.worker[0], json.loads(a.worker[1])
        fn = {
            "speed": lambda: speed_worker(a, spec["paths"], spec["models"]),
            "memory": lambda: memory_worker(a, spec["row"], spec["paths"], spec["models"]),
            "grow": lambda: grow_worker(a, spec["paths"]),
            "export": lambda: export_worker(a, spec["paths"], spec["out"]),
        }[kind]
        print("RESULT " + json.dumps(fn()))
        return 0

    from humwatch.data.synth import synthesize

    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1", "HUMWATCH_PROGRESS": "0"}
    common = ["--batch", str(a.batch), "--rounds", str(a.rounds), "--threads", str(a.threads)] + ([] if a.profile else ["--no-profile"])
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "machine": machine(),
        "settings": {"clips": a.clips, "batch": a.batch, "rounds": a.rounds, "threads": a.threads},
        "load": {},
    }
    doc["load"]["start"] = _load()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_grow = a.grow_from * 10
        clips = synthesize(
            tmp / "data",
            machines=["fan"],
            ids=["00"],
            n_normal=max(a.clips, n_grow),
            n_anomalous=0,
            snr_db=6.0,
            seed=0,
            seconds=10.0,
            channels=1,
            progress=False,
        )
        paths = [c.path for c in clips]
        some = paths[: a.clips]
        print("exporting the AST to ONNX (fp32, int8) ...", file=sys.stderr, flush=True)
        exp = _worker(["--worker", "export", json.dumps({"paths": some, "out": str(tmp)}), *common], env)
        doc["onnx_checks"] = exp["checks"]
        print("timing every row, taking turns ...", file=sys.stderr, flush=True)
        doc["load"]["speed_start"] = _load()
        doc["speed"] = _worker(["--worker", "speed", json.dumps({"paths": some, "models": exp["models"]}), *common], env)
        doc["load"]["speed_end"] = _load()
        doc["memory"] = {}
        for row in ROWS:
            print(f"peak memory: {row} ...", file=sys.stderr, flush=True)
            spec = {"row": row, "paths": some, "models": exp["models"]}
            doc["memory"][row] = _worker(["--worker", "memory", json.dumps(spec), *common], env)["peak_rss_mib"]
        print("humwatch embed: first run and cached rerun ...", file=sys.stderr, flush=True)
        cli_data = tmp / "cli"
        (cli_data / "normal").mkdir(parents=True)
        for p in some:
            shutil.copy(p, cli_data / "normal" / Path(p).name)
        doc["cli"] = cli_runs(cli_data, tmp / "cache", env)
        print(f"memory as clips grow: {a.grow_from} and {n_grow} ...", file=sys.stderr, flush=True)
        doc["grow"] = _worker(["--worker", "grow", json.dumps({"paths": paths[:n_grow]}), *common, "--grow-from", str(a.grow_from)], env)
    doc["load"]["end"] = _load()
    doc["rows"] = summary(doc)
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    print_report(doc)
    return 0


def summary(doc: dict) -> list[dict]:
    s, n = doc["speed"], doc["settings"]["clips"]
    rate = {row: n / statistics.median(t) for row, t in s["times"].items()}
    rows = []
    for row in ROWS:
        peak = s["peaks"][PEAK_OF[row]]
        cpu_s = statistics.median(s["cpu_times"][row]) / n
        rows.append(
            {
                "row": row,
                "clips_per_s": rate[row],
                "ratio": rate[row] / rate["plain"],
                "cpu_s_per_clip": cpu_s,
                "cpu_ratio": statistics.median(s["cpu_times"]["plain"]) / n / cpu_s,
                "peak_rss_mib": doc["memory"][row],
                "cosine": s["cosine"][row],
                "deviation": s["deviation"][row],
                "peak_fraction": s["flops_per_clip"] * rate[row] / (peak * 1e9),
                "peak_of": PEAK_OF[row],
            }
        )
    return rows


def print_report(doc: dict) -> None:
    m, st, s = doc["machine"], doc["settings"], doc["speed"]
    print(
        f"\n{doc['date']}: {m['cpu']}, {m['cores']} cores, flags {', '.join(m['flags'])}; {m['memory_gib']} GiB; "
        f"torch {m['torch']}, transformers {m['transformers']}, onnxruntime {m['onnxruntime']}; "
        f"precision auto = {m['auto_precision']} here"
    )
    print(
        f"{st['clips']} clips of 10 s, batch {st['batch']} (plain: 1), {st['rounds']} rounds, {st['threads']} threads; "
        f"load average (1, 5, 15 min): {doc['load']['start']} at start, {doc['load']['speed_end']} after timing, "
        f"{doc['load']['end']} at end"
    )
    libs = ", ".join(f"{lib} {max(m[lib] for m in s['peaks_all']['fp32']):.0f}" for lib in s["peaks_all"]["fp32"][0])
    print(
        f"matmul peak (2048 x 2048, best of 5, before and after): fp32 {s['peaks']['fp32']:.0f} GFLOP/s ({libs}), "
        f"bf16 {s['peaks']['bf16']:.0f} GFLOP/s (torch); AST: {s['flops_per_clip'] / 1e9:.0f} GFLOP per clip\n"
    )
    print(
        "| pipeline | clips/s | vs plain | CPU s/clip (vs plain) | peak RSS (MiB) | cosine to fp32 (min) "
        "| deviation / between-clip spread | share of matmul peak |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    names = {
        "plain": "plain HF pipeline (fp32, one clip at a time)",
        "humwatch-fp32": "humwatch fp32",
        "humwatch-bf16": "humwatch bf16",
        "onnx-fp32": "ONNX Runtime fp32",
        "onnx-int8": "ONNX Runtime int8",
    }
    for r in doc["rows"]:
        print(
            f"| {names[r['row']]} | {r['clips_per_s']:.3f} | {r['ratio']:.2f}x | {r['cpu_s_per_clip']:.1f} "
            f"({r['cpu_ratio']:.2f}x) | {r['peak_rss_mib']:.0f} | "
            f"{r['cosine']:.5f} | {r['deviation']:.3f} | {100 * r['peak_fraction']:.0f} % of {r['peak_of']} |"
        )
    c, n = doc["cli"], st["clips"]
    print(
        f"\n`humwatch embed` ({n} clips, start-up included): first run {c['first']['seconds']:.1f} s "
        f"({n / c['first']['seconds']:.3f} clips/s), cached rerun {c['cached']['seconds']:.1f} s "
        f"({c['first']['seconds'] / c['cached']['seconds']:.1f}x faster; it said: {c['cached']['said']})"
    )
    g = doc["grow"]
    print(
        f"memory as clips grow (one process, {g['precision']}): peak RSS {g['peak_rss_mib'][0]:.0f} MiB after "
        f"{g['clips'][0]} clips, {g['peak_rss_mib'][1]:.0f} MiB after {g['clips'][1]} more ({g['clips_per_s']:.2f} clips/s)"
    )
    for p, split in s.get("profile", {}).items():
        print(
            f"where {p} time goes: "
            + ", ".join(f"{k} {100 * v:.0f} %" for k, v in split.items() if k != "seconds_per_clip")
            + f" ({split['seconds_per_clip']:.2f} s/clip under the profiler)"
        )
    best = max((r for r in doc["rows"] if r["row"] != "plain" and r["cosine"] >= TARGET_COSINE), key=lambda r: r["ratio"], default=None)
    if best:
        print(
            f"\ntarget (>= {TARGET_RATIO}x plain, cosine >= {TARGET_COSINE}): best {best['row']} {best['ratio']:.2f}x: "
            f"{'MET' if best['ratio'] >= TARGET_RATIO else 'NOT MET'}"
        )


if __name__ == "__main__":
    sys.exit(main())
