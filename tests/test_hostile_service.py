"""The service under hostile input and a failing disk (issue 18), in process (FastAPI's TestClient):
HTML error pages with their own status, ids and offsets beyond 64 bits, times that overflow in UTC,
a store or disk that cannot write (503 with the reason, and /health says so), a database written by
a newer humwatch (one line, exit 2), security headers with a Content-Security-Policy the pages keep
to, and the rate limits on failed sign-ins and on uploads. Every answer here is a 4xx or a 503 with
one line: never a 500, a traceback or a hang."""

from __future__ import annotations

import errno
import io
import re
from pathlib import Path

import pytest
from service_fixtures import clip_bytes, fresh_monitors, iso, make_token, wait_js
from sqlalchemy import func, select, text

MACHINE = "api-1"
BIG = [2**63, 2**64, 10**30]


class App:
    """An in-process server on a copy of one monitor, with a token per scope."""

    def __init__(self, service_monitors, root: Path, **settings):
        from fastapi.testclient import TestClient

        from humwatch.service.app import Service, create_app
        from humwatch.service.config import ServiceSettings
        from humwatch.service.store import default_db_url

        monitors = fresh_monitors(service_monitors, root / "monitors", names=(MACHINE,))
        db = default_db_url(monitors)
        self.tokens = {scope: make_token(db, f"t-{scope}", scope) for scope in ("ingest", "read", "admin")}
        self.settings = ServiceSettings(monitors=str(monitors), device="cpu", **settings).validate()
        self.svc = Service.open(self.settings)
        self.app = create_app(self.settings, self.svc)
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def auth(self, scope: str, html: bool = False) -> dict:
        h = {"authorization": f"Bearer {self.tokens[scope]}"}
        return {**h, "accept": "text/html"} if html else h

    def post_clip(self, data: bytes, token: str | None = None, **params):
        return self.client.post(
            f"/api/v1/machines/{MACHINE}/clips",
            content=data,
            params=params,
            headers={"authorization": f"Bearer {token or self.tokens['ingest']}", "content-type": "audio/wav"},
        )

    def n_clips(self) -> int:
        from humwatch.service.store import ClipRow

        with self.svc.store.read() as s:
            return s.scalar(select(func.count()).select_from(ClipRow))

    def close(self):
        self.client.close()
        self.svc.close()


@pytest.fixture(scope="module")
def app(service_monitors, tmp_path_factory):
    a = App(service_monitors, tmp_path_factory.mktemp("hostile-service"))
    yield a
    a.close()


