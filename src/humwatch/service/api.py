"""The JSON API, ``/api/v1`` (and ``/health``). Scopes: ``ingest`` to send clips, ``read`` to look
and to acknowledge alerts, ``admin`` for everything plus alert rules and the token list.

Handlers that touch the store or a model are plain functions (FastAPI runs them in its worker
threads) or hand their blocking part to :func:`starlette.concurrency.run_in_threadpool`: the event
loop itself only moves bytes.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from humwatch.errors import ConfigError
from humwatch.service import queries, schemas, timeline
from humwatch.service.alerts import AlertRule, acknowledge, alert_document
from humwatch.service.auth import Principal, list_tokens, require
from humwatch.service.guard import too_many
from humwatch.service.ingest import UploadError, clip_document, parse_time, receive_upload
from humwatch.service.scoring import MACHINE_RE
from humwatch.service.silences import MAX_REASON, list_silences, silence_document
from humwatch.service.store import Machine, Silence

router = APIRouter()
v1 = "/api/v1"
ERRORS = {
    401: {"model": schemas.Problem, "description": "No valid token"},
    403: {"model": schemas.Problem, "description": "The token lacks the scope"},
    404: {"model": schemas.Problem, "description": "No such machine, alert or clip"},
    429: {"model": schemas.Problem, "description": "Too many unknown tokens from this address, or uploads from this token"},
    503: {"model": schemas.Problem, "description": "The database is not available, or the store cannot write"},
}
MachineName = Annotated[str, Path(description="The machine's name (its monitor's folder name).", pattern=MACHINE_RE.pattern)]
Reader = Annotated[Principal, Depends(require("read"))]
ClipId = Annotated[int, Path(ge=1, le=queries.MAX_ID, description="The clip's id.")]
AlertId = Annotated[int, Path(ge=1, le=queries.MAX_ID, description="The alert's id.")]
SilenceId = Annotated[int, Path(ge=1, le=queries.MAX_ID, description="The silence's id.")]
Admin = Annotated[Principal, Depends(require("admin"))]
Offset = Annotated[int, Query(ge=0, le=queries.MAX_OFFSET)]
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "WAV or FLAC audio: the raw body, or the `file` part of a multipart form (with an optional `recorded_at` field).",
        "content": {
            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
            "audio/flac": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "recorded_at": {"type": "string", "format": "date-time"},
                    },
                }
            },
        },
    }
}


def service(request: Request):
    return request.app.state.service


def _machine(s, name: str):
    m = queries.machine_row(s, name)
    if m is None:
        raise HTTPException(404, f"no machine named {name!r}")
    return m


def _time(text: str | None, name: str):
    try:
        return parse_time(text)
    except UploadError as e:
        what = "outside the years 1 to 9999 in UTC" if "outside the years" in str(e) else "not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)"
        raise HTTPException(422, f"{name} {text!r}: {what}") from None


@router.get(
    "/health",
    response_model=schemas.Health,
    tags=["service"],
    responses={503: {"model": schemas.Problem, "description": "The database cannot be reached, or the store cannot write"}},
)
def health(request: Request):
    """Liveness for load balancers, systemd and container probes: no token, says nothing about
    machines. 503 when the database cannot be reached, or when the store cannot write (a full or
    read-only disk: a real write, done at most every few seconds)."""
    svc = service(request)
    with svc.store.read() as s:
        s.execute(text("SELECT 1"))
    problem = svc.probe.problem()
    if problem is not None:
        raise HTTPException(503, f"the store cannot write: {problem}", headers={"retry-after": "5"})
    return {"status": "ok"}


@router.get(
    "/metrics",
    tags=["service"],
    response_class=Response,
    responses={**{k: ERRORS[k] for k in (401, 403, 503)}, 200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def get_metrics(request: Request, who: Reader):
    """The service in Prometheus's text format: clips scored, last scores, alert and machine states,
    ingest latency, queue depth, database errors (humwatch.service.metrics)."""
    from humwatch.service.metrics import response

    return response(service(request))


@router.post(
    f"{v1}/machines/{{machine}}/clips",
    response_model=schemas.Ingested,
    tags=["clips"],
    openapi_extra=UPLOAD_BODY,
    responses={
        **ERRORS,
        413: {"model": schemas.Problem, "description": "Upload too large"},
        415: {"model": schemas.Problem, "description": "Not WAV or FLAC"},
        422: {"model": schemas.Problem, "description": "Unusable audio, too long, or a bad recording time"},
    },
)
async def post_clip(
    request: Request,
    machine: MachineName,
    background: BackgroundTasks,
    who: Annotated[Principal, Depends(require("ingest"))],
    recorded_at: Annotated[Optional[str], Query(description="When the clip was recorded (ISO 8601; no zone = UTC).")] = None,
    filename: Annotated[Optional[str], Query(description="The clip's file name, for people reading the scores.")] = None,
):
    """Score one clip with the machine's monitor and store it: clip id, score, threshold, decision.
    The same audio for the same machine and recording time is stored once (sent again, the stored
    row comes back with `duplicate: true`)."""
    svc = service(request)
    wait = svc.uploads.hit(who.name)
    if wait is not None:
        raise too_many(f"token {who.name!r} sent more than {svc.uploads.limit} clips in a minute", wait)
    if svc.pool.get(machine) is None:
        raise HTTPException(404, f"no monitor for machine {machine!r} (this server has: {', '.join(svc.pool.names())})")
    with svc.metrics.timing_ingest():
        up = await receive_upload(request, int(svc.settings.max_upload_mb * 1e6))
        doc = await run_in_threadpool(svc.ingestor.ingest, machine, up)
    background.add_task(run_in_threadpool, svc.ingestor.maybe_prune)
    return doc


@router.post(f"{v1}/machines/{{machine}}/heartbeat", response_model=schemas.Machine, tags=["machines"], responses=ERRORS)
def post_heartbeat(request: Request, machine: MachineName, who: Annotated[Principal, Depends(require("ingest"))]):
    """The machine's listener is alive with nothing to send: the machine is not stale (a stale
    alert closes). Listeners send one every 60 s when idle; the machine's state comes back."""
    from sqlalchemy import select

    from humwatch.service.health import heartbeat

    svc = service(request)
    if svc.pool.get(machine) is None:
        raise HTTPException(404, f"no monitor for machine {machine!r} (this server has: {', '.join(svc.pool.names())})")
    with svc.store.write() as s:
        m = s.scalar(select(Machine).where(Machine.name == machine).with_for_update())
        if m is None:
            raise HTTPException(404, f"no machine {machine!r}")
        heartbeat(s, m, svc.notifier.outbox if svc.notifier else None)
    if svc.notifier:
        svc.notifier.notify()
    with svc.store.read() as s:
        return queries.machine_state(s, _machine(s, machine), svc.pool, svc.ingestor.rule)


