"""``/metrics`` (issue 20, item 4): the Prometheus exposition in process (parsed back with
prometheus-client's own parser), its token, its per-app registry, multiprocess mode as ``serve
--workers N`` uses it, and a real Prometheus server (Debian's ``prometheus``) scraping a live
``humwatch serve`` and answering a query about what it scraped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from service_fixtures import LiveServer, clip_bytes, env_with_src, free_port, fresh_monitors, iso, make_token

MACHINES = ("api-1", "api-2")


class App:
    """An in-process server on copies of two monitors, with a token per scope."""

    def __init__(self, service_monitors, root: Path, **settings):
        from fastapi.testclient import TestClient

        from humwatch.service.app import Service, create_app
        from humwatch.service.config import ServiceSettings
        from humwatch.service.store import default_db_url

        monitors = fresh_monitors(service_monitors, root / "monitors", names=MACHINES)
        db = default_db_url(monitors)
        self.tokens = {scope: make_token(db, f"t-{scope}", scope) for scope in ("ingest", "read", "admin")}
        self.settings = ServiceSettings(monitors=str(monitors), device="cpu", **settings).validate()
        self.svc = Service.open(self.settings)
        self.client = TestClient(create_app(self.settings, self.svc), raise_server_exceptions=False)

    def post(self, kind: str, seed: int, machine: str = MACHINES[0]) -> dict:
        r = self.client.post(
            f"/api/v1/machines/{machine}/clips",
            content=clip_bytes(kind, seed),
            params={"recorded_at": iso(seed)},
            headers={"authorization": f"Bearer {self.tokens['ingest']}", "content-type": "audio/wav"},
        )
        assert r.status_code == 200, r.text
        return r.json()

    def scrape(self, scope: str = "read"):
        r = self.client.get("/metrics", headers={"authorization": f"Bearer {self.tokens[scope]}"})
        assert r.status_code == 200, r.text
        return samples(r.text)

    def close(self):
        self.client.close()
        self.svc.close()


def samples(text: str) -> dict:
    """(sample name, sorted labels) -> value, from the text format, by prometheus-client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(found: dict, name: str, **labels):
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def app(service_monitors, tmp_path):
    a = App(service_monitors, tmp_path, keep_audio=False)
    yield a
    a.close()


