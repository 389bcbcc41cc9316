"""Is the sensor alive? Sensor and stale alerts, heartbeats, and a machine's expected interval.

* ``sensor``: a clip with a sensor fault (:func:`humwatch.sensor.sensor_fault`: silence, clipping,
  a DC offset, dropouts, a level far from the monitor's normal clips) opens a ``sensor`` alert (one
  open at a time per machine, its reason the finding); the next clip without a fault closes it.
* ``stale``: no clip for longer than the machine's stale window opens a ``stale`` alert, whether
  or not its listener's heartbeats go on (a listener alive while its recorder or microphone sends
  nothing is a sensor fault too; the alert's reason says which: the listener alive, or silent as
  well); the next clip closes it. A machine that never sent a clip goes stale when its listener's
  heartbeats stop, and its next heartbeat closes that. The window is :data:`STALE_FACTOR` times the
  machine's expected interval: the one an admin set (``PUT /api/v1/machines/{m}/expected-interval``),
  else learned, the median gap between its last :data:`GAP_CLIPS` clips (their arrival times),
  with a window of at least :data:`STALE_MIN_S`; with fewer than 3 clips the expected interval is
  :data:`DEFAULT_INTERVAL_S`. Listeners send a heartbeat every 60 s when they have
  nothing to send (``listen --heartbeat``): the server knows the listener is alive.
  The server looks for stale machines every :data:`SWEEP_S` seconds (:class:`StaleSweeper`).

These alerts go through the same outbox as anomaly alerts (events ``alert.opened`` and
``alert.closed``, the alert's ``kind`` and ``reason`` in the document); a machine in a maintenance
window opens none. They never count towards an anomaly alert.
"""

from __future__ import annotations

import datetime as _dt
import logging
import statistics
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from humwatch.service.silences import silenced_at
from humwatch.service.store import Alert, ClipRow, Machine, utcnow

log = logging.getLogger("humwatch.service")
STALE_FACTOR = 3.0
STALE_MIN_S = 180.0
DEFAULT_INTERVAL_S = 600.0
GAP_CLIPS = 20
SWEEP_S = 10.0
KINDS = ("anomaly", "sensor", "stale")


def open_alert(session: Session, machine_id: int, kind: str) -> Alert | None:
    return session.scalar(select(Alert).where(Alert.machine_id == machine_id, Alert.state == "open", Alert.kind == kind))


def expected_interval(session: Session, m: Machine) -> tuple[float, str]:
    """How often the machine sends a clip (s) and where that comes from: ``set`` (an admin's
    ``PUT .../expected-interval``), ``learned`` (the median gap between its last clips' arrivals)
    or ``default`` (:data:`DEFAULT_INTERVAL_S`, before its third clip)."""
    if m.expected_interval_s is not None:
        return float(m.expected_interval_s), "set"
    times = session.scalars(
        select(ClipRow.received_at).where(ClipRow.machine_id == m.id).order_by(ClipRow.id.desc()).limit(GAP_CLIPS)
    ).all()
    if len(times) < 3:
        return DEFAULT_INTERVAL_S, "default"
    times = sorted(times)
    return float(statistics.median((b - a).total_seconds() for a, b in zip(times, times[1:]))), "learned"


def stale_window_s(session: Session, m: Machine) -> float:
    """How long a machine may stay silent before it is stale: STALE_FACTOR expected intervals;
    at least STALE_MIN_S unless an admin set the interval (then exactly STALE_FACTOR of it)."""
    interval, source = expected_interval(session, m)
    return STALE_FACTOR * interval if source == "set" else max(STALE_MIN_S, STALE_FACTOR * interval)


def last_clip_at(session: Session, m: Machine) -> _dt.datetime | None:
    """When the machine's last clip arrived (None: it never sent one)."""
    return session.scalar(select(ClipRow.received_at).where(ClipRow.machine_id == m.id).order_by(ClipRow.id.desc()).limit(1))


def last_seen(session: Session, m: Machine) -> _dt.datetime | None:
    """The machine's last clip arrival or heartbeat, whichever is later (None: neither)."""
    seen = [t for t in (last_clip_at(session, m), m.heartbeat_at) if t is not None]
    return max(seen) if seen else None


def is_stale(session: Session, m: Machine, now: _dt.datetime | None = None) -> bool:
    """No clip for longer than its window (heartbeats do not make up for clips: a listener that is
    alive while its recorder or microphone sends nothing is what this is for); a machine that never
    sent a clip is stale only when its listener's heartbeats stop too."""
    last = last_clip_at(session, m) or m.heartbeat_at
    if last is None:
        return False  # "no data": it never sent anything
    return ((now or utcnow()) - last).total_seconds() > stale_window_s(session, m)