@router.get(f"{v1}/machines", response_model=list[schemas.Machine], tags=["machines"], responses=ERRORS)
def get_machines(request: Request, who: Reader):
    """Every machine: its state (alarm, acknowledged, stale, sensor, ok, no data), last score, open alerts."""
    svc = service(request)
    with svc.store.read() as s:
        return queries.fleet(s, svc.pool, svc.ingestor.rule)


@router.get(f"{v1}/machines/{{machine}}", response_model=schemas.Machine, tags=["machines"], responses=ERRORS)
def get_machine(request: Request, machine: MachineName, who: Reader):
    svc = service(request)
    with svc.store.read() as s:
        return queries.machine_state(s, _machine(s, machine), svc.pool, svc.ingestor.rule)


@router.get(
    f"{v1}/machines/{{machine}}/scores",
    response_model=schemas.ScoresPage,
    tags=["machines"],
    responses={**ERRORS, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "A page of clips, or CSV"}},
)
def get_scores(
    request: Request,
    machine: MachineName,
    who: Reader,
    since: Annotated[Optional[str], Query(description="From this time on (ISO 8601).")] = None,
    until: Annotated[Optional[str], Query(description="Up to this time (ISO 8601).")] = None,
    limit: Annotated[Optional[int], Query(ge=1, le=queries.MAX_PAGE, description="Clips per page (JSON; default 100).")] = None,
    offset: Annotated[Optional[int], Query(ge=0, le=queries.MAX_OFFSET)] = None,
    order: Literal["desc", "asc"] = "desc",
    format: Annotated[  # noqa: A002
        Literal["json", "csv"], Query(description="json: a page of clips; csv: every clip of the range, oldest first, as a download.")
    ] = "json",
):
    """A machine's scored clips in a time range, a page at a time (newest first by default), or
    all of them as CSV (``format=csv``: the dashboard's download; ``limit``/``offset`` page JSON only)."""
    t0, t1 = _time(since, "since"), _time(until, "until")
    if t0 is not None and t1 is not None and t1 < t0:
        raise HTTPException(422, "since must not be after until")
    with service(request).store.read() as s:
        m = _machine(s, machine)
        if format == "csv":
            if limit is not None or offset is not None:
                raise HTTPException(422, "format=csv gives every clip of the range: limit and offset page the JSON only")
            return timeline.csv_response(m.name, queries.clips_between(s, m, t0, t1))
        return queries.scores_page(s, m, t0, t1, 100 if limit is None else limit, offset or 0, order)


