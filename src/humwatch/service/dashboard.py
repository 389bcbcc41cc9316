"""The dashboard: server-rendered pages (Jinja2 templates in ``templates/``), served by the same
process as the API and read with the same ``read`` token.

* ``/`` the fleet: every machine, its state, last score and open alert;
* ``/machines/<name>`` a score timeline (uPlot, served from ``static/vendor``: no CDN) with the
  threshold line and the alerts' spans shaded, and the latest clips;
* ``/clips/<id>`` one clip: its numbers, and for an anomalous clip whose audio was kept, a player,
  its spectrogram and the "why did it alarm" figure (:func:`humwatch.explain.alarm.explain_alarm`);
  figures are drawn once and kept beside the audio;
* ``/alerts`` open and closed alerts, with an acknowledge button; ``/alerts/<id>`` one alert, its
  chart and the clips between its start and end;
* ``/machines/<name>/scores.csv?since=&until=`` the scores of a time range as CSV;
* the chart spans the chosen range ending now, or a zoom kept in the URL (``?from=&to=``); times
  are in UTC unless ``?tz=`` (kept in a cookie) chooses a zone (:mod:`humwatch.service.timeline`);
* ``/login`` takes a token and keeps it in an HttpOnly, SameSite=Strict cookie (so a form posted
  from another site carries no token); ``/docs`` the API's OpenAPI page (Swagger UI, also local).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Annotated, Literal, Optional
from urllib.parse import urlencode, urlparse

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from humwatch.service import queries, timeline
from humwatch.service.api import AlertId, ClipId
from humwatch.service.auth import COOKIE, Principal, checked_sign_in, require
from humwatch.service.scoring import MACHINE_RE
from humwatch.service.silences import current_silence, silence_document
from humwatch.service.store import utcnow

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)
Reader = Annotated[Principal, Depends(require("read"))]
RANGES = timeline.RANGES
CHART_POINTS = 5000
ALERT_CLIPS = 2000
"""The most clips an alert's page lists (its CSV link gives them all)."""
Range = Literal["1h", "24h", "7d", "30d", "all"]

templates.env.filters["when"] = timeline.when
templates.env.filters["num"] = lambda v: "" if v is None else f"{v:.4g}"
templates.env.filters["duration"] = timeline.duration


def _page(request: Request, name: str, who: Principal | None, status: int = 200, **ctx) -> HTMLResponse:
    try:
        zone, chosen = timeline.request_zone(request)
    except HTTPException:  # an error page for a bad ?tz= itself
        zone, chosen = "UTC", False
    timeline.set_zone(zone)  # the page is rendered here, in this context
    ctx.setdefault("tz", zone)
    page = templates.TemplateResponse(request, name, {"who": who, "tz_label": timeline.zone_label(zone), **ctx}, status_code=status)
    if chosen:
        page.set_cookie(timeline.TZ_COOKIE, zone, samesite="strict", max_age=365 * 24 * 3600)
    return page


def _zone(request: Request) -> str:
    """The page's zone, checked before anything is read (a bad ``?tz=`` is a 422)."""
    zone = timeline.request_zone(request)[0]
    timeline.set_zone(zone)
    return zone


def html_error(request: Request, status: int, detail: str, headers: dict | None = None) -> HTMLResponse:
    """An error as a page: 401 shows the login form."""
    if status == 401:
        page = _page(
            request, "login.html", None, 401, detail="This page needs a token with the read scope.", problem=False, next=request.url.path
        )
    else:
        page = _page(request, "error.html", None, status, code=status, detail=detail)
    for k, v in (headers or {}).items():
        page.headers[k] = v
    return page


def _svc(request: Request):
    return request.app.state.service


def _same_origin(request: Request) -> None:
    """A form POST must come from one of this server's pages (defence in depth beside SameSite)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and urlparse(origin).netloc != request.url.netloc:
        raise HTTPException(403, "form posted from another site")


def _local_path(target: str | None, default: str = "/") -> str:
    """Only redirect to this server's own paths (``//host`` and ``/\\host`` lead elsewhere)."""
    ok = target and target.startswith("/") and not target.startswith(("//", "/\\")) and "\\" not in target
    return target if ok else default


@router.get("/", response_class=HTMLResponse)
def fleet_page(request: Request, who: Reader):
    svc = _svc(request)
    with svc.store.read() as s:
        machines = queries.fleet(s, svc.pool, svc.ingestor.rule)
    return _page(request, "fleet.html", who, machines=machines)


