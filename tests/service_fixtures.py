"""Real parts for the service's tests (a pytest plugin, loaded by conftest.py): fitted monitors, a
live `humwatch serve` on 127.0.0.1 at a free port, a throwaway PostgreSQL cluster, test clips.

Nothing here talks to anything but 127.0.0.1, and every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import make_clip, make_mimii_tree

SRC = Path(__file__).resolve().parents[1] / "src"
CLIP_SECONDS = 2.0
"""The test monitors' clip length (short clips keep the tests quick)."""
MACHINES = ("api-1", "api-2", "web-1", "listen-1", "listen-2", "store-1")
"""One monitor folder each (copies of one fitted monitor): every test module uses its own machines."""


# ------------------------------------------------------------------------------------------ clips


def write_clip(path: Path, kind: str = "normal", seed: int = 0, seconds: float = CLIP_SECONDS, sr: int = 16000, fmt: str = "WAV") -> Path:
    """``normal``: like the monitors' training clips (helpers.make_clip: a 200 Hz hum and noise);
    ``anomalous``: a loud 5 kHz tone (it scores about 50 times higher)."""
    rng = np.random.default_rng(seed)
    if kind == "anomalous":
        t = np.arange(int(seconds * sr)) / sr
        y = 0.5 * np.sin(2 * np.pi * 5000 * t) + 0.001 * rng.standard_normal(t.size)
    else:
        y = make_clip(rng, False, seconds=seconds, sr=sr, channels=1, f0=200.0)[:, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(y, -0.99, 0.99).astype(np.float32), sr, subtype="PCM_16", format=fmt)
    return path


def clip_bytes(kind: str = "normal", seed: int = 0, fmt: str = "WAV", **kw) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        return write_clip(Path(d) / f"c.{fmt.lower()}", kind, seed, fmt=fmt, **kw).read_bytes()


def iso(minutes: float, base=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)) -> str:
    return (base + dt.timedelta(minutes=minutes)).isoformat()


# ------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with_src() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("HUMWATCH_PROGRESS", "0")
    return env


