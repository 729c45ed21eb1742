"""The live site page in a real headless Chromium (Debian's chromium + chromedriver, nothing
downloaded): the loopback stack runs, a schedule is published, and the page shows the
assets, follows a state change without a reload, draws the plot, and shows what the bus
says as text only (a forged error with markup in it stays text).

Skipped when chromium is missing, unless QUBIT_REQUIRE_BROWSER=1 (CI). With
QUBIT_SCREENSHOTS=1 the screenshot goes to docs/images/site-page.png (committed).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from coordinator.base import CommandStatus, CommandType
from coordinator.contract.codec import encode_event, encode_schedule
from coordinator.contract.events import CommandFailed
from coordinator.contract.messages import EmergencyStop, ServiceStatus, decode
from coordinator.contract.topics import EMERGENCY_STOP, SCHEDULES_IN, event_topic, service_topic
from coordinator.events import Event, EventType
from tools.broker import free_port, wait_for_port
from tools.launcher import CORE

pytestmark = pytest.mark.timeout(120)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
ASSET_MAP = {"ev_007": "ast_bay_1", "ev_012": "ast_bay_2", "battery": "ast_batt_001"}
FORGED = '<img src=x onerror="window.pwned=1">'


def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if not missing:
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            missing = ["selenium (pip install -e '.[test]')"]
    if missing:
        why = f"no headless browser: {', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("QUBIT_REQUIRE_BROWSER") == "1":
            pytest.fail(why + "; QUBIT_REQUIRE_BROWSER=1 requires it")
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1300"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def schedule(start: datetime) -> bytes:
    idx = pd.date_range(start, periods=4, freq=timedelta(seconds=2))
    frame = pd.DataFrame({"ev_007_kw": [22, 11, 11, 0], "ev_012_kw": [11, 22, 7, 0],
                          "battery_charge_kw": [30, 0, 20, 0], "battery_discharge_kw": [0, 25, 0, 0]},
                         index=idx, dtype=float)
    return encode_schedule(frame, asset_map=ASSET_MAP, site_id="sit_demo_depot", schedule_id="sch_page_1")


def forged_failure() -> bytes:
    now = datetime.now(UTC)
    return encode_event(Event(EventType.COMMAND_FAILED, CommandFailed(
        command_id="cmd_forged_1", asset_id="ast_bay_1", command_type=CommandType.SET_CHARGE_RATE,
        parameters={"power_kw": 1.0}, scheduled_at=now, status=CommandStatus.FAILED, attempts=1,
        schedule_id=None, error=FORGED)))


@pytest.fixture
def driver():
    d = browser()
    yield d
    d.quit()


def test_the_page_shows_the_site_live_and_draws_the_plot(stack, plain, driver, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    stack.env["QUBIT_PAGE_PORT"] = str(port)
    stack.start_all((*CORE, "site-page"))
    assert wait_for_port("127.0.0.1", port, 10), stack.log("site-page")
    driver.get(f"http://127.0.0.1:{port}/")
    wait = WebDriverWait(driver, 20)

    def cells(selector: str) -> list[str]:
        return driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", selector)

    def state_of(asset: str) -> str:
        return driver.execute_script(
            "const c = document.querySelector(`#assets td[data-asset='${arguments[0]}']`); "
            "return c ? c.textContent : null", asset)

    wait.until(lambda d: set(cells("#assets tbody td:first-child")) == set(ASSET_MAP.values()))
    wait.until(lambda d: state_of("ast_batt_001") == "IDLE")  # the tracker's first state, retained
    wait.until(lambda d: set(CORE) <= set(cells("#services td:first-child")))
    loaded_at = driver.execute_script("return window.qubitPage.loadedAt")

    plain().publish(SCHEDULES_IN, schedule(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)))
    wait.until(lambda d: state_of("ast_batt_001") in ("CHARGING", "DISCHARGING"))  # live, no reload
    wait.until(lambda d: "sch_page_1" in driver.find_element("id", "schedule").text)
    wait.until(lambda d: d.execute_script(
        "return ['planned', 'applied'].every(s => document.querySelectorAll(`#plots path[data-series=${s}]`)"
        ".length === 3)"))
    wait.until(lambda d: "COMPLETED" in cells("#commands td:nth-child(6)"))
    if os.environ.get("QUBIT_SCREENSHOTS") == "1":  # for docs/: the whole schedule played out
        wait.until(lambda d: cells("#commands td:nth-child(6)").count("COMPLETED") >= 10)
        driver.save_screenshot(str(REPO / "docs" / "images" / "site-page.png"))
    assert driver.execute_script("return window.qubitPage.loadedAt") == loaded_at
    assert driver.execute_script("return window.qubitPage.snapshots") > 1

    # The same setpoints as Prometheus gauges, from the planner's /metrics.
    planner = decode(ServiceStatus, plain(service_topic("planner")).inbox.get(timeout=5).payload)  # retained
    with urllib.request.urlopen(f"http://127.0.0.1:{planner.metrics_port}/metrics") as scrape:
        assert 'qubit_asset_setpoint_kw{asset_id="ast_bay_1",service="planner"}' in scrape.read().decode()

    # The bus is untrusted: markup in a reason is shown as text, never run or rendered.
    plain().publish(event_topic("COMMAND_FAILED", "ast_bay_1"), forged_failure())
    wait.until(lambda d: FORGED in cells("#commands td:last-child"))
    assert driver.execute_script("return window.pwned") is None
    assert driver.find_elements("css selector", "#commands img") == []

    # The emergency stop, as the operator orders it: the header says so, with the reason.
    order = EmergencyStop(active=True, reason="page test: <b>stop</b>", issued_by="operator", at=datetime.now(UTC))
    plain().publish(EMERGENCY_STOP, order.encode(), retain=True)
    wait.until(lambda d: "EMERGENCY STOP — page test: <b>stop</b> by operator" in d.find_element("id", "estop").text)
    assert driver.execute_script("return window.qubitPage.loadedAt") == loaded_at

    shots = REPO / "docs" / "images" if os.environ.get("QUBIT_SCREENSHOTS") == "1" else tmp_path
    assert driver.find_element("tag name", "header").screenshot(str(shots / "site-page-emergency-stop.png"))


def test_page_serves_only_its_own_files_with_a_strict_policy(stack, tmp_path):
    port = free_port()
    stack.env["QUBIT_PAGE_PORT"] = str(port)
    stack.start("site-page")
    assert wait_for_port("127.0.0.1", port, 10), stack.log("site-page")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as page:
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for path in ("/static/..%2F..%2Fserver.py", "/static/index.html.bak", "/etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}")
        assert refused.value.code == 404
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/snapshot", method="POST", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 405  # read-only
