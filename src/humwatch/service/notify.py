"""Telling people: alert events (``alert.opened``, ``alert.acknowledged``, ``alert.closed``) sent to
a webhook and by e-mail, off the request path.

An event is written to the ``notifications`` table (one row per channel: the outbox) in the same
transaction as the change that made it (:meth:`Outbox.record`), so an event is never lost nor
sent for a change that rolled back. One background thread per channel (:class:`ChannelSender`)
takes pending rows (claimed with an ``UPDATE ... WHERE status='pending'``, so of several worker
processes exactly one sends each), sends them, retries with exponential backoff a bounded number
of times, and keeps the outcome (``sent`` / ``failed``, attempts, the last error) on the row; a
failure is logged in one line and never reaches ingest or a request. Rows still ``pending`` (or
``sending`` when a server was killed: :func:`requeue_interrupted`) are sent when a server starts.
Each thread also looks for pending rows every second, so events recorded by another worker
process are sent too.

Every channel gets the same JSON document (:func:`event_document`); the webhook POSTs it (signed
with ``--webhook-secret``), e-mail turns it into a plain-text message (:func:`email_message`).
E-mail uses the standard library's :mod:`smtplib` and :mod:`email.message`: a plain-text message to
one relay is all that is needed, and they do it (STARTTLS, login) without another dependency to
install and keep up to date (aiosmtplib and the like add asyncio, which the sender threads do not
need).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
from dataclasses import dataclass

from sqlalchemy import func, select, update

from humwatch.errors import one_line
from humwatch.service.store import Alert, ClipRow, Notification, Store, utcnow

log = logging.getLogger("humwatch.service")
EVENTS = ("alert.opened", "alert.acknowledged", "alert.closed")
POLL_S = 1.0
"""How often each channel's thread looks for pending rows it was not told about."""


def _iso(t):
    return t.isoformat() if t is not None else None


def event_document(event: str, alert: Alert, machine: str, clip: ClipRow | None, public_url: str | None) -> dict:
    """The one document every channel is sent: what happened (``event``, ``at``), to which
    machine and alert, the score that made it against the threshold, who acknowledged, a link."""
    from humwatch.service.alerts import alert_document

    doc = alert_document(alert, machine)
    base = (public_url or "").rstrip("/")
    return {
        "event": event,
        "at": utcnow().isoformat(),
        "machine": machine,
        "alert_id": alert.id,
        "score": clip.score if clip is not None else alert.max_score,
        "max_score": alert.max_score,
        "threshold": clip.threshold if clip is not None else None,
        "clip_id": clip.id if clip is not None else None,
        "acknowledged_by": alert.acked_by,
        "acknowledged_at": _iso(alert.acked_at),
        "url": f"{base}/machines/{machine}",
        "alert": doc,
    }


@dataclass(frozen=True)
class Outbox:
    """Which channels an event is written for (``webhook``, ``email``), and the dashboard's
    public address for the links in them."""

    channels: tuple[str, ...] = ()
    public_url: str | None = None

    def record(self, session, alert: Alert, machine: str, event: str, clip: ClipRow | None = None) -> None:
        """Write ``event`` of ``alert`` for every channel, in the caller's transaction."""
        if not self.channels:
            return
        session.flush()
        if clip is None and alert.last_clip_id is not None:  # none: a stale alert of a machine that never sent a clip
            clip = session.get(ClipRow, alert.last_clip_id)
        payload = json.dumps(event_document(event, alert, machine, clip, self.public_url))
        for channel in self.channels:
            session.add(Notification(alert_id=alert.id, event=event, channel=channel, payload=payload, status="pending", attempts=0))
        if "webhook" in self.channels:
            alert.webhook_status = "pending"


