"""Sensor faults and stale machines in the service (issue 20): a silent clip is stored as a
sensor fault (not scored, no anomaly alert), the machine's state is ``sensor`` and a ``sensor``
alert opens and closes; a machine goes ``stale`` after its window, a heartbeat keeps it fresh;
the 0004 migration upgrades a database made by 0003."""

from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
import pytest
import soundfile as sf
from service_fixtures import clip_bytes, fresh_monitors, make_token

MACHINE = "web-1"


def silent_bytes(seconds: float = 2.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * 16000), np.float32), 16000, subtype="PCM_16", format="WAV")
    return buf.getvalue()


@pytest.fixture()
def service(service_monitors, tmp_path):
    from fastapi.testclient import TestClient

    from humwatch.service.app import Service, create_app
    from humwatch.service.config import ServiceSettings
    from humwatch.service.store import default_db_url

    monitors = fresh_monitors(service_monitors, tmp_path / "monitors", names=(MACHINE,))
    tokens = {scope: make_token(default_db_url(monitors), f"s-{scope}", scope) for scope in ("ingest", "read")}
    # a webhook nobody answers: the events are still written to the outbox, which is what is checked
    cfg = ServiceSettings(monitors=str(monitors), device="cpu", webhook="http://127.0.0.1:9/hook", webhook_retries=0).validate()
    svc = Service.open(cfg)
    client = TestClient(create_app(cfg, svc), raise_server_exceptions=False)
    client.svc, client.tokens = svc, tokens
    yield client
    client.close()
    svc.close()


def post(client, body: bytes, minute: int):
    r = client.post(
        f"/api/v1/machines/{MACHINE}/clips",
        content=body,
        params={"recorded_at": f"2030-01-01T00:{minute:02d}:00Z"},
        headers={"authorization": f"Bearer {client.tokens['ingest']}"},
    )
    assert r.status_code == 200, r.text
    return r.json()


def machine(client) -> dict:
    r = client.get(f"/api/v1/machines/{MACHINE}", headers={"authorization": f"Bearer {client.tokens['read']}"})
    assert r.status_code == 200, r.text
    return r.json()


def events(client) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from humwatch.service.store import Notification

    with client.svc.store.read() as s:
        rows = s.scalars(select(Notification).order_by(Notification.id)).all()
        return [(n.event, json.loads(n.payload)["alert"]["kind"]) for n in rows]


def test_silent_clip_is_a_sensor_fault_with_its_own_alert(service):
    doc = post(service, clip_bytes("normal", 1), 0)
    assert doc["decision"] == "normal" and doc["sensor"] is None
    for k in range(1, 5):  # more silent clips than the 3/5/3 rule needs: still no anomaly alert
        doc = post(service, silent_bytes(), k)
        assert doc["decision"] == "sensor" and "digital silence" in doc["sensor"]
        assert doc["score"] is None and not doc["alert_opened"] and doc["alert"] is None
    m = machine(service)
    assert m["state"] == "sensor"
    assert m["open_alert"] is None
    assert m["sensor_alert"]["kind"] == "sensor" and "digital silence" in m["sensor_alert"]["reason"]
    assert events(service) == [("alert.opened", "sensor")]
    service.cookies.set("humwatch_token", service.tokens["read"])
    page = service.get("/")
    alerts = service.get("/alerts")
    service.cookies.clear()
    assert page.status_code == 200 and 'class="badge state-sensor">sensor<' in page.text and "digital silence" in page.text
    assert alerts.status_code == 200 and ">sensor</span>" in alerts.text
    post(service, clip_bytes("normal", 2), 6)
    m = machine(service)
    assert m["state"] == "ok" and m["sensor_alert"] is None
    assert events(service) == [("alert.opened", "sensor"), ("alert.closed", "sensor")]
    r = service.get("/api/v1/alerts", headers={"authorization": f"Bearer {service.tokens['read']}"})
    assert [(a["kind"], a["state"]) for a in r.json()["items"]] == [("sensor", "closed")]
    page = service.get(f"/api/v1/machines/{MACHINE}/scores", headers={"authorization": f"Bearer {service.tokens['read']}"}).json()
    assert [c["decision"] for c in page["items"]].count("sensor") == 4


