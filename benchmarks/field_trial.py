"""A field trial: a simulated plant through the real listener and the real server, measured.

``--machines`` machines (8) run for ``--hours`` hours (24) of *simulated* time, one clip per machine
per simulated minute, at whatever pace this machine sustains (the clips are generated, written,
sent and scored for real; only the clock is accelerated):

1. **Monitors.** Healthy clips of each machine (the built-in generator, :mod:`humwatch.data.synth`,
   mono, ``--seconds`` long) and one monitor per machine fitted on them by ``humwatch fit`` (its
   defaults; ``--window-seconds`` = the clip length), two fits at a time.
2. **The plant.** ``humwatch serve`` (a subprocess, SQLite, the default alert rule) and
   ``humwatch listen --watch INCOMING`` (a subprocess with its own spool). Each simulated minute
   every machine's clip is written whole into ``INCOMING/<machine>/`` with its file time set to the
   simulated end of the recording (the listener stamps a clip with its file time minus its length:
   that is the clip's ``recorded_at``, the time the server's alert rule and dashboard use). A file
   is removed once its row is in the server's database; the next minute is written when fewer than
   ``max(32, 4 x machines)`` clips are on their way (so the pace is the slowest part's).
3. **What happens in the plant** (at fixed fractions of the run, so a short run has them all):

   * machine 0 (a fan) **drifts**: its rotation speed rises linearly to +0.5 % and its level to
     +1 dB at the end of the run (wear, a slipping belt: its normal sound changes slowly);
   * machine 1 (a pump) **develops a fault** from a known onset (80 % of the run): a leak, whose
     severity grows from 0.5 (the middle of the generator's range, 0.1 to 1) to 1 over two
     simulated hours;
   * machine 2's **microphone goes dead** (digital silence: a disconnected digital microphone
     delivers zeros) from 60 % to 70 % of the run, then comes back;
   * the server is **restarted** gracefully (SIGTERM) at 25 % and **killed** (SIGKILL, requests in
     flight) at 50 %; the plant goes on recording while it is down (a few simulated minutes),
     the listener's spool keeps the clips and sends them when it is back.

4. **Measures**, read from the server's database and its ``/metrics`` after the run: false
   anomaly alerts on healthy machines per machine-day (the default alert rule), the delay from the
   fault's onset to its alert (simulated minutes: the end of the clip that opened it), the dead
   microphone's detection (expected intervals: one minute; a silent clip is a sensor fault found on
   the clip itself), clips lost (written minus stored: must be 0), the server's memory (RSS of the
   server process, sampled every second: the mean of the last quarter of its last lifetime against
   the first quarter after warm-up), p50/p99 ingest latency (the server's ``humwatch_ingest_seconds``
   histogram, summed over its lifetimes, and file written to row stored, outages left out).

Run::

    .venv/bin/python benchmarks/field_trial.py --json field-trial.json

prints a markdown table (and ``--json OUT`` writes every number). Everything happens in a temporary
folder (``--keep DIR`` keeps it there) and on 127.0.0.1; both subprocesses are stopped at the end.
Exit status 0 when the trial ran (whether the targets were met or not: the table says), 2 when it
could not (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MINUTE = 60.0
RESTART_AT, KILL_AT = 0.25, 0.50
"""Fractions of the run: the graceful restart (SIGTERM) and the kill -9 of the server."""
DEAD_AT, DEAD_UNTIL = 0.60, 0.70
"""The dead microphone's digital silence (machine 2), fractions of the run."""
FAULT_AT = 0.80
"""The fault's onset (machine 1), a fraction of the run."""
FAULT_KIND = {"pump": "leakage", "fan": "unbalance"}
FAULT_SEVERITY, FAULT_RAMP_MIN = (0.5, 1.0), 120.0
"""The fault's severity at its onset and after FAULT_RAMP_MIN simulated minutes (linear, then kept)."""
DRIFT_SPEED, DRIFT_DB = 0.005, 1.0
"""Machine 0's drift at the end of the run: rotation speed +0.5 %, level +1 dB (linear from 0)."""
TARGETS = {"false_alerts_per_machine_week": 1.0, "fault_delay_min": 10.0, "dead_mic_intervals": 2.0, "clips_lost": 0}
FLAT_MEMORY = 0.10
"""Memory is "flat" when the last quarter's mean RSS is within 10 % of the first quarter's."""
TRIAL_INDEX = 1_000_000
"""Trial clips are the generator's clip indices from here on (the monitors were fitted on 0..N-1)."""


