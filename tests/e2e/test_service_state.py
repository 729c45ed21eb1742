"""Every process's own state, end to end: retained statuses, the Last Will, health from what a
process sees, the site emergency stop and its reset, SIGTERM. The sample site (deploy/site.toml:
two OCPP chargers, one Modbus battery) with the simulators as real protocol peers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack
import pandas as pd
import pytest

from coordinator.contract.codec import encode_schedule
from coordinator.contract.messages import ChargerControl, ServiceStatus, decode
from coordinator.contract.topics import SCHEDULES_IN, SERVICES_ALL, simulator_topic
from tools.demo import CHARGERS, demo_site
from tools.launcher import REPO, ServiceProcesses

pytestmark = pytest.mark.timeout(180)

SERVICES = ("ingester", "planner", "tracker", "gateway-ocpp", "gateway-modbus")
ASSETS = ("ast_bay_1", "ast_bay_2", "ast_batt_001")


class SiteProcesses(ServiceProcesses):
    """The demo site's processes, with the path of its config for a process a test starts itself."""

    def __init__(self, host: str, port: int, site_config: Path, logs: Path) -> None:
        super().__init__(host, port, site_config, logs)
        self.site_path = site_config


@pytest.fixture
def site(broker, tmp_path):
    path, _ = demo_site(tmp_path)
    procs = SiteProcesses(broker.host, broker.port, path, tmp_path / "logs")
    procs.start_all(("battery-simulator", *SERVICES))
    yield procs
    procs.stop_all()


def statuses(plain, wait: float = 1.0) -> dict[str, ServiceStatus]:
    """The retained status of every process, as a late subscriber sees them."""
    out = {}
    for m in plain(SERVICES_ALL).drain(wait):
        s = decode(ServiceStatus, m.payload)
        out[s.service] = s
    return out


def wait_statuses(plain, predicate, timeout: float, what: str) -> dict[str, ServiceStatus]:
    deadline = time.monotonic() + timeout
    while True:
        seen = statuses(plain, 0.5)
        if predicate(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; saw " + "; ".join(
                f"{n}: {s.status} {s.lifecycle}/{s.operational}/{s.health} {s.reasons}"
                for n, s in sorted(seen.items())))


def layers(status: ServiceStatus) -> tuple[str, str, str]:
    return status.lifecycle, status.operational, status.health


def connect_chargers(site, events) -> None:
    site.start("chargepoint-simulator")
    # the battery linked before the test subscribed
    events.wait_for(lambda ev: ({e.payload["asset_id"] for e in ev if e.event_type.value == "DEVICE_LINK_UP"}
                                >= set(CHARGERS)),
                    timeout=20, what="both chargers linked")


def qubit(site, *args: str) -> subprocess.CompletedProcess:
    env = site.env_as("operator") | {"QUBIT_SITE_CONFIG": str(site.site_path)}  # estop: the operator's
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=30)


def test_states_are_retained_health_follows_device_links_and_metrics_are_served(site, events, plain):
    connect_chargers(site, events)
    seen = wait_statuses(plain,
                         lambda s: all(n in s and layers(s[n]) == ("Active", "Running", "Healthy") for n in SERVICES),
                         timeout=20, what="every service Active/Running/Healthy")
    assert all(seen[n].status == "online" and seen[n].pid == site.procs[n].pid for n in SERVICES)

    # One charger's link drops: the OCPP gateway is Warning, and says which; back when it reconnects.
    plain().publish(simulator_topic("ocpp"), ChargerControl(charge_point_id=CHARGERS["ast_bay_1"], action="disconnect",
                                                            value=3).encode())
    warned = wait_statuses(plain, lambda s: s["gateway-ocpp"].health == "Warning", timeout=10, what="gateway Warning")
    assert warned["gateway-ocpp"].reasons == ["device link down: ast_bay_1"]
    wait_statuses(plain, lambda s: s["gateway-ocpp"].health == "Healthy", timeout=20, what="gateway Healthy again")

    # Prometheus, on each process's own port.
    port = statuses(plain)["gateway-ocpp"].metrics_port
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'qubit_device_link_up{asset_id="ast_bay_1",service="gateway-ocpp"} 1.0' in body
    assert 'qubit_service_health_state{service="gateway-ocpp",state="Healthy"} 1.0' in body
    out = qubit(site, "services")
    assert out.returncode == 0 and "gateway-modbus" in out.stdout and "Running" in out.stdout