@router.get("/machines/{machine}", response_class=HTMLResponse)
def machine_page(
    request: Request,
    machine: str,
    who: Reader,
    range: Range = "24h",  # noqa: A002
    start: Annotated[Optional[str], Query(alias="from", max_length=64)] = None,
    end: Annotated[Optional[str], Query(alias="to", max_length=64)] = None,
):
    _zone(request)
    svc = _svc(request)
    with svc.store.read() as s:
        m = queries.machine_row(s, machine) if MACHINE_RE.match(machine) else None
        if m is None:
            raise HTTPException(404, f"no machine named {machine!r}")
        win = timeline.window(range, start, end, utcnow(), *queries.clip_time_span(s, m))
        state = queries.machine_state(s, m, svc.pool, svc.ingestor.rule)
        page = queries.scores_page(s, m, since=win["since"], until=win["until"], limit=CHART_POINTS, order="desc")
        points = page["items"][::-1]
        spans = queries.alert_spans(s, m, since=win["since"], until=win["until"])
        latest = queries.scores_page(s, m, limit=20)["items"]
        silence = current_silence(s, m.id)
        silence = None if silence is None else silence_document(silence, m.name)
    threshold = state["monitor"]["threshold"] if state["monitor"] else None
    chart = timeline.chart_data(points, spans, threshold, win, live=not win["zoomed"])
    return _page(
        request,
        "machine.html",
        who,
        m=state,
        latest=latest,
        chart=json.dumps(chart),
        n_points=len(points),
        truncated=page["next_offset"] is not None,
        range=range,
        ranges=list(RANGES),
        spans=spans,
        silence=silence,
        win=win,
        csv_url=_csv_url(m.name, win),
    )


def _csv_url(machine: str, win: dict) -> str:
    return f"/machines/{machine}/scores.csv?" + urlencode({"since": win["since"].isoformat(), "until": win["until"].isoformat()})


@router.get("/machines/{machine}/scores.csv")
def scores_csv(
    request: Request,
    machine: str,
    who: Reader,
    since: Annotated[Optional[str], Query(max_length=64)] = None,
    until: Annotated[Optional[str], Query(max_length=64)] = None,
):
    """The scores of a time range (timeline time; both ends optional) as CSV, oldest first."""
    t0, t1 = timeline.parse_param(since, "since"), timeline.parse_param(until, "until")
    if t0 is not None and t1 is not None and t1 < t0:
        raise HTTPException(422, "since must not be after until")
    svc = _svc(request)
    with svc.store.read() as s:
        m = queries.machine_row(s, machine) if MACHINE_RE.match(machine) else None
        if m is None:
            raise HTTPException(404, f"no machine named {machine!r}")
        return timeline.csv_response(m.name, queries.clips_between(s, m, t0, t1))


@router.get("/clips/{clip_id}", response_class=HTMLResponse)
def clip_page(request: Request, clip_id: ClipId, who: Reader):
    from humwatch.service.ingest import clip_document

    svc = _svc(request)
    with svc.store.read() as s:
        found = queries.clip_detail(s, clip_id)
    if found is None:
        raise HTTPException(404, f"no clip {clip_id}")
    row, machine = found
    kept = row.audio_path is not None and Path(row.audio_path).is_file()
    why = None
    if kept and row.anomalous and svc.pool.get(machine) is not None:
        why = _why(svc, machine, Path(row.audio_path), row.filename)
    return _page(request, "clip.html", who, clip=clip_document(row, machine), kept=kept, why=why)


def _why(svc, machine: str, audio: Path, name: str) -> dict:
    """The "why did it alarm" figure and line, drawn once and kept beside the audio."""
    png, txt = audio.with_suffix(".why.png"), audio.with_suffix(".why.txt")
    if not (png.is_file() and txt.is_file()):
        from humwatch.io import atomic_path, write_text

        try:
            result = svc.pool.explain(machine, audio, name)
        except Exception as e:  # a figure must never take the page down with it (an old monitor has no reference)
            return {"summary": f"could not explain this clip: {' '.join(str(e).split())[:200]}", "png": False}
        with atomic_path(png, suffix=".png") as tmp:
            tmp.write_bytes(result.png)
        write_text(txt, " ".join(str(result.summary).split()))
    return {"summary": txt.read_text(encoding="utf-8"), "png": True}


def _kept(request: Request, clip_id: int) -> tuple:
    from humwatch.service.api import kept_audio

    return kept_audio(request, clip_id)


@router.get("/clips/{clip_id}/spectrogram.png")
def clip_spectrogram(request: Request, clip_id: ClipId, who: Reader):
    row, audio, machine = _kept(request, clip_id)
    png = audio.with_suffix(".spectrogram.png")
    if not png.is_file():
        draw_spectrogram_png(audio, png, f"{machine} · clip {row.id} · score {row.score:.4g} (threshold {row.threshold:.4g})")
    return Response(png.read_bytes(), media_type="image/png")