def stale_reason(session: Session, m: Machine, now: _dt.datetime) -> str:
    """What a stale alert says: how long without a clip, and whether the listener is alive."""
    window = stale_window_s(session, m)
    last, beat = last_clip_at(session, m), m.heartbeat_at
    if last is None:
        return f"no clip ever, and no heartbeat for {(now - beat).total_seconds():.0f} s (window {window:.0f} s): is the listener running?"
    quiet = (now - last).total_seconds()
    if beat is not None and (now - beat).total_seconds() <= window:
        return (
            f"no clip for {quiet:.0f} s (window {window:.0f} s) while its listener is alive (heartbeat "
            f"{(now - beat).total_seconds():.0f} s ago): the recorder or the microphone sends nothing"
        )
    return f"no clip nor heartbeat for {quiet:.0f} s (window {window:.0f} s): is the listener running?"


def _open(session, m: Machine, kind: str, reason: str, clip: ClipRow | None, at: _dt.datetime, outbox) -> Alert:
    clip_id = (  # a stale alert is about the last clip before the silence; None if it never sent one
        clip.id
        if clip is not None
        else session.scalar(select(ClipRow.id).where(ClipRow.machine_id == m.id).order_by(ClipRow.id.desc()).limit(1))
    )
    alert = Alert(
        machine_id=m.id,
        kind=kind,
        reason=reason[:255],
        state="open",
        start_at=at,
        opened_at=utcnow(),
        first_clip_id=clip_id,
        last_clip_id=clip_id,
        n_anomalous=0,
        normal_streak=0,
        max_score=0.0,
        rule=kind,
        webhook_status=None,
        webhook_attempts=0,
    )
    session.add(alert)
    session.flush()
    log.warning("%s alert %s opened: %s, %s", kind, alert.id, m.name, reason)
    if outbox is not None:
        outbox.record(session, alert, m.name, "alert.opened", clip)
    return alert


def _close(session, m: Machine, alert: Alert, at: _dt.datetime, outbox, clip: ClipRow | None = None) -> None:
    alert.state, alert.end_at, alert.closed_at = "closed", at, utcnow()
    if clip is not None:
        alert.last_clip_id = clip.id
    if outbox is not None and not silenced_at(session, m.id, at):
        outbox.record(session, alert, m.name, "alert.closed", clip)


def on_sensor_clip(session: Session, m: Machine, clip: ClipRow, outbox=None) -> Alert | None:
    """After storing a clip (machine row locked): a sensor fault opens a sensor alert, a clip
    without one closes it; any clip closes a stale alert. Returns a sensor alert opened."""
    stale = open_alert(session, m.id, "stale")
    if stale is not None:
        _close(session, m, stale, clip.at, outbox, clip)
    alert = open_alert(session, m.id, "sensor")
    if clip.sensor is None:
        if alert is not None:
            _close(session, m, alert, clip.at, outbox, clip)
        return None
    if alert is not None:
        alert.last_clip_id = clip.id
        return None
    if silenced_at(session, m.id, clip.at):
        return None
    return _open(session, m, "sensor", clip.sensor, clip, clip.at, outbox)


def heartbeat(session: Session, m: Machine, outbox=None) -> None:
    """A listener said it is alive: note it. It closes the stale alert of a machine that never sent a
    clip (the listener is back); one that did send clips stays stale until its next clip."""
    now = utcnow()
    m.heartbeat_at = now
    stale = open_alert(session, m.id, "stale")
    if stale is not None and last_clip_at(session, m) is None:
        _close(session, m, stale, now, outbox)


def sweep_stale(store, outbox=None, now: _dt.datetime | None = None) -> list[str]:
    """Open a stale alert for every machine silent longer than its window; the machines opened."""
    now = now or utcnow()
    opened = []
    with store.read() as s:
        ids = s.scalars(select(Machine.id)).all()
    for mid in ids:
        with store.write() as s:
            m = s.scalar(select(Machine).where(Machine.id == mid).with_for_update())
            if open_alert(s, m.id, "stale") is not None or not is_stale(s, m, now):
                continue
            if silenced_at(s, m.id, now):
                continue
            _open(s, m, "stale", stale_reason(s, m, now), None, now, outbox)
            opened.append(m.name)
    return opened


class StaleSweeper:
    """A background thread that runs :func:`sweep_stale` every SWEEP_S seconds."""

    def __init__(self, store, notifier=None, every_s: float = SWEEP_S):
        self.store, self.notifier, self.every_s = store, notifier, every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="humwatch-stale", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if sweep_stale(self.store, self.notifier.outbox if self.notifier else None) and self.notifier:
                    self.notifier.notify()
            except Exception as e:  # a store that fails now is tried again next time
                log.error("stale check failed: %s", " ".join(str(e).split())[:300])

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