def test_last_will_and_sigterm(site, plain):
    watcher = plain(SERVICES_ALL)
    watcher.drain(0.5)
    site.kill("tracker")  # SIGKILL: no goodbye, the broker publishes the Last Will
    assert site.kill("planner", signal.SIGTERM) == 0
    final = {}
    for m in watcher.drain(3.0):
        s = decode(ServiceStatus, m.payload)
        final[s.service] = s
    assert (final["tracker"].status, final["tracker"].lifecycle, final["tracker"].health) == (
        "offline", "Offline", "Critical")
    assert "Last Will" in final["tracker"].reasons[0]
    assert (final["planner"].status, final["planner"].lifecycle, final["planner"].operational) == (
        "offline", "Offline", "Stopped")
    log = site.log("planner")
    assert "Handling event TASK_STOP: Running → Stopped" in log
    assert "Handling event SHUTDOWN: Active → ShuttingDown" in log


def test_sigterm_lets_an_in_flight_call_finish(site, events, plain):
    connect_chargers(site, events)
    plain().publish(simulator_topic("ocpp"), ChargerControl(charge_point_id=CHARGERS["ast_bay_1"], action="slow",
                                                            value=2).encode())
    start = datetime.now(UTC) + timedelta(seconds=0.5)
    plain().publish(SCHEDULES_IN, encode_schedule(pd.DataFrame({"ev_1_kw": [11.0]}, index=pd.DatetimeIndex([start])),
                                                  asset_map={"ev_1": "ast_bay_1"}, site_id="sit_demo_depot"))
    events.wait_for(lambda ev: any(e.event_type.value == "COMMAND_DISPATCHED" for e in ev), timeout=10, what="dispatch")
    site.wait_for_log("chargepoint-simulator", "(control: slow)")  # the call is on the wire; the charger answers in 2 s
    assert site.kill("gateway-ocpp", signal.SIGTERM) == 0
    events.wait_for(lambda ev: any(e.event_type.value == "COMMAND_COMPLETED" for e in ev), timeout=10,
                    what="the in-flight command completed, not lost")
    assert "unfinished" not in site.log("gateway-ocpp")


