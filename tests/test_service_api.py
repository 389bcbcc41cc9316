"""The JSON API against a live `humwatch serve` on 127.0.0.1: every endpoint's token and scope
checks, ingest (raw, multipart, FLAC, idempotent), bad uploads (always a 4xx with one line, never a
500), scores paging, alerts and acknowledging, the OpenAPI page, and the loopback-only bind."""

from __future__ import annotations

import io
import re

import httpx
import numpy as np
import pytest
import soundfile as sf
from service_fixtures import clip_bytes, iso

READ, INGEST, ADMIN = "read", "ingest", "admin"


def client(server, scope: str | None = None, token: str | None = None) -> httpx.Client:
    tok = token or (server.tokens[scope] if scope else None)
    return httpx.Client(base_url=server.url, timeout=60, headers={"authorization": f"Bearer {tok}"} if tok else {})


def post_clip(c: httpx.Client, machine: str, data: bytes, **params) -> httpx.Response:
    return c.post(f"/api/v1/machines/{machine}/clips", content=data, params=params, headers={"content-type": "audio/wav"})


# ---------------------------------------------------------------------------------------- auth


def _routes():
    """(method, path, scope) of every route of the API and the dashboard, from the routers
    themselves: a route added later is checked without touching this test."""
    from humwatch.service import api, dashboard

    out = []
    for r in list(api.router.routes) + list(dashboard.router.routes):
        for method in sorted(r.methods - {"HEAD"}):
            scope = READ
            if r.path.endswith(("/clips", "/heartbeat")) and method == "POST":
                scope = INGEST
            elif r.path.endswith(("/alert-rule", "/tokens")):
                scope = ADMIN
            if r.path in ("/health", "/login", "/logout"):
                scope = None
            out.append((method, r.path, scope))
    return out + [("GET", "/openapi.json", READ)]


def _fill(path: str) -> str:
    return path.replace("{machine}", "api-1").replace("{clip_id}", "1").replace("{alert_id}", "1")


def test_every_endpoint_refuses_no_token_401_and_a_token_without_its_scope_403(live_service):
    routes = _routes()
    assert len(routes) >= 20 and ("POST", "/api/v1/machines/{machine}/clips", INGEST) in routes
    public = {p for _, p, s in routes if s is None}
    assert public == {"/health", "/login", "/logout"}
    other = {READ: INGEST, INGEST: READ, ADMIN: READ}
    for method, path, scope in routes:
        if scope is None:
            continue
        url = _fill(path)
        for headers in (
            {},
            {"authorization": "Bearer hw_not-a-token"},
            {"authorization": "Basic dXNlcjpwYXNz"},
            {"cookie": "humwatch_token=hw_wrong"},
        ):
            r = httpx.request(method, live_service.url + url, headers=headers, timeout=30)
            assert r.status_code == 401, (method, url, headers, r.status_code, r.text[:200])
        with client(live_service, other[scope]) as c:
            r = c.request(method, url)
            assert r.status_code == 403, (method, url, r.status_code, r.text[:200])
            assert "lacks the" in r.json()["detail"]
    # and the scope itself gets through (404 or 422 here at most: never 401/403)
    with client(live_service, ADMIN) as c:
        for method, path, scope in routes:
            if scope is not None:
                assert c.request(method, _fill(path)).status_code not in (401, 403), (method, path)


def test_html_pages_answer_401_with_the_login_form(live_service):
    r = httpx.get(live_service.url + "/machines/api-1", headers={"accept": "text/html"})
    assert r.status_code == 401 and 'name="token"' in r.text and 'value="/machines/api-1"' in r.text


def test_a_revoked_token_stops_working_at_once(live_service):
    from service_fixtures import make_token

    from humwatch.service.auth import revoke_token
    from humwatch.service.store import Store, default_db_url

    db = default_db_url(live_service.monitors)
    tok = make_token(db, "short-lived", "read")
    with client(live_service, token=tok) as c:
        assert c.get("/api/v1/machines").status_code == 200
        store = Store(db)
        revoke_token(store, "short-lived")
        store.close()
        assert c.get("/api/v1/machines").status_code == 401


# -------------------------------------------------------------------------------------- ingest