def test_metrics_need_a_token_with_the_read_scope(app):
    c = app.client
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers={"authorization": "Bearer asdk_unknown"}).status_code == 401
    r = c.get("/metrics", headers={"authorization": f"Bearer {app.tokens['ingest']}"})
    assert r.status_code == 403 and "lacks the 'read' scope" in r.json()["detail"]
    for scope in ("read", "admin"):
        r = c.get("/metrics", headers={"authorization": f"Bearer {app.tokens[scope]}"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=")
        assert r.headers["x-content-type-options"] == "nosniff"  # the security headers apply here too


def test_the_exposition_follows_clips_alerts_and_acknowledging(app):
    first = app.scrape()
    for m in MACHINES:  # machines with a monitor are there before their first clip
        assert value(first, "humwatch_clips_scored_total", machine=m, decision="normal") == 0
        assert value(first, "humwatch_clips_scored_total", machine=m, decision="anomalous") == 0
        assert value(first, "humwatch_machine_state", machine=m, state="no data") == 1
        assert value(first, "humwatch_machine_state", machine=m, state="ok") == 0
        assert value(first, "humwatch_alert_open", machine=m) == 0
        assert value(first, "humwatch_score", machine=m) is None  # no clip, no last score
    assert value(first, "humwatch_ingest_seconds_count") == 0
    assert value(first, "humwatch_queue_depth", queue="webhook") == 0

    app.post("normal", 1)
    app.post("normal", 2)
    for seed in (3, 4):
        app.post("anomalous", seed)
    last = app.post("anomalous", 5)  # 3 of the last 5 anomalous: the rule 3/5/3 opens an alert
    assert last["alert_opened"]
    app.post("normal", 6, machine=MACHINES[1])
    again = app.post("normal", 1)  # the same clip sent again: stored once, counted once
    assert again["duplicate"]

    got = app.scrape()
    m, other = MACHINES
    assert value(got, "humwatch_clips_scored_total", machine=m, decision="normal") == 2
    assert value(got, "humwatch_clips_scored_total", machine=m, decision="anomalous") == 3
    assert value(got, "humwatch_clips_scored_total", machine=other, decision="normal") == 1
    assert value(got, "humwatch_score", machine=m) == pytest.approx(last["score"])
    assert value(got, "humwatch_threshold", machine=m) == pytest.approx(last["threshold"])
    assert value(got, "humwatch_alert_open", machine=m) == 1 and value(got, "humwatch_alert_open", machine=other) == 0
    assert {s: value(got, "humwatch_machine_state", machine=m, state=s) for s in ("ok", "alarm", "acknowledged", "no data")} == {
        "ok": 0,
        "alarm": 1,
        "acknowledged": 0,
        "no data": 0,
    }
    assert value(got, "humwatch_machine_state", machine=other, state="ok") == 1
    assert value(got, "humwatch_ingest_seconds_count") == 7  # every accepted upload, the duplicate too
    assert value(got, "humwatch_ingest_seconds_sum") > 0
    assert value(got, "humwatch_ingest_seconds_bucket", le="+Inf") == 7

    r = app.client.post(f"/api/v1/alerts/{last['alert']['id']}/ack", headers={"authorization": f"Bearer {app.tokens['read']}"})
    assert r.status_code == 200, r.text
    acked = app.scrape()
    assert value(acked, "humwatch_machine_state", machine=m, state="acknowledged") == 1
    assert value(acked, "humwatch_machine_state", machine=m, state="alarm") == 0
    assert value(acked, "humwatch_alert_open", machine=m) == 1  # acknowledged is still open


def test_database_errors_are_counted_by_kind(app, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def failing(why):
        def ingest(machine, up):
            raise OperationalError("INSERT INTO clips", {}, Exception(why))

        return ingest

    headers = {"authorization": f"Bearer {app.tokens['ingest']}", "content-type": "audio/wav"}
    url = f"/api/v1/machines/{MACHINES[0]}/clips"
    monkeypatch.setattr(app.svc.ingestor, "ingest", failing("database or disk is full"))
    assert app.client.post(url, content=clip_bytes("normal", 1), headers=headers).status_code == 503
    monkeypatch.setattr(app.svc.ingestor, "ingest", failing("server closed the connection unexpectedly"))
    for seed in (2, 3):
        assert app.client.post(url, content=clip_bytes("normal", seed), headers=headers).status_code == 503
    got = app.scrape()
    assert value(got, "humwatch_store_errors_total", kind="cannot_write") == 1
    assert value(got, "humwatch_store_errors_total", kind="unavailable") == 2
    assert value(got, "humwatch_ingest_seconds_count") == 0  # failed uploads are not ingest latencies


def test_each_app_has_its_own_registry(service_monitors, tmp_path, app):
    other = App(service_monitors, tmp_path / "other", keep_audio=False)
    try:
        app.post("normal", 1)
        assert value(app.scrape(), "humwatch_ingest_seconds_count") == 1
        assert value(other.scrape(), "humwatch_ingest_seconds_count") == 0
        assert value(other.scrape(), "humwatch_clips_scored_total", machine=MACHINES[0], decision="normal") == 0
    finally:
        other.close()


WORKER = textwrap.dedent("""
    import sys
    from humwatch.service.metrics import Metrics
    from humwatch.service.store import Store
    store = Store(sys.argv[1])
    m = Metrics(store)
    if sys.argv[2] == "observe":
        for _ in range(int(sys.argv[3])):
            with m.timing_ingest():
                pass
        m.store_error(cannot_write=False)
    else:
        sys.stdout.write(m.exposition().decode())
    store.close()
""")


def test_workers_counters_are_summed_in_multiprocess_mode(tmp_path):
    """`serve --workers N` sets PROMETHEUS_MULTIPROC_DIR: a scrape answered by any worker holds
    every worker's observations, also of workers that have exited."""
    from humwatch.service.store import Store

    db = f"sqlite:///{tmp_path / 'm.db'}"
    store = Store(db)
    store.migrate()
    store.close()
    env = {**env_with_src(), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    (tmp_path / "prom").mkdir()

    def run(*a):
        p = subprocess.run([sys.executable, "-c", WORKER, db, *a], env=env, capture_output=True, text=True, timeout=120, check=True)
        return p.stdout

    run("observe", "2")
    run("observe", "3")
    got = samples(run("scrape"))
    assert value(got, "humwatch_ingest_seconds_count") == 5
    assert value(got, "humwatch_store_errors_total", kind="unavailable") == 2
    assert ("humwatch_machine_state", ()) not in got  # the fleet's series still come from the store (no machines)


# ------------------------------------------------------------------------------ real Prometheus


def _prometheus_config(path: Path, target: str, token: str) -> Path:
    path.write_text(
        json.dumps(
            {  # YAML is a superset of JSON
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "humwatch",
                        "scrape_interval": "1s",
                        "metrics_path": "/metrics",
                        "authorization": {"type": "Bearer", "credentials": token},
                        "static_configs": [{"targets": [target]}],
                    }
                ],
            }
        )
    )
    return path


def _wait_for(url: str, query: str, want, timeout: float = 60.0):
    """Poll Prometheus's query API (bounded) until ``want(result)``; the last result."""
    deadline, result = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5)
            if r.status_code == 200:
                result = r.json()["data"]["result"]
                if want(result):
                    return result
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return result


def test_a_real_prometheus_scrapes_metrics(service_monitors, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Prometheus is not installed (apt-get install prometheus; scripts/install.sh --dev does)")
    monitors = fresh_monitors(service_monitors, tmp_path / "monitors", names=MACHINES)
    from humwatch.service.store import default_db_url

    db = default_db_url(monitors)
    read, ingest = make_token(db, "prometheus", "read"), make_token(db, "listener", "ingest")
    server = LiveServer(monitors, tmp_path / "serve.log", "--no-keep-audio").start()
    prom_port = free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    config = _prometheus_config(tmp_path / "prometheus.yml", f"127.0.0.1:{server.port}", read)
    log = open(tmp_path / "prometheus.log", "wb")
    prom = None
    try:
        for seed in range(3):
            r = httpx.post(
                f"{server.url}/api/v1/machines/{MACHINES[0]}/clips",
                content=clip_bytes("normal", seed),
                params={"recorded_at": iso(seed)},
                timeout=60,
                headers={"authorization": f"Bearer {ingest}", "content-type": "audio/wav"},
            )
            assert r.status_code == 200, r.text
        prom = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        found = _wait_for(
            prom_url,
            'humwatch_clips_scored_total{decision="normal"}',
            lambda res: any(x["metric"].get("machine") == MACHINES[0] and x["value"][1] == "3" for x in res),
        )
        assert found and any(x["metric"].get("machine") == MACHINES[0] and x["value"][1] == "3" for x in found), (
            f"Prometheus did not get the series: {found}\n{(tmp_path / 'prometheus.log').read_text()[-3000:]}"
        )
        assert all(x["metric"]["job"] == "humwatch" for x in found)
        up = _wait_for(prom_url, "up", lambda res: bool(res))
        assert up and up[0]["value"][1] == "1"  # the token worked: the scrape itself succeeded
        state = _wait_for(prom_url, f'humwatch_machine_state{{machine="{MACHINES[1]}",state="no data"}}', lambda res: bool(res))
        assert state and state[0]["value"][1] == "1"
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(20)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait(10)
        log.close()
        server.stop()


def test_serve_with_workers_sums_their_counters_and_removes_its_folder(service_monitors, tmp_path, monkeypatch):
    """`serve --workers 2` makes its own PROMETHEUS_MULTIPROC_DIR (under $TMPDIR here): both
    workers write there, any scrape holds all uploads, and the folder goes when the server stops."""
    monitors = fresh_monitors(service_monitors, tmp_path / "monitors", names=MACHINES[:1])
    from humwatch.service.store import default_db_url

    db = default_db_url(monitors)
    read, ingest = make_token(db, "prometheus", "read"), make_token(db, "listener", "ingest")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    server = LiveServer(monitors, tmp_path / "serve.log", "--workers", "2", "--no-keep-audio").start(timeout=240)
    try:
        folders = list(tmp.glob("humwatch-metrics-*"))
        assert len(folders) == 1, server.log()
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for seed in range(4):
                r = c.post(
                    f"/api/v1/machines/{MACHINES[0]}/clips",
                    content=clip_bytes("normal", seed),
                    params={"recorded_at": iso(seed)},
                    headers={"authorization": f"Bearer {ingest}", "content-type": "audio/wav"},
                )
                assert r.status_code == 200, r.text
            for _ in range(6):  # whichever worker answers
                r = httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {read}"}, timeout=30)
                got = samples(r.text)
                assert value(got, "humwatch_ingest_seconds_count") == 4
                assert value(got, "humwatch_clips_scored_total", machine=MACHINES[0], decision="normal") == 4
        assert list(folders[0].glob("histogram_*.db")), "the workers did not write to the shared folder"
    finally:
        server.stop()
    assert not folders[0].exists(), server.log()
