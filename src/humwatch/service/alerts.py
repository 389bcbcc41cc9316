"""Alerts: when a machine's clips say it is in trouble, and telling someone.

The rule (per machine, :class:`AlertRule`, written ``K/N/M``): an alert opens when K of the
machine's last N clips are anomalous; it closes after M normal clips in a row. "Last" is the
order clips reached the server (their ids): a listener that was cut off sends its spool oldest
first, so that is the recording order too. Clips up to the last closed alert do not count towards
a new one, so a machine does not alarm again on the clips that were already alarmed on.
Acknowledging says someone has seen the alert; it stays open until the machine sounds normal.

The rule runs inside the ingest transaction, with the machine's row locked (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite has one writer at a time): two clips of one machine arriving
together cannot both open an alert.

An optional webhook is POSTed a JSON document when an alert opens, by :class:`WebhookSender`, a
background thread: ingest only writes ``webhook_status='pending'`` and nudges the thread, so a slow
or failing webhook never holds up a clip. Retries back off exponentially; the outcome (``sent`` /
``failed`` and the last error) is kept on the alert, and alerts still ``pending`` are sent when the
server starts again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from humwatch.errors import ConfigError
from humwatch.service.store import Alert, ClipRow, Machine, Store, utcnow

log = logging.getLogger("humwatch.service")


@dataclass(frozen=True)
class AlertRule:
    """K anomalous clips of the last N open an alert; M normal clips in a row close it."""

    k: int = 3
    n: int = 5
    m: int = 3

    def __post_init__(self):
        for name in ("k", "n", "m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1000:
                raise ConfigError(f"alert rule: {name.upper()} must be a whole number from 1 to 1000, got {v!r}")
        if self.k > self.n:
            raise ConfigError(f"alert rule: K ({self.k}) cannot be more than N ({self.n})")

    @classmethod
    def parse(cls, text: str) -> "AlertRule":
        """``"3/5/3"`` -> AlertRule(k=3, n=5, m=3)."""
        parts = str(text).split("/")
        try:
            k, n, m = (int(p) for p in parts)
        except ValueError:
            raise ConfigError(f"alert rule {text!r}: expected K/N/M, e.g. 3/5/3 (3 of the last 5 clips open, "
                              "3 normal clips close)") from None
        return cls(k, n, m)

    def __str__(self) -> str:
        return f"{self.k}/{self.n}/{self.m}"


def machine_rule(machine: Machine, default: AlertRule) -> AlertRule:
    """The machine's own rule where it has one (set through the API), else ``default``."""
    if machine.alert_k is None:
        return default
    return AlertRule(machine.alert_k, machine.alert_n, machine.alert_m)


def on_clip(session: Session, machine: Machine, clip: ClipRow, rule: AlertRule, webhook: bool) -> Alert | None:
    """Apply the rule to the machine's newest ``clip`` (already flushed); returns an alert that
    this clip opened (None otherwise). The caller holds the machine's row lock."""
    alert = session.scalar(select(Alert).where(Alert.machine_id == machine.id, Alert.state == "open"))
    if alert is not None:
        alert.last_clip_id = clip.id
        if clip.anomalous:
            alert.n_anomalous += 1
            alert.normal_streak = 0
            alert.max_score = max(alert.max_score, clip.score)
        else:
            alert.normal_streak += 1
            if alert.normal_streak >= rule.m:
                alert.state, alert.end_at, alert.closed_at = "closed", clip.at, utcnow()
        return None
    if not clip.anomalous:
        return None
    after = session.scalar(select(func.max(Alert.last_clip_id)).where(Alert.machine_id == machine.id)) or 0
    recent = session.execute(
        select(ClipRow.id, ClipRow.at, ClipRow.score, ClipRow.anomalous)
        .where(ClipRow.machine_id == machine.id, ClipRow.id > after)
        .order_by(ClipRow.id.desc()).limit(rule.n)
    ).all()
    bad = [r for r in recent if r.anomalous]
    if len(bad) < rule.k:
        return None
    first = min(bad, key=lambda r: r.id)
    alert = Alert(machine_id=machine.id, state="open", start_at=first.at, opened_at=utcnow(), first_clip_id=first.id,
                  last_clip_id=clip.id, n_anomalous=len(bad), normal_streak=0, max_score=max(r.score for r in bad),
                  rule=str(rule), webhook_status="pending" if webhook else None, webhook_attempts=0)
    session.add(alert)
    session.flush()
    return alert


