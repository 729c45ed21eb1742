"""The OCPP gateway end to end, both OCPP versions: broker, ingester, planner, tracker,
gateway and the charge point simulator as separate processes, real OCPP-J over websockets."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgpack
import pandas as pd
import pytest

from coordinator.base import Command, CommandType
from coordinator.contract.codec import encode_schedule
from coordinator.contract.messages import CommandBatch, Outcome, ResultBatch, Telemetry, decode
from coordinator.contract.topics import (
    SCHEDULES_IN,
    commands_topic,
    results_topic,
    simulator_topic,
    telemetry_topic,
)
from coordinator.runtime.gateway_record import GatewayRecord
from tools.broker import free_port
from tools.launcher import ServiceProcesses

pytestmark = pytest.mark.timeout(180)

def start_simulator(stack, events, *, site_path=None, expect=("ast_bay_1", "ast_bay_2")):
    args = ("--site-config", str(site_path)) if site_path else ()
    stack.start("chargepoint-simulator", *args)
    events.wait_for(lambda ev: {e.payload["asset_id"] for e in of(events, "DEVICE_LINK_UP")} >= set(expect), timeout=20,
                    what="chargers connected")


def control(plain, cp_id, action, value=None):
    plain().publish(simulator_topic("ocpp"),
                    msgpack.packb({"charge_point_id": cp_id, "action": action, "value": value}))


def schedule(plain, values, asset="ast_bay_1", slot=timedelta(seconds=2), schedule_id="sch_ocpp"):
    idx = pd.date_range(datetime.now(UTC) + timedelta(seconds=0.3), periods=len(values), freq=slot)
    df = pd.DataFrame({"ev_1_kw": values}, index=idx, dtype=float)
    plain().publish(SCHEDULES_IN, encode_schedule(df, asset_map={"ev_1": asset}, site_id="sit_ocpp_test",
                                                  schedule_id=schedule_id))


def of(events, kind, asset=None):
    return [e for e in events.events
            if e.event_type.value == kind and (asset is None or e.payload.get("asset_id") == asset)]


def states(events, asset="ast_bay_1"):
    return [e.payload["to_state"] for e in of(events, "STATE_CHANGED", asset)]


def wait_state(events, state, asset="ast_bay_1", timeout=15):
    events.wait_for(lambda ev: states(events, asset)[-1:] == [state], timeout=timeout, what=f"{asset} {state}")


def test_happy_path_suspend_and_resume(ocpp_stack, events, plain):
    start_simulator(ocpp_stack, events)
    control(plain, "CP001", "plug_in")
    wait_state(events, "PREPARING")
    schedule(plain, [11.0, 0.0, 22.0])
    events.wait_for(lambda ev: len(of(events, "COMMAND_COMPLETED", "ast_bay_1")) >= 3, timeout=20, what="3 setpoints")
    wait_state(events, "CHARGING")
    assert "SUSPENDED" in states(events)  # the 0 kW slot suspends the session (SuspendedEVSE)
    control(plain, "CP001", "suspend")  # the vehicle pauses by itself
    wait_state(events, "SUSPENDED")
    control(plain, "CP001", "resume")
    wait_state(events, "CHARGING")
    assert of(events, "COMMAND_FAILED") == []


def test_early_departure_cancels_remaining_commands(ocpp_stack, events, plain):
    start_simulator(ocpp_stack, events)
    control(plain, "CP001", "plug_in")
    wait_state(events, "PREPARING")
    schedule(plain, [11.0, 11.0, 7.0, 0.0], slot=timedelta(seconds=3))
    events.wait_for(lambda ev: of(events, "COMMAND_COMPLETED", "ast_bay_1"), timeout=15, what="first setpoint")
    wait_state(events, "CHARGING")
    control(plain, "CP001", "unplug")
    events.wait_for(lambda ev: len(of(events, "COMMAND_CANCELLED", "ast_bay_1")) >= 2, timeout=15, what="cancellations")
    assert all("early departure" in e.payload["error"] for e in of(events, "COMMAND_CANCELLED", "ast_bay_1"))


def test_fault_holds_until_reset(ocpp_stack, events, plain):
    start_simulator(ocpp_stack, events)
    control(plain, "CP001", "fault")
    wait_state(events, "FAULTED")
    schedule(plain, [11.0])
    events.wait_for(lambda ev: of(events, "COMMAND_HELD", "ast_bay_1"), timeout=10, what="held")
    control(plain, "CP001", "reset")
    events.wait_for(lambda ev: of(events, "COMMAND_COMPLETED", "ast_bay_1"), timeout=15, what="released after reset")


def test_rejection_and_timeout(ocpp_stack, events, plain):
    start_simulator(ocpp_stack, events)
    control(plain, "CP001", "reject", 1)
    control(plain, "CP002", "drop", 1)
    plain().publish(SCHEDULES_IN, encode_schedule(
        pd.DataFrame({"ev_1_kw": [11.0], "ev_2_kw": [7.0]},
                     index=pd.date_range(datetime.now(UTC) + timedelta(seconds=0.5), periods=1, freq="2s")),
        asset_map={"ev_1": "ast_bay_1", "ev_2": "ast_bay_2"}, site_id="sit_ocpp_test"))
    events.wait_for(lambda ev: (of(events, "COMMAND_FAILED", "ast_bay_1")
                                and of(events, "COMMAND_TIMED_OUT", "ast_bay_2")),
                    timeout=20, what="rejection and timeout")
    assert "Rejected" in of(events, "COMMAND_FAILED", "ast_bay_1")[0].payload["error"]


def test_disconnect_and_reconnect(ocpp_stack, events, plain):
    start_simulator(ocpp_stack, events)
    control(plain, "CP001", "plug_in")
    schedule(plain, [11.0])
    events.wait_for(lambda ev: of(events, "COMMAND_COMPLETED", "ast_bay_1"), timeout=15, what="setpoint")
    control(plain, "CP001", "disconnect", 1)
    events.wait_for(lambda ev: of(events, "DEVICE_LINK_DOWN", "ast_bay_1"), timeout=10, what="link down")
    events.wait_for(lambda ev: len(of(events, "DEVICE_LINK_UP", "ast_bay_1")) >= 2, timeout=20, what="reconnected")
    events.wait_for(lambda ev: ("setpoint of" in ocpp_stack.log("gateway-ocpp")
                                and "restored" in ocpp_stack.log("gateway-ocpp")),
                    timeout=10, what="current setpoint sent again")
    schedule(plain, [7.0], schedule_id="sch_after")
    events.wait_for(lambda ev: len(of(events, "COMMAND_COMPLETED", "ast_bay_1")) >= 2, timeout=15, what="new setpoint")


def test_wrong_credentials_are_refused(ocpp_stack, events, plain, tmp_path, version):
    wrong = tmp_path / "charger-side.toml"
    wrong.write_text(ocpp_stack.site_template.format(port=ocpp_stack.ocpp_port, version=version, timeout=3.0,
                                                     password1=ocpp_stack.password,
                                                     password2="not-the-password-at-all"))
    start_simulator(ocpp_stack, events, site_path=wrong, expect=("ast_bay_1",))
    events.collect(2.0)
    assert of(events, "DEVICE_LINK_UP", "ast_bay_2") == []
    log = ocpp_stack.log("gateway-ocpp")
    assert "refused bad_credentials on ocpp/CP002" in log
    assert "not-the-password-at-all" not in log and ocpp_stack.password not in log  # never logged



def profiles(stack, cp_id="CP001"):
    """The charging limits the simulated charger itself logged: device-side evidence."""
    lines = stack.log("chargepoint-simulator").splitlines()
    return [line for line in lines if f"{cp_id}: " in line and " limit " in line]


def results_of(client, count, timeout=15.0):
    got: list[tuple[str, Outcome]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += [(r.command_id, r.outcome) for m in client.drain(0.1) for r in decode(ResultBatch, m.payload).results]
    assert len(got) >= count, f"only {got}"
    return got


def test_a_redelivered_command_is_not_sent_twice_and_an_older_one_is_superseded(ocpp_stack, events, plain):
    start_simulator(ocpp_stack, events)
    control(plain, "CP001", "plug_in")
    wait_state(events, "PREPARING")
    results, planner = plain(results_topic("ocpp")), plain()
    now = datetime.now(UTC)
    newer = Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": 11.0}, now, created_at=now)
    older = Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": 7.0}, now,
                    created_at=now - timedelta(minutes=1))
    before = len(profiles(ocpp_stack))
    planner.publish(commands_topic("ocpp"), CommandBatch.of("ocpp", [newer]).encode())
    assert results_of(results, 2) == [(newer.command_id, Outcome.ACKNOWLEDGED), (newer.command_id, Outcome.COMPLETED)]
    planner.publish(commands_topic("ocpp"), CommandBatch.of("ocpp", [newer, older]).encode())  # a redelivery
    again = results_of(results, 3)
    assert again[:2] == [(newer.command_id, Outcome.ACKNOWLEDGED), (newer.command_id, Outcome.COMPLETED)]
    assert again[2] == (older.command_id, Outcome.SUPERSEDED)
    results.drain(0.5)
    assert len(profiles(ocpp_stack)) == before + 1  # the charger got one profile: the newer one


@pytest.fixture
def interrupted_call(data_dir):
    """A record as a gateway killed during a call leaves it: one command "applying"."""
    cmd = Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": 11.0}, datetime.now(UTC), attempts=1)
    record = GatewayRecord(data_dir / "gateway-ocpp.sqlite")
    record.accept([cmd])
    record.applying(cmd)
    record.close()
    return cmd


@pytest.mark.parametrize("version", ["1.6"])
def test_a_call_interrupted_by_a_crash_is_answered_failed_after_the_restart(interrupted_call, broker, plain,
                                                                             tmp_path, version, ocpp_site_template):
    template, password = ocpp_site_template
    results = plain(results_topic("ocpp"))
    path = tmp_path / "site.toml"
    path.write_text(template.format(port=free_port(), version=version, timeout=3.0, password1=password,
                                    password2=password))
    stack = ServiceProcesses(broker.host, broker.port, path, tmp_path / "logs")
    try:
        stack.start_all(("gateway-ocpp",))
        got = [r for m in results.drain(3.0) for r in decode(ResultBatch, m.payload).results]
        assert [(r.command_id, r.outcome, r.error) for r in got] == [
            (interrupted_call.command_id, Outcome.FAILED, "outcome unknown: the gateway restarted during the call")]
    finally:
        stack.stop_all()


# -- applied, not just accepted (issue 15) -------------------------------------------


def test_an_honest_charger_completes_once_its_composite_schedule_shows_the_setpoint(ocpp_stack, events, plain):
    start_simulator(ocpp_stack, events)
    control(plain, "CP001", "plug_in")
    wait_state(events, "PREPARING")
    schedule(plain, [11.0])
    events.wait_for(lambda ev: of(events, "COMMAND_COMPLETED", "ast_bay_1"), timeout=15, what="setpoint proven")
    assert of(events, "COMMAND_FAILED") == []
    wait_state(events, "CHARGING")


def test_a_charger_that_accepts_without_applying_fails_not_applied(ocpp_stack, events, plain):
    start_simulator(ocpp_stack, events)
    control(plain, "CP001", "plug_in")
    wait_state(events, "PREPARING")
    schedule(plain, [11.0])
    events.wait_for(lambda ev: of(events, "COMMAND_COMPLETED", "ast_bay_1"), timeout=15, what="honest first")
    control(plain, "CP001", "ignore_profiles", 1)
    before = len(profiles(ocpp_stack))
    schedule(plain, [3.0], schedule_id="sch_lied_to")
    events.wait_for(lambda ev: of(events, "COMMAND_FAILED", "ast_bay_1"), timeout=15, what="caught")
    failed = of(events, "COMMAND_FAILED", "ast_bay_1")[0].payload
    assert failed["parameters"] == {"power_kw": 3.0}
    assert failed["error"] == "not applied: composite schedule shows 11 kW (wanted 3 kW)"
    assert len(of(events, "COMMAND_COMPLETED", "ast_bay_1")) == 1
    assert len(profiles(ocpp_stack)) == before  # the charger really kept its 11 kW


def test_a_setpoint_with_no_session_completes_saying_so(ocpp_stack, events, plain):
    start_simulator(ocpp_stack, events)  # no vehicle plugged in
    schedule(plain, [11.0])
    events.wait_for(lambda ev: of(events, "COMMAND_COMPLETED", "ast_bay_1"), timeout=15, what="setpoint")
    done = of(events, "COMMAND_COMPLETED", "ast_bay_1")[0].payload
    assert done["error"] == "no session in progress: a limit of 11 kW in force, nothing drawn"


@pytest.mark.parametrize("controls", [[], [("meter_kw", 1)], [("meter_multiplier", 3)],
                                      [("meter_kw", 1), ("meter_multiplier", -1)]])
def test_meter_values_in_kw_in_w_and_with_a_multiplier_read_the_same(ocpp_stack, events, plain, version, controls):
    if version == "1.6" and any(a == "meter_multiplier" for a, _ in controls):
        pytest.skip("1.6 has no multiplier")
    telemetry = plain(telemetry_topic("ocpp", "ast_bay_1"))
    start_simulator(ocpp_stack, events)
    for action, value in controls:
        control(plain, "CP001", action, value)
    control(plain, "CP001", "plug_in")
    wait_state(events, "PREPARING")
    schedule(plain, [7.4])
    wait_state(events, "CHARGING")
    deadline = time.monotonic() + 15
    powers: list[float] = []
    while time.monotonic() < deadline and not any(p > 0 for p in powers):
        powers += [float(v) for m in telemetry.drain(0.2)
                   if isinstance(v := decode(Telemetry, m.payload).values.get("power_kw"), int | float)]
    assert powers and max(powers) == pytest.approx(7.4)


def test_a_meter_above_the_proven_limit_is_reported(ocpp_stack, events, plain, version):
    start_simulator(ocpp_stack, events)
    control(plain, "CP001", "plug_in")
    wait_state(events, "PREPARING")
    schedule(plain, [7.0])
    wait_state(events, "CHARGING")
    events.wait_for(lambda ev: of(events, "COMMAND_COMPLETED", "ast_bay_1"), timeout=15, what="setpoint proven")
    assert of(events, "SETPOINT_NOT_FOLLOWED") == []  # an honest charger keeps to it
    control(plain, "CP001", "overdraw", 4.0)
    events.wait_for(lambda ev: of(events, "SETPOINT_NOT_FOLLOWED", "ast_bay_1"), timeout=20,
                    what="the meter held to the proven limit")
    (broken,) = of(events, "SETPOINT_NOT_FOLLOWED", "ast_bay_1")
    assert broken.payload["limit_kw"] == 7.0 and broken.payload["measured_kw"] == pytest.approx(11.0)
