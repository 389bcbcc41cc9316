"""``GET /metrics``: the service in Prometheus's text format (prometheus-client), for the monitoring
stack a plant already runs. Needs a token with the ``read`` scope (Prometheus sends it with
``authorization: {credentials: ...}`` in its scrape config): the series name the plant's machines
and say which are in alarm, which is what ``read`` guards on the API.

Two kinds of series, because ``humwatch serve --workers N`` runs N processes and a scrape lands on
any one of them:

* **The fleet's state comes from the database at scrape time** (:class:`StoreCollector`):
  ``humwatch_clips_scored_total{machine,decision}`` (a count of the stored clips: clips are never
  deleted, retention drops only their audio, so it only grows, survives restarts and is the same
  whichever worker answers), ``humwatch_score{machine}`` and ``humwatch_threshold{machine}`` (the
  last clip's), ``humwatch_alert_open{machine}``, ``humwatch_machine_state{machine,state}`` (1 for
  the machine's state as the API and the dashboard show it, 0 for the others) and
  ``humwatch_queue_depth{queue="webhook"|"email"}`` (alert events not yet delivered, from the
  notification outbox). Per-
  process counters for these would be wrong with several workers (each knows only its own clips,
  and one that just started would report a counter reset), and prometheus-client's multiprocess
  mode cannot hold a "last score" or an alert state at all (its gauges sum or max over processes).
* **What only a process can see is counted in the process**: ``humwatch_ingest_seconds`` (a
  histogram of accepted uploads, from the first byte to the stored row),
  ``humwatch_score_batch_clips`` (a histogram of how many clips each call of a monitor scored
  together: :class:`humwatch.service.scoring.Batcher`) and
  ``humwatch_store_errors_total{kind}`` (database errors answered 503). With ``--workers N``,
  ``humwatch serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder, each worker writes its
  values there and every scrape sums all workers' files (prometheus-client's multiprocess mode; a
  worker that died keeps counting, as a counter should). There are no per-process gauges here,
  since multiprocess mode would need each dead worker's files removed.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (never the global one), so
tests that build many apps in one process do not clash. Request instrumenters such as
prometheus-fastapi-instrumentator or starlette-exporter were close, but they count HTTP requests
by path, in the process, on the global registry: what a plant watches is its machines, and those
series must be right whichever worker answers. The route itself is in :mod:`.api`, beside the
others, so it gets the same token checks (and the tests that walk the routers' routes see it).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from humwatch.service.queries import STATES, machine_state_name
from humwatch.service.store import Alert, ClipRow, Machine, Notification

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
INGEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: a short clip on a CPU scores in tens of milliseconds, a long one on a big model in seconds."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Clips per scoring batch (``--max-batch`` is at most 256)."""