def test_emergency_stop_makes_every_asset_safe_holds_dispatching_until_the_reset(site, events, plain):
    connect_chargers(site, events)
    for cp_id in CHARGERS.values():
        plain().publish(simulator_topic("ocpp"), ChargerControl(charge_point_id=cp_id, action="plug_in").encode())
    start = datetime.now(UTC) + timedelta(seconds=0.5)
    charging = pd.DataFrame({"ev_1_kw": [11.0], "ev_2_kw": [7.0], "battery_charge_kw": [30.0]},
                            index=pd.DatetimeIndex([start]))
    asset_map = {"ev_1": "ast_bay_1", "ev_2": "ast_bay_2", "battery": "ast_batt_001"}
    plain().publish(SCHEDULES_IN, encode_schedule(charging, asset_map=asset_map, site_id="sit_demo_depot"))
    events.wait_for(lambda ev: len(events.of("COMMAND_COMPLETED")) >= 3, timeout=20, what="all three charging")

    out = qubit(site, "estop", "--reason", "fire alarm", "--by", "test")
    assert out.returncode == 0, out.stderr
    events.wait_for(lambda ev: {e.payload["asset_id"] for e in events.of("ASSET_SAFE_STATE")} >= set(ASSETS),
                    timeout=15, what="every asset in its safe state")
    safe = {e.payload["asset_id"]: e.payload for e in events.of("ASSET_SAFE_STATE")}
    assert all(p["safe"] for p in safe.values()), safe
    assert "session" in safe["ast_bay_1"]["detail"] and "stopped" in safe["ast_bay_1"]["detail"]
    assert safe["ast_batt_001"]["detail"].startswith("idle")
    assert events.of("EMERGENCY_STOP_ACTIVATED")[0].payload["reason"] == "fire alarm"
    stopped = wait_statuses(plain,
                            lambda s: all(layers(s[n]) == ("Active", "Stopped", "Critical") for n in SERVICES),
                            timeout=10, what="every service stopped")
    assert all(s.emergency_stop for s in stopped.values())

    # A schedule during the stop is planned but held, not dispatched.
    later = datetime.now(UTC) + timedelta(seconds=0.3)
    plain().publish(SCHEDULES_IN, encode_schedule(pd.DataFrame({"ev_1_kw": [5.0]}, index=pd.DatetimeIndex([later])),
                                                  asset_map={"ev_1": "ast_bay_1"}, site_id="sit_demo_depot",
                                                  schedule_id="sch_during_stop"))
    events.wait_for(lambda ev: any(e.payload.get("site_hold") for e in events.of("COMMAND_HELD")), timeout=10,
                    what="held by the site stop")
    dispatched = len(events.of("COMMAND_DISPATCHED"))
    events.collect(1.5)
    assert len(events.of("COMMAND_DISPATCHED")) == dispatched

    # The explicit reset: back to Active/Running, the held setpoint goes out.
    assert qubit(site, "estop", "--reset", "--reason", "all clear", "--by", "test").returncode == 0
    events.wait_for(lambda ev: any(e.payload.get("schedule_id") == "sch_during_stop"
                                   for e in events.of("COMMAND_COMPLETED")),
                    timeout=15, what="the held setpoint completed after the reset")
    assert events.of("EMERGENCY_STOP_RESET")[0].payload["issued_by"] == "test"
    wait_statuses(plain, lambda s: all(layers(s[n])[:2] == ("Active", "Running") and not s[n].emergency_stop
                                       for n in SERVICES), timeout=10, what="every service running again")


def test_a_malformed_stop_order_is_refused_and_changes_nothing(site, plain):
    plain().publish("qubit/control/emergency_stop", msgpack.packb({"active": "yes"}))
    site.wait_for_log("planner", "unreadable emergency stop order")
    assert all(not s.emergency_stop for s in statuses(plain).values())


def test_a_broker_outage_is_a_warning_while_it_lasts(site, broker, plain):
    if type(broker).__name__ != "LocalMosquitto":
        pytest.skip("stopping and starting on the same port needs the local broker")
    port = wait_statuses(plain, lambda s: "ingester" in s and s["ingester"].metrics_port, timeout=10,
                         what="the ingester's metrics port")["ingester"].metrics_port

    def health_gauge() -> str:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return next(line.split('state="')[1].split('"')[0] for line in body.splitlines()
                    if line.startswith("qubit_service_health_state{") and line.endswith(" 1.0"))

    assert health_gauge() == "Healthy"
    broker.stop()
    try:
        deadline = time.monotonic() + 20
        while health_gauge() != "Warning":  # paho notices the lost link at once or at its next keep-alive
            assert time.monotonic() < deadline, "health never went to Warning during the outage"
            time.sleep(0.2)
    finally:
        broker.start()
    wait_statuses(plain,
                  lambda s: s["ingester"].health == "Healthy" and s["ingester"].pid == site.procs["ingester"].pid,
                  timeout=30, what="ingester Healthy after the broker came back")
    assert health_gauge() == "Healthy"
    assert "health Healthy -> Warning (broker unreachable)" in site.log("ingester")
