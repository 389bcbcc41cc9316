"""Alerts: when a machine's clips say it is in trouble, and telling someone.

The rule (per machine, :class:`AlertRule`, written ``K/N/M``): an alert opens when K of the
machine's last N clips are anomalous; it closes after M normal clips in a row. "Last" is the
order clips reached the server (their ids): a listener that was cut off sends its spool oldest
first, so that is the recording order too. Clips up to the last closed alert do not count towards
a new one, so a machine does not alarm again on the clips that were already alarmed on.
These are ``anomaly`` alerts; a clip with a sensor fault is not scored and counts towards none
(it opens a ``sensor`` alert, :mod:`.health`, as a silent machine opens a ``stale`` one).
Acknowledging says someone has seen the alert; it stays open until the machine sounds normal.

The rule runs inside the ingest transaction, with the machine's row locked (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite has one writer at a time): two clips of one machine arriving
together cannot both open an alert.

Opening, acknowledging and closing an alert are events, written to the outbox in the same
transaction (:class:`humwatch.service.notify.Outbox`) and sent by background threads to the
webhook and by e-mail: a slow or failing channel never holds up a clip.

A machine in a maintenance window (:mod:`.silences`: the clip's timeline time inside one) has its
clips scored and stored, but they open no alert and count towards none later; an alert already
open goes on being updated (it can close), and no event of the machine is notified while the clip
(or, for an acknowledgement, the present moment) is inside a window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from humwatch.errors import ConfigError
from humwatch.service.silences import last_silenced_clip, silenced_at
from humwatch.service.store import Alert, ClipRow, Machine, utcnow
from humwatch.settings import ALERT_COUNT, check_value

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
            check_value(v, ALERT_COUNT, name.upper(), "alert rule")
        if self.k > self.n:
            raise ConfigError(f"alert rule: K ({self.k}) cannot be more than N ({self.n})")

    @classmethod
    def parse(cls, text: str) -> "AlertRule":
        """``"3/5/3"`` -> AlertRule(k=3, n=5, m=3)."""
        parts = str(text).split("/")
        try:
            k, n, m = (int(p) for p in parts)
        except ValueError:
            raise ConfigError(
                f"alert rule {text!r}: expected K/N/M, e.g. 3/5/3 (3 of the last 5 clips open, 3 normal clips close)"
            ) from None
        return cls(k, n, m)

    def __str__(self) -> str:
        return f"{self.k}/{self.n}/{self.m}"


def machine_rule(machine: Machine, default: AlertRule) -> AlertRule:
    """The machine's own rule where it has one (set through the API), else ``default``."""
    if machine.alert_k is None:
        return default
    return AlertRule(machine.alert_k, machine.alert_n, machine.alert_m)


def on_clip(session: Session, machine: Machine, clip: ClipRow, rule: AlertRule, outbox=None) -> Alert | None:
    """Apply the rule to the machine's newest ``clip`` (already flushed); returns an alert that
    this clip opened (None otherwise). Opening and closing are recorded in ``outbox`` (a
    :class:`humwatch.service.notify.Outbox`; None: nothing is notified) unless the machine is
    silenced at the clip's time. The caller holds the machine's row lock."""
    silenced = silenced_at(session, machine.id, clip.at)
    alert = session.scalar(select(Alert).where(Alert.machine_id == machine.id, Alert.state == "open", Alert.kind == "anomaly"))
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
                if outbox is not None and not silenced:
                    outbox.record(session, alert, machine.name, "alert.closed", clip)
        return None
    if not clip.anomalous or silenced:
        return None
    after = max(
        session.scalar(select(func.max(Alert.last_clip_id)).where(Alert.machine_id == machine.id, Alert.kind == "anomaly")) or 0,
        last_silenced_clip(session, machine.id),
    )
    recent = session.execute(
        select(ClipRow.id, ClipRow.at, ClipRow.score, ClipRow.anomalous)
        .where(ClipRow.machine_id == machine.id, ClipRow.id > after, ClipRow.sensor.is_(None))
        .order_by(ClipRow.id.desc())
        .limit(rule.n)
    ).all()
    bad = [r for r in recent if r.anomalous]
    if len(bad) < rule.k:
        return None
    first = min(bad, key=lambda r: r.id)
    alert = Alert(
        machine_id=machine.id,
        state="open",
        start_at=first.at,
        opened_at=utcnow(),
        first_clip_id=first.id,
        last_clip_id=clip.id,
        n_anomalous=len(bad),
        normal_streak=0,
        max_score=max(r.score for r in bad),
        rule=str(rule),
        webhook_status=None,
        webhook_attempts=0,
    )
    session.add(alert)
    session.flush()
    if outbox is not None:
        outbox.record(session, alert, machine.name, "alert.opened", clip)
    return alert


def acknowledge(session: Session, alert_id: int, by: str, outbox=None) -> Alert | None:
    """Mark an alert as seen by ``by`` (a token's name); acknowledging twice keeps the first (and
    records ``alert.acknowledged`` in ``outbox`` once, unless the machine is silenced now)."""
    alert = session.get(Alert, alert_id)
    if alert is not None and alert.acked_at is None:
        alert.acked_at, alert.acked_by = utcnow(), by
        if outbox is not None and not silenced_at(session, alert.machine_id, alert.acked_at):
            outbox.record(session, alert, session.get(Machine, alert.machine_id).name, "alert.acknowledged")
    return alert


def alert_document(alert: Alert, machine: str) -> dict:
    """An alert as the API and the webhook show it."""
    iso = lambda t: t.isoformat() if t is not None else None  # noqa: E731
    return {
        "id": alert.id,
        "machine": machine,
        "state": alert.state,
        "kind": alert.kind or "anomaly",
        "reason": alert.reason,
        "acknowledged": alert.acked_at is not None,
        "acked_at": iso(alert.acked_at),
        "acked_by": alert.acked_by,
        "start_at": iso(alert.start_at),
        "end_at": iso(alert.end_at),
        "opened_at": iso(alert.opened_at),
        "closed_at": iso(alert.closed_at),
        "first_clip_id": alert.first_clip_id,
        "last_clip_id": alert.last_clip_id,
        "n_anomalous": alert.n_anomalous,
        "max_score": alert.max_score,
        "rule": alert.rule,
        "webhook_status": alert.webhook_status,
    }