def draw_spectrogram_png(audio: Path, out: Path, title: str) -> None:
    """The whole file's linear spectrogram (the monitor scores it window by window)."""
    from humwatch.audio import AudioSettings, load_audio
    from humwatch.explain._plot import pyplot, save_figure
    from humwatch.explain.spectrograms import draw_spectrogram, spectrogram

    y = load_audio(audio, AudioSettings(seconds=None))
    fig, ax = pyplot().subplots(figsize=(9, 3.2), constrained_layout=True)
    draw_spectrogram(ax, spectrogram(y), title, colorbar=True)
    save_figure(fig, out)


@router.get("/clips/{clip_id}/why.png")
def clip_why(request: Request, clip_id: ClipId, who: Reader):
    row, audio, machine = _kept(request, clip_id)
    png = audio.with_suffix(".why.png")
    if not png.is_file():
        raise HTTPException(404, f"clip {clip_id}: no explanation drawn")
    return Response(png.read_bytes(), media_type="image/png")


@router.get("/clips/{clip_id}/audio")
def clip_audio(request: Request, clip_id: ClipId, who: Reader):
    from fastapi.responses import FileResponse

    return FileResponse(_kept(request, clip_id)[1])


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(request: Request, who: Reader, state: Literal["open", "closed", "all"] = "all"):
    with _svc(request).store.read() as s:
        page = queries.alerts_page(s, state, limit=200)
    return _page(request, "alerts.html", who, alerts=page["items"], state=state)


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(request: Request, alert_id: AlertId, who: Reader):
    """One alert: its numbers, its chart (a margin either side) and the clips from its start to
    its end (or now while it is open)."""
    from humwatch.service.alerts import alert_document
    from humwatch.service.ingest import clip_document

    _zone(request)
    svc = _svc(request)
    now = utcnow()
    with svc.store.read() as s:
        found = queries.alert_detail(s, alert_id)
        if found is None:
            raise HTTPException(404, f"no alert {alert_id}")
        alert, m = found
        doc = alert_document(alert, m.name)
        start, end = alert.start_at, alert.end_at or now
        clips = [clip_document(r, m.name) for r in queries.clips_between(s, m, start, end, limit=ALERT_CLIPS + 1)]
        margin = max((end - start) * 0.25, _dt.timedelta(minutes=5))
        win = {
            "since": timeline.shifted(start, -margin),
            "until": max(timeline.shifted(end, margin), timeline.shifted(start, margin)),
            "zoomed": True,
        }
        points = queries.scores_page(s, m, since=win["since"], until=win["until"], limit=CHART_POINTS, order="desc")["items"][::-1]
    chart = timeline.chart_data(points, [doc], clips[0]["threshold"] if clips else None, win, live=False)
    return _page(
        request,
        "alert.html",
        who,
        a=doc,
        clips=clips[:ALERT_CLIPS],
        more=len(clips) > ALERT_CLIPS,
        chart=json.dumps(chart),
        n_points=len(points),
        csv_url=_csv_url(m.name, {"since": start, "until": end}),
    )


@router.post("/alerts/{alert_id}/ack")
async def ack_form(request: Request, alert_id: AlertId, who: Reader):
    from starlette.concurrency import run_in_threadpool

    from humwatch.service.api import ack

    _same_origin(request)
    form = await request.form(max_fields=4, max_files=0)
    await run_in_threadpool(ack, request, alert_id, who)
    return RedirectResponse(_local_path(form.get("next"), "/alerts"), status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: Optional[str] = None):  # noqa: A002
    return _page(request, "login.html", None, detail="", next=_local_path(next))


@router.post("/login")
async def login(request: Request):
    from starlette.concurrency import run_in_threadpool

    _same_origin(request)
    form = await request.form(max_fields=4, max_files=0)
    token, target = str(form.get("token", "")).strip(), _local_path(form.get("next"))
    who = await run_in_threadpool(checked_sign_in, request, token)
    if who is None or not who.allows("read"):
        why = "Unknown or revoked token." if who is None else f"Token {who.name!r} lacks the read scope."
        return _page(request, "login.html", None, 401 if who is None else 403, detail=why, problem=True, next=target)
    r = RedirectResponse(target, status_code=303)
    r.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", max_age=30 * 24 * 3600)
    return r


@router.post("/logout")
def logout(request: Request):
    _same_origin(request)
    r = RedirectResponse("/login", status_code=303)
    r.delete_cookie(COOKIE)
    return r


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request, who: Reader):
    """Swagger UI, started by ``static/docs.js`` (FastAPI's get_swagger_ui_html starts it with an
    inline script, which the Content-Security-Policy refuses)."""
    return templates.TemplateResponse(request, "docs.html", {})


def install(app) -> None:
    """Add the pages, the static files, and ``/openapi.json`` behind the read scope (the app is
    made with ``openapi_url=None``, so FastAPI's own, open one is not there)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_json(who: Reader):
        return app.openapi()