def products(n: int) -> list[tuple[str, int]]:
    """(machine type, id) of the n machines: fan 00, pump 00, fan 02, pump 02, ... (each its own product)."""
    return [("fan" if k % 2 == 0 else "pump", 2 * (k // 2)) for k in range(n)]


def machine_name(kind: str, mid: int) -> str:
    return f"{kind}-{mid:02d}"


# -------------------------------------------------------------------------------------------- audio


def render(machine: str, mid: int, index: int, seconds: float, *, kind: str = "normal", severity: float = 0.0,
           speed: float = 1.0, gain_db: float = 0.0, sample_rate: int = 16000, snr_db: float = 6.0, seed: int = 0) -> np.ndarray:  # fmt: skip
    """One mono clip as the generator makes it (:func:`humwatch.data.synth.render_clip_parts`, which
    this follows step by step), with the anomaly chosen rather than drawn (``kind``, ``severity``)
    and a drift of the product: its rotation speed times ``speed`` (fans) and the machine's level
    ``gain_db`` louder, against the same calibration and background. With the defaults it is
    exactly ``render_clip(machine, mid, 0, index, channels=1)`` (tests/test_field_trial.py)."""
    from humwatch.data.synth import NOMINAL_DBFS, PEAK_LIMIT, _clip_rngs
    from humwatch.data.synth.products import _SOURCES, _nominal_power, _product
    from humwatch.data.synth.room import _background, _pad, _to_array
    from humwatch.data.synth.signals import _power

    sr, n = int(sample_rate), int(round(seconds * sample_rate))
    rng_src, rng_bg, _ = _clip_rngs(seed, machine, mid, 0 if kind == "normal" else 1, index)
    prod = _product(machine, mid, sr)
    if speed != 1.0:
        prod = dataclasses.replace(prod, p={**prod.p, "rot": prod.p["rot"] * speed})
    src = _SOURCES[machine](prod, rng_src, n + 2 * _pad(sr), sr, kind, float(severity))
    mach = _to_array(src, n, 1, prod)
    bg = _background(rng_bg, n, sr, 1, prod.hall)
    k_m = 1.0 / math.sqrt(_nominal_power(machine, mid, sr, 1))
    k_bg = math.sqrt(10.0 ** (-snr_db / 10.0) / _power(bg))
    gain = 10.0 ** (NOMINAL_DBFS[machine] / 20.0) / math.sqrt(1.0 + 10.0 ** (-snr_db / 10.0))
    mach *= np.float32(gain * k_m * 10.0 ** (gain_db / 20.0))
    bg *= np.float32(gain * k_bg)
    y = (mach + bg).T
    peak = float(np.max(np.abs(y)))
    if peak > PEAK_LIMIT:
        y *= np.float32(PEAK_LIMIT / peak)
    return y[:, 0]


@dataclasses.dataclass(frozen=True)
class Plan:
    """When things happen, in ticks (simulated minutes from the start)."""

    ticks: int
    machines: int

    def at(self, fraction: float) -> int:
        return int(round(fraction * self.ticks))

    @property
    def outage_ticks(self) -> int:
        """Simulated minutes the plant records while the server is down (each outage)."""
        return max(2, min(20, self.ticks // 50))

    def role(self, k: int) -> str:
        return {0: "drift", 1: "fault", 2: "dead mic"}.get(k, "healthy")

    def clip(self, k: int, tick: int, seconds: float) -> tuple[np.ndarray, str]:
        """Machine k's clip of minute ``tick`` and what it is (normal, drift, fault, silence)."""
        kind, mid = products(self.machines)[k]
        index = TRIAL_INDEX + tick
        if k == 2 and self.at(DEAD_AT) <= tick < self.at(DEAD_UNTIL):
            return np.zeros(int(round(seconds * 16000)), dtype=np.float32), "silence"
        if k == 1 and tick >= self.at(FAULT_AT):
            lo, hi = FAULT_SEVERITY
            sev = lo + (hi - lo) * min(1.0, (tick - self.at(FAULT_AT)) / FAULT_RAMP_MIN)
            return render(kind, mid, index, seconds, kind=FAULT_KIND[kind], severity=sev), f"fault {sev:.2f}"
        if k == 0:
            f = tick / max(1, self.ticks - 1)
            return render(kind, mid, index, seconds, speed=1.0 + DRIFT_SPEED * f, gain_db=DRIFT_DB * f), "drift"
        return render(kind, mid, index, seconds), "normal"


def write_clip(path: Path, y: np.ndarray, recorded_at: dt.datetime, seconds: float) -> None:
    """A whole 16-bit WAV whose file time is the end of its recording (as a recorder leaves it)."""
    import soundfile as sf

    from humwatch.data.synth.common import _to_pcm16
    from humwatch.io import atomic_path

    end_ns = int(round((recorded_at.timestamp() + seconds) * 1e9))
    with atomic_path(path, suffix=".wav") as tmp:  # hidden until whole: the listener skips dot files
        sf.write(os.fsencode(tmp), _to_pcm16(y), 16000, subtype="PCM_16", format="WAV")
        os.utime(tmp, ns=(end_ns, end_ns))


# -------------------------------------------------------------------------------------- processes


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p])
    e.setdefault("HUMWATCH_PROGRESS", "0")
    return e


def humwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "humwatch.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fit_monitors(root: Path, plan: Plan, seconds: float, fit_clips: int, false_alarm_rate: float | None) -> tuple[Path, float]:
    """Healthy clips and ``humwatch fit`` for every machine (two at a time); the monitors' folder."""
    from humwatch.data.synth import synthesize

    monitors = root / "monitors"
    monitors.mkdir(parents=True)
    t0 = time.perf_counter()

    def one(kind_mid: tuple[str, int]) -> None:
        kind, mid = kind_mid
        name = machine_name(kind, mid)
        data = root / "healthy" / name
        synthesize(data, machines=(kind,), ids=(mid,), n_normal=fit_clips, n_anomalous=0, seconds=seconds, channels=1, progress=False)
        cmd = humwatch("fit", "--data", str(data), "--out", str(monitors / name), "--window-seconds", f"{seconds:g}", "--quiet")
        if false_alarm_rate is not None:
            cmd += ["--false-alarm-rate", f"{false_alarm_rate:g}"]
        r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"humwatch fit {name} failed: {(r.stderr or r.stdout).strip()[-600:]}")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, products(plan.machines)))
    return monitors, time.perf_counter() - t0