def test_stale_after_the_window_and_only_a_clip_ends_it(service):
    from humwatch.service import health
    from humwatch.service.store import Machine, utcnow

    svc = service.svc
    assert health.sweep_stale(svc.store, svc.notifier.outbox, utcnow() + dt.timedelta(days=1)) == []  # never sent: "no data"
    for k in range(3):
        post(service, clip_bytes("normal", 10 + k), k)
    with svc.store.read() as s:
        window = health.stale_window_s(s, s.get(Machine, 1))
    assert window == health.STALE_MIN_S  # clips came milliseconds apart: the floor
    assert health.sweep_stale(svc.store, svc.notifier.outbox, utcnow() + dt.timedelta(seconds=window / 2)) == []
    assert health.sweep_stale(svc.store, svc.notifier.outbox, utcnow() + dt.timedelta(seconds=window + 5)) == [MACHINE]
    assert health.sweep_stale(svc.store, svc.notifier.outbox, utcnow() + dt.timedelta(seconds=window + 9)) == []  # one at a time
    m = machine(service)
    assert m["state"] == "stale" and m["stale_alert"]["kind"] == "stale"
    assert "no clip nor heartbeat" in m["stale_alert"]["reason"] and "is the listener running?" in m["stale_alert"]["reason"]
    # a live listener is no clip: its heartbeat does not end the alert (the recorder may be dead)
    r = service.post(f"/api/v1/machines/{MACHINE}/heartbeat", headers={"authorization": f"Bearer {service.tokens['ingest']}"})
    assert r.status_code == 200 and r.json()["state"] == "stale" and r.json()["stale_alert"] is not None
    assert events(service) == [("alert.opened", "stale")]
    post(service, clip_bytes("normal", 13), 3)  # the next clip does
    assert machine(service)["state"] == "ok" and machine(service)["stale_alert"] is None
    assert events(service) == [("alert.opened", "stale"), ("alert.closed", "stale")]
    # a read token cannot send heartbeats; an unknown machine is a 404
    r = service.post(f"/api/v1/machines/{MACHINE}/heartbeat", headers={"authorization": f"Bearer {service.tokens['read']}"})
    assert r.status_code == 403
    r = service.post("/api/v1/machines/nope/heartbeat", headers={"authorization": f"Bearer {service.tokens['ingest']}"})
    assert r.status_code == 404


def test_expected_interval_is_learned_from_the_clips(tmp_path):
    from humwatch.service import health
    from humwatch.service.store import ClipRow, Machine, Store

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate()
    t0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    with store.write() as s:
        m = Machine(name="m")
        s.add(m)
        s.flush()
        for k in range(6):
            at = t0 + dt.timedelta(minutes=5 * k)
            s.add(ClipRow(machine_id=m.id, key=str(k), audio_sha256="x", at=at, received_at=at, score=1, threshold=2, anomalous=False))
    with store.read() as s:
        m = s.get(Machine, m.id)
        assert health.expected_interval(s, m) == (300.0, "learned")
        assert health.stale_window_s(s, m) == 900.0
        assert not health.is_stale(s, m, t0 + dt.timedelta(minutes=25 + 14))
        assert health.is_stale(s, m, t0 + dt.timedelta(minutes=25 + 16))
    store.close()


def test_migration_upgrades_a_database_of_the_previous_head(tmp_path):
    from alembic import command
    from sqlalchemy import text

    from humwatch.service.store import Store

    store = Store(f"sqlite:///{tmp_path / 'old.sqlite'}")
    command.upgrade(store._alembic_config(), "0003")
    with store.write() as s:
        s.execute(text("INSERT INTO machines (id, name, created_at) VALUES (1, 'old', '2030-01-01 00:00:00')"))
        s.execute(
            text(
                "INSERT INTO clips (id, machine_id, key, audio_sha256, at, received_at, score, threshold, anomalous, filename, seconds, "
                "audio_bytes) VALUES (1, 1, 'k', 'x', '2030-01-01 00:00:00', '2030-01-01 00:00:00', 5, 1, 1, 'a.wav', 2, 0)"
            )
        )
        s.execute(
            text(
                "INSERT INTO alerts (id, machine_id, state, start_at, opened_at, first_clip_id, last_clip_id, n_anomalous, normal_streak, "
                "max_score, rule, webhook_attempts) VALUES (1, 1, 'open', '2030-01-01 00:00:00', '2030-01-01 00:00:00', 1, 1, 3, 0, 5, "
                "'3/5/3', 0)"
            )
        )
    assert store.current_revision() == "0003"
    assert store.migrate() == store.head_revision()
    store.check_schema()
    with store.read() as s:
        assert s.execute(text("SELECT kind, reason FROM alerts")).one() == ("anomaly", None)
        assert s.execute(text("SELECT sensor FROM clips")).one() == (None,)
        assert s.execute(text("SELECT heartbeat_at FROM machines")).one() == (None,)
    store.close()


