"""Notifications people use (issue 20, item 3): an alert's opened, acknowledged and closed events
reach a real SMTP server (aiosmtpd, started here on 127.0.0.1) and a webhook receiver, as one JSON
schema; a maintenance window (silence) keeps a machine's clips from opening alerts or notifying;
an SMTP server that is down costs one log line and nothing else."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import logging
import time

import pytest
from service_fixtures import WebhookReceiver as Receiver
from service_fixtures import clip_bytes, free_port, fresh_monitors, iso, make_token, wait_for

aiosmtpd = pytest.importorskip("aiosmtpd", reason="pip install aiosmtpd (the dev extra)")

MACHINE = "api-1"
SECRET = "n0tify"
PUBLIC = "http://hw.example:8000"
TO = ["ops@example.com", "oncall@example.com"]


class Mailbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 and a free port; ``messages`` as parsed e-mails."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list = []
        self.envelopes: list = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                box.envelopes.append(envelope)
                box.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self):
        self.controller.stop()


class InProcess:
    """A service (its own monitors folder and database) behind FastAPI's TestClient."""

    def __init__(self, service_monitors, root, **settings):
        from fastapi.testclient import TestClient

        from humwatch.service.app import Service, create_app
        from humwatch.service.config import ServiceSettings
        from humwatch.service.store import default_db_url

        monitors = fresh_monitors(service_monitors, root / "monitors", names=(MACHINE,))
        db = default_db_url(monitors)
        self.tokens = {scope: make_token(db, f"n-{scope}", scope) for scope in ("ingest", "read", "admin")}
        cfg = ServiceSettings(monitors=str(monitors), device="cpu", public_url=PUBLIC, **settings).validate()
        self.svc = Service.open(cfg)
        self.client = TestClient(create_app(cfg, self.svc), raise_server_exceptions=False, follow_redirects=False)

    def auth(self, scope):
        return {"authorization": f"Bearer {self.tokens[scope]}"}

    def clip(self, kind, seed, when):
        r = self.client.post(
            f"/api/v1/machines/{MACHINE}/clips",
            content=clip_bytes(kind, seed),
            params={"recorded_at": when},
            headers={**self.auth("ingest"), "content-type": "audio/wav"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["decision"] == kind
        return r.json()

    def outbox(self):
        from sqlalchemy import select

        from humwatch.service.store import Notification

        with self.svc.store.read() as s:
            return [(n.event, n.channel, n.status) for n in s.scalars(select(Notification).order_by(Notification.id))]

    def close(self):
        self.client.close()
        self.svc.close()


@pytest.fixture
def mailbox():
    box = Mailbox()
    yield box
    box.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_opened_acknowledged_closed_reach_smtp_and_the_webhook_as_one_schema(service_monitors, tmp_path, mailbox, receiver):
    hw = InProcess(
        service_monitors,
        tmp_path,
        alert_rule="1/1/1",
        webhook=receiver.url,
        webhook_secret=SECRET,
        webhook_backoff=0.1,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_from="humwatch@example.com",
        notify_email=", ".join(TO),
        smtp_backoff=0.1,
    )
    try:
        opened = hw.clip("anomalous", 1, iso(0))
        assert opened["alert_opened"]
        alert = opened["alert"]["id"]
        r = hw.client.post(f"/api/v1/alerts/{alert}/ack", headers=hw.auth("read"))
        assert r.status_code == 200 and r.json()["acked_by"] == "n-read"
        assert hw.client.post(f"/api/v1/alerts/{alert}/ack", headers=hw.auth("read")).status_code == 200  # once only
        closed = hw.clip("normal", 2, iso(1))
        assert closed["alert"] is None
        wait_for(lambda: len(mailbox.messages) >= 3 and len(receiver.calls) >= 3 and hw.svc.notifier.idle())
        time.sleep(0.5)  # nothing more comes
        assert len(mailbox.messages) == 3 and len(receiver.calls) == 3

        subjects = [m["subject"] for m in mailbox.messages]
        assert subjects == [
            f"[humwatch] {MACHINE}: alert {alert} opened",
            f"[humwatch] {MACHINE}: alert {alert} acknowledged by n-read",
            f"[humwatch] {MACHINE}: alert {alert} closed",
        ]
        for m, env in zip(mailbox.messages, mailbox.envelopes):
            assert sorted(env.rcpt_tos) == sorted(TO) and env.mail_from == "humwatch@example.com"
            assert m.get_content_type() == "text/plain"
            body = m.get_content()
            assert f"Machine: {MACHINE}" in body and f"Alert page: {PUBLIC}/machines/{MACHINE}" in body
            assert "against the threshold" in body
        bodies = [m.get_content() for m in mailbox.messages]
        assert "opened: 1 of the machine's recent clips were anomalous (rule 1/1/1)" in bodies[0]
        assert "acknowledged by n-read" in bodies[1] and "closed: the machine sounded normal again" in bodies[2]
        # score vs threshold: the opening clip's score is many times the threshold, the closing one's below it
        assert f"Score: {opened['score']:.4g} against the threshold {opened['threshold']:.4g}" in bodies[0]
        assert f"Score: {closed['score']:.4g} against the threshold" in bodies[2]

        docs = [c["doc"] for c in receiver.calls]
        assert [d["event"] for d in docs] == ["alert.opened", "alert.acknowledged", "alert.closed"]
        keys = set(docs[0])
        assert all(set(d) == keys for d in docs)  # one schema
        assert all(d["machine"] == MACHINE and d["alert_id"] == alert and d["alert"]["id"] == alert for d in docs)
        assert docs[0]["acknowledged_by"] is None and docs[1]["acknowledged_by"] == "n-read" == docs[2]["acknowledged_by"]
        assert docs[0]["alert"]["state"] == "open" and docs[2]["alert"]["state"] == "closed"
        assert docs[0]["score"] == opened["score"] and docs[0]["threshold"] == opened["threshold"]
        assert docs[0]["url"] == f"{PUBLIC}/machines/{MACHINE}"
        for c in receiver.calls:
            assert c["signature"] == "sha256=" + hmac.new(SECRET.encode(), c["body"], hashlib.sha256).hexdigest()
        assert [s for _, _, s in hw.outbox()] == ["sent"] * 6
        alerts = hw.client.get("/api/v1/alerts", headers=hw.auth("read")).json()["items"]
        assert alerts[0]["webhook_status"] == "sent"
    finally:
        hw.close()


def test_a_silence_keeps_clips_stored_but_opens_no_alert_and_sends_nothing(service_monitors, tmp_path, mailbox, receiver):
    hw = InProcess(
        service_monitors,
        tmp_path,
        alert_rule="2/3/2",
        webhook=receiver.url,
        webhook_backoff=0.1,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_from="humwatch@example.com",
        notify_email=TO[0],
        smtp_backoff=0.1,
    )
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    at = lambda minutes: (now + dt.timedelta(minutes=minutes)).isoformat()  # noqa: E731
    url = f"/api/v1/machines/{MACHINE}/silences"
    try:
        body = {"start": at(-60), "end": at(60), "reason": "bearing change"}
        assert hw.client.post(url, json=body, headers=hw.auth("read")).status_code == 403  # admin only
        r = hw.client.post(url, json=body, headers=hw.auth("admin"))
        assert r.status_code == 200, r.text
        silence = r.json()
        assert silence["active"] and silence["reason"] == "bearing change" and silence["created_by"] == "n-admin"
        listed = hw.client.get(url, headers=hw.auth("read")).json()
        assert [s["id"] for s in listed] == [silence["id"]]
        page = hw.client.get(f"/machines/{MACHINE}", headers={**hw.auth("read"), "accept": "text/html"})
        until = (now + dt.timedelta(minutes=60)).strftime("%Y-%m-%d %H:%M:%S UTC")
        assert page.status_code == 200 and f"In maintenance until {until}" in page.text and "bearing change" in page.text

        for k in range(4):  # anomalous clips inside the window: scored and stored, no alert
            doc = hw.clip("anomalous", 10 + k, at(-30 + k))
            assert not doc["alert_opened"] and doc["alert"] is None
        scores = hw.client.get(f"/api/v1/machines/{MACHINE}/scores", headers=hw.auth("read")).json()["items"]
        assert len(scores) == 4 and all(s["decision"] == "anomalous" for s in scores)
        assert hw.client.get("/api/v1/alerts", headers=hw.auth("read")).json()["items"] == []
        time.sleep(1.5)  # more than a sender's poll
        assert hw.outbox() == [] and mailbox.messages == [] and receiver.calls == []

        # after the window: the silenced clips do not count, so one anomalous clip is not yet 2 of 3
        assert not hw.clip("anomalous", 20, at(90))["alert_opened"]
        assert hw.clip("anomalous", 21, at(91))["alert_opened"]
        wait_for(lambda: len(mailbox.messages) == 1 and len(receiver.calls) == 1)
        assert receiver.calls[0]["doc"]["event"] == "alert.opened"

        assert hw.client.delete(f"{url}/{silence['id']}", headers=hw.auth("read")).status_code == 403
        assert hw.client.delete(f"{url}/{silence['id']}", headers=hw.auth("admin")).status_code == 200
        assert hw.client.delete(f"{url}/{silence['id']}", headers=hw.auth("admin")).status_code == 404
        assert hw.client.get(url, headers=hw.auth("read")).json() == []
        page = hw.client.get(f"/machines/{MACHINE}", headers={**hw.auth("read"), "accept": "text/html"})
        assert "In maintenance" not in page.text
    finally:
        hw.close()


@pytest.mark.parametrize(
    "body, says",
    [
        ({"start": "2030-01-01T10:00:00Z", "end": "2030-01-01T09:00:00Z"}, "not after start"),
        ({"start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:00:00Z"}, "not after start"),
        ({"start": "yesterday", "end": "2030-01-01T09:00:00Z"}, "start 'yesterday': not an ISO 8601 time"),
        ({"start": "2030-01-01T10:00:00Z", "end": "9999-12-31T23:00:00-05:00"}, "outside the years 1 to 9999"),
        ({"start": "", "end": "2030-01-01T09:00:00Z"}, "both are needed"),
        ({"start": "2030-01-01T10:00:00Z", "end": "2030-01-02T10:00:00Z", "reason": "x" * 201}, "reason"),
        ({"start": "2030-01-01T10:00:00Z", "end": "2030-01-02T10:00:00Z", "reason": "a\nb"}, "printable"),
        ({"start": 5, "end": "2030-01-02T10:00:00Z"}, "start"),
        ({"end": "2030-01-02T10:00:00Z"}, "start"),
    ],
)
def test_bad_silences_are_422_with_one_line(service_monitors, tmp_path_factory, body, says):
    hw = _validation_service(service_monitors, tmp_path_factory)
    r = hw.client.post(f"/api/v1/machines/{MACHINE}/silences", json=body, headers=hw.auth("admin"))
    assert r.status_code == 422, r.text
    assert says in r.json()["detail"] and "\n" not in r.json()["detail"]
    assert hw.client.get(f"/api/v1/machines/{MACHINE}/silences", headers=hw.auth("read")).json() == []
    assert (
        hw.client.post(
            "/api/v1/machines/nope/silences",
            json={"start": "2030-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"},
            headers=hw.auth("admin"),
        ).status_code
        == 404
    )


_VALIDATION: dict = {}


def _validation_service(service_monitors, tmp_path_factory):
    if "hw" not in _VALIDATION:
        _VALIDATION["hw"] = InProcess(service_monitors, tmp_path_factory.mktemp("notify-validation"))
    return _VALIDATION["hw"]


def teardown_module(module):
    hw = _VALIDATION.pop("hw", None)
    if hw is not None:
        hw.close()


def test_an_smtp_server_that_is_down_is_one_log_line_and_nothing_else(service_monitors, tmp_path, caplog):
    dead = free_port()  # nothing listens there
    hw = InProcess(
        service_monitors,
        tmp_path,
        alert_rule="1/1/1",
        smtp_host="127.0.0.1",
        smtp_port=dead,
        smtp_from="humwatch@example.com",
        notify_email=TO[0],
        smtp_retries=2,
        smtp_backoff=0.1,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="humwatch.service"):
            t = time.monotonic()
            assert hw.clip("anomalous", 30, iso(0))["alert_opened"]
            assert time.monotonic() - t < 10  # ingest did not wait for the mail
            wait_for(lambda: hw.outbox() == [("alert.opened", "email", "failed")])
            lines = [r.getMessage() for r in caplog.records if "email" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "email for alert 1 (alert.opened) failed after 3 attempt(s): ConnectionRefusedError" in lines[0]
        assert "\n" not in lines[0]
        assert hw.client.get("/health").status_code == 200
        assert hw.clip("normal", 31, iso(1))["alert"] is None  # the server goes on; the close is tried too
        wait_for(lambda: hw.outbox()[-1] == ("alert.closed", "email", "failed"))
    finally:
        hw.close()


def test_email_settings_are_checked_before_anything_starts():
    from humwatch.errors import ConfigError
    from humwatch.service.config import ServiceSettings

    for bad, says in [
        ({"notify_email": "a@b.example"}, "needs --smtp-host and --smtp-from"),
        ({"notify_email": "not-an-address", "smtp_host": "h", "smtp_from": "x@y"}, "not an e-mail address"),
        ({"smtp_host": "h"}, "without --notify-email"),
        ({"public_url": "ftp://x"}, "--public-url"),
    ]:
        with pytest.raises(ConfigError, match=says):
            ServiceSettings(**bad).validate()
    ok = ServiceSettings(notify_email="a@b.example, c@d.example", smtp_host="h", smtp_from="x@y.example").validate()
    assert ok.email_recipients == ["a@b.example", "c@d.example"]