class ChannelSender:
    """One channel's background thread: sends pending ``notifications`` rows of ``channel`` with
    ``send(document)`` (raises on failure), ``retries`` more times after the first with backoff
    ``backoff``, 2x, 4x ... seconds."""

    channel = ""

    def __init__(self, store: Store, *, retries: int, backoff: float):
        self.store, self.retries, self.backoff = store, retries, backoff
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._busy = False
        self._thread: threading.Thread | None = None

    def send(self, doc: dict) -> None:  # pragma: no cover - every channel has its own
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"humwatch-{self.channel}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def idle(self) -> bool:
        """Nothing of this channel pending or being sent (tests and shutdown wait for this)."""
        with self.store.read() as s:
            left = s.scalar(
                select(Notification.id)
                .where(Notification.channel == self.channel, Notification.status.in_(("pending", "sending")))
                .limit(1)
            )
        return left is None and not self._busy

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_S)
            self._wake.clear()
            try:
                with self.store.read() as s:
                    ids = s.scalars(
                        select(Notification.id)
                        .where(Notification.channel == self.channel, Notification.status == "pending")
                        .order_by(Notification.id)
                        .limit(100)
                    ).all()
            except Exception as e:  # a store that is down: try again at the next poll
                log.error("%s: cannot read the outbox: %s", self.channel, one_line(e, typed=True))
                continue
            for nid in ids:
                if self._stop.is_set():
                    break
                self._busy = True
                try:
                    self._deliver(nid)
                except Exception as e:  # never let one event stop the thread
                    log.error("%s notification %s: %s", self.channel, nid, one_line(e, typed=True))
                finally:
                    self._busy = False

    def _claim(self, nid: int) -> Notification | None:
        with self.store.write() as s:
            took = s.execute(
                update(Notification).where(Notification.id == nid, Notification.status == "pending").values(status="sending")
            ).rowcount
            n = s.get(Notification, nid) if took else None
            if n is not None and self._newest(s, n):
                s.execute(update(Alert).where(Alert.id == n.alert_id).values(webhook_status="sending"))
            return n

    def _newest(self, s, n: Notification) -> bool:
        """Is ``n`` the alert's newest webhook event (whose outcome the alert's webhook_status shows)?"""
        if self.channel != "webhook":
            return False
        return (
            s.scalar(select(func.max(Notification.id)).where(Notification.alert_id == n.alert_id, Notification.channel == "webhook"))
            == n.id
        )

    def _deliver(self, nid: int) -> None:
        n = self._claim(nid)
        if n is None:
            return
        doc = json.loads(n.payload)
        error, attempts = "", 0
        for attempt in range(self.retries + 1):
            if attempt and self._stop.wait(self.backoff * 2 ** (attempt - 1)):
                break
            attempts += 1
            try:
                self.send(doc)
                error = ""
                break
            except Exception as e:  # refused, timed out, bad answer ...: the next attempt, or the log
                error = one_line(e, typed=True) or "failed"
        status = "failed" if error else "sent"
        if self._stop.is_set() and error:
            status = "pending"  # shutting down: the next start sends it
        with self.store.write() as s:
            s.execute(
                update(Notification)
                .where(Notification.id == nid)
                .values(status=status, attempts=Notification.attempts + attempts, error=error[:255] or None)
            )
            if self.channel == "webhook":
                done = {"webhook_status": status, "webhook_error": error[:255] or None} if self._newest(s, n) else {}
                s.execute(update(Alert).where(Alert.id == n.alert_id).values(webhook_attempts=Alert.webhook_attempts + attempts, **done))
        if status == "failed":
            log.warning("%s for alert %s (%s) failed after %d attempt(s): %s", self.channel, n.alert_id, n.event, attempts, error)


class WebhookSender(ChannelSender):
    """POSTs the event document to ``url``; with ``secret`` the body is signed: header
    ``X-Humwatch-Signature: sha256=<HMAC-SHA256 of the body>``. Any answer but 2xx is a failure."""

    channel = "webhook"

    def __init__(self, url: str, store: Store, *, secret: str | None = None, retries: int = 5, backoff: float = 1.0, timeout: float = 5.0):
        super().__init__(store, retries=retries, backoff=backoff)
        self.url, self.secret, self.timeout = url, secret, timeout

    def send(self, doc: dict) -> None:
        import httpx

        body = json.dumps(doc).encode()
        headers = {"content-type": "application/json", "user-agent": "humwatch-webhook"}
        if self.secret:
            headers["x-humwatch-signature"] = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        r = httpx.post(self.url, content=body, headers=headers, timeout=self.timeout, follow_redirects=False)
        if r.status_code >= 300:
            raise RuntimeError(f"HTTP {r.status_code}")


SUBJECTS = {
    "alert.opened": "alert {id} opened",
    "alert.acknowledged": "alert {id} acknowledged by {by}",
    "alert.closed": "alert {id} closed",
}
WHAT = {
    "alert.opened": "opened: {n} of the machine's recent clips were anomalous (rule {rule}).",
    "alert.acknowledged": "was acknowledged by {by}; it stays open until the machine sounds normal.",
    "alert.closed": "closed: the machine sounded normal again (rule {rule}).",
}
HEALTH_WHAT = {
    "alert.opened": "opened: {reason}. A sensor or listener problem, not the machine's sound.",
    "alert.acknowledged": "was acknowledged by {by}; it stays open until the sensor is heard from again.",
    "alert.closed": "closed: the sensor is heard from again.",
}
"""What a ``sensor`` or ``stale`` alert's e-mail says (:mod:`.health`)."""