def test_listener_sends_heartbeats_when_idle(service, tmp_path):
    from sqlalchemy import select

    from humwatch.service import health
    from humwatch.service.listen import ListenSettings, Sender, Spool
    from humwatch.service.store import Machine, utcnow

    svc = service.svc
    for k in range(3):
        post(service, clip_bytes("normal", 20 + k), k)
    later = utcnow() + dt.timedelta(seconds=health.STALE_MIN_S + 5)
    assert health.sweep_stale(svc.store, None, later) == [MACHINE]
    s = ListenSettings(server="http://testserver", machine=MACHINE, spool=str(tmp_path / "spool"), heartbeat=30).validate()
    sender = Sender(s, service.tokens["ingest"], Spool(s.spool))
    assert sender.beat(service) == 0  # just started: the first beat comes after 30 s without a clip
    sender._last_contact[MACHINE] -= 31
    assert sender.beat(service) == 1  # service is FastAPI's TestClient: an httpx client
    assert sender.beat(service) == 0  # not again before 30 s
    assert machine(service)["state"] == "stale"  # the machine's clips stopped: its listener's beats do not hide that
    with svc.store.read() as st:
        m = st.scalar(select(Machine).where(Machine.name == MACHINE))
        assert m.heartbeat_at is not None and not health.is_stale(st, m)
        later = m.heartbeat_at + dt.timedelta(seconds=health.stale_window_s(st, m) + 5)
        # a heartbeat within the window: the listener is alive, the recorder or microphone is not
        m.heartbeat_at = later - dt.timedelta(seconds=10)
        assert "while its listener is alive" in health.stale_reason(st, m, later)
        assert "the recorder or the microphone sends nothing" in health.stale_reason(st, m, later)
    off = Sender(
        ListenSettings(server="http://testserver", machine=MACHINE, spool=str(tmp_path / "s2"), heartbeat=0).validate(),
        "x",
        Spool(tmp_path / "s2"),
    )
    assert off.beat(service) == 0


def admin_token(client) -> str:
    from humwatch.service.store import default_db_url

    return make_token(default_db_url(client.svc.settings.monitors), "s-admin", "admin")


def test_an_admin_sets_the_expected_interval_and_the_stale_window_follows(service):
    from humwatch.service import health
    from humwatch.service.store import utcnow

    svc = service.svc
    for k in range(3):
        post(service, clip_bytes("normal", 30 + k), k)
    m = machine(service)
    assert m["expected_interval_from"] == "learned" and m["stale_after_s"] == health.STALE_MIN_S
    admin = {"authorization": f"Bearer {admin_token(service)}"}
    url = f"/api/v1/machines/{MACHINE}/expected-interval"
    r = service.put(url, json={"seconds": 20}, headers=admin)
    assert r.status_code == 200, r.text
    assert (r.json()["expected_interval_s"], r.json()["expected_interval_from"], r.json()["stale_after_s"]) == (20.0, "set", 60.0)
    # below the learned floor (STALE_MIN_S): an interval an admin set counts as it is
    assert health.sweep_stale(svc.store, None, utcnow() + dt.timedelta(seconds=50)) == []
    assert health.sweep_stale(svc.store, None, utcnow() + dt.timedelta(seconds=65)) == [MACHINE]
    assert "window 60 s" in machine(service)["stale_alert"]["reason"]
    service.cookies.set("humwatch_token", service.tokens["read"])
    page = service.get(f"/machines/{MACHINE}").text
    service.cookies.clear()
    assert 'id="stale-alert"' in page and "is the listener running" in page
    assert "a clip every <b>20 s</b>" in page and "set by an admin" in page
    r = service.put(url, json={"seconds": None}, headers=admin)
    assert r.status_code == 200 and r.json()["expected_interval_from"] == "learned"
    for bad in ({"seconds": 0}, {"seconds": -5}, {"seconds": "soon"}, {"seconds": 8 * 24 * 3600}, {}):
        assert service.put(url, json=bad, headers=admin).status_code == 422, bad
    read = {"authorization": f"Bearer {service.tokens['read']}"}
    assert service.put(url, json={"seconds": 20}, headers=read).status_code == 403
    assert service.put("/api/v1/machines/nope/expected-interval", json={"seconds": 20}, headers=admin).status_code == 404


def test_a_machine_that_only_sent_heartbeats_goes_stale_with_no_clip_in_its_alert(service):
    from humwatch.service import health
    from humwatch.service.store import utcnow

    r = service.post(f"/api/v1/machines/{MACHINE}/heartbeat", headers={"authorization": f"Bearer {service.tokens['ingest']}"})
    assert r.status_code == 200 and r.json()["state"] == "no data"
    later = utcnow() + dt.timedelta(seconds=3 * health.DEFAULT_INTERVAL_S + 5)
    assert health.sweep_stale(service.svc.store, None, later) == [MACHINE]
    alert = machine(service)["stale_alert"]
    assert alert["first_clip_id"] is None and alert["last_clip_id"] is None  # not clip 0: there is none
    assert "no clip ever" in alert["reason"]
    service.cookies.set("humwatch_token", service.tokens["read"])
    page = service.get(f"/alerts/{alert['id']}")
    service.cookies.clear()
    assert page.status_code == 200 and "stale (nothing heard)" in page.text
    # the listener is back (and the machine never sent a clip): its heartbeat ends the alert
    r = service.post(f"/api/v1/machines/{MACHINE}/heartbeat", headers={"authorization": f"Bearer {service.tokens['ingest']}"})
    assert r.json()["state"] == "no data" and r.json()["stale_alert"] is None


