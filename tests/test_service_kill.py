"""Killing the server (SIGKILL) in the middle of a stream of uploads loses nothing it said yes to:
after a restart, every clip that got a 200 is in the database, on SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from service_fixtures import LiveServer, clip_bytes, fresh_monitors, iso, make_token
from sqlalchemy import func, select


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_clip_answered_200_survives_a_sigkill(backend, service_monitors, tmp_path, request):
    from humwatch.service.store import ClipRow, Store, default_db_url

    monitors = fresh_monitors(service_monitors, tmp_path / "monitors", names=("api-1", "api-2"))
    db = default_db_url(monitors) if backend == "sqlite" else request.getfixturevalue("postgres").new_database("kill")
    token = make_token(db, "streamer", "ingest,read")
    args = () if backend == "sqlite" else ("--db", db)
    server = LiveServer(monitors, tmp_path / "serve.log", *args).start()
    payloads = [(f"api-{1 + k % 2}", clip_bytes("anomalous" if k % 7 == 3 else "normal", k), iso(k)) for k in range(400)]
    acked: dict[int, tuple] = {}  # clip id -> (machine, recorded_at, score)
    failed: list[int] = []
    stop = threading.Event()

    def stream(offset: int):
        with httpx.Client(timeout=10, headers={"authorization": f"Bearer {token}"}) as c:
            for k in range(offset, len(payloads), 2):
                if stop.is_set():
                    return
                machine, data, when = payloads[k]
                try:
                    r = c.post(f"{server.url}/api/v1/machines/{machine}/clips", content=data, params={"recorded_at": when})
                except httpx.HTTPError:
                    failed.append(k)
                    continue
                if r.status_code == 200:
                    doc = r.json()
                    acked[doc["clip_id"]] = (machine, when, doc["score"])
                else:
                    failed.append(k)

    streams = [threading.Thread(target=stream, args=(i,)) for i in (0, 1)]
    try:
        for t in streams:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 25 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()  # mid-stream: requests are in flight
        time.sleep(0.5)
        stop.set()
        for t in streams:
            t.join(30)
        assert len(acked) >= 25 and failed, (len(acked), len(failed))
        server.start()  # the same database, again
        with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=30) as c:
            for clip_id, (machine, when, score) in acked.items():
                r = c.get(f"/api/v1/clips/{clip_id}")
                assert r.status_code == 200, (clip_id, r.text)
                assert (r.json()["machine"], r.json()["recorded_at"], r.json()["score"]) == (machine, when, score)
            # a client sending again what it got no answer for: each stored once
            k = failed[0]
            machine, data, when = payloads[k]
            again = c.post(f"/api/v1/machines/{machine}/clips", content=data, params={"recorded_at": when})
            assert again.status_code == 200
            twice = c.post(f"/api/v1/machines/{machine}/clips", content=data, params={"recorded_at": when})
            assert twice.json()["duplicate"] and twice.json()["clip_id"] == again.json()["clip_id"]
        store = Store(db)
        with store.read() as s:
            n_rows = s.scalar(select(func.count()).select_from(ClipRow))
        store.close()
        assert n_rows >= len(acked) + 1
    finally:
        stop.set()
        server.stop()
