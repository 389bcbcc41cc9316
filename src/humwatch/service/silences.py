"""Silences: maintenance windows per machine (``POST /api/v1/machines/{m}/silences``).

While a machine is serviced it sounds like anything but itself: its clips are still scored and
stored (the record stays whole), but a clip whose timeline time (its recording time, else when it
arrived) falls inside a window ``[start, end)`` opens no alert and counts towards none after the
window (see :func:`humwatch.service.alerts.on_clip`), and no event of the machine is notified.
Chosen over "alerts marked silenced": an alert nobody is told about is an alert nobody clears.
"""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import and_, func, select

from humwatch.service.store import ClipRow, Silence, utcnow

MAX_REASON = 200


def silenced_at(session, machine_id: int, at: _dt.datetime) -> bool:
    """Is the machine in a maintenance window at ``at``?"""
    return (
        session.scalar(select(Silence.id).where(Silence.machine_id == machine_id, Silence.start_at <= at, Silence.end_at > at).limit(1))
        is not None
    )


def last_silenced_clip(session, machine_id: int) -> int:
    """The id of the machine's newest clip inside a window (0: none): clips up to it do not count
    towards an alert."""
    return (
        session.scalar(
            select(func.max(ClipRow.id))
            .join(Silence, and_(Silence.machine_id == ClipRow.machine_id, ClipRow.at >= Silence.start_at, ClipRow.at < Silence.end_at))
            .where(ClipRow.machine_id == machine_id)
        )
        or 0
    )


def silence_document(silence: Silence, machine: str, now: _dt.datetime | None = None) -> dict:
    now = now or utcnow()
    return {
        "id": silence.id,
        "machine": machine,
        "start": silence.start_at.isoformat(),
        "end": silence.end_at.isoformat(),
        "reason": silence.reason,
        "created_by": silence.created_by,
        "created_at": silence.created_at.isoformat(),
        "active": silence.start_at <= now < silence.end_at,
    }


def current_silence(session, machine_id: int) -> Silence | None:
    """The window the machine is in now (the one ending last, when several overlap)."""
    now = utcnow()
    return session.scalar(
        select(Silence)
        .where(Silence.machine_id == machine_id, Silence.start_at <= now, Silence.end_at > now)
        .order_by(Silence.end_at.desc())
        .limit(1)
    )


def list_silences(session, machine_id: int, machine: str) -> list[dict]:
    rows = session.scalars(
        select(Silence).where(Silence.machine_id == machine_id).order_by(Silence.start_at.desc(), Silence.id.desc()).limit(1000)
    ).all()
    now = utcnow()
    return [silence_document(r, machine, now) for r in rows]
