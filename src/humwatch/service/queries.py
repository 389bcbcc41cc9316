"""What the API and the dashboard read from the store (one place, so both show the same)."""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from humwatch.service import health
from humwatch.service.alerts import AlertRule, alert_document, machine_rule
from humwatch.service.ingest import clip_document
from humwatch.service.store import Alert, ClipRow, Machine, utcnow

MAX_PAGE = 5000
"""The most rows one page of scores or alerts holds."""
MAX_ID = 2**63 - 1
"""The largest row id (a signed 64-bit integer, the databases' own limit): a larger one is a 422,
not a query that overflows."""
MAX_OFFSET = MAX_ID - 2 * MAX_PAGE
"""The largest page offset (offset + limit + 1 stays a signed 64-bit integer)."""
STATES = ("alarm", "acknowledged", "stale", "sensor", "ok", "no data")
"""A machine's states, in the fleet overview's order."""


def machine_state_name(has_clips: bool, alert: Alert | None, sensor: bool = False, stale: bool = False) -> str:
    """``alarm`` / ``acknowledged`` with an open anomaly alert; else ``stale`` (no clip nor
    heartbeat for longer than its window, :mod:`.health`), ``sensor`` (its last clip had a sensor
    fault), ``ok``, or ``no data`` before the first clip."""
    if alert is not None:
        return "acknowledged" if alert.acked_at is not None else "alarm"
    if stale:
        return "stale"
    if sensor:
        return "sensor"
    return "ok" if has_clips else "no data"


def health_iso(t) -> str | None:
    return t.isoformat() if t is not None else None


def machine_row(s: Session, name: str) -> Machine | None:
    return s.scalar(select(Machine).where(Machine.name == name))


def machine_state(s: Session, m: Machine, pool, default_rule: AlertRule) -> dict:
    """One machine as the fleet overview shows it."""
    last = s.scalar(select(ClipRow).where(ClipRow.machine_id == m.id).order_by(ClipRow.id.desc()).limit(1))
    alert = s.scalar(select(Alert).where(Alert.machine_id == m.id, Alert.state == "open", Alert.kind == "anomaly"))
    sensor_alert = health.open_alert(s, m.id, "sensor")
    stale_alert = health.open_alert(s, m.id, "stale")
    stale = stale_alert is not None or health.is_stale(s, m)
    day_ago = utcnow() - _dt.timedelta(days=1)
    n_clips = s.scalar(select(func.count(ClipRow.id)).where(ClipRow.machine_id == m.id)) or 0
    n_day, n_day_bad = s.execute(
        select(func.count(ClipRow.id), func.coalesce(func.sum(case((ClipRow.anomalous, 1), else_=0)), 0)).where(
            ClipRow.machine_id == m.id, ClipRow.received_at >= day_ago
        )
    ).one()
    entry = pool.get(m.name) if pool is not None else None
    interval, interval_from = health.expected_interval(s, m)
    state = machine_state_name(last is not None, alert, sensor=last is not None and last.sensor is not None, stale=stale)
    return {
        "machine": m.name,
        "state": state,
        "has_monitor": entry is not None,
        "monitor": entry.describe() if entry is not None else None,
        "last_clip": clip_document(last, m.name) if last is not None else None,
        "n_clips": int(n_clips),
        "clips_24h": int(n_day),
        "anomalous_24h": int(n_day_bad),
        "open_alert": alert_document(alert, m.name) if alert is not None else None,
        "sensor_alert": alert_document(sensor_alert, m.name) if sensor_alert is not None else None,
        "stale_alert": alert_document(stale_alert, m.name) if stale_alert is not None else None,
        "last_seen": health_iso(health.last_seen(s, m)),
        "expected_interval_s": interval,
        "expected_interval_from": interval_from,
        "stale_after_s": health.stale_window_s(s, m),
        "alert_rule": str(machine_rule(m, default_rule)),
    }


