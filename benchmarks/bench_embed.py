"""Is it fast? AST and ResNeXt embeddings of the same clips by the plain pipelines and by humwatch.

One run measures, for each model (AST and ResNeXt-101 32x8d, random init) on the same generated 10 s
clips (read from WAV files, frontend included):

* ``plain``: what a user would write: AST: ``ASTFeatureExtractor`` + ``ASTModel`` in fp32; ResNeXt:
  ``timm.create_model("resnext101_32x8d", num_classes=0)`` on the study's librosa log-mel image; one
  clip at a time;
* ``humwatch fp32`` / ``humwatch bf16``: :func:`humwatch.embed.embed_clips` (batched) with ``--precision fp32`` / ``bf16``;
* ``onnx fp32`` / ``onnx int8``: the same network exported by :mod:`humwatch.export`, on ONNX Runtime
  (int8: dynamic quantisation), frontend and reader as :mod:`humwatch.onnxrun` runs them;
* ``openvino f32`` / ``bf16`` / ``int8``: the same network converted by :func:`humwatch.export.write_openvino`,
  compiled by :func:`humwatch.ovrun.compile_model` with f32 / bf16 inference precision; int8: NNCF
  post-training quantisation calibrated on other generated normal clips (compiled as ``--runtime
  openvino`` compiles it: bf16 where the CPU has it);

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

Targets (issues 13 and 22): AST embeddings at least 3x the plain pipeline's clips/s, ResNeXt at least
3x the plain timm pipeline's, each with cosine >= 0.999 to humwatch fp32.
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

MODELS = {"ast": "ast", "resnext": "resnext101_32x8d"}
"""The benchmark's names of the models -> humwatch's backbones."""
ROWS = ("plain", "humwatch-fp32", "humwatch-bf16", "onnx-fp32", "onnx-int8", "openvino-f32", "openvino-bf16", "openvino-int8")
PEAK_OF = {
    "plain": "fp32",
    "humwatch-fp32": "fp32",
    "humwatch-bf16": "bf16",
    "onnx-fp32": "fp32",
    "onnx-int8": "fp32",
    "openvino-f32": "fp32",
    "openvino-bf16": "bf16",
    "openvino-int8": "bf16",
}
"""The matmul peak each row's share is of (int8 rows: the float peak of what their other layers run in)."""
EXPORTED = ("onnx-fp32", "onnx-int8", "openvino-f32", "openvino-int8")
"""The rows whose model file the export worker writes (openvino-bf16 compiles openvino-f32's)."""
CALIBRATION_CLIPS = 8
"""Generated normal clips (not the timed ones) that calibrate OpenVINO int8."""
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni")
TARGET_RATIO, TARGET_COSINE = 3.0, 0.999


# -- the rows ------------------------------------------------------------------------------------------------
def plain_runner(model: str = "ast"):
    """The pipeline a user writes from the Hugging Face docs (random weights instead of from_pretrained)."""
    if model == "resnext":
        return plain_timm_runner()
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


def plain_timm_runner():
    """The pipeline a user writes from timm's docs and the study (its log-mel image: librosa, hop
    128, 128 mels, dB, normalised per clip, 3 channels), random weights (seed 0, as humwatch's)."""
    import librosa
    import soundfile as sf
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("resnext101_32x8d", pretrained=False, num_classes=0).eval()

    def run(paths):
        out = []
        for p in paths:
            y, sr = sf.read(p, dtype="float32")
            y = y.mean(axis=1) if y.ndim > 1 else y
            mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=128, n_mels=128)
            db = librosa.power_to_db(mel, ref=1.0, top_db=80.0)
            x = np.repeat(((db - db.mean()) / (db.std() + 1e-6))[None].astype(np.float32), 3, axis=0)
            with torch.no_grad():
                out.append(model(torch.from_numpy(x)[None])[0].numpy())
        return np.stack(out)

    return run