@router.put(f"{v1}/machines/{{machine}}/expected-interval", response_model=schemas.Machine, tags=["machines"], responses=ERRORS)
def put_expected_interval(request: Request, machine: MachineName, body: schemas.ExpectedIntervalIn, who: Admin):
    """Set how often the machine sends a clip (s): it is stale after 3 such intervals without a clip
    or heartbeat. ``{"seconds": null}`` goes back to learning it from the clips' arrivals."""
    svc = service(request)
    with svc.store.write() as s:
        _machine(s, machine).expected_interval_s = body.seconds
    with svc.store.read() as s:
        return queries.machine_state(s, _machine(s, machine), svc.pool, svc.ingestor.rule)


@router.put(f"{v1}/machines/{{machine}}/alert-rule", response_model=schemas.Machine, tags=["machines"], responses=ERRORS)
def put_alert_rule(request: Request, machine: MachineName, rule: schemas.AlertRuleIn, who: Annotated[Principal, Depends(require("admin"))]):
    """Set the machine's own alert rule: K anomalous of the last N clips open an alert, M normal close it."""
    svc = service(request)
    try:
        AlertRule(rule.k, rule.n, rule.m)
    except ConfigError as e:
        raise HTTPException(422, str(e)) from None
    with svc.store.write() as s:
        m = _machine(s, machine)
        m.alert_k, m.alert_n, m.alert_m = rule.k, rule.n, rule.m
    with svc.store.read() as s:
        return queries.machine_state(s, _machine(s, machine), svc.pool, svc.ingestor.rule)


@router.get(f"{v1}/alerts", response_model=schemas.AlertsPage, tags=["alerts"], responses=ERRORS)
def get_alerts(
    request: Request,
    who: Reader,
    state: Literal["open", "closed", "all"] = "all",
    machine: Annotated[Optional[str], Query(pattern=MACHINE_RE.pattern)] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE)] = 100,
    offset: Offset = 0,
):
    """Alerts, open ones first, newest first."""
    with service(request).store.read() as s:
        return queries.alerts_page(s, state, _machine(s, machine) if machine else None, limit, offset)


@router.post(f"{v1}/alerts/{{alert_id}}/ack", response_model=schemas.Alert, tags=["alerts"], responses=ERRORS)
def ack_alert(request: Request, alert_id: AlertId, who: Reader):
    """Acknowledge an alert (someone has seen it; it stays open until the machine sounds normal)."""
    return ack(request, alert_id, who)


def ack(request: Request, alert_id: int, who: Principal) -> dict:
    svc = service(request)
    notifier = svc.notifier
    with svc.store.write() as s:
        alert = acknowledge(s, alert_id, who.name, notifier.outbox if notifier else None)
        if alert is None:
            raise HTTPException(404, f"no alert {alert_id}")
        doc = alert_document(alert, s.get(Machine, alert.machine_id).name)
    if notifier:
        notifier.notify()
    return doc


