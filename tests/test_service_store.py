"""The service's store, on SQLite and on a real PostgreSQL: migrations, idempotent ingest (also
under concurrency), the alert rule, acknowledging, kept audio and its retention, tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import threading
import uuid

import pytest
from service_fixtures import write_clip
from sqlalchemy import func, select, text

from humwatch.errors import ConfigError
from humwatch.service.alerts import AlertRule, acknowledge, on_clip
from humwatch.service.auth import authenticate, create_token, list_tokens, revoke_token
from humwatch.service.config import ServiceSettings
from humwatch.service.ingest import Ingestor, Upload, clip_key
from humwatch.service.notify import Outbox
from humwatch.service.scoring import MonitorPool
from humwatch.service.store import Alert, ClipRow, Machine, Store, StoreError, Token

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database(f"t_{uuid.uuid4().hex[:12]}")
    s = Store(url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture(scope="module")
def pool(service_monitors, tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    shutil.copytree(service_monitors / "store-1", d / "store-1")
    return MonitorPool(d, device="cpu")


def ingestor(store, pool, tmp_path, **kw) -> Ingestor:
    settings = ServiceSettings(monitors=str(pool.folder), db=store.url, audio_dir=str(tmp_path / "audio"), **kw).validate()
    ing = Ingestor(store, pool, settings)
    ing.ensure_machines()
    return ing


def upload(tmp_path, kind="normal", seed=0, minutes=None) -> Upload:
    p = write_clip(tmp_path / "in" / f"{uuid.uuid4().hex}.wav", kind, seed)
    data = p.read_bytes()
    when = None if minutes is None else T0 + dt.timedelta(minutes=minutes)
    return Upload(data, hashlib.sha256(data).hexdigest(), len(data), f"{kind}-{seed}.wav", when)


def count(store, model=ClipRow) -> int:
    with store.read() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_migrations_build_exactly_the_models_schema(store):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from humwatch.service.store import Base

    assert store.current_revision() == store.head_revision()
    store.migrate()  # again: nothing to do
    store.check_schema()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    if store.dialect == "sqlite":
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_an_unmigrated_database_is_refused_with_one_line(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(StoreError, match="schema is at nothing.*humwatch serve"):
        s.check_schema()
    s.close()
    with pytest.raises(StoreError, match="not a database URL"):
        Store("no-such-scheme://")


def test_ingest_scores_and_stores_each_clip_once(store, pool, tmp_path):
    ing = ingestor(store, pool, tmp_path)
    first = ing.ingest("store-1", upload(tmp_path, "normal", 1, minutes=0))
    again = ing.ingest("store-1", upload(tmp_path, "normal", 1, minutes=0))
    assert first["decision"] == "normal" and first["score"] < first["threshold"] and not first["duplicate"]
    assert again["duplicate"] and again["clip_id"] == first["clip_id"] and again["score"] == first["score"]
    later = ing.ingest("store-1", upload(tmp_path, "normal", 1, minutes=1))  # same audio, another time
    bad = ing.ingest("store-1", upload(tmp_path, "anomalous", 2, minutes=2))
    assert later["clip_id"] != first["clip_id"] and bad["decision"] == "anomalous" and bad["score"] > bad["threshold"]
    assert count(store) == 3
    with store.read() as s:
        row = s.get(ClipRow, first["clip_id"])
        assert row.at == T0 and row.recorded_at.tzinfo is not None and row.received_at.tzinfo is not None
        assert row.key == clip_key("store-1", T0, row.audio_sha256)


def test_the_same_clip_sent_at_once_by_many_is_one_row(store, pool, tmp_path):
    ing = ingestor(store, pool, tmp_path)
    uploads = [upload(tmp_path, "normal", 7, minutes=5) for _ in range(6)]
    results, errors = [], []

    def send(up):
        try:
            results.append(ing.ingest("store-1", up))
        except Exception as e:  # noqa: BLE001 - the test reports any
            errors.append(e)

    threads = [threading.Thread(target=send, args=(u,)) for u in uploads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len({r["clip_id"] for r in results}) == 1 and len(results) == 6
    assert sum(not r["duplicate"] for r in results) == 1
    assert count(store) == 1
    assert not list(ing.tmp_dir.glob(".upload-*"))  # uploads are decoded in memory: no temporary file


def _feed(store, decisions: str, rule: AlertRule, start: int = 0):
    """Rows for a sequence of N (normal) / A (anomalous), through the alert rule; the alerts opened."""
    opened = []
    for i, ch in enumerate(decisions, start):
        with store.write() as s:
            m = s.scalar(select(Machine).where(Machine.name == "m").with_for_update())
            if m is None:
                m = Machine(name="m")
                s.add(m)
                s.flush()
            row = ClipRow(
                machine_id=m.id,
                key=f"k{i}",
                audio_sha256="0" * 64,
                at=T0 + dt.timedelta(minutes=i),
                score=10.0 if ch == "A" else 1.0,
                threshold=5.0,
                anomalous=ch == "A",
            )
            s.add(row)
            s.flush()
            alert = on_clip(s, m, row, rule, Outbox(("webhook",)))
            if alert is not None:
                opened.append((i, alert.id))
    return opened


def test_k_of_n_opens_an_alert_and_m_normal_clips_close_it(store):
    rule = AlertRule.parse("2/3/2")
    assert _feed(store, "NANNNN", rule) == []  # never 2 anomalous among the last 3
    opened = _feed(store, "AA", rule, start=6)
    assert [i for i, _ in opened] == [7]
    with store.read() as s:
        a = s.get(Alert, opened[0][1])
        assert a.state == "open" and a.first_clip_id < a.last_clip_id and a.n_anomalous == 2
        assert a.start_at == T0 + dt.timedelta(minutes=6) and a.webhook_status == "pending" and a.rule == "2/3/2"
    assert _feed(store, "NAN", rule, start=8) == []  # a normal clip between: the streak starts again
    assert _feed(store, "N", rule, start=11) == []
    with store.read() as s:
        a = s.get(Alert, opened[0][1])
        assert a.state == "closed" and a.end_at == T0 + dt.timedelta(minutes=11) and a.n_anomalous == 3
    # the clips of a closed alert do not count towards the next one
    assert _feed(store, "A", rule, start=12) == []
    assert [i for i, _ in _feed(store, "A", rule, start=13)] == [13]


def test_acknowledging_marks_who_once_and_keeps_the_alert_open(store):
    opened = _feed(store, "AAA", AlertRule(2, 3, 2))
    with store.write() as s:
        a = acknowledge(s, opened[0][1], "alice")
        assert a.acked_by == "alice" and a.state == "open"
    with store.write() as s:
        assert acknowledge(s, opened[0][1], "bob").acked_by == "alice"
        assert acknowledge(s, 999, "bob") is None


@pytest.mark.parametrize("text", ["3/2/1", "0/5/3", "a/b/c", "3/5"])
def test_bad_alert_rules_are_one_line_errors(text):
    with pytest.raises(ConfigError, match="alert rule"):
        AlertRule.parse(text)


def test_anomalous_audio_is_kept_within_the_retention_limits(store, pool, tmp_path):
    clip_bytes = write_clip(tmp_path / "probe.wav", "anomalous").stat().st_size
    ing = ingestor(store, pool, tmp_path, audio_max_mb=2.5 * clip_bytes / 1e6)
    normal = ing.ingest("store-1", upload(tmp_path, "normal", 1, minutes=0))
    kept = [ing.ingest("store-1", upload(tmp_path, "anomalous", s, minutes=1 + s)) for s in range(3)]
    assert not normal["audio_kept"] and all(k["audio_kept"] for k in kept)
    with store.read() as s:
        paths = [s.get(ClipRow, k["clip_id"]).audio_path for k in kept]
    assert all(p and (tmp_path / "audio" / "store-1").as_posix() in p for p in paths)
    assert ing.prune() == 1  # 3 clips, room for 2.5: the oldest goes
    with store.read() as s:
        rows = [s.get(ClipRow, k["clip_id"]) for k in kept]
    assert rows[0].audio_path is None and rows[0].audio_bytes == 0 and rows[1].audio_path and rows[2].audio_path
    assert not (tmp_path / "audio" / "store-1" / paths[0].rsplit("/", 1)[1]).exists()
    # age: everything received before the cutoff goes
    with store.write() as s:
        s.get(ClipRow, kept[1]["clip_id"]).received_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=31)
    assert ing.prune() == 1
    assert (
        ingestor(store, pool, tmp_path, keep_audio=False).ingest("store-1", upload(tmp_path, "anomalous", 9, minutes=30))["audio_kept"]
        is False
    )


def test_tokens_are_stored_as_hashes_with_scopes_and_can_be_revoked(store):
    tok = create_token(store, "lab-pi", "ingest,read")
    assert tok.startswith("hw_") and len(tok) > 40
    with store.read() as s:
        row = s.scalar(select(Token).where(Token.name == "lab-pi"))
        assert tok not in (row.token_hash, row.scopes) and row.token_hash == hashlib.sha256(tok.encode()).hexdigest()
    who = authenticate(store, tok)
    assert who.name == "lab-pi" and who.allows("read") and who.allows("ingest") and not who.allows("admin")
    admin = authenticate(store, create_token(store, "root", "admin"))
    assert admin.allows("ingest") and admin.allows("read")
    assert authenticate(store, tok + "x") is None and authenticate(store, None) is None and authenticate(store, "x") is None
    with pytest.raises(ConfigError, match="exists already"):
        create_token(store, "lab-pi", "read")
    with pytest.raises(ConfigError, match="choose from ingest, read, admin"):
        create_token(store, "other", "write")
    with pytest.raises(ConfigError, match="token name"):
        create_token(store, "bad name!", "read")
    revoke_token(store, "lab-pi")
    assert authenticate(store, tok) is None
    assert [(t["name"], t["revoked"]) for t in list_tokens(store)] == [("lab-pi", True), ("root", False)]
    with pytest.raises(ConfigError, match="no token named"):
        revoke_token(store, "nobody")


def test_client_file_names_are_reduced_to_a_safe_last_part():
    from humwatch.service.ingest import safe_filename

    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\rec\\pump 07.wav") == "pump_07.wav"
    assert safe_filename("<script>.wav") == "_script_.wav"
    assert safe_filename("..") == safe_filename("") == safe_filename("/") == "upload"
    assert len(safe_filename("a" * 500 + ".wav")) == 200


def test_half_received_uploads_left_by_a_killed_server_are_removed(store, pool, tmp_path):
    import os
    import time

    ing = ingestor(store, pool, tmp_path)
    old, new = ing.tmp_dir / ".upload-old", ing.tmp_dir / ".upload-new"
    old.write_bytes(b"RIFF")
    new.write_bytes(b"RIFF")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    ing.clean_incoming()
    assert not old.exists() and new.exists()  # a recent one may be another worker's upload in flight


def test_a_database_that_goes_away_is_a_503_never_a_500(pool):
    """Every request needs the database (the token is looked up there): when it cannot be reached,
    the answer is 503 with one line and Retry-After, and /health says so for the load balancer."""
    from fastapi.testclient import TestClient
    from service_fixtures import free_port

    from humwatch.service.app import Service, create_app

    settings = ServiceSettings(
        monitors=str(pool.folder), db=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none", keep_audio=False
    ).validate()
    store = Store(settings.db_url)  # connects lazily: nothing listens on that port
    app = create_app(settings, service=Service(settings, store, pool, Ingestor(store, pool, settings), None))
    with TestClient(app, raise_server_exceptions=False) as c:
        health = c.get("/health")
        api = c.get("/api/v1/machines", headers={"authorization": "Bearer hw_anything"})
        page = c.get("/", headers={"accept": "text/html", "cookie": "humwatch_token=hw_anything"})
    for r in (health, api, page):
        assert r.status_code == 503 and r.json() == {"detail": "the database is not available"}
        assert r.headers["retry-after"] == "5"
    store.close()


def test_the_monitors_of_a_folder_are_its_monitor_subfolders(service_monitors, tmp_path):
    from humwatch.service.scoring import find_monitors

    one = service_monitors / "store-1"
    shutil.copytree(one, tmp_path / "pump-07")
    shutil.copytree(one, tmp_path / ".pump-08.tmp-x1y2")  # being written by `humwatch fit`: not a machine yet
    (tmp_path / "notes").mkdir()
    (tmp_path / "humwatch-service.db").write_bytes(b"")
    assert find_monitors(tmp_path) == {"pump-07": tmp_path / "pump-07"}
    assert find_monitors(tmp_path / "pump-07") == {"pump-07": tmp_path / "pump-07"}  # a monitor itself: one machine
    shutil.copytree(one, tmp_path / "pump 09")
    with pytest.raises(ConfigError, match="cannot name a machine"):
        find_monitors(tmp_path)