class Server:
    """``humwatch serve`` in a subprocess; each start is a new lifetime (its pid, RSS, metrics)."""

    def __init__(self, monitors: Path, log: Path, token: str):
        self.monitors, self.log, self.token = monitors, log, token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.lifetime = -1
        self.metrics: list[str] = []  # the last /metrics text of each lifetime

    def start(self, timeout: float = 180.0) -> float:
        import httpx

        t0 = time.perf_counter()
        cmd = humwatch(
            "serve", str(self.monitors), "--port", str(self.port), "--device", "cpu", "--no-access-log", "--max-uploads-per-minute", "0"
        )  # fmt: skip  (the accelerated clock sends 100s a minute)
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env())
        self.lifetime += 1
        self.metrics.append("")
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"humwatch serve exited ({self.proc.returncode}): {self.log.read_text()[-1500:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"humwatch serve did not answer within {timeout:.0f} s")

    def scrape(self) -> None:
        import httpx

        try:
            r = httpx.get(self.url + "/metrics", timeout=10, headers={"authorization": f"Bearer {self.token}"})
            if r.status_code == 200:
                self.metrics[self.lifetime] = r.text
        except httpx.HTTPError:
            pass

    def rss_kb(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except (OSError, AttributeError, ValueError):
            return None
        return None

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


class Sampler(threading.Thread):
    """The server's RSS every second (with its lifetime and the clips stored so far), and its
    /metrics every ``scrape_s`` seconds (what a kill -9 leaves of a lifetime is its last scrape)."""

    def __init__(self, server: Server, stored, scrape_s: float = 5.0):
        super().__init__(daemon=True, name="field-trial-sampler")
        self.server, self.stored, self.scrape_s = server, stored, scrape_s
        self.samples: list[tuple[float, int, int, int]] = []  # (wall s, lifetime, clips stored, RSS kB)
        self.halt = threading.Event()
        self.pause = threading.Lock()  # held while the server is being stopped or started

    def run(self) -> None:
        t0, last_scrape = time.perf_counter(), 0.0
        while not self.halt.wait(1.0):
            with self.pause:
                s = self.server
                rss = s.rss_kb() if s.proc is not None and s.proc.poll() is None else None
                if rss is not None:
                    self.samples.append((time.perf_counter() - t0, s.lifetime, self.stored(), rss))
                if rss is not None and time.perf_counter() - last_scrape >= self.scrape_s:
                    s.scrape()
                    last_scrape = time.perf_counter()


# ------------------------------------------------------------------------------------------ trial


def run_trial(args, root: Path) -> dict:
    from sqlalchemy import func, select

    from humwatch.service.auth import create_token
    from humwatch.service.store import ClipRow, Machine, Store, default_db_url

    plan = Plan(ticks=int(round(args.hours * 60)), machines=args.machines)
    names = [machine_name(*p) for p in products(plan.machines)]
    print(f"fitting {plan.machines} monitors on {args.fit_clips} healthy {args.seconds:g} s clips each ...", flush=True)
    monitors, fit_s = fit_monitors(root, plan, args.seconds, args.fit_clips, args.false_alarm_rate)
    print(f"fitted in {fit_s:.0f} s", flush=True)

    store = Store(default_db_url(monitors))
    store.migrate()
    token = create_token(store, "field-trial", "ingest,read")
    server = Server(monitors, root / "serve.log", token)
    incoming, spool = root / "incoming", root / "spool"
    for name in names:
        (incoming / name).mkdir(parents=True)
    start_s = [server.start()]
    listener = subprocess.Popen(
        humwatch(
            "listen",
            "--server",
            server.url,
            "--watch",
            str(incoming),
            "--existing",
            "--spool",
            str(spool),
            "--seconds",
            f"{args.seconds:g}",
        ),  # --existing: the clips written while it starts are sent too
        stdout=open(root / "listen.log", "ab"),
        stderr=subprocess.STDOUT,
        env={**env(), "HUMWATCH_TOKEN": token},
    )

    sim0 = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=math.ceil(args.hours) + 1)
    written: dict[tuple[str, str], tuple[int, float, str]] = {}  # (machine, file) -> (tick, wall time written, what)
    on_disk: dict[tuple[str, str], Path] = {}
    stored_rows: dict[tuple[str, str], list] = {}  # (machine, file) -> [(clip id, received_at)]
    last_id = [0]
    outages: list[tuple[float, float]] = []  # wall times (time.time()) the server was down
    machine_of = {}

    def poll() -> int:
        """New rows since the last poll; removes their files from INCOMING; how many are stored."""
        with store.read() as s:
            if not machine_of:
                machine_of.update({mid: n for mid, n in s.execute(select(Machine.id, Machine.name)).all()})
            rows = s.execute(
                select(ClipRow.id, ClipRow.machine_id, ClipRow.filename, ClipRow.received_at)
                .where(ClipRow.id > last_id[0])
                .order_by(ClipRow.id)
            ).all()
        for cid, mid, fname, received in rows:
            key = (machine_of[mid], fname)
            stored_rows.setdefault(key, []).append((cid, received.timestamp()))
            p = on_disk.pop(key, None)
            if p is not None:
                p.unlink(missing_ok=True)
            last_id[0] = cid
        return len(stored_rows)

    sampler = Sampler(server, lambda: len(stored_rows))
    sampler.start()
    cap = max(32, 4 * plan.machines)  # clips on their way (the listener takes a file 0.5-0.7 s after it is written)
    restart, kill = plan.at(RESTART_AT), plan.at(KILL_AT)
    down_until = -1
    t_trial = time.perf_counter()
    print(f"trial: {plan.ticks} simulated minutes x {plan.machines} machines; server at {server.url}", flush=True)
    try:
        for tick in range(plan.ticks):
            if tick in (restart, kill):
                with sampler.pause:
                    if tick == restart:
                        server.scrape()  # a graceful stop: its last numbers
                    server.stop(signal.SIGTERM if tick == restart else signal.SIGKILL)
                outages.append((time.time(), math.inf))
                down_until = tick + plan.outage_ticks
                print(f"  minute {tick}: server {'restarted (SIGTERM)' if tick == restart else 'killed (SIGKILL)'}", flush=True)
            if tick == down_until:
                with sampler.pause:
                    start_s.append(server.start())
            if down_until < 0 or tick >= down_until:  # the plant never waits; the pace does, while the server is up
                deadline = time.monotonic() + 180
                while len(written) - poll() >= cap:
                    if listener.poll() is not None or time.monotonic() > deadline:
                        log = (root / "listen.log").read_text(errors="replace")[-800:]
                        raise RuntimeError(f"no clip stored for 180 s (or the listener ended) at minute {tick}: {log}")
                    time.sleep(0.05)
                if tick == down_until:  # the outage ends when the spool has caught up (for the latency: outages left out)
                    outages[-1] = (outages[-1][0], time.time())
            for k, name in enumerate(names):
                y, what = plan.clip(k, tick, args.seconds)
                fname = f"m{tick:05d}.wav"
                path = incoming / name / fname
                write_clip(path, y, sim0 + dt.timedelta(minutes=tick), args.seconds)
                written[(name, fname)] = (tick, time.time(), what)
                on_disk[(name, fname)] = path
            if tick % max(1, plan.ticks // 12) == 0:
                print(f"  minute {tick}/{plan.ticks}: {len(stored_rows)} stored, {time.perf_counter() - t_trial:.0f} s", flush=True)
        deadline = time.monotonic() + 300
        while poll() < len(written) and time.monotonic() < deadline:
            time.sleep(0.2)
        trial_s = time.perf_counter() - t_trial
        server.scrape()
    finally:
        sampler.halt.set()
        sampler.join(5)
        listener.send_signal(signal.SIGTERM)
        try:
            listener.wait(30)
        except subprocess.TimeoutExpired:
            listener.kill()
        server.stop()
    with store.read() as s:
        n_rows = s.scalar(select(func.count()).select_from(ClipRow))
    store.close()
    rejected = sorted(p.name for p in (spool / "rejected").glob("*.reason.txt")) if (spool / "rejected").is_dir() else []
    return analyse(
        args, plan, names, monitors, sim0, written, stored_rows, n_rows, rejected, outages, sampler.samples, server.metrics,
        {"fit_s": fit_s, "trial_s": trial_s, "server_start_s": start_s},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- measures


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: (upper bound, cumulative count) pairs, linear inside a bucket."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, lo, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lo  # beyond the last finite bound: that bound is what can be said
            return lo + (le - lo) * ((rank - below) / (count - below) if count > below else 1.0)
        lo, below = le, count
    return lo


def ingest_buckets(texts: list[str]) -> list[tuple[float, float]]:
    """``humwatch_ingest_seconds`` buckets summed over the server's lifetimes."""
    from prometheus_client.parser import text_string_to_metric_families

    summed: dict[float, float] = defaultdict(float)
    for text in texts:
        for fam in text_string_to_metric_families(text) if text else ():
            if fam.name == "humwatch_ingest_seconds":
                for s in fam.samples:
                    if s.name.endswith("_bucket"):
                        summed[float(s.labels["le"])] += s.value
    return sorted(summed.items())


def memory(samples: list[tuple[float, int, int, int]]) -> dict:
    """The last lifetime's RSS: the first 10 % of its samples are its warm-up; the mean of the
    first quarter of the rest against the mean of the last quarter."""
    if not samples:
        return {"flat": None}
    last = max(s[1] for s in samples)
    rss = [s[3] / 1024 for s in samples if s[1] == last]
    rss = rss[len(rss) // 10 :]
    q = max(1, len(rss) // 4)
    first, final = statistics.fmean(rss[:q]), statistics.fmean(rss[-q:])
    change = (final - first) / first
    return {
        "lifetime": last,
        "samples": len(rss),
        "first_quarter_mb": round(first, 1),
        "last_quarter_mb": round(final, 1),
        "change": round(change, 4),
        "max_mb": round(max(s[3] for s in samples) / 1024, 1),
        "per_lifetime_max_mb": [round(max(s[3] for s in samples if s[1] == i) / 1024, 1) for i in range(last + 1) if any(s[1] == i for s in samples)],
        "flat": abs(change) <= FLAT_MEMORY,
    }  # fmt: skip


def analyse(args, plan, names, monitors, sim0, written, stored_rows, n_rows, rejected, outages, samples, metrics, times) -> dict:
    from sqlalchemy import select

    from humwatch.service.store import Alert, ClipRow, Machine, Store, default_db_url

    store = Store(default_db_url(monitors))
    with store.read() as s:
        mname = {mid: n for mid, n in s.execute(select(Machine.id, Machine.name)).all()}
        clips = s.execute(
            select(ClipRow.id, ClipRow.machine_id, ClipRow.at, ClipRow.received_at, ClipRow.anomalous, ClipRow.sensor, ClipRow.filename)
        ).all()
        alerts = s.scalars(select(Alert).order_by(Alert.id)).all()
    store.close()
    by_machine = defaultdict(list)
    for c in clips:
        by_machine[mname[c.machine_id]].append(c)
    onset = sim0 + dt.timedelta(minutes=plan.at(FAULT_AT))
    dead_on, dead_off = (sim0 + dt.timedelta(minutes=plan.at(f)) for f in (DEAD_AT, DEAD_UNTIL))
    fault_m, dead_m = names[1], names[2]

    def opening_clip(a):  # the clip whose arrival opened the alert (the last of its machine received by then)
        mine = [c for c in by_machine[mname[a.machine_id]] if c.id >= a.first_clip_id and c.received_at <= a.opened_at]
        return max(mine, key=lambda c: c.id) if mine else None

    anomaly = [a for a in alerts if (a.kind or "anomaly") == "anomaly"]
    true_alerts, false_alerts = [], []
    for a in anomaly:
        c = opening_clip(a)
        (true_alerts if mname[a.machine_id] == fault_m and c is not None and c.at >= onset else false_alerts).append((a, c))
    healthy = {  # scored clips of healthy machines (the fault machine before its onset)
        m: [c for c in by_machine[m] if c.sensor is None and not (m == fault_m and c.at >= onset)] for m in names
    }
    n_healthy = sum(len(v) for v in healthy.values())
    machine_days = n_healthy / (24 * 60)
    per_day = len(false_alerts) / machine_days if machine_days else None
    clip_rate = sum(c.anomalous for v in healthy.values() for c in v) / max(1, n_healthy)

    fault_delay = None
    if true_alerts:
        a, c = min(true_alerts, key=lambda ac: ac[1].at)
        fault_delay = ((c.at - onset).total_seconds() + args.seconds) / MINUTE
    sensor = [a for a in alerts if a.kind == "sensor" and mname[a.machine_id] == dead_m and a.start_at >= dead_on]
    dead_intervals = ((sensor[0].start_at - dead_on).total_seconds() + args.seconds) / MINUTE if sensor else None
    silent = [c for c in by_machine[dead_m] if dead_on <= c.at < dead_off]

    sent = set(written)
    stored = set(stored_rows)
    lost = sorted(sent - stored)
    duplicates = sum(len(v) - 1 for v in stored_rows.values() if len(v) > 1)
    e2e = [  # clips that met no outage: written and stored outside every outage (and its catching up)
        rows[0][1] - written[k][1]
        for k, rows in stored_rows.items()
        if k in written and not any(written[k][1] <= b and rows[0][1] >= a for a, b in outages)
    ]
    q = statistics.quantiles(e2e, n=100, method="inclusive") if len(e2e) > 1 else [float("nan")] * 99
    buckets = ingest_buckets(metrics)
    p50, p99 = histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)

    per_machine = []
    for k, m in enumerate(names):
        mine = by_machine[m]
        per_machine.append({
            "machine": m,
            "role": plan.role(k),
            "clips": len(mine),
            "sensor_clips": sum(c.sensor is not None for c in mine),
            "anomalous_clips": sum(bool(c.anomalous) for c in mine),
            "anomalous_healthy_share": round(sum(c.anomalous for c in healthy[m]) / max(1, len(healthy[m])), 4),
            "anomaly_alerts": sum(mname[a.machine_id] == m for a in anomaly),
            "false_alerts": sum(mname[a.machine_id] == m for a, _ in false_alerts),
            "sensor_alerts": sum(mname[a.machine_id] == m and a.kind == "sensor" for a in alerts),
            "stale_alerts": sum(mname[a.machine_id] == m and a.kind == "stale" for a in alerts),
        })  # fmt: skip
    mem = memory(samples)
    wall = times["fit_s"] + times["trial_s"]
    res = {
        "false_alerts": len(false_alerts),
        "false_alert_machines": sorted({mname[a.machine_id] for a, _ in false_alerts}),
        "healthy_machine_days": round(machine_days, 3),
        "false_alerts_per_machine_day": None if per_day is None else round(per_day, 4),
        "false_alerts_per_machine_week": None if per_day is None else round(7 * per_day, 3),
        "healthy_clip_anomalous_share": round(clip_rate, 5),
        "fault_onset": onset.isoformat(),
        "fault_alerted": bool(true_alerts),
        "fault_delay_min": None if fault_delay is None else round(fault_delay, 2),
        "dead_mic_detected": bool(sensor),
        "dead_mic_reason": sensor[0].reason if sensor else None,
        "dead_mic_intervals": None if dead_intervals is None else round(dead_intervals, 3),
        "dead_mic_alert_closed": bool(sensor) and sensor[0].state == "closed",
        "silent_clips": len(silent),
        "silent_clips_flagged": sum(c.sensor is not None for c in silent),
        "stale_alerts": sum(a.kind == "stale" for a in alerts),
        "clips_written": len(sent),
        "clips_stored": len(stored),
        "db_rows": n_rows,
        "clips_lost": len(lost),
        "lost_examples": [f"{m}/{f}" for m, f in lost[:5]],
        "duplicates": duplicates,
        "refused": len(rejected),
        "memory": mem,
        "ingest_p50_ms": None if p50 is None else round(1000 * p50, 1),
        "ingest_p99_ms": None if p99 is None else round(1000 * p99, 1),
        "ingest_observed": buckets[-1][1] if buckets else 0,
        "end_to_end_p50_ms": round(1000 * q[49], 1),
        "end_to_end_p99_ms": round(1000 * q[98], 1),
        "fit_s": round(times["fit_s"], 1),
        "trial_s": round(times["trial_s"], 1),
        "wall_s": round(wall, 1),
        "server_start_s": [round(x, 1) for x in times["server_start_s"]],
        "clips_per_s": round(len(stored) / times["trial_s"], 2),
        "acceleration": round(plan.ticks * MINUTE / times["trial_s"], 1),
    }
    res["met"] = {
        "false_alerts": per_day is not None and 7 * per_day <= TARGETS["false_alerts_per_machine_week"],
        "fault": fault_delay is not None and fault_delay <= TARGETS["fault_delay_min"],
        "dead_mic": dead_intervals is not None and dead_intervals <= TARGETS["dead_mic_intervals"],
        "clips_lost": not lost,
        "memory_flat": bool(mem.get("flat")),
    }
    return {"results": res, "machines": per_machine}


# -------------------------------------------------------------------------------------------- report


def table(doc: dict) -> str:
    r, yes = doc["results"], lambda ok: "**yes**" if ok else "**no**"
    mem = r["memory"]
    rows = [
        ("false anomaly alerts, healthy machines", f"{r['false_alerts']} in {r['healthy_machine_days']:g} machine-days "
         f"= {r['false_alerts_per_machine_day']} per machine-day ({r['false_alerts_per_machine_week']} per machine-week); "
         f"{100 * r['healthy_clip_anomalous_share']:.2f} % of healthy clips over the threshold", "<= 1 per machine-week", yes(r["met"]["false_alerts"])),
        ("fault: onset to alert", "not alerted" if r["fault_delay_min"] is None else f"{r['fault_delay_min']:g} simulated minutes",
         "<= 10 minutes", yes(r["met"]["fault"])),
        ("dead microphone detected", "not detected" if r["dead_mic_intervals"] is None else
         f"{r['dead_mic_intervals']:g} expected intervals (sensor alert on the first silent clip; "
         f"{r['silent_clips_flagged']}/{r['silent_clips']} silent clips flagged; alert closed when it came back: "
         f"{'yes' if r['dead_mic_alert_closed'] else 'no'})", "<= 2 intervals", yes(r["met"]["dead_mic"])),
        ("clips lost (written vs stored)", f"{r['clips_lost']} ({r['clips_written']} written, {r['clips_stored']} stored, "
         f"{r['duplicates']} stored twice, {r['refused']} refused)", "0", yes(r["met"]["clips_lost"])),
        ("server memory (RSS, last lifetime)", f"{mem.get('first_quarter_mb')} MB first quarter, {mem.get('last_quarter_mb')} MB "
         f"last quarter ({100 * (mem.get('change') or 0):+.1f} %); peak {mem.get('max_mb')} MB", "flat (within 10 %)", yes(r["met"]["memory_flat"])),
        ("ingest latency (server histogram)", f"p50 {r['ingest_p50_ms']} ms, p99 {r['ingest_p99_ms']} ms "
         f"({r['ingest_observed']:.0f} uploads)", "", ""),
        ("file written to row stored", f"p50 {r['end_to_end_p50_ms']} ms, p99 {r['end_to_end_p99_ms']} ms (outages left out)", "", ""),
        ("stale alerts", str(r["stale_alerts"]), "", ""),
        ("wall time", f"{r['wall_s']:.0f} s (fit {r['fit_s']:.0f} s, trial {r['trial_s']:.0f} s: {r['clips_per_s']} clips/s, "
         f"{r['acceleration']:g}x real time)", "< 900 s", yes(r["wall_s"] < 900)),
    ]  # fmt: skip
    out = ["| measure | result | target | met |", "| --- | --- | --- | --- |"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    out += [
        "",
        "| machine | role | clips | sensor clips | anomalous clips | anomaly alerts | false alerts | sensor alerts | stale alerts |",
    ]
    out += ["| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    out += [
        f"| {m['machine']} | {m['role']} | {m['clips']} | {m['sensor_clips']} | {m['anomalous_clips']} | {m['anomaly_alerts']} | "
        f"{m['false_alerts']} | {m['sensor_alerts']} | {m['stale_alerts']} |"
        for m in doc["machines"]
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--machines", type=int, default=8, help="machines in the plant (at least 3: drift, fault, dead microphone)")
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours (one clip per machine per simulated minute)")
    ap.add_argument("--seconds", type=float, default=2.0, help="clip length in seconds (the monitors are fitted on the same)")
    ap.add_argument("--fit-clips", type=int, default=40, help="healthy clips per machine to fit its monitor on")
    ap.add_argument(
        "--false-alarm-rate", type=float, default=None, help="humwatch fit --false-alarm-rate (default: fit's own, 0.05 of normal windows)"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write every number here")
    ap.add_argument("--keep", type=Path, default=None, help="work in this (new) folder and keep it: the logs, the database, the spool")
    args = ap.parse_args(argv)
    if not 3 <= args.machines <= 100:
        print("error: --machines: between 3 and 100 (machines 0-2 drift, fail and lose their microphone)", file=sys.stderr)
        return 2
    if not 0.05 <= args.hours <= 24 * 14:
        print("error: --hours: between 0.05 and 336", file=sys.stderr)
        return 2
    if not 1.0 <= args.seconds <= 10.0 or args.fit_clips < 8:
        print("error: --seconds between 1 and 10, --fit-clips at least 8", file=sys.stderr)
        return 2
    if args.keep is not None and args.keep.exists():
        print(f"error: --keep {args.keep}: exists already", file=sys.stderr)
        return 2

    from humwatch.runinfo import cpu_model

    root = args.keep or Path(tempfile.mkdtemp(prefix="field-trial-"))
    root.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    try:
        doc = run_trial(args, root)
    except (RuntimeError, OSError) as e:
        print(f"error: {' '.join(str(e).split())[:600]} (work folder {root})", file=sys.stderr)
        return 2
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    doc = {
        "command": " ".join(["benchmarks/field_trial.py", *(argv if argv is not None else sys.argv[1:])]),
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "settings": {
            "machines": args.machines,
            "hours": args.hours,
            "seconds": args.seconds,
            "fit_clips": args.fit_clips,
            "false_alarm_rate": args.false_alarm_rate,
        },
        **doc,
    }
    print()
    print(f"field trial, {args.machines} machines x {args.hours:g} h, {doc['machine']}, {doc['started_utc']}, "
          f"load {doc['load_before']} -> {doc['load_after']}")  # fmt: skip
    print()
    print(table(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