def fleet(s: Session, pool, default_rule: AlertRule) -> list[dict]:
    """Every machine (with a monitor, or with clips stored), alarms first, then by name."""
    machines = s.scalars(select(Machine).order_by(Machine.name)).all()
    rows = [machine_state(s, m, pool, default_rule) for m in machines]
    order = {name: i for i, name in enumerate(STATES)}
    return sorted(rows, key=lambda r: (order[r["state"]], r["machine"]))


def scores_page(s: Session, m: Machine, since=None, until=None, limit: int = 100, offset: int = 0, order: str = "desc") -> dict:
    """A page of a machine's clips in a time range (timeline time), newest first unless ``order="asc"``."""
    q = select(ClipRow).where(ClipRow.machine_id == m.id)
    if since is not None:
        q = q.where(ClipRow.at >= since)
    if until is not None:
        q = q.where(ClipRow.at <= until)
    q = q.order_by(*((ClipRow.at.asc(), ClipRow.id.asc()) if order == "asc" else (ClipRow.at.desc(), ClipRow.id.desc())))
    rows = s.scalars(q.offset(offset).limit(limit + 1)).all()
    more = len(rows) > limit
    return {
        "machine": m.name,
        "items": [clip_document(r, m.name) for r in rows[:limit]],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if more else None,
    }


def alert_spans(s: Session, m: Machine, since=None, until=None) -> list[dict]:
    """The machine's alerts that overlap a time range (for the chart's shaded spans)."""
    q = select(Alert).where(Alert.machine_id == m.id)
    if until is not None:
        q = q.where(Alert.start_at <= until)
    if since is not None:
        q = q.where((Alert.end_at.is_(None)) | (Alert.end_at >= since))
    return [alert_document(a, m.name) for a in s.scalars(q.order_by(Alert.id)).all()]


def alerts_page(s: Session, state: str = "all", machine: Machine | None = None, limit: int = 100, offset: int = 0) -> dict:
    """Alerts, open ones first, newest first."""
    q = select(Alert, Machine.name).join(Machine, Machine.id == Alert.machine_id)
    if state in ("open", "closed"):
        q = q.where(Alert.state == state)
    if machine is not None:
        q = q.where(Alert.machine_id == machine.id)
    q = q.order_by((Alert.state == "open").desc(), Alert.id.desc()).offset(offset).limit(limit + 1)
    rows = s.execute(q).all()
    more = len(rows) > limit
    return {
        "items": [alert_document(a, name) for a, name in rows[:limit]],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if more else None,
    }


def clip_detail(s: Session, clip_id: int) -> tuple[ClipRow, str] | None:
    row = s.execute(select(ClipRow, Machine.name).join(Machine, Machine.id == ClipRow.machine_id).where(ClipRow.id == clip_id)).first()
    return None if row is None else (row[0], row[1])


def clips_between(s: Session, m: Machine, since=None, until=None, limit: int | None = None):
    """A machine's clips in a time range (timeline time), oldest first, read in batches."""
    q = select(ClipRow).where(ClipRow.machine_id == m.id)
    if since is not None:
        q = q.where(ClipRow.at >= since)
    if until is not None:
        q = q.where(ClipRow.at <= until)
    q = q.order_by(ClipRow.at.asc(), ClipRow.id.asc())
    if limit is not None:
        q = q.limit(limit)
    return s.scalars(q.execution_options(yield_per=1000))


def clip_time_span(s: Session, m: Machine) -> tuple:
    """The timeline times of the machine's first and last clips (None, None before the first)."""
    return tuple(s.execute(select(func.min(ClipRow.at), func.max(ClipRow.at)).where(ClipRow.machine_id == m.id)).one())


def alert_detail(s: Session, alert_id: int) -> tuple[Alert, Machine] | None:
    row = s.execute(select(Alert, Machine).join(Machine, Machine.id == Alert.machine_id).where(Alert.id == alert_id)).first()
    return None if row is None else (row[0], row[1])