def email_message(doc: dict, sender: str, to: list[str]):
    """The plain-text e-mail of one event document."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    a = doc["alert"]
    fill = {"id": doc["alert_id"], "by": doc.get("acknowledged_by") or "someone", "n": a["n_anomalous"], "rule": a["rule"]}
    msg = EmailMessage()
    kind = a.get("kind") or "anomaly"
    fill["reason"] = a.get("reason") or kind
    what = (WHAT if kind == "anomaly" else HEALTH_WHAT)[doc["event"]]
    msg["Subject"] = f"[humwatch] {doc['machine']}: {'' if kind == 'anomaly' else kind + ' '}{SUBJECTS[doc['event']].format(**fill)}"
    msg["From"], msg["To"] = sender, ", ".join(to)
    msg["Date"], msg["Message-ID"] = formatdate(usegmt=True), make_msgid(domain="humwatch")
    threshold = doc.get("threshold")
    vs = f" against the threshold {threshold:.4g} ({doc['score'] / threshold:.1f}x)" if threshold else ""
    lines = [
        f"Machine: {doc['machine']}",
        f"Alert {doc['alert_id']} {what.format(**fill)}",
        *([f"Score: {doc['score']:.4g}{vs}; highest in this alert {doc['max_score']:.4g}."] if kind == "anomaly" else []),
        f"Started: {a['start_at']}" + (f"; ended: {a['end_at']}" if a.get("end_at") else ""),
        f"Event time: {doc['at']}",
        f"Alert page: {doc['url']}",
        "",
        "-- humwatch",
    ]
    msg.set_content("\n".join(lines) + "\n")
    return msg


class EmailSender(ChannelSender):
    """Sends each event as a plain-text e-mail to ``to`` through the SMTP server ``host:port``
    (``starttls``: upgrade the connection first; a login from $HUMWATCH_SMTP_USER and
    $HUMWATCH_SMTP_PASSWORD when set)."""

    channel = "email"

    def __init__(
        self,
        store: Store,
        *,
        host: str,
        port: int,
        sender: str,
        to: list[str],
        starttls: bool = False,
        retries: int = 3,
        backoff: float = 5.0,
        timeout: float = 10.0,
    ):
        super().__init__(store, retries=retries, backoff=backoff)
        self.host, self.port, self.sender, self.to = host, port, sender, list(to)
        self.starttls, self.timeout = starttls, timeout
        self.user, self.password = os.environ.get("HUMWATCH_SMTP_USER"), os.environ.get("HUMWATCH_SMTP_PASSWORD")

    def send(self, doc: dict) -> None:
        import smtplib

        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.user:
                smtp.login(self.user, self.password or "")
            smtp.send_message(email_message(doc, self.sender, self.to))


class Notifier:
    """Every channel the settings name: the :class:`Outbox` that ingest and acknowledging write
    to, and one sender thread per channel."""

    def __init__(self, settings, store: Store):
        self.senders: list[ChannelSender] = []
        if settings.webhook:
            self.senders.append(
                WebhookSender(
                    settings.webhook,
                    store,
                    secret=settings.webhook_secret,
                    retries=settings.webhook_retries,
                    backoff=settings.webhook_backoff,
                )
            )
        if settings.notify_email:
            self.senders.append(
                EmailSender(
                    store,
                    host=settings.smtp_host,
                    port=settings.smtp_port,
                    sender=settings.smtp_from,
                    to=settings.email_recipients,
                    starttls=settings.smtp_starttls,
                    retries=settings.smtp_retries,
                    backoff=settings.smtp_backoff,
                )
            )
        self.outbox = Outbox(tuple(s.channel for s in self.senders), settings.public_url)

    def __bool__(self) -> bool:
        return bool(self.senders)

    def start(self) -> None:
        for s in self.senders:
            s.start()

    def notify(self, *_ignored) -> None:
        """Something was recorded: the senders look now rather than at their next poll."""
        for s in self.senders:
            s.wake()

    def stop(self, timeout: float = 5.0) -> None:
        for s in self.senders:
            s.stop(timeout)

    def idle(self) -> bool:
        return all(s.idle() for s in self.senders)


def requeue_interrupted(store: Store) -> int:
    """Notifications that were being sent when a server stopped go back to ``pending`` (run by
    ``humwatch serve`` before any worker starts, so no sender holds them)."""
    with store.write() as s:
        s.execute(update(Alert).where(Alert.webhook_status == "sending").values(webhook_status="pending"))
        return s.execute(update(Notification).where(Notification.status == "sending").values(status="pending")).rowcount