class WebhookReceiver:
    """A webhook receiver on 127.0.0.1 that keeps what it got (``calls``: the document, the body
    and the signature header); ``status(doc)`` says what to answer (204 by default) and may wait."""

    def __init__(self, status=lambda doc: 204):
        self.calls: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                doc = json.loads(body)
                receiver.calls.append({"doc": doc, "body": body, "signature": self.headers.get("x-humwatch-signature")})
                self.send_response(status(doc))
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_for(predicate, timeout=30.0, step=0.1):
    """The first true value of ``predicate()`` within ``timeout`` seconds (AssertionError after)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


class LiveServer:
    """`humwatch serve MONITORS` in a child process on 127.0.0.1 and a free port."""

    def __init__(self, monitors: Path, log: Path, *args: str):
        self.monitors, self.log_path, self.args = Path(monitors), Path(log), list(args)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "LiveServer":
        import httpx

        cmd = [sys.executable, "-m", "humwatch.cli", "serve", str(self.monitors), "--port", str(self.port), "--device", "cpu", *self.args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env_with_src())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"humwatch serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"humwatch serve did not answer within {timeout:.0f} s:\n{self.log()}")

    def log(self, tail: int | None = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:] if tail else text

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()


# ------------------------------------------------------------------------------------- PostgreSQL


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary folder (initdb + pg_ctl), on 127.0.0.1 and a
    free port; run as the ``postgres`` user when the tests run as root (initdb refuses root)."""

    def __init__(self):
        self.bin = self.find_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="humwatch-pg-"))
        self.data, self.port = self.dir / "data", free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]

    @staticmethod
    def find_bin() -> Path | None:
        found = shutil.which("pg_ctl")
        if found:
            return Path(os.path.realpath(found)).parent
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
        return Path(versions[-1]).parent if versions else None

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(self.prefix + list(args), check=True, capture_output=True, timeout=timeout, cwd=self.dir)

    def start(self) -> "PostgresCluster":
        b = self.bin
        self._run(str(b / "initdb"), "-D", str(self.data), "-U", "humwatch", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run(
            str(b / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://humwatch@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=humwatch dbname=postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if self.bin is not None and self.data.exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


# -------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def service_monitors(tmp_path_factory) -> Path:
    """A folder of monitors, one per name in MACHINES (an autoencoder fitted once on generated
    2 s clips, copied): MONITORS/<machine>/. Its threshold is set to 3 times the highest score of
    20 normal test clips, so that every test clip's decision is certain (normal clips score within
    a few tens of per cent of each other, the anomalous tone about 50 times higher)."""
    from humwatch.calibrate import fit_monitor
    from humwatch.data import load_dataset
    from humwatch.data.clips import Clip

    root = tmp_path_factory.mktemp("service")
    data = make_mimii_tree(root / "data", machines=("fan",), ids=("00",), n_normal=25, n_anomalous=0, seconds=CLIP_SECONDS)
    mon, _ = fit_monitor(load_dataset(data), "autoencoder", {"epochs": 10, "lr": 0.01}, seconds=CLIP_SECONDS, folds=2, progress=False)
    probes = [Clip(str(write_clip(root / "probe" / f"{s}.wav", "normal", s)), "fan", "id_00", 0) for s in range(20)]
    normal = mon.score_clips(probes, progress=False)[1]
    anomalous = mon.score_clips([Clip(str(write_clip(root / "probe" / "a.wav", "anomalous")), "fan", "id_00", 1)], progress=False)[1]
    mon.threshold = 3.0 * float(normal.max())
    assert anomalous[0] > 5 * mon.threshold, f"the test monitor does not tell the test clips apart: {normal} {anomalous}"
    first = root / "monitors" / MACHINES[0]
    mon.save(first)
    for name in MACHINES[1:]:
        shutil.copytree(first, root / "monitors" / name)
    return root / "monitors"


def fresh_monitors(service_monitors: Path, dest: Path, names=MACHINES) -> Path:
    """A copy of the monitors (a server of its own: its own default database beside them)."""
    for name in names:
        shutil.copytree(service_monitors / name, dest / name)
    return dest


def make_token(db_url: str, name: str, scopes: str) -> str:
    from humwatch.service.auth import create_token
    from humwatch.service.store import Store

    store = Store(db_url)
    try:
        store.migrate()
        return create_token(store, name, scopes)
    finally:
        store.close()


LIVE_ARGS = ("--max-upload-mb", "2", "--max-seconds", "30")
"""The shared server's limits (small, so the tests can pass them cheaply)."""


@pytest.fixture(scope="session")
def live_service(service_monitors, tmp_path_factory):
    """One server shared by the API, browser and listener tests (each on machines of its own),
    with tokens: ``tokens[scope]`` for ingest, read, admin, and ``tokens["none"]`` revoked."""
    from humwatch.service.store import default_db_url

    monitors = fresh_monitors(service_monitors, tmp_path_factory.mktemp("live") / "monitors")
    db = default_db_url(monitors)
    tokens = {scope: make_token(db, f"t-{scope}", scope) for scope in ("ingest", "read", "admin")}
    server = LiveServer(monitors, monitors.parent / "serve.log", *LIVE_ARGS).start()
    server.tokens = tokens
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A running throwaway PostgreSQL cluster; skipped (with the reason) where none can start."""
    if PostgresCluster.find_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; scripts/install.sh --dev does)")
    cluster = PostgresCluster()
    try:
        cluster.start()
    except (subprocess.SubprocessError, OSError) as e:
        detail = getattr(e, "stderr", b"") or b""
        cluster.stop()
        pytest.skip(f"PostgreSQL could not start here: {e} {detail.decode(errors='replace')[-300:]}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright (Debian's chromium); skipped with the reason without them."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install -e .[dev])")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("chromium is not installed (apt-get install chromium; scripts/install.sh --dev does)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def wait_js(page, expression: str, timeout: float = 30_000) -> None:
    """Wait until a JavaScript expression (or arrow function) is truthy in `page`, polling from Python.

    Playwright's `page.wait_for_function` re-runs its predicate with the page's own `eval`, which the
    dashboard's Content-Security-Policy (script-src 'self') refuses once the first check is false; a
    refused eval is also a CSP violation the hostile tests count. `page.evaluate` goes through the
    DevTools protocol, which the page's policy does not govern.
    """
    deadline = time.monotonic() + timeout / 1000
    while True:
        if page.evaluate(expression):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout / 1000:.0f} s for {expression!r} in {page.url}")
        time.sleep(0.05)
