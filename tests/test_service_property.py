"""A property of the whole service (issue 18): whatever a client sends, valid or not, the answer is
never a 500. Hypothesis drives the API and the dashboard in process (FastAPI's TestClient) with
random requests: every route, with tokens of every scope or none or wrong ones, ids and offsets
from -2^70 to 2^70, machine names and times of any text, times in any zone from year 1 to 9999,
bodies that are clips, noise or nothing, JSON of the wrong shape. Well-formed requests with the
right token must also succeed (200, or 303 for the dashboard's forms)."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import quote

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="pip install hypothesis (the dev extra)")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from service_fixtures import clip_bytes, fresh_monitors, make_token  # noqa: E402

MACHINE = "api-2"
CLIPS = [clip_bytes("normal", 21), clip_bytes("anomalous", 22), clip_bytes("normal", 23, fmt="FLAC")]
ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
"""What a header can hold (httpx sends nothing else)."""


@pytest.fixture(scope="module")
def service(service_monitors, tmp_path_factory):
    from fastapi.testclient import TestClient

    from humwatch.service.app import Service, create_app
    from humwatch.service.config import ServiceSettings
    from humwatch.service.store import default_db_url

    monitors = fresh_monitors(service_monitors, tmp_path_factory.mktemp("property") / "monitors", names=(MACHINE,))
    tokens = {scope: make_token(default_db_url(monitors), f"p-{scope}", scope) for scope in ("ingest", "read", "admin")}
    # no limit on failed sign-ins: the wrong tokens drawn here would otherwise soon make every answer a 429
    cfg = ServiceSettings(monitors=str(monitors), device="cpu", max_upload_mb=1, max_failed_logins=0).validate()
    svc = Service.open(cfg)
    client = TestClient(create_app(cfg, svc), raise_server_exceptions=False, follow_redirects=False)
    client.tokens = tokens
    # an alert to acknowledge and an anomalous clip with audio to look at
    for k in range(3):
        client.post(
            f"/api/v1/machines/{MACHINE}/clips",
            content=CLIPS[1],
            params={"recorded_at": f"2030-01-01T00:0{k}:00Z"},
            headers={"authorization": f"Bearer {tokens['ingest']}"},
        )
    yield client
    client.close()
    svc.close()


# ----------------------------------------------------------------------------------- pieces

zones = st.builds(lambda m: dt.timezone(dt.timedelta(minutes=m)), st.integers(-23 * 60 - 59, 23 * 60 + 59))
times = st.one_of(
    st.builds(lambda t, z: t.replace(tzinfo=z).isoformat(), st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59)), zones),
    st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)).map(lambda t: t.isoformat() + "Z"),
    st.text(max_size=40),
)
ids = st.one_of(st.integers(-(2**70), 2**70), st.integers(0, 10), st.text(ASCII, max_size=30))
machines = st.one_of(st.sampled_from([MACHINE, "nope", "api-1", "..", "a" * 65]), st.text(max_size=70))
numbers = st.one_of(st.integers(-(2**70), 2**70), st.integers(0, 6000), st.floats(allow_nan=True), st.text(ASCII, max_size=12))
bodies = st.one_of(
    st.sampled_from(CLIPS),
    st.binary(max_size=2048),
    st.just(b""),
    st.sampled_from(CLIPS).map(lambda b: b[:44]),
    st.sampled_from(CLIPS).map(lambda b: b[:200] + b"\0" * 300),
)


def seg(value) -> str:
    return quote(str(value), safe="")


def query(**params) -> dict:
    return {k: str(v) for k, v in params.items() if v is not None}


def headers_for(which: str, tokens: dict, junk: str) -> dict:
    if which in tokens:
        return {"authorization": f"Bearer {tokens[which]}"}
    if which == "cookie":
        return {"cookie": f"humwatch_token={tokens['read']}"}
    if which == "wrong":
        return {"authorization": f"Bearer hw_{junk}"}
    if which == "garbage":
        return {"authorization": junk}
    if which == "basic":
        return {"authorization": "Basic dXNlcjpwYXNz"}
    return {}


@st.composite
def requests(draw):
    """(method, url, keyword arguments for httpx, the scope that makes it valid or None)."""
    m, i = seg(draw(machines)), seg(draw(ids))
    kind = draw(
        st.sampled_from(
            [
                "ingest",
                "machines",
                "machine",
                "scores",
                "rule",
                "alerts",
                "ack",
                "clip",
                "audio",
                "tokens",
                "silence",
                "silences",
                "unsilence",
                "pages",
                "page-machine",
                "page-clip",
                "form-ack",
                "login",
                "logout",
                "health",
                "docs",
                "random",
            ]
        )
    )
    if kind == "ingest":
        body = draw(bodies)
        params = query(recorded_at=draw(st.none() | times), filename=draw(st.none() | st.text(max_size=300)))
        ctype = draw(st.sampled_from(["audio/wav", "audio/flac", "application/octet-stream", "text/plain", "multipart/form-data"]))
        if draw(st.booleans()):
            return ("POST", f"/api/v1/machines/{m}/clips", {"files": {"file": ("c.wav", body, "audio/wav")}, "params": params}, None)
        return ("POST", f"/api/v1/machines/{m}/clips", {"content": body, "params": params, "headers": {"content-type": ctype}}, None)
    if kind == "machines":
        return "GET", "/api/v1/machines", {}, "read"
    if kind == "machine":
        return "GET", f"/api/v1/machines/{m}", {}, None
    if kind == "scores":
        params = query(
            since=draw(st.none() | times),
            until=draw(st.none() | times),
            limit=draw(st.none() | numbers),
            offset=draw(st.none() | numbers),
            order=draw(st.none() | st.sampled_from(["asc", "desc", "up", ""])),
        )
        return "GET", f"/api/v1/machines/{m}/scores", {"params": params}, None
    if kind == "rule":
        body = draw(
            st.one_of(
                st.fixed_dictionaries({"k": numbers, "n": numbers, "m": numbers}),
                st.dictionaries(st.text(max_size=5), numbers, max_size=4),
                st.lists(numbers, max_size=3),
                st.none(),
                st.text(max_size=20),
            )
        )
        return (
            "PUT",
            f"/api/v1/machines/{m}/alert-rule",
            {"content": json.dumps(body), "headers": {"content-type": "application/json"}},
            None,
        )
    if kind == "alerts":
        params = query(
            state=draw(st.none() | st.sampled_from(["open", "closed", "all", "x"])),
            machine=draw(st.none() | machines),
            limit=draw(st.none() | numbers),
            offset=draw(st.none() | numbers),
        )
        return "GET", "/api/v1/alerts", {"params": params}, None
    if kind == "ack":
        return "POST", f"/api/v1/alerts/{i}/ack", {}, None
    if kind in ("clip", "audio"):
        return "GET", f"/api/v1/clips/{i}" + ("/audio" if kind == "audio" else ""), {}, None
    if kind == "silence":
        body = draw(
            st.one_of(
                st.fixed_dictionaries({"start": times, "end": times}, optional={"reason": st.one_of(st.text(max_size=250), numbers)}),
                st.dictionaries(st.text(max_size=6), times | numbers, max_size=3),
                st.none(),
                st.text(max_size=20),
            )
        )
        return (
            "POST",
            f"/api/v1/machines/{m}/silences",
            {"content": json.dumps(body), "headers": {"content-type": "application/json"}},
            None,
        )
    if kind == "silences":
        return "GET", f"/api/v1/machines/{m}/silences", {}, None
    if kind == "unsilence":
        return "DELETE", f"/api/v1/machines/{m}/silences/{i}", {}, None
    if kind == "tokens":
        return "GET", "/api/v1/tokens", {}, "admin"
    if kind == "pages":
        page = draw(st.sampled_from(["/", "/alerts", "/alerts?state=open", "/alerts?state=bogus", "/openapi.json"]))
        return "GET", page, {"headers": {"accept": "text/html"}}, "read" if "bogus" not in page else None
    if kind == "page-machine":
        rng = draw(st.sampled_from(["1h", "24h", "7d", "30d", "all", "year", ""]))
        return "GET", f"/machines/{m}", {"params": {"range": rng}, "headers": {"accept": "text/html"}}, None
    if kind == "page-clip":
        tail = draw(st.sampled_from(["", "/spectrogram.png", "/why.png", "/audio"]))
        return "GET", f"/clips/{i}{tail}", {"headers": {"accept": "text/html"}}, None
    if kind == "form-ack":
        origin = draw(st.sampled_from(["", "http://testserver", "https://evil.example", "null"]))
        headers = {"accept": "text/html", **({"origin": origin} if origin else {})}
        return "POST", f"/alerts/{i}/ack", {"data": {"next": draw(st.text(max_size=40))}, "headers": headers}, None
    if kind == "login":
        if draw(st.booleans()):
            return "GET", "/login", {"params": query(next=draw(st.none() | st.text(max_size=40)))}, None
        return (
            "POST",
            "/login",
            {"data": {"token": draw(st.text(max_size=80)), "next": draw(st.text(max_size=40))}, "headers": {"accept": "text/html"}},
            None,
        )
    if kind == "logout":
        return "POST", "/logout", {}, None
    if kind == "health":
        return "GET", "/health", {}, None
    if kind == "docs":
        return "GET", "/docs", {}, "read"
    # absolute: httpx refuses a relative URL whose path starts with "//" (empty segments), a server must not
    path = "http://testserver/" + "/".join(seg(p) for p in draw(st.lists(st.text(max_size=12), max_size=4)))
    return draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])), path, {}, None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    req=requests(),
    which=st.sampled_from(["ingest", "read", "admin", "none", "wrong", "garbage", "cookie", "basic"]),
    junk=st.text(ASCII, max_size=40),
)
@example(req=("GET", "http://testserver////", {}, None), which="none", junk="")  # once failed in httpx, not here
def test_no_request_gets_a_500(service, req, which, junk):
    method, url, kw, needs = req
    kw = dict(kw)
    kw["headers"] = {**kw.get("headers", {}), **headers_for(which, service.tokens, junk)}
    r = service.request(method, url, **kw)
    assert r.status_code < 500, (method, url, kw.get("params"), r.status_code, r.text[:300])
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail, detail
    has = {"ingest": {"ingest"}, "read": {"read"}, "cookie": {"read"}, "admin": {"ingest", "read", "admin"}}.get(which, set())
    if needs is not None and needs in has:
        assert r.status_code == 200, (method, url, r.status_code, r.text[:300])


def test_well_formed_requests_with_the_right_token_succeed(service):
    """The counterpart: the property test's requests are not all refused for some dull reason."""
    auth = headers_for("admin", service.tokens, "")
    for left in service.get(f"/api/v1/machines/{MACHINE}/silences", headers=auth).json():  # the property test's
        assert service.delete(f"/api/v1/machines/{MACHINE}/silences/{left['id']}", headers=auth).status_code == 200
    ok = service.post(
        f"/api/v1/machines/{MACHINE}/clips",
        content=CLIPS[0],
        params={"recorded_at": "2031-05-01T12:00:00+02:00"},
        headers={**auth, "content-type": "audio/wav"},
    )
    assert ok.status_code == 200, ok.text
    clip = ok.json()["clip_id"]
    for k in range(3):  # K anomalous clips in a row open an alert, whatever the property test left
        bad = service.post(
            f"/api/v1/machines/{MACHINE}/clips",
            content=CLIPS[1],
            params={"recorded_at": f"2032-01-01T00:0{k}:00Z"},
            headers={**auth, "content-type": "audio/wav"},
        )
        assert bad.status_code == 200 and bad.json()["decision"] == "anomalous"
    for url in (
        f"/api/v1/machines/{MACHINE}",
        f"/api/v1/machines/{MACHINE}/scores?since=2031-05-01T00:00:00Z&order=asc",
        f"/api/v1/clips/{clip}",
        "/api/v1/alerts?state=open",
        f"/machines/{MACHINE}?range=all",
        f"/clips/{clip}",
    ):
        assert service.get(url, headers=auth).status_code == 200, url
    silence = service.post(
        f"/api/v1/machines/{MACHINE}/silences",
        headers=auth,
        json={"start": "2040-01-01T00:00:00Z", "end": "2040-01-02T00:00:00+02:00", "reason": "service"},
    )
    assert silence.status_code == 200, silence.text
    assert service.get(f"/api/v1/machines/{MACHINE}/silences", headers=auth).status_code == 200
    assert service.delete(f"/api/v1/machines/{MACHINE}/silences/{silence.json()['id']}", headers=auth).status_code == 200
    alert = service.get("/api/v1/alerts?state=open", headers=auth).json()["items"][0]["id"]
    assert service.post(f"/api/v1/alerts/{alert}/ack", headers=auth).status_code == 200