def humwatch_runner(precision: str, batch: int, model: str = "ast"):
    from humwatch.data.clips import Clip
    from humwatch.embed import embed_clips
    from humwatch.models import create_backbone
    from humwatch.reader import ClipReader

    bb = create_backbone(MODELS[model], weights="none", precision=precision)

    def run(paths):
        clips = [Clip(p, "fan", "id_00", 0) for p in paths]
        return embed_clips(clips, bb, batch_size=batch, reader=ClipReader(progress=False)).X

    return run


def onnx_runner(model: str, batch: int, threads: int, frontend: str = "ast"):
    import onnxruntime as ort

    from humwatch.data.clips import Clip
    from humwatch.features import get_frontend
    from humwatch.reader import ClipReader

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not slow the next row
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    fe = get_frontend(frontend)

    def run(paths):
        clips = [Clip(p, "fan", "id_00", 0) for p in paths]
        return np.concatenate(
            [sess.run(None, {"input": np.stack(xs)})[0] for _, xs in ClipReader(progress=False).batches(clips, batch, "", fe)]
        )

    return run


def openvino_runner(model: str, batch: int, threads: int, precision: str | None, frontend: str = "ast"):
    """As ``--runtime openvino`` runs a network (:class:`humwatch.ovrun.OpenvinoMethod`): the reader,
    the frontend, the compiled model; ``precision`` None: the rule of --precision auto."""
    from humwatch.data.clips import Clip
    from humwatch.features import get_frontend
    from humwatch.ovrun import compile_model, run_compiled
    from humwatch.reader import ClipReader

    compiled = compile_model(model, precision, threads)
    fe = get_frontend(frontend)

    def run(paths):
        clips = [Clip(p, "fan", "id_00", 0) for p in paths]
        return np.concatenate([run_compiled(compiled, np.stack(xs)) for _, xs in ClipReader(progress=False).batches(clips, batch, "", fe)])

    return run


FRONTEND = {"ast": "ast", "resnext": "cnn"}


def runner(row: str, a, models: dict, model: str = "ast"):
    if row == "plain":
        return plain_runner(model)
    if row.startswith("humwatch-"):
        return humwatch_runner(row.split("-")[1], a.batch, model)
    if row.startswith("onnx-"):
        return onnx_runner(models[row], a.batch, a.threads, FRONTEND[model])
    precision = {"openvino-f32": "f32", "openvino-bf16": "bf16", "openvino-int8": None}[row]
    return openvino_runner(models["openvino-f32" if row == "openvino-bf16" else row], a.batch, a.threads, precision, FRONTEND[model])


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