def test_ingest_raw_multipart_and_flac_and_the_same_clip_is_stored_once(live_service):
    wav = clip_bytes("normal", 11)
    with client(live_service, INGEST) as c:
        first = post_clip(c, "api-1", wav, recorded_at=iso(0), filename="a.wav")
        assert first.status_code == 200, first.text
        doc = first.json()
        assert doc["decision"] == "normal" and doc["score"] < doc["threshold"] and doc["duplicate"] is False
        assert doc["recorded_at"] == iso(0) and doc["filename"] == "a.wav" and doc["seconds"] == pytest.approx(2.0)
        again = post_clip(c, "api-1", wav, recorded_at="2030-01-01T00:00:00Z").json()  # same instant, other spelling
        assert again["duplicate"] is True and again["clip_id"] == doc["clip_id"]
        other_time = post_clip(c, "api-1", wav, recorded_at=iso(1)).json()
        assert other_time["duplicate"] is False and other_time["clip_id"] != doc["clip_id"]
        multi = c.post(
            "/api/v1/machines/api-1/clips",
            files={"file": ("m.wav", clip_bytes("anomalous", 12), "audio/wav")},
            data={"recorded_at": iso(2)},
        )
        assert multi.status_code == 200 and multi.json()["decision"] == "anomalous" and multi.json()["filename"] == "m.wav"
        flac = post_clip(c, "api-1", clip_bytes("normal", 13, fmt="FLAC"), recorded_at=iso(3))
        assert flac.status_code == 200 and flac.json()["decision"] == "normal"
        plain = c.post("/api/v1/machines/api-1/clips", content=clip_bytes("normal", 14))  # no type, no time
        assert plain.status_code == 200 and plain.json()["recorded_at"] is None
    with client(live_service, READ) as c:
        stored = c.get(f"/api/v1/clips/{doc['clip_id']}").json()
        assert stored["score"] == doc["score"] and stored["machine"] == "api-1"


