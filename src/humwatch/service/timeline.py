"""What the dashboard's times and chart are made of: the time zone pages are shown in (UTC unless
chosen), the time window a chart spans (a range ending now, or a zoom kept in the URL), the
chart's data, and the scores of a window as CSV."""

from __future__ import annotations

import contextvars
import csv
import datetime as _dt
import io
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import HTTPException, Request

UTC = _dt.timezone.utc
TZ_COOKIE = "humwatch_tz"
RANGES = {"1h": 1, "24h": 24, "7d": 24 * 7, "30d": 24 * 30, "all": None}
_zone: contextvars.ContextVar[str] = contextvars.ContextVar("humwatch_zone", default="UTC")


def zone_info(name: str) -> _dt.tzinfo:
    if name == "UTC":
        return UTC
    if name == "local":
        return _dt.datetime.now().astimezone().tzinfo or UTC
    return ZoneInfo(name)


def check_zone(name: str) -> str | None:
    """``UTC``, ``local`` (the server's own zone) or an IANA zone name; None if it is none of them."""
    if not isinstance(name, str) or not 0 < len(name) <= 64 or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        zone_info(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
    return name


def request_zone(request: Request) -> tuple[str, bool]:
    """The zone a page is shown in: ``?tz=`` (a bad one is a 422), else the cookie (a bad one is
    ignored), else UTC; and whether the query chose it (then the answer keeps it in the cookie)."""
    asked = request.query_params.get("tz")
    if asked is not None:
        name = check_zone(asked)
        if name is None:
            raise HTTPException(422, f"tz {asked[:64]!r}: not UTC, local or a time zone name such as Europe/Berlin")
        return name, True
    return check_zone(request.cookies.get(TZ_COOKIE, "UTC")) or "UTC", False


def set_zone(name: str) -> None:
    _zone.set(name)


def zone_label(name: str | None = None) -> str:
    name = name or _zone.get()
    if name == "local":
        return f"server local time ({_dt.datetime.now().astimezone().tzname()})"
    return "UTC" if name == "UTC" else name


def when(t) -> str:
    """A time as the pages show it, in the chosen zone."""
    if t is None:
        return ""
    if isinstance(t, str):
        t = _dt.datetime.fromisoformat(t)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    try:
        local = t.astimezone(zone_info(_zone.get()))
    except (OverflowError, ValueError):  # year 1 or 9999 shifted out of range: said in UTC
        return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return local.strftime("%Y-%m-%d %H:%M:%S ") + ("UTC" if _zone.get() == "UTC" else (local.tzname() or ""))


def parse_param(text: str | None, name: str) -> _dt.datetime | None:
    """A time from the URL: ISO 8601 (no zone means UTC) or unix seconds; anything else is a 422."""
    if text is None or text == "":
        return None
    try:
        if text.lstrip("-").replace(".", "", 1).isdigit():
            t = _dt.datetime.fromtimestamp(float(text), UTC)
        else:
            text = re.sub(r"(\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:?\d\d)$", r"\1+\2", text)  # a URL's "+" arrives as a space
            t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        raise HTTPException(422, f"{name} {text[:64]!r}: not an ISO 8601 time (e.g. 2030-01-01T12:00:00Z) or unix seconds") from None
    return t


def window(range_: str, start: str | None, end: str | None, now: _dt.datetime, first=None, last=None) -> dict:
    """The time window a chart spans: ``from``/``to`` (a zoom) if given, else ``range_`` ending now
    (``all``: from the first clip to now or the last clip if that is later, or the last 24 h
    before the first clip)."""
    t0, t1 = parse_param(start, "from"), parse_param(end, "to")
    if t0 is not None or t1 is not None:
        if t0 is None or t1 is None:
            raise HTTPException(422, "a zoom needs both from and to")
        if not t0 < t1:
            raise HTTPException(422, "from must be before to")
        return {"since": t0, "until": t1, "zoomed": True}
    hours = RANGES[range_]
    if hours is None:
        since = min(first, now - _dt.timedelta(hours=1)) if first is not None else now - _dt.timedelta(hours=24)
        return {"since": since, "until": max(now, last) if last is not None else now, "zoomed": False}
    since = now - _dt.timedelta(hours=hours)
    return {"since": since, "until": now, "zoomed": False}


def shifted(t: _dt.datetime, delta: _dt.timedelta) -> _dt.datetime:
    """``t + delta``, held within the calendar (years 1 to 9999)."""
    try:
        return t + delta
    except OverflowError:
        return (_dt.datetime.min if delta < _dt.timedelta(0) else _dt.datetime.max).replace(tzinfo=UTC)


def chart_data(points: list[dict], spans: list[dict], threshold, win: dict, live: bool) -> dict:
    """A chart: times (unix seconds), scores, anomalous scores (null elsewhere), clip ids, file
    names, the threshold, alert spans [start, end or null, id, kind], the x axis' bounds, the zone the
    axis is drawn in, and whether the window follows now (``live``: the page asks for new clips)."""
    ts = lambda iso: _dt.datetime.fromisoformat(iso).timestamp()  # noqa: E731
    if threshold is None and points:
        threshold = points[-1]["threshold"]
    zone = _zone.get()
    return {
        "t": [ts(p["at"]) for p in points],
        "score": [p["score"] for p in points],
        "anomalous": [p["score"] if p["decision"] == "anomalous" else None for p in points],
        "clip": [p["clip_id"] for p in points],
        "file": [p["filename"] for p in points],
        "threshold": threshold,
        "spans": [[ts(a["start_at"]), ts(a["end_at"]) if a["end_at"] else None, a["id"], a["kind"]] for a in spans],
        "x_min": win["since"].timestamp(),
        "x_max": win["until"].timestamp(),
        "span_s": win["until"].timestamp() - win["since"].timestamp(),
        "zoomed": win["zoomed"],
        "live": live,
        "tz": "UTC" if zone == "UTC" else (zone if zone != "local" else _server_zone_name()),
    }


def _server_zone_name() -> str:
    """The server's zone as an IANA name for the browser (``Etc/UTC`` if it has none)."""
    try:
        from pathlib import Path

        link = Path("/etc/localtime").resolve()
        name = str(link).split("zoneinfo/", 1)[1]
        return name if check_zone(name) else "Etc/UTC"
    except (IndexError, OSError):
        return "Etc/UTC"


def duration(seconds: float) -> str:
    """A length of time as people say it: "45 s", "10 min", "1.5 h", "2 d"."""
    s = float(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:.3g} s"


CSV_COLUMNS = ("clip_id", "recorded_at", "received_at", "file", "score", "threshold", "decision", "sensor", "warnings")


def _cell(text: str) -> str:
    """A file name as a spreadsheet shows it as text (one starting with = + - @ would be a formula)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def scores_csv(rows) -> str:
    """Clips as CSV: times ISO 8601 in UTC (empty when the clip was sent without its recording time)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    iso = lambda t: t.astimezone(UTC).isoformat() if t is not None else ""  # noqa: E731
    for r in rows:
        w.writerow(
            [
                r.id,
                iso(r.recorded_at),
                iso(r.received_at),
                _cell(r.filename or ""),
                "" if r.sensor else repr(r.score),  # a sensor fault is not scored
                repr(r.threshold),
                r.decision,
                _cell(r.sensor or ""),
                _cell("; ".join((r.warnings or "").splitlines())),
            ]
        )
    return out.getvalue()


def csv_response(machine: str, rows):
    """The clips ``rows`` as a CSV download named after the machine (the dashboard's and the API's)."""
    from fastapi.responses import Response

    return Response(
        scores_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{machine}-scores.csv"'},
    )