class StoreCollector:
    """The fleet's series, read from the store at each scrape (a few grouped queries on indexed
    columns; the clip count is one index scan of the clips table)."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        with self.store.read() as s:
            machines = dict(s.execute(select(Machine.id, Machine.name)).all())
            counts = s.execute(
                select(ClipRow.machine_id, ClipRow.anomalous, func.count(ClipRow.id)).group_by(ClipRow.machine_id, ClipRow.anomalous)
            ).all()
            last_ids = select(func.max(ClipRow.id)).group_by(ClipRow.machine_id).scalar_subquery()
            last = {
                r.machine_id: r
                for r in s.execute(select(ClipRow.machine_id, ClipRow.score, ClipRow.threshold).where(ClipRow.id.in_(last_ids))).all()
            }
            opened = s.scalars(select(Alert).where(Alert.state == "open")).all()
            open_alerts = {a.machine_id: a for a in opened if (a.kind or "anomaly") == "anomaly"}
            sensor_ids = {a.machine_id for a in opened if a.kind == "sensor"}
            stale_ids = {a.machine_id for a in opened if a.kind == "stale"}
            queued = dict(
                s.execute(
                    select(Notification.channel, func.count(Notification.id))
                    .where(Notification.status.in_(("pending", "sending")))
                    .group_by(Notification.channel)
                ).all()
            )
        scored = CounterMetricFamily(
            "humwatch_clips_scored", "Clips scored and stored, by machine and decision.", labels=["machine", "decision"]
        )
        n = {(mid, bool(bad)): c for mid, bad, c in counts}
        score = GaugeMetricFamily("humwatch_score", "The machine's last clip's score.", labels=["machine"])
        threshold = GaugeMetricFamily("humwatch_threshold", "The threshold the machine's last clip was scored against.", labels=["machine"])
        alert_open = GaugeMetricFamily(
            "humwatch_alert_open", "1 while the machine has an open alert (acknowledged or not), else 0.", labels=["machine"]
        )
        state = GaugeMetricFamily(
            "humwatch_machine_state", "1 for the machine's state (as the API shows it), 0 for the others.", labels=["machine", "state"]
        )
        for mid, name in sorted(machines.items(), key=lambda kv: kv[1]):
            for decision, bad in (("normal", False), ("anomalous", True)):
                scored.add_metric([name, decision], n.get((mid, bad), 0))
            if mid in last:
                score.add_metric([name], last[mid].score)
                threshold.add_metric([name], last[mid].threshold)
            alert_open.add_metric([name], int(mid in open_alerts))
            now = machine_state_name(mid in last, open_alerts.get(mid), sensor=mid in sensor_ids, stale=mid in stale_ids)
            for st in STATES:
                state.add_metric([name, st], int(st == now))
        depth = GaugeMetricFamily(
            "humwatch_queue_depth", "Alert events waiting in the notification outbox, by channel (webhook, email).", labels=["queue"]
        )
        for channel in ("webhook", "email"):
            depth.add_metric([channel], queued.get(channel, 0))
        yield from (scored, score, threshold, alert_open, state, depth)


class Metrics:
    """One app's registry: the store's series and this process's counters (see the module's
    docstring for which is which, and multiprocess mode)."""

    def __init__(self, store):
        self.registry = CollectorRegistry(auto_describe=False)
        self.multiproc_dir = os.environ.get(MULTIPROC_ENV) or None
        own = None if self.multiproc_dir else self.registry  # multiprocess values are read back from the folder
        self.ingest_seconds = Histogram(
            "humwatch_ingest_seconds",
            "Seconds from an upload's first byte to its stored row (accepted uploads).",
            buckets=INGEST_BUCKETS,
            registry=own,
        )
        self.score_batch_clips = Histogram(
            "humwatch_score_batch_clips",
            "Clips scored together in one call of a machine's monitor (micro-batching: --max-batch, --batch-wait-ms).",
            buckets=BATCH_BUCKETS,
            registry=own,
        )
        self.store_errors = Counter(
            "humwatch_store_errors",
            "Database errors answered 503 (kind: unavailable, or cannot_write: a full or read-only disk).",
            ["kind"],
            registry=own,
        )
        for kind in ("unavailable", "cannot_write"):
            self.store_errors.labels(kind)
        if self.multiproc_dir:
            from prometheus_client.multiprocess import MultiProcessCollector

            MultiProcessCollector(self.registry, path=self.multiproc_dir)
        self.registry.register(StoreCollector(store))

    @contextmanager
    def timing_ingest(self):
        """Observe the block's duration in ``humwatch_ingest_seconds`` when it ends without an error."""
        start = time.perf_counter()
        yield
        self.ingest_seconds.observe(time.perf_counter() - start)

    def store_error(self, cannot_write: bool) -> None:
        self.store_errors.labels("cannot_write" if cannot_write else "unavailable").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def response(service):
    """The ``/metrics`` answer (the route is in :mod:`.api`, with the others: the same token checks)."""
    from fastapi.responses import Response

    return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
