"""The machine page's chart in a real headless browser (Playwright driving Debian's chromium)
against a live server: the 24h button sets the x axis to the last 24 hours although the clips came
within a minute, pointing at a clip shows its score, time and file, dragging across the chart
zooms and puts the zoom in the URL (and loading that URL shows it again, with a reset link);
an alert's page lists its clips.

With ``HUMWATCH_SCREENSHOTS=DIR`` it saves screenshots of the machine and alert pages there."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import httpx
import pytest
from service_fixtures import clip_bytes, wait_js

MACHINE = "store-1"
"""The live server's machines are shared by the test modules; no other one sends this one clips there."""


def shot(page, name: str) -> None:
    folder = os.environ.get("HUMWATCH_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def send(server, kind: str, seed: int, when: dt.datetime) -> dict:
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.tokens['ingest']}"}, timeout=60) as c:
        r = c.post(
            f"/api/v1/machines/{MACHINE}/clips",
            content=clip_bytes(kind, seed),
            params={"recorded_at": when.isoformat(), "filename": f"{kind}-{seed}.wav"},
        )
    assert r.status_code == 200, r.text
    return r.json()


def sign_in(page, server) -> None:
    page.goto(server.url + "/login")
    page.fill("#token", server.tokens["read"])
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")


def axis(page) -> tuple[float, float]:
    return tuple(page.evaluate("() => [window.humwatchChart.scales.x.min, window.humwatchChart.scales.x.max]"))


def test_the_chart_range_hover_and_zoom(live_service, browser):
    server = live_service
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.tokens['admin']}"}) as c:
        assert c.put(f"/api/v1/machines/{MACHINE}/alert-rule", json={"k": 2, "n": 3, "m": 2}).status_code == 200
    now = dt.datetime.now(dt.timezone.utc)
    # twelve clips within two minutes (the old chart drew "24h" as a 0.1 s axis for such), two anomalous
    sent = [send(server, "anomalous" if k in (8, 9) else "normal", 900 + k, now - dt.timedelta(seconds=120 - 10 * k)) for k in range(12)]
    alert_id = next(c["alert"]["id"] for c in sent if c.get("alert_opened"))

    page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1.5, timezone_id="America/New_York")
    page.set_default_timeout(20_000)
    sign_in(page, server)
    page.goto(server.url + f"/machines/{MACHINE}?range=1h")
    wait_js(page, "window.humwatchChart !== undefined")
    lo, hi = axis(page)
    assert hi - lo == pytest.approx(3600, abs=5)

    # the 24h button: the axis spans 24 hours ending now, whatever the data
    page.click('nav.ranges a[data-range="24h"]')
    page.wait_for_url("**range=24h")
    wait_js(page, "window.humwatchChart !== undefined")
    lo, hi = axis(page)
    assert hi - lo == pytest.approx(24 * 3600, abs=5)
    assert hi == pytest.approx(dt.datetime.now(dt.timezone.utc).timestamp(), abs=120)
    shot(page, "2-machine-24h")

    # zoom to the last 5 minutes by the URL first (so the points are apart), then hover one
    page.goto(
        server.url
        + f"/machines/{MACHINE}?range=24h&from={(now - dt.timedelta(minutes=4)).isoformat()}&to={(now + dt.timedelta(minutes=1)).isoformat()}".replace(
            "+", "%2B"
        )
    )
    wait_js(page, "window.humwatchChart !== undefined")
    lo, hi = axis(page)
    assert hi - lo == pytest.approx(300, abs=1)
    assert page.locator("#reset-zoom").is_visible()
    box = page.locator("#chart .u-over").bounding_box()
    k = 9  # an anomalous one
    x, y = page.evaluate(
        f"() => {{ const u = window.humwatchChart; return [u.valToPos(u.data[0][{k}], 'x'), u.valToPos(u.data[1][{k}], 'y')]; }}"
    )
    page.mouse.move(box["x"] + x, box["y"] + y)
    tip = page.locator("#chart-tip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert f"anomalous-{900 + k}.wav" in text
    assert f"{sent[k]['score']:.4g}"[:4] in text and "anomalous" in text
    when = dt.datetime.fromisoformat(sent[k]["at"]).strftime("%Y-%m-%d %H:%M:%S")
    assert when in text and "UTC" in text
    assert tip.get_attribute("data-clip") == str(sent[k]["clip_id"])
    shot(page, "2-machine")

    # dragging across the chart zooms, and the URL keeps the zoom
    q0 = parse_qs(urlparse(page.url).query)
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    wait_js(page, f"() => new URLSearchParams(location.search).get('from') !== {q0['from'][0]!r}")
    zlo, zhi = axis(page)
    assert zhi - zlo == pytest.approx(0.4 * 300, rel=0.1)
    q = parse_qs(urlparse(page.url).query)
    assert dt.datetime.fromisoformat(q["from"][0].replace("Z", "+00:00")).timestamp() == pytest.approx(zlo, abs=1)
    assert dt.datetime.fromisoformat(q["to"][0].replace("Z", "+00:00")).timestamp() == pytest.approx(zhi, abs=1)
    # loading that URL shows that zoom; the reset link goes back to the range
    page.goto(page.url)
    wait_js(page, "window.humwatchChart !== undefined")
    assert axis(page) == pytest.approx((zlo, zhi), abs=1)
    page.click("#reset-zoom")
    page.wait_for_url("**range=24h")
    wait_js(page, "window.humwatchChart !== undefined")
    lo, hi = axis(page)
    assert hi - lo == pytest.approx(24 * 3600, abs=5)

    # local time: the footer's toggle asks for the browser's zone; the tooltip and the pages follow
    assert page.inner_text("#tz-label") == "UTC"  # the default, said on the page
    page.click("#tz-toggle")
    page.wait_for_url("**tz=America%2FNew_York")
    wait_js(page, "window.humwatchChart !== undefined")
    assert page.inner_text("#tz-label") == "America/New_York" and page.locator("#tz-toggle").inner_text() == "show UTC"
    assert page.evaluate("() => JSON.parse(document.getElementById('chart-data').textContent).tz") == "America/New_York"
    latest = dt.datetime.fromisoformat(sent[-1]["at"]).astimezone(ZoneInfo("America/New_York"))
    assert latest.strftime("%Y-%m-%d %H:%M:%S E") in page.inner_text("#latest")  # EST or EDT
    page.goto(server.url + f"/machines/{MACHINE}?range=1h")  # the cookie keeps the choice
    assert page.inner_text("#tz-label") == "America/New_York"

    # the alert's page: its clips
    page.goto(server.url + "/alerts?tz=UTC")
    page.click(f'#alerts a[href="/alerts/{alert_id}"]')
    page.wait_for_url(f"**/alerts/{alert_id}")
    wait_js(page, "window.humwatchChart !== undefined")
    listed = page.locator("#alert-clips tr[data-clip]").evaluate_all("rows => rows.map(r => Number(r.dataset.clip))")
    assert sent[8]["clip_id"] in listed and sent[9]["clip_id"] in listed and sent[0]["clip_id"] not in listed
    shot(page, "6-alert")
    page.close()
