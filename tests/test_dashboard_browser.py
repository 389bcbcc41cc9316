"""The dashboard in a real headless browser (Playwright driving Debian's chromium) against a live
server: sign in with the read token, the fleet page, a machine's chart points, an alert appearing
after anomalous clips, acknowledging it, a clip's spectrogram and "why did it alarm" figure;
signing out.

With ``HUMWATCH_SCREENSHOTS=DIR`` it also saves a screenshot of each page there."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import httpx
import pytest
from service_fixtures import clip_bytes, wait_js

MACHINE = "web-1"


def shot(page, name: str) -> None:
    folder = os.environ.get("HUMWATCH_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def send(server, kind: str, seed: int, minutes_ago: float) -> dict:
    when = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes_ago)).isoformat()
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.tokens['ingest']}"}, timeout=60) as c:
        r = c.post(
            f"/api/v1/machines/{MACHINE}/clips",
            content=clip_bytes(kind, seed),
            params={"recorded_at": when, "filename": f"{kind}-{seed}.wav"},
        )
    assert r.status_code == 200, r.text
    return r.json()


def test_dashboard_fleet_chart_alert_and_acknowledge(live_service, browser):
    server = live_service
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.tokens['admin']}"}) as c:
        assert c.put(f"/api/v1/machines/{MACHINE}/alert-rule", json={"k": 2, "n": 3, "m": 2}).status_code == 200
    normal = [send(server, "normal", 500 + k, minutes_ago=60 - 5 * k) for k in range(6)]
    threshold = normal[0]["threshold"]

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(20_000)
    # signing in: a wrong token is refused, the read token lets one in
    page.goto(server.url + "/")
    assert page.locator("#token").is_visible()
    page.fill("#token", "hw_wrong")
    page.click("button[type=submit]")
    assert "Unknown or revoked token" in page.inner_text("#login-problem")
    page.fill("#token", server.tokens["ingest"])
    page.click("button[type=submit]")
    assert "lacks the read scope" in page.inner_text("#login-problem")
    page.fill("#token", server.tokens["read"])
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")

    # the fleet: the machine, its state and last score
    row = page.locator(f'#fleet tr[data-machine="{MACHINE}"]')
    assert row.get_attribute("data-state") == "ok"
    assert float(row.locator(".last-score").inner_text()) == pytest.approx(normal[-1]["score"], rel=1e-3)
    shot(page, "1-fleet")

    # the machine page: one chart point per clip, the threshold line
    page.click(f'#fleet a[href="/machines/{MACHINE}"]')
    wait_js(page, "window.humwatchChart !== undefined")
    points = page.evaluate("() => window.humwatchChart.data[1].filter(v => v !== null).length")
    assert points == 6
    assert page.evaluate("() => window.humwatchChart.data[3][0]") == pytest.approx(threshold)
    assert page.evaluate("() => window.humwatchChart.data[2].filter(v => v !== null).length") == 0
    assert page.locator("#chart canvas").count() >= 1 and page.locator("#open-alert").count() == 0

    # anomalous clips: an alert opens; the chart and the pages show it
    bad = [send(server, "anomalous", 600 + k, minutes_ago=20 - 5 * k) for k in range(2)]
    assert bad[1]["alert_opened"]
    alert_id = bad[1]["alert"]["id"]
    page.reload()
    wait_js(page, "window.humwatchChart !== undefined")
    assert page.evaluate("() => window.humwatchChart.data[2].filter(v => v !== null).length") == 2
    assert page.evaluate("() => JSON.parse(document.getElementById('chart-data').textContent).spans.length") == 1
    assert f"Alert #{alert_id}" in page.inner_text("#open-alert")
    shot(page, "2-machine")
    page.goto(server.url + "/")
    assert page.locator(f'#fleet tr[data-machine="{MACHINE}"]').get_attribute("data-state") == "alarm"

    page.goto(server.url + "/alerts?state=open")
    alert_row = page.locator(f'#alerts tr[data-alert="{alert_id}"]')
    assert alert_row.get_attribute("data-acknowledged") == "no"
    shot(page, "4-alerts")
    alert_row.locator("button.ack").click()
    page.wait_for_url(server.url + "/alerts?state=open")
    alert_row = page.locator(f'#alerts tr[data-alert="{alert_id}"]')
    assert alert_row.get_attribute("data-acknowledged") == "yes"
    assert "acknowledged by t-read" in alert_row.inner_text()
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.tokens['read']}"}) as c:
        stored = [a for a in c.get("/api/v1/alerts").json()["items"] if a["id"] == alert_id][0]
    assert stored["acknowledged"] and stored["acked_by"] == "t-read"
    page.goto(server.url + "/")
    assert page.locator(f'#fleet tr[data-machine="{MACHINE}"]').get_attribute("data-state") == "acknowledged"

    # an anomalous clip's page: its spectrogram and the "why did it alarm" figure are drawn
    page.goto(server.url + f"/clips/{bad[0]['clip_id']}")
    for figure in ("spectrogram", "why"):
        wait_js(page, f"() => {{ const i = document.getElementById('{figure}'); return i && i.complete && i.naturalWidth > 300; }}")
    assert page.inner_text("#why-summary").startswith("ALARM: score")
    assert page.locator("audio").count() == 1
    shot(page, "3-clip")

    # signing out: the pages ask for a token again
    page.click("header .who button")
    page.wait_for_url(server.url + "/login")
    page.goto(server.url + "/alerts")
    assert page.locator("#token").is_visible()
    page.close()