@router.post(
    f"{v1}/machines/{{machine}}/silences",
    response_model=schemas.Silence,
    tags=["machines"],
    responses={**ERRORS, 422: {"model": schemas.Problem, "description": "A bad time, an end not after the start, or a bad reason"}},
)
def post_silence(request: Request, machine: MachineName, body: schemas.SilenceIn, who: Admin):
    """A maintenance window: while it lasts the machine's clips are scored and stored, but they open
    no alert and nothing about the machine is notified."""
    start, end = _time(body.start, "start"), _time(body.end, "end")
    if start is None or end is None:
        raise HTTPException(422, "start and end: both are needed (ISO 8601 times)")
    if end <= start:
        raise HTTPException(422, f"end {body.end!r} is not after start {body.start!r}")
    reason = body.reason.strip()
    if len(reason) > MAX_REASON or any(not ch.isprintable() for ch in reason):
        raise HTTPException(422, f"reason: at most {MAX_REASON} printable characters, on one line")
    with service(request).store.write() as s:
        m = _machine(s, machine)
        row = Silence(machine_id=m.id, start_at=start, end_at=end, reason=reason, created_by=who.name)
        s.add(row)
        s.flush()
        return silence_document(row, m.name)


@router.get(f"{v1}/machines/{{machine}}/silences", response_model=list[schemas.Silence], tags=["machines"], responses=ERRORS)
def get_silences(request: Request, machine: MachineName, who: Reader):
    """The machine's maintenance windows, latest start first."""
    with service(request).store.read() as s:
        m = _machine(s, machine)
        return list_silences(s, m.id, m.name)


@router.delete(f"{v1}/machines/{{machine}}/silences/{{silence_id}}", response_model=schemas.Silence, tags=["machines"], responses=ERRORS)
def delete_silence(request: Request, machine: MachineName, silence_id: SilenceId, who: Admin):
    """End a maintenance window early (it is removed); returns it as it was."""
    with service(request).store.write() as s:
        m = _machine(s, machine)
        row = s.get(Silence, silence_id)
        if row is None or row.machine_id != m.id:
            raise HTTPException(404, f"no silence {silence_id} of machine {machine!r}")
        doc = silence_document(row, m.name)
        s.delete(row)
        return doc


@router.get(f"{v1}/clips/{{clip_id}}", response_model=schemas.Clip, tags=["clips"], responses=ERRORS)
def get_clip(request: Request, clip_id: ClipId, who: Reader):
    with service(request).store.read() as s:
        found = queries.clip_detail(s, clip_id)
        if found is None:
            raise HTTPException(404, f"no clip {clip_id}")
        return clip_document(*found)


@router.get(f"{v1}/clips/{{clip_id}}/audio", tags=["clips"], responses=ERRORS, response_class=FileResponse)
def get_clip_audio(request: Request, clip_id: ClipId, who: Reader):
    """The clip's audio, when the server kept it (anomalous clips, within the retention limit)."""
    return FileResponse(kept_audio(request, clip_id)[1])


def kept_audio(request: Request, clip_id: int):
    """(row, path, machine) of a clip whose audio is kept; 404 otherwise."""
    with service(request).store.read() as s:
        found = queries.clip_detail(s, clip_id)
    if found is None:
        raise HTTPException(404, f"no clip {clip_id}")
    row, machine = found
    if row.audio_path is None or not FilePath(row.audio_path).is_file():
        raise HTTPException(404, f"clip {clip_id}: its audio was not kept (only anomalous clips' audio is, for a while)")
    return row, FilePath(row.audio_path), machine


@router.get(f"{v1}/tokens", response_model=list[schemas.TokenInfo], tags=["service"], responses=ERRORS)
def get_tokens(request: Request, who: Annotated[Principal, Depends(require("admin"))]):
    """Token names and scopes (never the tokens: the store holds only their hashes)."""
    return list_tokens(service(request).store)
