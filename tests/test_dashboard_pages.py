"""The dashboard's chart window, alert pages, time zones and CSV download, in process (FastAPI's
TestClient): an alert's page lists its clips, the CSV holds a range's scores and needs the read
scope, ``?tz=`` changes the times the pages show (and is kept in a cookie), a range sets the axis
bounds the page hands the chart, a zoom in the URL comes back as the chart's window, and bad
parameters are 4xx, never a 500."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import shutil

import pytest
from service_fixtures import clip_bytes

MACHINE = "pages-1"
T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
HTML = {"accept": "text/html"}


@pytest.fixture(scope="module")
def svc(service_monitors, tmp_path_factory):
    from fastapi.testclient import TestClient
    from service_fixtures import make_token

    from humwatch.service.app import Service, create_app
    from humwatch.service.config import ServiceSettings
    from humwatch.service.store import default_db_url

    monitors = tmp_path_factory.mktemp("pages") / "monitors"
    shutil.copytree(service_monitors / "api-1", monitors / MACHINE)
    tokens = {scope: make_token(default_db_url(monitors), f"pg-{scope}", scope) for scope in ("ingest", "read", "admin")}
    cfg = ServiceSettings(monitors=str(monitors), device="cpu", max_upload_mb=2).validate()
    service = Service.open(cfg)
    client = TestClient(create_app(cfg, service), raise_server_exceptions=False, follow_redirects=False)
    client.tokens = tokens
    auth = {"authorization": f"Bearer {tokens['admin']}"}
    assert client.put(f"/api/v1/machines/{MACHINE}/alert-rule", json={"k": 2, "n": 3, "m": 2}, headers=auth).status_code == 200
    # 3 normal clips, 2 anomalous (an alert opens), 2 normal (it closes), a minute apart, then one more normal
    kinds = ["normal"] * 3 + ["anomalous"] * 2 + ["normal"] * 3
    client.clips = []
    for k, kind in enumerate(kinds):
        r = client.post(
            f"/api/v1/machines/{MACHINE}/clips",
            content=clip_bytes(kind, 700 + k),
            params={"recorded_at": (T0 + dt.timedelta(minutes=k)).isoformat(), "filename": f"{kind}-{k}.wav"},
            headers={"authorization": f"Bearer {tokens['ingest']}"},
        )
        assert r.status_code == 200, r.text
        client.clips.append(r.json())
    client.alert = next(c["alert"] for c in client.clips if c.get("alert_opened"))
    yield client
    client.close()
    service.close()


def get(svc, path, scope="read", **kw):
    headers = {**HTML, **kw.pop("headers", {})}
    if scope:
        headers["authorization"] = f"Bearer {svc.tokens[scope]}"
    return svc.get(path, headers=headers, **kw)


def chart_of(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', html, re.S).group(1))


def test_an_alert_page_lists_the_clips_between_its_start_and_end(svc):
    alert_id = svc.alert["id"]
    r = get(svc, f"/alerts/{alert_id}")
    assert r.status_code == 200, r.text
    listed = [int(x) for x in re.findall(r'<tr data-clip="(\d+)">', r.text)]
    # the alert starts at the first anomalous clip (index 3) and closes on the second normal one after (index 6)
    assert listed == [svc.clips[k]["clip_id"] for k in (3, 4, 5, 6)]
    table = r.text[r.text.index('id="alert-clips"') :]
    assert "anomalous-3.wav" in table and "normal-6.wav" in table and "normal-2.wav" not in table
    chart = chart_of(r.text)
    assert chart["x_min"] < (T0 + dt.timedelta(minutes=3)).timestamp() and chart["x_max"] > (T0 + dt.timedelta(minutes=6)).timestamp()
    assert chart["spans"][0][2] == alert_id
    # the alerts list and the machine page link to it
    assert f'href="/alerts/{alert_id}"' in get(svc, "/alerts").text
    assert f'href="/alerts/{alert_id}"' in get(svc, f"/machines/{MACHINE}?range=all").text


def test_an_unknown_alert_is_a_404_page(svc):
    r = get(svc, "/alerts/987654")
    assert r.status_code == 404 and "no alert 987654" in r.text and "<html" in r.text
    assert get(svc, "/alerts/not-a-number").status_code == 422
    assert get(svc, f"/alerts/{2**64}").status_code == 422 and get(svc, f"/alerts/{2**63 - 1}").status_code == 404


def test_an_alert_at_the_calendars_end_has_its_page(svc):
    from humwatch.service.store import Alert, Machine

    store = svc.app.state.service.store
    with store.write() as s:
        m = s.query(Machine).filter_by(name=MACHINE).one()
        edge = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.timezone.utc)
        a = Alert(machine_id=m.id, state="closed", start_at=edge, end_at=edge, first_clip_id=0, last_clip_id=0, max_score=1.0)
        s.add(a)
        s.flush()
        alert_id = a.id
    r = get(svc, f"/alerts/{alert_id}")
    assert r.status_code == 200 and "9999-12-31 23:59:00 UTC" in r.text
    with store.write() as s:
        s.delete(s.get(Alert, alert_id))


def test_the_scores_of_a_range_download_as_csv(svc):
    since, until = (T0 + dt.timedelta(minutes=1)).isoformat(), (T0 + dt.timedelta(minutes=4)).isoformat()
    r = get(svc, f"/machines/{MACHINE}/scores.csv", params={"since": since, "until": until})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv") and "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(x["clip_id"]) for x in rows] == [svc.clips[k]["clip_id"] for k in (1, 2, 3, 4)]
    assert list(rows[0]) == ["clip_id", "recorded_at", "received_at", "file", "score", "threshold", "decision", "sensor", "warnings"]
    assert [x["file"] for x in rows] == ["normal-1.wav", "normal-2.wav", "anomalous-3.wav", "anomalous-4.wav"]
    assert [x["decision"] for x in rows] == ["normal", "normal", "anomalous", "anomalous"]
    assert float(rows[2]["score"]) == svc.clips[3]["score"] and float(rows[2]["threshold"]) == svc.clips[3]["threshold"]
    assert dt.datetime.fromisoformat(rows[0]["recorded_at"]) == T0 + dt.timedelta(minutes=1)
    everything = list(csv.DictReader(io.StringIO(get(svc, f"/machines/{MACHINE}/scores.csv").text)))
    assert len(everything) == len(svc.clips)
    # the machine page links to its window's CSV
    page = get(svc, f"/machines/{MACHINE}?range=all").text
    assert re.search(rf'href="/machines/{MACHINE}/scores.csv\?since=[^"]+until=[^"]+"', page)


def test_the_csv_needs_the_read_scope(svc):
    assert get(svc, f"/machines/{MACHINE}/scores.csv", scope=None, headers={"accept": "text/csv"}).status_code == 401
    assert get(svc, f"/machines/{MACHINE}/scores.csv", scope="ingest", headers={"accept": "text/csv"}).status_code == 403


def test_the_time_zone_toggle_changes_the_times_shown_and_is_kept_in_a_cookie(svc):
    path = f"/alerts/{svc.alert['id']}"
    utc = get(svc, path).text
    assert "2030-01-01 12:03:00 UTC" in utc and 'times in <span id="tz-label">UTC' in utc
    tokyo = get(svc, path, params={"tz": "Asia/Tokyo"})
    assert tokyo.status_code == 200
    assert "2030-01-01 21:03:00 JST" in tokyo.text and "12:03:00 UTC" not in tokyo.text
    assert chart_of(tokyo.text)["tz"] == "Asia/Tokyo"
    assert tokyo.cookies.get("humwatch_tz").strip('"') == "Asia/Tokyo"
    # the cookie keeps it for the next page, ?tz=UTC goes back
    again = get(svc, f"/machines/{MACHINE}?range=all", headers={"cookie": "humwatch_tz=Asia/Tokyo"})
    assert "JST" in again.text and chart_of(again.text)["tz"] == "Asia/Tokyo"
    quoted = get(svc, path, headers={"cookie": 'humwatch_tz="Asia/Tokyo"'})  # as the browser sends it back
    assert "21:03:00 JST" in quoted.text
    back = get(svc, path, params={"tz": "UTC"}, headers={"cookie": "humwatch_tz=Asia/Tokyo"})
    assert "2030-01-01 12:03:00 UTC" in back.text and back.cookies.get("humwatch_tz") == "UTC"
    # a bad cookie is ignored; a bad ?tz= is a 422
    assert "12:03:00 UTC" in get(svc, path, headers={"cookie": "humwatch_tz=Mars/Olympus"}).text
    assert get(svc, path, params={"tz": "Mars/Olympus"}).status_code == 422
    assert get(svc, path, params={"tz": "../../etc/passwd"}).status_code == 422


@pytest.mark.parametrize("rng,hours", [("1h", 1), ("24h", 24), ("7d", 24 * 7), ("30d", 24 * 30)])
def test_a_range_sets_the_axis_to_that_range_ending_now(svc, rng, hours):
    before = dt.datetime.now(dt.timezone.utc).timestamp()
    chart = chart_of(get(svc, f"/machines/{MACHINE}", params={"range": rng}).text)
    after = dt.datetime.now(dt.timezone.utc).timestamp()
    assert before - 1 <= chart["x_max"] <= after + 1
    assert chart["x_max"] - chart["x_min"] == pytest.approx(hours * 3600, abs=1)
    assert chart["live"] and not chart["zoomed"]


def test_all_spans_every_clip(svc):
    chart = chart_of(get(svc, f"/machines/{MACHINE}", params={"range": "all"}).text)
    # the clips are dated 2030, after now: the window starts an hour before now and ends at the last clip
    assert chart["x_min"] <= dt.datetime.now(dt.timezone.utc).timestamp() - 3599
    assert chart["x_max"] == (T0 + dt.timedelta(minutes=7)).timestamp()
    assert chart["clip"] == [c["clip_id"] for c in svc.clips]


def test_a_zoom_in_the_url_is_the_charts_window(svc):
    start, end = T0 + dt.timedelta(minutes=2), T0 + dt.timedelta(minutes=5)
    for fmt in (lambda t: t.isoformat(), lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"), lambda t: str(int(t.timestamp()))):
        r = get(svc, f"/machines/{MACHINE}", params={"range": "24h", "from": fmt(start), "to": fmt(end)})
        assert r.status_code == 200, r.text
        chart = chart_of(r.text)
        assert (chart["x_min"], chart["x_max"]) == (start.timestamp(), end.timestamp())
        assert chart["zoomed"] and not chart["live"]
        assert chart["clip"] == [svc.clips[k]["clip_id"] for k in (2, 3, 4, 5)]
        assert chart["file"] == ["normal-2.wav", "anomalous-3.wav", "anomalous-4.wav", "normal-5.wav"]
        # the reset link shows, and leads back to the range
        assert re.search(r'<a href="\?range=24h" id="reset-zoom"\s*>', r.text)
    # a "+" typed into the URL (a space to the server) still means the zone's offset
    typed = get(svc, f"/machines/{MACHINE}?from=2030-01-01T13:02:00+01:00&to=2030-01-01T12:05:00+00:00")
    assert (chart_of(typed.text)["x_min"], chart_of(typed.text)["x_max"]) == (start.timestamp(), end.timestamp())
    # the ends of the calendar, shown in a zone west or east of UTC
    for tz in ("America/New_York", "Pacific/Kiritimati"):
        edge = get(svc, f"/machines/{MACHINE}", params={"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z", "tz": tz})
        assert edge.status_code == 200 and len(chart_of(edge.text)["clip"]) == len(svc.clips)
    plain = get(svc, f"/machines/{MACHINE}", params={"range": "24h"}).text
    assert re.search(r'id="reset-zoom" hidden', plain)


@pytest.mark.parametrize(
    "path,params",
    [
        (f"/machines/{MACHINE}", {"range": "2h"}),
        (f"/machines/{MACHINE}", {"from": "yesterday", "to": "2030-01-01T00:00:00Z"}),
        (f"/machines/{MACHINE}", {"from": "2030-01-01T00:00:00Z"}),
        (f"/machines/{MACHINE}", {"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"}),
        (f"/machines/{MACHINE}", {"from": "1e400", "to": "2030-01-01T00:00:00Z"}),
        (f"/machines/{MACHINE}", {"from": "99999999999999999", "to": "999999999999999999"}),
        (f"/machines/{MACHINE}", {"from": "x" * 500, "to": "2030-01-01T00:00:00Z"}),
        (f"/machines/{MACHINE}", {"tz": "\x00"}),
        (f"/machines/{MACHINE}/scores.csv", {"since": "soon"}),
        (f"/machines/{MACHINE}/scores.csv", {"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}),
        ("/machines/nobody/scores.csv", {}),
        ("/machines/nobody", {"from": "2030-01-01T00:00:00Z", "to": "2030-01-02T00:00:00Z"}),
        ("/alerts/0", {"tz": "Nowhere/Else"}),
    ],
)
def test_bad_parameters_are_4xx_not_500(svc, path, params):
    r = get(svc, path, params=params)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])


def test_a_sensor_fault_is_in_the_csv_as_such_and_the_pages_still_draw(svc):
    """A silent clip is stored as a sensor fault (not scored): its CSV row says ``sensor`` with no
    score, and the machine page's chart and the CSV take it (runs last: it adds a clip)."""
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000 * 2, dtype=np.float32), 16000, format="WAV", subtype="PCM_16")
    when = T0 + dt.timedelta(days=1)
    r = svc.post(
        f"/api/v1/machines/{MACHINE}/clips",
        content=buf.getvalue(),
        params={"recorded_at": when.isoformat(), "filename": "dead-mic.wav"},
        headers={"authorization": f"Bearer {svc.tokens['ingest']}"},
    )
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(get(svc, f"/machines/{MACHINE}/scores.csv", params={"since": when.isoformat()}).text)))
    assert [(x["file"], x["decision"], x["score"]) for x in rows] == [("dead-mic.wav", "sensor", "")]
    assert get(svc, f"/machines/{MACHINE}?range=all").status_code == 200