def flops_per_clip(model: str = "ast") -> float:
    """FLOPs of one forward pass of ``model`` (AST: eager attention, so that its matrix products are counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from humwatch.models import create_backbone

    extra = {"attention": "eager"} if model == "ast" else {}
    bb = create_backbone(MODELS[model], weights="none", precision="fp32", **extra)
    x = torch.from_numpy(bb.frontend.batch([np.zeros(160000, dtype=np.float32)]))  # one 10 s clip's input
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


def speed_worker(a, paths: list[str], models: dict, model: str = "ast") -> dict:
    """Every row of ``model``, taking turns; embeddings saved to compare; the matmul peaks before and after."""
    peaks = {p: [matmul_peak(p)] for p in ("fp32", "bf16")}  # before and after the rows: load changes
    runs = {row: runner(row, a, models, model) for row in ROWS}
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
            print(f"  {model} round {r + 1}: {row} {times[row][-1]:.1f} s", file=sys.stderr, flush=True)
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
    out["flops_per_clip"] = flops_per_clip(model)
    if a.profile and model == "ast":
        out["profile"] = {p: profile_split(p, paths, a.batch) for p in ("fp32", "bf16")}
    return out


def memory_worker(a, row: str, paths: list[str], models: dict, model: str = "ast") -> dict:
    run = runner(row, a, models, model)
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


def export_worker(a, paths: list[str], out: str, calibration: list[str], model: str = "ast") -> dict:
    """``model`` exported as ONNX fp32 and int8 (humwatch.export.write_onnx, checked against PyTorch)
    and converted to OpenVINO f32 and int8 (write_openvino: checked too; int8 by NNCF, calibrated on
    the ``calibration`` clips)."""
    from humwatch.audio import load_audio
    from humwatch.convert import _quantize, _relative_error, _run_onnx
    from humwatch.export import write_onnx, write_openvino
    from humwatch.models import create_backbone

    bb = create_backbone(MODELS[model], weights="none", precision="fp32")
    x = bb.frontend.batch([load_audio(p) for p in paths[:2]])
    net = {"module": bb.module, "frontend": bb.frontend, "output": "embedding"}
    models, checks, seconds = {}, {}, {}
    t = time.perf_counter()
    models["onnx-fp32"] = str(Path(out) / f"{model}-onnx-fp32.onnx")
    checks["onnx-fp32"] = write_onnx(net, x, models["onnx-fp32"])
    seconds["onnx-fp32"] = time.perf_counter() - t
    t = time.perf_counter()  # int8 as write_onnx(int8=True) makes it, from the fp32 file (one export of the network, not two)
    models["onnx-int8"] = str(Path(out) / f"{model}-onnx-int8.onnx")
    _quantize(Path(models["onnx-fp32"]), Path(models["onnx-int8"]))
    want = bb.embed(x)
    checks["onnx-int8"] = {"int8_relative_error": _relative_error(_run_onnx(Path(models["onnx-int8"]), x), want)}
    seconds["onnx-int8"] = time.perf_counter() - t
    cal = bb.frontend.batch([load_audio(p) for p in calibration])
    for row, c in (("openvino-f32", None), ("openvino-int8", cal)):
        t = time.perf_counter()
        models[row] = str(Path(out) / f"{model}-{row}.xml")
        checks[row] = write_openvino(net, x, models[row], calibration=c, onnx_model=models["onnx-fp32"])
        seconds[row] = time.perf_counter() - t
    return {"models": models, "checks": checks, "seconds": seconds}


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
    import openvino
    import timm
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
        "openvino": openvino.get_version(),
        "timm": timm.__version__,
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
    ap.add_argument("--models", default="ast,resnext", help="comma separated: ast, resnext")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="no peak-memory process per row")
    ap.add_argument("--no-extras", dest="extras", action="store_false", help="no `humwatch embed` runs and no memory-growth run")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.grow_from = a.grow_from or a.batch
    if a.worker:
        import torch

        torch.set_num_threads(a.threads)
        kind, spec = a.worker[0], json.loads(a.worker[1])
        fn = {
            "speed": lambda: speed_worker(a, spec["paths"], spec["models"], spec["model"]),
            "memory": lambda: memory_worker(a, spec["row"], spec["paths"], spec["models"], spec["model"]),
            "grow": lambda: grow_worker(a, spec["paths"]),
            "export": lambda: export_worker(a, spec["paths"], spec["out"], spec["calibration"], spec["model"]),
        }[kind]
        print("RESULT " + json.dumps(fn()))
        return 0

    from humwatch.data.synth import synthesize

    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1", "HUMWATCH_PROGRESS": "0"}
    common = ["--batch", str(a.batch), "--rounds", str(a.rounds), "--threads", str(a.threads)] + ([] if a.profile else ["--no-profile"])
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        raise SystemExit(f"--models: choose from {', '.join(MODELS)}")
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "machine": machine(),
        "settings": {"clips": a.clips, "batch": a.batch, "rounds": a.rounds, "threads": a.threads, "models": models},
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
            n_normal=max(a.clips + CALIBRATION_CLIPS, n_grow),
            n_anomalous=0,
            snr_db=6.0,
            seed=0,
            seconds=10.0,
            channels=1,
            progress=False,
        )
        paths = [c.path for c in clips]
        some = paths[: a.clips]
        calibration = paths[a.clips : a.clips + CALIBRATION_CLIPS]
        doc["export_checks"], doc["export_seconds"], doc["speed"], doc["memory"] = {}, {}, {}, {}
        for model in models:
            print(f"{model}: exporting to ONNX (fp32, int8) and OpenVINO (f32, int8) ...", file=sys.stderr, flush=True)
            spec = {"paths": some, "out": str(tmp), "calibration": calibration, "model": model}
            exp = _worker(["--worker", "export", json.dumps(spec), *common], env)
            doc["export_checks"][model], doc["export_seconds"][model] = exp["checks"], exp["seconds"]
            print(f"{model}: timing every row, taking turns ...", file=sys.stderr, flush=True)
            doc["load"][f"{model}_speed_start"] = _load()
            spec = {"paths": some, "models": exp["models"], "model": model}
            doc["speed"][model] = _worker(["--worker", "speed", json.dumps(spec), *common], env)
            doc["load"][f"{model}_speed_end"] = _load()
            if a.json:  # what is measured so far, in case a later model fails
                Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
            doc["memory"][model] = {}
            for row in ROWS if a.memory else ():
                print(f"{model}: peak memory: {row} ...", file=sys.stderr, flush=True)
                spec = {"row": row, "paths": some, "models": exp["models"], "model": model}
                doc["memory"][model][row] = _worker(["--worker", "memory", json.dumps(spec), *common], env)["peak_rss_mib"]
        if a.extras:
            print("humwatch embed: first run and cached rerun ...", file=sys.stderr, flush=True)
            cli_data = tmp / "cli"
            (cli_data / "normal").mkdir(parents=True)
            for p in some:
                shutil.copy(p, cli_data / "normal" / Path(p).name)
            doc["cli"] = cli_runs(cli_data, tmp / "cache", env)
            print(f"memory as clips grow: {a.grow_from} and {n_grow} ...", file=sys.stderr, flush=True)
            doc["grow"] = _worker(
                ["--worker", "grow", json.dumps({"paths": paths[:n_grow]}), *common, "--grow-from", str(a.grow_from)], env
            )
    doc["load"]["end"] = _load()
    doc["rows"] = summary(doc)
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    print_report(doc)
    return 0


def summary(doc: dict) -> list[dict]:
    n = doc["settings"]["clips"]
    rows = []
    for model, s in doc["speed"].items():
        rate = {row: n / statistics.median(t) for row, t in s["times"].items()}
        for row in ROWS:
            peak = s["peaks"][PEAK_OF[row]]
            cpu_s = statistics.median(s["cpu_times"][row]) / n
            rows.append(
                {
                    "model": model,
                    "row": row,
                    "clips_per_s": rate[row],
                    "ratio": rate[row] / rate["plain"],
                    "cpu_s_per_clip": cpu_s,
                    "cpu_ratio": statistics.median(s["cpu_times"]["plain"]) / n / cpu_s,
                    "peak_rss_mib": doc["memory"].get(model, {}).get(row),
                    "cosine": s["cosine"][row],
                    "deviation": s["deviation"][row],
                    "peak_fraction": s["flops_per_clip"] * rate[row] / (peak * 1e9),
                    "peak_of": PEAK_OF[row],
                }
            )
    return rows


NAMES = {
    "plain": "plain pipeline (fp32, one clip at a time)",
    "humwatch-fp32": "humwatch fp32",
    "humwatch-bf16": "humwatch bf16",
    "onnx-fp32": "ONNX Runtime fp32",
    "onnx-int8": "ONNX Runtime int8",
    "openvino-f32": "OpenVINO f32",
    "openvino-bf16": "OpenVINO bf16",
    "openvino-int8": "OpenVINO int8 (NNCF)",
}
PLAIN = {"ast": "plain HF pipeline (fp32, one clip at a time)", "resnext": "plain timm pipeline (fp32, one clip at a time)"}


def print_report(doc: dict) -> None:
    m, st = doc["machine"], doc["settings"]
    load = doc["load"]
    print(
        f"\n{doc['date']}: {m['cpu']}, {m['cores']} cores, flags {', '.join(m['flags'])}; {m['memory_gib']} GiB; "
        f"torch {m['torch']}, transformers {m['transformers']}, timm {m.get('timm')}, onnxruntime {m['onnxruntime']}, "
        f"openvino {m.get('openvino')}; precision auto = {m['auto_precision']} here"
    )
    print(
        f"{st['clips']} clips of 10 s, batch {st['batch']} (plain: 1), {st['rounds']} rounds, {st['threads']} threads; "
        "load average (1, 5, 15 min): " + "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in load.items())
    )
    for model, s in doc["speed"].items():
        libs = ", ".join(f"{lib} {max(p[lib] for p in s['peaks_all']['fp32']):.0f}" for lib in s["peaks_all"]["fp32"][0])
        print(
            f"{model}: matmul peak (2048 x 2048, best of 5, before and after its rows): fp32 {s['peaks']['fp32']:.0f} GFLOP/s "
            f"({libs}), bf16 {s['peaks']['bf16']:.0f} GFLOP/s (torch); {s['flops_per_clip'] / 1e9:.0f} GFLOP per clip"
        )
    print(
        "\n| model | pipeline | clips/s | vs plain | CPU s/clip (vs plain) | peak RSS (MiB) | cosine to fp32 (min) "
        "| deviation / between-clip spread | share of matmul peak |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in doc["rows"]:
        rss = "-" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:.0f}"
        name = PLAIN[r["model"]] if r["row"] == "plain" else NAMES[r["row"]]
        print(
            f"| {r['model']} | {name} | {r['clips_per_s']:.3f} | {r['ratio']:.2f}x | {r['cpu_s_per_clip']:.2f} "
            f"({r['cpu_ratio']:.2f}x) | {rss} | "
            f"{r['cosine']:.5f} | {r['deviation']:.3f} | {100 * r['peak_fraction']:.0f} % of {r['peak_of']} |"
        )
    for model, checks in doc.get("export_checks", {}).items():

        def err(row: str, c: dict) -> float:
            return c["int8_relative_error"] if "int8" in row else c.get("openvino_f32_relative_error", c.get("fp32_relative_error"))

        print(
            f"{model} exports (largest difference to PyTorch fp32 on 2 clips, relative; seconds to write): "
            + ", ".join(f"{row} {err(row, c):.1e} ({doc['export_seconds'][model][row]:.0f} s)" for row, c in checks.items())
        )
    if "cli" in doc:
        c, n = doc["cli"], st["clips"]
        print(
            f"\n`humwatch embed` ({n} clips, start-up included): first run {c['first']['seconds']:.1f} s "
            f"({n / c['first']['seconds']:.3f} clips/s), cached rerun {c['cached']['seconds']:.1f} s "
            f"({c['first']['seconds'] / c['cached']['seconds']:.1f}x faster; it said: {c['cached']['said']})"
        )
    if "grow" in doc:
        g = doc["grow"]
        print(
            f"memory as clips grow (one process, {g['precision']}): peak RSS {g['peak_rss_mib'][0]:.0f} MiB after "
            f"{g['clips'][0]} clips, {g['peak_rss_mib'][1]:.0f} MiB after {g['clips'][1]} more ({g['clips_per_s']:.2f} clips/s)"
        )
    for p, split in doc["speed"].get("ast", {}).get("profile", {}).items():
        print(
            f"where AST {p} time goes: "
            + ", ".join(f"{k} {100 * v:.0f} %" for k, v in split.items() if k != "seconds_per_clip")
            + f" ({split['seconds_per_clip']:.2f} s/clip under the profiler)"
        )
    print()
    for model in doc["speed"]:
        rows = [r for r in doc["rows"] if r["model"] == model and r["row"] != "plain" and r["cosine"] >= TARGET_COSINE]
        best = max(rows, key=lambda r: r["ratio"], default=None)
        if best:
            print(
                f"{model} target (>= {TARGET_RATIO}x plain, cosine >= {TARGET_COSINE}): best {best['row']} {best['ratio']:.2f}x "
                f"(CPU time {best['cpu_ratio']:.2f}x): {'MET' if best['ratio'] >= TARGET_RATIO else 'NOT MET'}"
            )
        else:
            print(f"{model} target: NOT MET (no row reaches cosine {TARGET_COSINE})")


if __name__ == "__main__":
    sys.exit(main())