def one_line_problem(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert "\n" not in detail and "Traceback" not in detail, detail
    for w in words:
        assert w in detail, (w, detail)
    return detail


# ------------------------------------------------------------------------------ error pages


def test_html_error_pages_carry_their_own_status(app):
    c, html = app.client, app.auth("read", html=True)
    r = c.get("/machines/nope", headers=html)
    assert r.status_code == 404 and "no machine named &#39;nope&#39;" in r.text and "<h1>404</h1>" in r.text
    r = c.get("/machines/bad%20name%00", headers=html)
    assert r.status_code == 404
    r = c.get("/clips/999999", headers=html)
    assert r.status_code == 404 and "no clip 999999" in r.text
    r = c.get("/clips/not-a-number", headers=html)
    assert r.status_code == 422 and "<h1>422</h1>" in r.text
    r = c.post("/alerts/1/ack", headers={**html, "origin": "https://evil.example"}, data={"next": "/"})
    assert r.status_code == 403 and "form posted from another site" in r.text
    r = c.post("/logout", headers={**html, "referer": "https://evil.example/page"})
    assert r.status_code == 403
    one_line_problem(c.get("/api/v1/clips/999999", headers=app.auth("read")), 404, "no clip 999999")


@pytest.mark.parametrize("big", BIG)
def test_ids_and_offsets_beyond_64_bits_are_422_not_500(app, big):
    read = app.auth("read")
    endpoints = [
        ("GET", f"/api/v1/clips/{big}"),
        ("GET", f"/api/v1/clips/{big}/audio"),
        ("POST", f"/api/v1/alerts/{big}/ack"),
        ("GET", f"/clips/{big}"),
        ("GET", f"/clips/{big}/spectrogram.png"),
        ("GET", f"/clips/{big}/why.png"),
        ("GET", f"/clips/{big}/audio"),
        ("POST", f"/alerts/{big}/ack"),
        ("GET", f"/api/v1/machines/{MACHINE}/scores?offset={big}"),
        ("GET", f"/api/v1/alerts?offset={big}"),
    ]
    for method, url in endpoints:
        r = app.client.request(method, url, headers=read)
        one_line_problem(r, 422, "less than or equal to")
    # the largest id a database holds is simply not there
    one_line_problem(app.client.get(f"/api/v1/clips/{2**63 - 1}", headers=read), 404)


@pytest.mark.parametrize("when", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59.999999-00:01"])
def test_times_that_overflow_in_utc_are_422_not_500(app, when):
    r = app.post_clip(clip_bytes("normal", 1), recorded_at=when)
    one_line_problem(r, 422, "outside the years 1 to 9999")
    for name in ("since", "until"):
        r = app.client.get(f"/api/v1/machines/{MACHINE}/scores", params={name: when}, headers=app.auth("read"))
        one_line_problem(r, 422, name)
    # the edges that do fit are stored and read back
    r = app.post_clip(clip_bytes("normal", 2), recorded_at="9999-12-31T23:59:59+00:00")
    assert r.status_code == 200 and r.json()["recorded_at"].startswith("9999-12-31T23:59:59")
    assert app.client.get(f"/machines/{MACHINE}?range=all", headers=app.auth("read", html=True)).status_code == 200


# ------------------------------------------------------------------------- a failing store


@pytest.fixture
def fresh(service_monitors, tmp_path):
    a = App(service_monitors, tmp_path)
    yield a
    a.close()


def _readonly_store(monkeypatch, svc) -> None:
    """Point the store's writing sessions at the same SQLite file opened read-only (mode=ro): every
    write is refused by SQLite itself, "attempt to write a readonly database"."""
    from sqlalchemy.orm import sessionmaker

    from humwatch.service.store import make_engine

    path = svc.store.engine.url.database
    ro = make_engine(f"sqlite:///file:{path}?mode=ro&uri=true", writer=True)
    monkeypatch.setattr(svc.store, "_write", sessionmaker(ro, expire_on_commit=False))


def test_a_read_only_database_answers_503_with_the_reason_and_health_says_the_store_cannot_write(fresh, monkeypatch):
    from humwatch.service import guard

    monkeypatch.setattr(guard, "PROBE_EVERY_S", 0.0)
    c = fresh.client
    assert c.get("/health").status_code == 200
    assert fresh.post_clip(clip_bytes("normal", 3), recorded_at=iso(0)).status_code == 200
    _readonly_store(monkeypatch, fresh.svc)
    for seed in range(4, 8):  # nothing lost: each is refused, none half-stored, and the client may retry
        r = fresh.post_clip(clip_bytes("anomalous" if seed % 2 else "normal", seed), recorded_at=iso(seed))
        one_line_problem(r, 503, "the store cannot write", "read-only")
        assert r.headers["retry-after"]
    one_line_problem(c.get("/health"), 503, "the store cannot write", "read-only")
    r = c.put(f"/api/v1/machines/{MACHINE}/alert-rule", json={"k": 1, "n": 1, "m": 1}, headers=fresh.auth("admin"))
    one_line_problem(r, 503, "read-only")
    assert fresh.n_clips() == 1
    assert not list((fresh.settings.audio_path / ".incoming").glob(".upload-*"))
    monkeypatch.undo()
    monkeypatch.setattr(guard, "PROBE_EVERY_S", 0.0)  # (else the failure seen last is trusted a few seconds)
    assert c.get("/health").status_code == 200
    assert fresh.post_clip(clip_bytes("normal", 4), recorded_at=iso(4)).status_code == 200 and fresh.n_clips() == 2


def test_a_full_disk_answers_503_with_the_reason_and_health_says_the_store_cannot_write(fresh, monkeypatch):
    """The kept audio's disk full (ENOSPC on write; uploads are decoded in memory, so only an
    anomalous clip's kept audio is written), and the database's disk full (SQLite's "database or
    disk is full"): 503 naming it, never 500, nothing stored, and /health 503 until the disk has room."""
    import os

    from sqlalchemy.exc import OperationalError

    from humwatch.service import guard

    real_fdopen = os.fdopen

    class FullDisk(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

        def writable(self):
            return True

        def fileno(self):
            return self.f.fileno()

        def close(self):
            self.f.close()
            super().close()

    def full_fdopen(fd, mode="r", *a, **kw):
        f = real_fdopen(fd, mode, *a, **kw)
        return FullDisk(f) if "w" in mode else f

    c = fresh.client
    assert c.get("/health").status_code == 200
    monkeypatch.setattr(os, "fdopen", full_fdopen)
    real_write_bytes = Path.write_bytes

    def full_write_bytes(self, data):
        if self.parent.parent == fresh.settings.audio_path:  # <audio>/<machine>/<kept file>
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_write_bytes)
    r = fresh.post_clip(clip_bytes("anomalous", 1), recorded_at=iso(1))
    one_line_problem(r, 503, "cannot write", "the disk is full")
    assert fresh.n_clips() == 0 and not [p for p in fresh.settings.audio_path.rglob("*") if p.is_file() and ".incoming" not in p.parts]
    one_line_problem(c.get("/health"), 503, "the store cannot write", "the disk is full")
    monkeypatch.setattr(guard, "PROBE_EVERY_S", 0.0)  # the next probe writes for real: still full
    one_line_problem(c.get("/health"), 503, "the store cannot write", "the upload folder: the disk is full")
    assert not list((fresh.settings.audio_path / ".incoming").glob(".upload-*"))
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    monkeypatch.setattr(Path, "write_bytes", real_write_bytes)

    def disk_full(*a, **kw):
        raise OperationalError("INSERT INTO clips ...", {}, Exception("database or disk is full"))

    monkeypatch.setattr(fresh.svc.store, "write", disk_full)
    one_line_problem(fresh.post_clip(clip_bytes("normal", 2), recorded_at=iso(2)), 503, "the database's disk is full")
    one_line_problem(c.get("/health"), 503, "the store cannot write", "the database's disk is full")
    monkeypatch.undo()
    monkeypatch.setattr(guard, "PROBE_EVERY_S", 0.0)
    assert c.get("/health").status_code == 200 and fresh.n_clips() == 0
    assert fresh.post_clip(clip_bytes("normal", 2), recorded_at=iso(2)).status_code == 200


def test_health_probes_by_writing_and_caches_its_answer(fresh, monkeypatch):
    from humwatch.service import guard

    writes = []
    real = fresh.svc.store.write

    def counting():
        writes.append(1)
        return real()

    monkeypatch.setattr(fresh.svc.store, "write", counting)
    for _ in range(5):
        assert fresh.client.get("/health").json() == {"status": "ok"}
    assert len(writes) == 1  # one probe for five asks, within PROBE_EVERY_S
    monkeypatch.setattr(guard, "PROBE_EVERY_S", 0.0)
    fresh.client.get("/health")
    assert len(writes) == 2


# --------------------------------------------------------------------- a newer database


def _newer(url: str, written_by: str | None = "9.9.9") -> None:
    from humwatch.service.store import Store

    store = Store(url)
    store.migrate()
    with store.write() as s:
        s.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        if written_by is None:
            s.execute(text("DROP TABLE store_info"))
        else:
            s.execute(text("UPDATE store_info SET value = :v WHERE key = 'written_by'"), {"v": written_by})
    store.close()


@pytest.mark.parametrize("written_by, words", [("9.9.9", "written by humwatch 9.9.9"), (None, "written by a newer humwatch")])
def test_a_database_from_a_newer_humwatch_is_refused_in_one_line(written_by, words, service_monitors, tmp_path, capsys):
    from humwatch.cli import main
    from humwatch.service.store import Store, StoreError, default_db_url

    monitors = fresh_monitors(service_monitors, tmp_path / "monitors", names=(MACHINE,))
    url = default_db_url(monitors)
    _newer(url, written_by)
    for args in (
        ["token", "list", "--monitors", str(monitors)],
        ["token", "create", "x", "--db", url],
        ["serve", str(monitors), "--device", "cpu", "--port", "1"],
    ):
        with pytest.raises(SystemExit) as e:
            main(args)
        out = capsys.readouterr()
        assert e.value.code == 2 and "Traceback" not in out.err + out.out, out.err
        errors = out.err.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith("error: "), out.err
        assert words in errors[0] and "schema revision 0099" in errors[0] and "upgrade humwatch" in errors[0], errors[0]
    store = Store(url)
    with pytest.raises(StoreError, match="0099"):
        store.check_schema()  # what each worker process of `serve --workers N` runs
    with store.read() as s:  # and nothing was changed: the newer humwatch finds its database as it left it
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0099"
    store.close()


def test_migrate_records_which_humwatch_wrote_the_database(tmp_path):
    from humwatch import __version__
    from humwatch.service.store import Store, StoreInfo

    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.migrate()
    with store.read() as s:
        assert s.get(StoreInfo, "written_by").value == __version__
    store.close()


# ------------------------------------------------------------------------------ web hardening


def test_every_answer_carries_the_security_headers(app):
    from humwatch.service.guard import SECURITY_HEADERS

    c = app.client
    answers = [
        c.get("/health"),
        c.get("/login"),
        c.get("/", headers=app.auth("read", html=True)),
        c.get("/api/v1/machines", headers=app.auth("read")),
        c.get("/api/v1/machines"),
        c.get("/clips/999", headers=app.auth("read", html=True)),
        c.get("/static/chart.js"),
        c.get("/docs", headers=app.auth("read")),
        c.post(f"/api/v1/machines/{MACHINE}/clips", content=b"x", headers={"content-length": "999999999999"}),
    ]
    for r in answers:
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name.decode()) == value.decode(), (r.url, r.status_code, name)
    csp = answers[0].headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert answers[0].headers["x-content-type-options"] == "nosniff"


def test_the_pages_keep_to_their_content_security_policy(app):
    """No inline script and no inline style on any page: each <script> is a file of the server's or
    a JSON data block (the browser test runs them under the policy)."""
    doc = app.post_clip(clip_bytes("anomalous", 9), recorded_at=iso(100)).json()
    html = app.auth("read", html=True)
    pages = ["/", f"/machines/{MACHINE}", "/alerts", f"/clips/{doc['clip_id']}", "/login", "/docs", "/clips/424242"]
    for page in pages:
        r = app.client.get(page, headers=html)
        assert r.status_code in (200, 404), (page, r.status_code)
        for tag in re.findall(r"<script\b[^>]*>", r.text):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, (page, tag)
        assert "<style" not in r.text and not re.search(r"<[^>]+\sstyle\s*=", r.text), page
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", r.text), page  # no inline event handlers


def test_failed_sign_ins_are_limited_per_client_address(service_monitors, tmp_path):
    from fastapi.testclient import TestClient

    a = App(service_monitors, tmp_path, max_failed_logins=5)
    try:
        clock = [1000.0]
        a.svc.failed_logins.clock = lambda: clock[0]
        c = a.client
        for _ in range(20):  # no token at all is no guess: never counted
            assert c.get("/api/v1/machines").status_code == 401
        for k in range(5):
            r = c.get("/api/v1/machines", headers={"authorization": f"Bearer hw_guess{k}"})
            assert r.status_code == 401
        r = c.get("/api/v1/machines", headers={"authorization": "Bearer hw_guess5"})
        one_line_problem(r, 429, "too many unknown or revoked tokens")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # while blocked, the address is refused whatever token it shows, also on the sign-in form
        assert c.get("/api/v1/machines", headers=a.auth("read")).status_code == 429
        r = c.post("/login", data={"token": a.tokens["read"], "next": "/"}, headers={"accept": "text/html"}, follow_redirects=False)
        assert r.status_code == 429 and "too many" in r.text and r.headers["retry-after"]
        # another address is not held up by it
        other = TestClient(a.app, raise_server_exceptions=False, client=("10.1.2.3", 5000))
        assert other.get("/api/v1/machines", headers=a.auth("read")).status_code == 200
        other.close()
        clock[0] += 61  # the window slides on
        assert c.get("/api/v1/machines", headers=a.auth("read")).status_code == 200
        for k in range(5):
            assert c.post("/login", data={"token": f"hw_wrong{k}"}, headers={"accept": "text/html"}).status_code == 401
        assert c.post("/login", data={"token": "hw_wrong"}, headers={"accept": "text/html"}).status_code == 429
    finally:
        a.close()


def test_uploads_are_limited_per_token(service_monitors, tmp_path):
    from humwatch.service.listen import RETRY_STATUSES

    a = App(service_monitors, tmp_path, max_uploads_per_minute=3)
    try:
        clock = [50.0]
        a.svc.uploads.clock = lambda: clock[0]
        for k in range(3):
            assert a.post_clip(clip_bytes("normal", k), recorded_at=iso(k)).status_code == 200
        r = a.post_clip(clip_bytes("normal", 3), recorded_at=iso(3))
        one_line_problem(r, 429, "'t-ingest'", "more than 3 clips in a minute")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert 429 in RETRY_STATUSES  # a listener keeps the clip in its spool and retries it
        assert a.post_clip(clip_bytes("normal", 3), token=a.tokens["admin"], recorded_at=iso(3)).status_code == 200
        clock[0] += 60.5
        assert a.post_clip(clip_bytes("normal", 4), recorded_at=iso(4)).status_code == 200
        assert a.n_clips() == 5
    finally:
        a.close()


def test_the_default_limits_leave_a_plant_alone(app):
    """The defaults: 100 failed sign-ins a minute per address, 1200 clips a minute per token (a
    plant of 100 machines sending a 10 s clip each, all with one token, is 600 a minute)."""
    assert app.settings.max_failed_logins == 100 and app.settings.max_uploads_per_minute == 1200


# ------------------------------------------------------------------ the policy in a browser


def test_a_browser_runs_every_page_under_the_policy_without_a_violation(service_monitors, tmp_path, browser):
    """Chromium reports each thing the Content-Security-Policy blocks (a securitypolicyviolation
    event): signing in, the fleet, a machine's chart, the alerts, a clip's figures and /docs (Swagger
    UI) all work with none."""
    import httpx
    from service_fixtures import LiveServer

    monitors = fresh_monitors(service_monitors, tmp_path / "monitors", names=("web-1",))
    from humwatch.service.store import default_db_url

    tokens = {s: make_token(default_db_url(monitors), f"b-{s}", s) for s in ("ingest", "read")}
    server = LiveServer(monitors, tmp_path / "serve.log").start()
    try:
        with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {tokens['ingest']}"}, timeout=60) as c:
            docs = [
                c.post("/api/v1/machines/web-1/clips", content=clip_bytes(kind, k), params={"recorded_at": iso(-k)}).json()
                for k, kind in enumerate(["normal", "anomalous", "anomalous", "anomalous"])
            ]
        page = browser.new_page()
        page.set_default_timeout(20_000)
        page.add_init_script(
            "window.__csp = []; document.addEventListener('securitypolicyviolation', "
            "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/login")
        assert page.evaluate("window.__csp") == []
        page.fill("#token", tokens["read"])
        page.click("button[type=submit]")
        page.wait_for_url(server.url + "/")
        assert page.evaluate("window.__csp") == []
        page.goto(server.url + "/machines/web-1?range=all")
        wait_js(page, "window.humwatchChart !== undefined")
        assert page.locator("#chart canvas").count() >= 1 and page.evaluate("window.__csp") == []
        page.goto(server.url + "/alerts")
        assert page.evaluate("window.__csp") == []
        page.goto(server.url + f"/clips/{docs[1]['clip_id']}")
        wait_js(
            page,
            "() => { const i = document.getElementById('spectrogram'); return i && i.complete && i.naturalWidth > 300; }",
            timeout=60_000,
        )
        assert page.evaluate("window.__csp") == []
        page.goto(server.url + "/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        assert page.locator(".swagger-ui .opblock").count() >= 10
        assert page.evaluate("window.__csp") == [] and errors == [], errors
        # and the policy is in force: an inline script (what an injected one would be) does not run
        page.evaluate(
            "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1'; document.body.appendChild(s); }"
        )
        wait_js(page, "window.__csp.length > 0")
        assert page.evaluate("window.__ran") is None and "script-src" in page.evaluate("window.__csp")[0]
        page.close()
    finally:
        server.stop()
