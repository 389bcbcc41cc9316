"""Load on `humwatch serve`: N concurrent clients on loopback, clips/s and p50/p99 latency.

For each monitor kind it fits a monitor on built-in generated data (10 s fan clips, 16 kHz), copies
it to ``--machines`` machines, starts ``humwatch serve`` on 127.0.0.1 (a fresh SQLite store, or the
database ``--db URL`` names, e.g. a PostgreSQL one; one worker unless ``--workers``; the server's
micro-batching and threads as ``--max-batch``, ``--batch-wait-ms`` and ``--threads`` say, else its
defaults), and for each
number of ``--clients`` has that many threads upload ``--clips`` 10 s WAV clips (each a new row: its
own recording time) round-robin over the machines, one request at a time per client.
Latency is per request, upload to answer (scoring and the stored row included); clips/s is clips
over the wall time of the whole run. The server is warmed up first (every monitor scores a clip).

Monitors:

* ``autoencoder``: the MIMII baseline, trained from scratch on the normal clips (no pretrained
  weights at all);
* ``ast``: embed-detect with the full-size AST and the study's ``lof-vote``, **RANDOM INIT**
  (no pretrained weights here; the speed is the same as with them). ``--precision bf16`` for
  autocast.

Run::

    .venv/bin/python benchmarks/bench_service.py --monitors autoencoder ast --clients 1 4 --json bench-service.json

Batching off and every core per operation (as before micro-batching) against the defaults, 8
clients x 50 clips::

    .venv/bin/python benchmarks/bench_service.py --monitors autoencoder --clients 8 --clips 400 --max-batch 1 --threads 0
    .venv/bin/python benchmarks/bench_service.py --monitors autoencoder --clients 8 64 --clips 400

The results (``--json``) record the load (``uptime``) before and after, the CPU and the time (UTC):
the machine these run on is shared. Everything happens in a temporary folder and on 127.0.0.1 (and
in the ``--db`` database: each run's machines are named apart, ``m0-<tag>``, so that runs never
collide there); the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SETTINGS = {"autoencoder": {"epochs": 5}, "ast": {"backbone": "ast", "weights": "none", "detector": "lof-vote"}}
DEFAULT_CLIPS = {"autoencoder": 200, "ast": 24}


def fit(kind: str, data: Path, out: Path, precision: str) -> dict:
    from humwatch.calibrate import fit_monitor
    from humwatch.data import load_dataset

    settings = dict(SETTINGS[kind])
    if kind == "ast":
        settings["precision"] = precision
    method = "autoencoder" if kind == "autoencoder" else "embed-detect"
    t = time.perf_counter()
    mon, summary = fit_monitor(load_dataset(data), method, settings, folds=2, progress=False, cache_dir=out.parent / "cache")
    mon.save(out)
    return {
        "label": summary["label"],
        "weights": summary["weights"],
        "random_init": summary["random_init"],
        "fit_s": round(time.perf_counter() - t, 1),
    }


def start_server(monitors: Path, port: int, workers: int, log: Path, extra: list[str] = ()) -> subprocess.Popen:
    import httpx

    cmd = [
        sys.executable,
        "-m",
        "humwatch.cli",
        "serve",
        str(monitors),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--device",
        "cpu",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"humwatch serve exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("humwatch serve did not start in 300 s")


def uptime() -> str:
    """``uptime``'s line (the load averages), or /proc/loadavg's."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return Path("/proc/loadavg").read_text().strip()


def batch_counts(url: str, token: str) -> tuple[float, float]:
    """(batches, clips) the server's scoring batches have counted so far (``humwatch_score_batch_clips``
    on /metrics, summed over its workers)."""
    import httpx

    text = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=60).text
    values = {}
    for line in text.splitlines():
        if line.startswith(("humwatch_score_batch_clips_count", "humwatch_score_batch_clips_sum")):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    return values.get("humwatch_score_batch_clips_count", 0.0), values.get("humwatch_score_batch_clips_sum", 0.0)


