"""Live servers with other settings: a webhook that fails or hangs never holds up ingest and is
retried, signed; two worker processes on a real PostgreSQL store concurrent clips once each and
open one alert for a burst."""

from __future__ import annotations

import hashlib
import hmac
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from service_fixtures import LiveServer, WebhookReceiver, clip_bytes, fresh_monitors, iso, make_token, wait_for

SECRET = "s3cret"


def _slow_failing_first(doc) -> int:
    """Alert 1's webhook hangs 1.5 s and fails every time; the others succeed."""
    if doc["alert"]["id"] == 1:
        time.sleep(1.5)
        return 500
    return 204


def test_a_failing_webhook_is_retried_off_the_ingest_path_and_signed(service_monitors, tmp_path):
    from humwatch.service.store import default_db_url

    monitors = fresh_monitors(service_monitors, tmp_path / "monitors", names=("api-1",))
    db = default_db_url(monitors)
    tokens = {s: make_token(db, s, s) for s in ("ingest", "read")}
    receiver = WebhookReceiver(_slow_failing_first)
    server = LiveServer(
        monitors,
        tmp_path / "serve.log",
        "--webhook",
        receiver.url,
        "--webhook-secret",
        SECRET,
        "--webhook-retries",
        "2",
        "--webhook-backoff",
        "0.2",
        "--alert-rule",
        "1/1/1",
    ).start()
    try:
        post = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {tokens['ingest']}"}, timeout=30)
        read = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {tokens['read']}"}, timeout=30)
        latencies = []
        for k, kind in enumerate(("anomalous", "normal", "anomalous", "normal", "normal")):
            t = time.monotonic()
            r = post.post("/api/v1/machines/api-1/clips", content=clip_bytes(kind, k), params={"recorded_at": iso(k)})
            latencies.append(time.monotonic() - t)
            assert r.status_code == 200, r.text
        # alert 1's webhook hangs 1.5 s three times meanwhile: no clip waited for it
        assert max(latencies) < 1.2, latencies

        def statuses():
            items = read.get("/api/v1/alerts").json()["items"]
            s = {a["id"]: a["webhook_status"] for a in items}
            return s if s.get(1) == "failed" and s.get(2) == "sent" else None

        assert wait_for(statuses, timeout=60) == {1: "failed", 2: "sent"}
        by_alert = {}
        for call in receiver.calls:
            by_alert.setdefault((call["doc"]["alert"]["id"], call["doc"]["event"]), []).append(call)
        # each alert opened and closed (rule 1/1/1): 1 try + 2 retries each for alert 1; 1 try each for alert 2
        assert {k: len(v) for k, v in by_alert.items()} == {
            (1, "alert.opened"): 3,
            (1, "alert.closed"): 3,
            (2, "alert.opened"): 1,
            (2, "alert.closed"): 1,
        }
        call = by_alert[2, "alert.opened"][0]
        assert call["doc"]["event"] == "alert.opened" and call["doc"]["alert"]["machine"] == "api-1"
        expected = "sha256=" + hmac.new(SECRET.encode(), call["body"], hashlib.sha256).hexdigest()
        assert call["signature"] == expected
    finally:
        server.stop()
        receiver.close()


def test_two_workers_on_postgresql_store_concurrent_clips_once_and_open_one_alert(service_monitors, postgres, tmp_path):
    db = postgres.new_database("workers")
    monitors = fresh_monitors(service_monitors, tmp_path / "monitors", names=("api-1", "api-2"))
    tokens = {s: make_token(db, s, s) for s in ("ingest", "read", "admin")}
    server = LiveServer(monitors, tmp_path / "serve.log", "--db", db, "--workers", "2", "--alert-rule", "2/6/2")
    server.start(timeout=180)
    try:
        assert "Started parent process" in server.log(tail=None)
        normal = [(m, clip_bytes("normal", k), iso(k)) for m in ("api-1", "api-2") for k in range(8)]
        burst = [("api-2", clip_bytes("anomalous", 100 + k), iso(100 + k)) for k in range(6)]

        def send(p):
            machine, data, when = p
            with httpx.Client(base_url=server.url, timeout=120, headers={"authorization": f"Bearer {tokens['ingest']}"}) as c:
                r = c.post(f"/api/v1/machines/{machine}/clips", content=data, params={"recorded_at": when})
                assert r.status_code == 200, r.text
                return r.json()

        with ThreadPoolExecutor(8) as ex:
            docs = list(ex.map(send, normal + normal[:5]))  # five of them sent twice
            docs += list(ex.map(send, burst))  # anomalous clips at once: one alert, not several
        ids = {d["clip_id"] for d in docs}
        assert len(ids) == len(normal) + len(burst) and sum(d["duplicate"] for d in docs) == 5
        with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {tokens['read']}"}) as c:
            stored = {m: c.get(f"/api/v1/machines/{m}/scores", params={"limit": 100}).json()["items"] for m in ("api-1", "api-2")}
            assert len(stored["api-1"]) == 8 and len(stored["api-2"]) == 14
            alerts = c.get("/api/v1/alerts", params={"machine": "api-2"}).json()["items"]
            assert len(alerts) == 1 and alerts[0]["state"] == "open" and alerts[0]["n_anomalous"] >= 2
    finally:
        server.stop()