def test_the_machine_page_shows_an_open_sensor_fault(service):
    post(service, clip_bytes("normal", 40), 0)
    post(service, silent_bytes(), 1)
    service.cookies.set("humwatch_token", service.tokens["read"])
    page = service.get(f"/machines/{MACHINE}", params={"range": "all"}).text
    clip = service.get(f"/clips/{machine(service)['last_clip']['clip_id']}").text
    service.cookies.clear()
    assert 'id="sensor-alert"' in page and "digital silence" in page and "not the machine" in page
    chart = json.loads(page.split('id="chart-data">', 1)[1].split("</script>", 1)[0])
    assert [s[3] for s in chart["spans"]] == ["sensor"]  # drawn in the sensor colour, not as an alarm
    assert 'id="sensor"' in clip and "not scored" in clip


def test_the_scores_api_gives_csv_of_a_range(service):
    import csv

    docs = [post(service, clip_bytes("normal", 50 + k), k) for k in range(4)]
    post(service, silent_bytes(), 4)
    read = {"authorization": f"Bearer {service.tokens['read']}"}
    url = f"/api/v1/machines/{MACHINE}/scores"
    r = service.get(url, params={"format": "csv", "since": "2030-01-01T00:01:00Z", "until": "2030-01-01T00:04:00Z"}, headers=read)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(x["clip_id"]) for x in rows] == [d["clip_id"] for d in docs[1:]] + [docs[-1]["clip_id"] + 1]
    assert [x["decision"] for x in rows] == ["normal", "normal", "normal", "sensor"]
    assert rows[-1]["score"] == "" and "digital silence" in rows[-1]["sensor"]
    assert float(rows[0]["score"]) == docs[1]["score"]
    # the same clips as the JSON pages
    page = service.get(url, params={"order": "asc", "since": "2030-01-01T00:01:00Z"}, headers=read).json()
    assert [c["clip_id"] for c in page["items"]] == [int(x["clip_id"]) for x in rows]
    assert service.get(url, params={"format": "csv", "limit": 2}, headers=read).status_code == 422
    assert service.get(url, params={"format": "xml"}, headers=read).status_code == 422
    r = service.get(url, params={"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}, headers=read)
    assert r.status_code == 422 and "since must not be after until" in r.text
    assert service.get(url, params={"format": "csv"}).status_code == 401


def test_the_0005_migration_gives_a_clipless_stale_alert_no_clip_id(tmp_path):
    from alembic import command
    from sqlalchemy import text

    from humwatch.service.store import Store

    store = Store(f"sqlite:///{tmp_path / 'old.sqlite'}")
    command.upgrade(store._alembic_config(), "0004")
    with store.write() as s:
        s.execute(text("INSERT INTO machines (id, name, created_at) VALUES (1, 'old', '2030-01-01 00:00:00')"))
        s.execute(
            text(
                "INSERT INTO alerts (id, machine_id, state, kind, start_at, opened_at, first_clip_id, last_clip_id, n_anomalous, "
                "normal_streak, max_score, rule, webhook_attempts) VALUES (1, 1, 'open', 'stale', '2030-01-01 00:00:00', "
                "'2030-01-01 00:00:00', 0, 0, 0, 0, 0, 'stale', 0)"
            )
        )
        # a notification that points at the alert: SQLite copies the alerts table, it must survive
        s.execute(
            text(
                "INSERT INTO notifications (id, alert_id, event, channel, payload, status, attempts, created_at) "
                "VALUES (1, 1, 'alert.opened', 'webhook', '{}', 'sent', 1, '2030-01-01 00:00:00')"
            )
        )
    assert store.migrate() == "0005"
    with store.read() as s:
        assert s.execute(text("SELECT first_clip_id, last_clip_id FROM alerts")).one() == (None, None)
        assert s.execute(text("SELECT expected_interval_s FROM machines")).one() == (None,)
        assert s.execute(text("SELECT alert_id FROM notifications")).one() == (1,)
        assert s.execute(text("PRAGMA foreign_key_check")).all() == []
        assert s.execute(text("PRAGMA foreign_keys")).one() == (1,)  # enforced again after the migration
    command.downgrade(store._alembic_config(), "0004")
    with store.read() as s:
        assert s.execute(text("SELECT first_clip_id, last_clip_id FROM alerts")).one() == (0, 0)
    store.close()