def _nan() -> bytes:
    buf = io.BytesIO()
    y = np.full(32000, np.nan, dtype=np.float32)
    sf.write(buf, y, 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


BAD = {
    "empty": (b"", 422, "empty upload"),
    "random bytes": (bytes(range(256)) * 8, 415, "not WAV or FLAC"),
    "truncated WAV": (clip_bytes("normal", 1)[:3000], 422, "truncated"),
    "header only": (clip_bytes("normal", 1)[:44], 422, ""),
    "NaN samples": (_nan(), 422, "NaN"),
    "too long": (clip_bytes("normal", 1, seconds=31.0), 422, "longer than the 30 s limit"),
    "too large": (b"RIFF" + b"\0" * (3 * 10**6), 413, "limit"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_uploads_get_a_4xx_with_one_line_never_a_500(live_service, case):
    data, status, words = BAD[case]
    with client(live_service, INGEST) as c:
        r = c.post("/api/v1/machines/api-1/clips", content=data, params={"filename": "field.wav"})
    assert r.status_code == status, (case, r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert "\n" not in detail and words in detail and ".upload-" not in detail and "/tmp" not in detail
    if status == 422 and data:
        assert detail.startswith("field.wav")


def test_other_refusals_are_one_line_4xx_too(live_service):
    def chunks():
        for _ in range(40):
            yield b"\0" * 100_000

    with client(live_service, INGEST) as c:
        cases = [
            (post_clip(c, "no-such-machine", clip_bytes()), 404, "no monitor for machine"),
            (post_clip(c, "api-1", clip_bytes(), recorded_at="yesterday"), 422, "not an ISO 8601 time"),
            (c.post("/api/v1/machines/api-1/clips", files={"other": ("x", b"1")}), 422, "'file' part"),
            (c.post("/api/v1/machines/api-1/clips", content=chunks()), 413, "limit"),  # chunked, no length
            (post_clip(c, "bad name!", clip_bytes()), 422, "machine"),
        ]
    for r, status, words in cases:
        assert r.status_code == status and words in r.json()["detail"], (r.status_code, r.text[:200])
    log = live_service.log(tail=None)
    assert "Traceback" not in log and " 500 " not in log


# ------------------------------------------------------------------------------ reading, alerts


def test_scores_come_in_pages_and_time_ranges(live_service):
    with client(live_service, INGEST) as c:
        ids = [post_clip(c, "api-2", clip_bytes("normal", 100 + k), recorded_at=iso(100 + k)).json()["clip_id"] for k in range(5)]
    with client(live_service, READ) as c:
        page = c.get("/api/v1/machines/api-2/scores", params={"limit": 2, "since": iso(100)}).json()
        assert [i["clip_id"] for i in page["items"]] == ids[::-1][:2] and page["next_offset"] == 2
        last = c.get("/api/v1/machines/api-2/scores", params={"limit": 2, "offset": 4, "since": iso(100)}).json()
        assert [i["clip_id"] for i in last["items"]] == [ids[0]] and last["next_offset"] is None
        ranged = c.get("/api/v1/machines/api-2/scores", params={"since": iso(101), "until": iso(103), "order": "asc"}).json()
        assert [i["clip_id"] for i in ranged["items"]] == ids[1:4]
        for params, words in (({"since": "soon"}, "since"), ({"limit": 0}, "limit"), ({"order": "up"}, "order")):
            r = c.get("/api/v1/machines/api-2/scores", params=params)
            assert r.status_code == 422 and words in r.json()["detail"] and "\n" not in r.json()["detail"]
        assert c.get("/api/v1/machines/nobody/scores").status_code == 404


def test_k_of_n_anomalous_clips_open_an_alert_that_can_be_acknowledged_and_closes(live_service):
    with client(live_service, READ) as c:
        assert c.put("/api/v1/machines/api-2/alert-rule", json={"k": 2, "n": 3, "m": 2}).status_code == 403
    with client(live_service, ADMIN) as c:
        assert c.put("/api/v1/machines/api-2/alert-rule", json={"k": 4, "n": 3, "m": 1}).status_code == 422
        r = c.put("/api/v1/machines/api-2/alert-rule", json={"k": 2, "n": 3, "m": 2})
        assert r.status_code == 200 and r.json()["alert_rule"] == "2/3/2"
    with client(live_service, INGEST) as c:
        a1 = post_clip(c, "api-2", clip_bytes("anomalous", 201), recorded_at=iso(200)).json()
        a2 = post_clip(c, "api-2", clip_bytes("anomalous", 202), recorded_at=iso(201)).json()
    assert a1["decision"] == a2["decision"] == "anomalous" and not a1["alert_opened"] and a2["alert_opened"]
    alert_id = a2["alert"]["id"]
    with client(live_service, READ) as c:
        machine = c.get("/api/v1/machines/api-2").json()
        assert machine["state"] == "alarm" and machine["open_alert"]["id"] == alert_id
        listed = c.get("/api/v1/alerts", params={"state": "open", "machine": "api-2"}).json()["items"]
        assert [a["id"] for a in listed] == [alert_id] and listed[0]["first_clip_id"] == a1["clip_id"]
        acked = c.post(f"/api/v1/alerts/{alert_id}/ack")
        assert acked.status_code == 200 and acked.json()["acknowledged"] and acked.json()["acked_by"] == "t-read"
        assert c.get("/api/v1/machines/api-2").json()["state"] == "acknowledged"
        assert c.post("/api/v1/alerts/99999/ack").status_code == 404
    with client(live_service, INGEST) as c:
        for k in range(2):
            post_clip(c, "api-2", clip_bytes("normal", 210 + k), recorded_at=iso(210 + k))
    with client(live_service, READ) as c:
        closed = c.get("/api/v1/alerts", params={"state": "closed", "machine": "api-2"}).json()["items"]
        assert alert_id in [a["id"] for a in closed]
        assert c.get("/api/v1/machines/api-2").json()["state"] == "ok"
        fleet = {m["machine"]: m for m in c.get("/api/v1/machines").json()}
        assert {"api-1", "api-2", "web-1"} <= set(fleet) and fleet["api-2"]["monitor"]["method"] == "autoencoder"


def test_kept_audio_of_an_anomalous_clip_can_be_fetched(live_service):
    data = clip_bytes("anomalous", 301)
    with client(live_service, INGEST) as c:
        doc = post_clip(c, "api-1", data, recorded_at=iso(300)).json()
        normal = post_clip(c, "api-1", clip_bytes("normal", 302), recorded_at=iso(301)).json()
    with client(live_service, READ) as c:
        assert doc["audio_kept"] and c.get(f"/api/v1/clips/{doc['clip_id']}/audio").content == data
        r = c.get(f"/api/v1/clips/{normal['clip_id']}/audio")
        assert r.status_code == 404 and "not kept" in r.json()["detail"]


def test_health_openapi_and_docs_are_served_locally(live_service):
    assert httpx.get(live_service.url + "/health").json() == {"status": "ok"}
    with client(live_service, READ) as c:
        spec = c.get("/openapi.json").json()
        assert "/api/v1/machines/{machine}/clips" in spec["paths"] and "/login" not in spec["paths"]
        body = spec["paths"]["/api/v1/machines/{machine}/clips"]["post"]["requestBody"]["content"]
        assert {"audio/wav", "audio/flac", "multipart/form-data"} <= set(body)
        docs = c.get("/docs").text
        assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs and "cdn." not in docs
    for path in ("/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/vendor/uplot/uPlot.iife.min.js"):
        r = httpx.get(live_service.url + path)
        assert r.status_code == 200 and len(r.content) > 10_000


def test_the_server_listens_on_the_loopback_address_only(live_service):
    assert f"Uvicorn running on http://127.0.0.1:{live_service.port}" in live_service.log(tail=None)
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) == live_service.port:  # 0A: LISTEN
                listening.append(addr)
    assert listening == ["0100007F"], listening  # 127.0.0.1, and no other address


def test_serve_refuses_bad_settings_with_one_line(tmp_path, service_monitors, capsys):
    from humwatch.cli import main

    for args, words in (
        (["serve", str(tmp_path / "none")], "no such folder of monitors"),
        (["serve", str(tmp_path)], "no monitors in this folder"),
        (["serve", str(service_monitors), "--alert-rule", "5/3/1"], "cannot be more than N"),
        (["serve", str(service_monitors), "--webhook", "ftp://x"], "http:// or https://"),
        (["serve", str(service_monitors), "--max-upload-mb", "0"], "max_upload_mb"),
    ):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and re.match(r"error: .+\n$", err) and words in err, (args, err)