def load(url: str, token: str, machines: list[str], payloads: list[bytes], clients: int, offset: int = 0) -> dict:
    """``clients`` threads send every payload once (recording times from ``offset`` on, so each is
    a new row); latencies and the wall time."""
    import httpx

    latencies, errors, lock = [], [], threading.Lock()
    todo = iter(enumerate(payloads))
    base = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)

    def client():
        with httpx.Client(timeout=600, headers={"authorization": f"Bearer {token}", "content-type": "audio/wav"}) as c:
            while True:
                with lock:
                    item = next(todo, None)
                if item is None:
                    return
                k, data = item
                when = (base + datetime.timedelta(seconds=10 * (offset + k))).isoformat()
                t = time.perf_counter()
                r = c.post(f"{url}/api/v1/machines/{machines[k % len(machines)]}/clips", content=data, params={"recorded_at": when})
                dt = time.perf_counter() - t
                with lock:
                    (latencies if r.status_code == 200 else errors).append(dt if r.status_code == 200 else r.text[:200])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {
        "clips": len(latencies),
        "errors": len(errors),
        "wall_s": round(wall, 2),
        "clips_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * q[98], 1),
        "first_error": errors[0] if errors else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--monitors", nargs="+", default=["autoencoder", "ast"], choices=sorted(SETTINGS))
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4], help="concurrent clients (one run each)")
    ap.add_argument("--clips", type=int, default=None, help="clips sent per monitor kind (default: 200 autoencoder, 24 ast)")
    ap.add_argument("--machines", type=int, default=2, help="machines (copies of the monitor) the clips are spread over")
    ap.add_argument("--workers", type=int, default=1, help="server processes")
    ap.add_argument(
        "--db",
        default=None,
        help="the server's database URL (e.g. postgresql+psycopg://USER@127.0.0.1:PORT/DB; default: a fresh SQLite file)",
    )
    ap.add_argument(
        "--max-batch", type=int, default=None, help="the server's --max-batch (1: each clip scored alone; default: the server's)"
    )
    ap.add_argument("--batch-wait-ms", type=float, default=None, help="the server's --batch-wait-ms (default: the server's)")
    ap.add_argument("--threads", type=int, default=None, help="the server's --threads (default: the server's)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="AST precision")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    import httpx

    from humwatch.data.synth import synthesize
    from humwatch.runinfo import cpu_model
    from humwatch.service.auth import create_token
    from humwatch.service.store import Store, default_db_url

    root = Path(tempfile.mkdtemp(prefix="bench-service-"))
    results = []
    started = datetime.datetime.now(datetime.timezone.utc)
    uptime_before = uptime()
    extra = ["--db", args.db] if args.db else []
    if args.max_batch is not None:
        extra += ["--max-batch", str(args.max_batch)]
    if args.batch_wait_ms is not None:
        extra += ["--batch-wait-ms", f"{args.batch_wait_ms:g}"]
    if args.threads is not None:
        extra += ["--threads", str(args.threads)]
    tag = f"-{started:%H%M%S}{os.getpid() % 1000:03d}" if args.db else ""  # machines of their own in a shared database
    try:
        synthesize(root / "train", machines=("fan",), ids=("00",), n_normal=24, n_anomalous=0, channels=1, progress=False)
        test = synthesize(root / "test", machines=("fan",), ids=("02",), n_normal=12, n_anomalous=4, channels=1, seed=1, progress=False)
        payloads = [Path(c.path).read_bytes() for c in test]
        for k_kind, kind in enumerate(args.monitors):
            monitors = root / kind / "monitors"
            machines = [f"m{i}{tag}" for i in range(args.machines)]
            info = fit(kind, root / "train", monitors / machines[0], args.precision)
            for name in machines[1:]:
                shutil.copytree(monitors / machines[0], monitors / name)
            store = Store(args.db or default_db_url(monitors))
            store.migrate()
            token = create_token(store, f"bench{tag}-{kind}", "ingest,read")  # read: /metrics (the batch sizes)
            store.close()
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            proc = start_server(monitors, port, args.workers, root / f"{kind}.log", extra)
            try:
                n = args.clips or DEFAULT_CLIPS[kind]
                url = f"http://127.0.0.1:{port}"
                load(url, token, machines, payloads[:2], 2)  # warm the connections and the caches
                for run, clients in enumerate(args.clients):
                    # each run sends its own recording times: every clip is a new row, scored
                    sent = [payloads[k % len(payloads)] for k in range(n)]
                    before = batch_counts(url, token)
                    r = load(url, token, machines, sent, clients, offset=(10 * k_kind + run + 1) * 100_000)
                    after = batch_counts(url, token)
                    r["batches"] = int(after[0] - before[0])
                    r["mean_batch"] = round((after[1] - before[1]) / max(1, after[0] - before[0]), 2)
                    row = {
                        "monitor": kind,
                        **info,
                        "precision": args.precision if kind == "ast" else "fp32",
                        "clients": clients,
                        "machines": args.machines,
                        "workers": args.workers,
                        "db": (args.db or "sqlite").split(":")[0].split("+")[0],
                        "max_batch": args.max_batch,
                        "batch_wait_ms": args.batch_wait_ms,
                        "threads": args.threads,
                        **r,
                    }
                    results.append(row)
                    flag = "  (RANDOM INIT)" if info["random_init"] else ""
                    print(
                        f"{kind}{flag}: {r['clips']} clips, {clients} client(s): {r['clips_per_s']} clips/s, "
                        f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']}, batches {r['batches']}",
                        flush=True,
                    )
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    doc = {
        "date": datetime.date.today().isoformat(),
        "started_utc": started.strftime("%Y-%m-%d %H:%M:%S"),
        "ended_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "uptime_before": uptime_before,
        "uptime_after": uptime(),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "server_args": extra,
        "httpx": httpx.__version__,
        "results": results,
    }
    print(json.dumps(doc, indent=2))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