def acknowledge(session: Session, alert_id: int, by: str) -> Alert | None:
    """Mark an alert as seen by ``by`` (a token's name); acknowledging twice keeps the first."""
    alert = session.get(Alert, alert_id)
    if alert is not None and alert.acked_at is None:
        alert.acked_at, alert.acked_by = utcnow(), by
    return alert


def alert_document(alert: Alert, machine: str) -> dict:
    """An alert as the API and the webhook show it."""
    iso = lambda t: t.isoformat() if t is not None else None  # noqa: E731
    return {"id": alert.id, "machine": machine, "state": alert.state, "acknowledged": alert.acked_at is not None,
            "acked_at": iso(alert.acked_at), "acked_by": alert.acked_by, "start_at": iso(alert.start_at),
            "end_at": iso(alert.end_at), "opened_at": iso(alert.opened_at), "closed_at": iso(alert.closed_at),
            "first_clip_id": alert.first_clip_id, "last_clip_id": alert.last_clip_id, "n_anomalous": alert.n_anomalous,
            "max_score": alert.max_score, "rule": alert.rule, "webhook_status": alert.webhook_status}


class WebhookSender:
    """POSTs ``{"event": "alert.opened", "alert": {...}}`` to ``url`` for each alert handed to
    :meth:`notify`, from one background thread, retrying ``retries`` times with exponential backoff
    (``backoff``, 2x, 4x ... seconds). With ``secret`` the body is signed: header
    ``X-Humwatch-Signature: sha256=<HMAC-SHA256 of the body>``."""

    def __init__(self, url: str, store: Store, *, secret: str | None = None, retries: int = 5, backoff: float = 1.0,
                 timeout: float = 5.0):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--webhook {url!r}: must be an http:// or https:// URL")
        self.url, self.store, self.secret = url, store, secret
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self._queue: queue.Queue[int] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self.store.read() as s:
            pending = s.scalars(select(Alert.id).where(Alert.webhook_status == "pending").order_by(Alert.id)).all()
        for alert_id in pending:
            self._queue.put(alert_id)
        self._thread = threading.Thread(target=self._run, name="humwatch-webhook", daemon=True)
        self._thread.start()

    def notify(self, alert_id: int) -> None:
        self._queue.put(alert_id)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def idle(self) -> bool:
        """Nothing queued (tests and shutdown wait for this)."""
        return self._queue.unfinished_tasks == 0

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            while not self._stop.is_set():
                try:
                    alert_id = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    self._deliver(client, alert_id)
                except Exception as e:  # never let one alert stop the thread
                    log.error("webhook for alert %s: %s", alert_id, e)
                finally:
                    self._queue.task_done()

    def _claim(self, alert_id: int) -> dict | None:
        """Take the alert for sending (another worker process may have taken it); its document."""
        with self.store.write() as s:
            took = s.execute(update(Alert).where(Alert.id == alert_id, Alert.webhook_status == "pending")
                             .values(webhook_status="sending")).rowcount
            if not took:
                return None
            alert = s.get(Alert, alert_id)
            machine = s.get(Machine, alert.machine_id)
            return alert_document(alert, machine.name)

    def _deliver(self, client, alert_id: int) -> None:
        doc = self._claim(alert_id)
        if doc is None:
            return
        body = json.dumps({"event": "alert.opened", "alert": doc}).encode()
        headers = {"content-type": "application/json", "user-agent": "humwatch-webhook"}
        if self.secret:
            headers["x-humwatch-signature"] = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        error, attempts = "", 0
        for attempt in range(self.retries + 1):
            if attempt and self._stop.wait(self.backoff * 2 ** (attempt - 1)):
                break
            attempts += 1
            try:
                r = client.post(self.url, content=body, headers=headers)
                if r.status_code < 300:
                    error = ""
                    break
                error = f"HTTP {r.status_code}"
            except Exception as e:  # httpx's transport errors: refused, timed out, DNS ...
                error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip(": ")
        status = "failed" if error else "sent"
        if self._stop.is_set() and error:
            status = "pending"  # shutting down: the next start sends it
        with self.store.write() as s:
            s.execute(update(Alert).where(Alert.id == alert_id).values(
                webhook_status=status, webhook_attempts=Alert.webhook_attempts + attempts, webhook_error=error[:255] or None))
        if status == "failed":
            log.warning("webhook for alert %s failed after %d attempt(s): %s", alert_id, attempts, error)


def requeue_interrupted(store: Store) -> int:
    """Alerts whose webhook was being sent when a server stopped go back to ``pending`` (run by
    ``humwatch serve`` before any worker starts, so no sender holds them)."""
    with store.write() as s:
        return s.execute(update(Alert).where(Alert.webhook_status == "sending").values(webhook_status="pending")).rowcount
