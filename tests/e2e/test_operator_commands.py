"""Operator commands (qubit/operator/commands, `qubit command ...`) and the planner's limits,
end to end: real broker, real processes, the CLI as an operator types it."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from coordinator.contract.messages import StatusReport
from coordinator.contract.topics import simulator_topic
from tests.e2e.conftest import SITE
from tests.e2e.test_modbus import ALL as MODBUS_ALL
from tests.e2e.test_modbus import control as modbus_control
from tests.e2e.test_modbus import modbus_site, site_stack  # noqa: F401 - fixtures
from tests.e2e.test_modbus import start as modbus_start
from tests.e2e.test_ocpp import control, start_simulator, wait_state
from tools.launcher import REPO, ServiceProcesses

pytestmark = pytest.mark.timeout(120)


def qubit(stack, *args, identity="operator", timeout=60):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], env=stack.env_as(identity), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def command(stack, *args):
    """`qubit command ...`, which must end with the command COMPLETED (exit 0)."""
    run = qubit(stack, "command", *args, "--timeout", "30")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "COMPLETED" in run.stdout.splitlines()[-1]
    return run


def state_is(events, asset_id, state):
    return lambda evs: any(e.event_type.value == "STATE_CHANGED" and e.payload.asset_id == asset_id
                           and e.payload.to_state == state for e in evs)


def test_every_operator_command_on_the_loopback_gateway(stack, events, plain):
    stack.start_all()
    command(stack, "start", "ast_bay_1")
    events.wait_for(state_is(events, "ast_bay_1", "CHARGING"), what="bay 1 charging")
    command(stack, "stop", "ast_bay_1")
    events.wait_for(state_is(events, "ast_bay_1", "FINISHING"), what="bay 1 finishing")

    command(stack, "availability", "ast_bay_2", "inoperative")
    events.wait_for(state_is(events, "ast_bay_2", "UNAVAILABLE"), what="bay 2 out of service")
    command(stack, "availability", "ast_bay_2", "operative")  # not held although the asset is UNAVAILABLE
    events.wait_for(state_is(events, "ast_bay_2", "AVAILABLE"), what="bay 2 back")

    # A faulted battery is reset through the bus, not through the simulator's topic.
    sim = plain()
    sim.publish(simulator_topic("loopback"),
                StatusReport(asset_id="ast_batt_001", state="FAULTED", at=datetime.now(UTC)).encode())
    events.wait_for(state_is(events, "ast_batt_001", "FAULTED"), what="battery faulted")
    command(stack, "reset", "ast_batt_001")
    events.wait_for(state_is(events, "ast_batt_001", "IDLE"), what="battery reset")

    command(stack, "soc", "ast_batt_001", "80")
    limit = command(stack, "limit", "ast_bay_1", "7", "--duration", "600")
    accepted = [e for e in events.collect() if e.event_type.value == "OPERATOR_COMMAND_ACCEPTED"]
    assert [e.payload.action for e in accepted] == ["start_session", "stop_session", "set_availability",
                                                    "set_availability", "reset", "soc_target", "power_limit"]
    command_id = accepted[-1].payload.command_id
    assert command_id in limit.stdout
    status = qubit(stack, "status", command_id, "--json")
    assert '"power_kw": 7.0' in status.stdout and '"duration_s": 600.0' in status.stdout

    # Refused: a charger has no SOC target, an unknown asset, a limit above the asset's maximum.
    for args, reason in ((("soc", "ast_bay_1", "50"), "wrong_kind"), (("reset", "ast_nowhere"), "unknown_asset"),
                         (("limit", "ast_bay_1", "500"), "out_of_range")):
        run = qubit(stack, "command", *args, "--timeout", "20")
        assert run.returncode == 1 and f"rejected: {reason}" in run.stderr, run.stdout + run.stderr
    events.wait_for(lambda evs: len([e for e in evs if e.event_type.value == "MESSAGE_REFUSED"
                                     and e.payload.topic == "qubit/operator/commands"]) == 3,
                    what="three refusals")
    # Only the operator role may command: SCADA is refused by the broker (nothing happens).
    scada = qubit(stack, "command", "reset", "ast_bay_1", "--timeout", "3", identity="scada")
    assert scada.returncode == 5 and "no answer from the planner" in scada.stderr, scada.stdout + scada.stderr


def test_a_command_the_device_fails_exits_non_zero(stack):
    stack.start_all(args={"gateway-loopback": ("--fail", "ast_bay_2")})
    run = qubit(stack, "command", "start", "ast_bay_2", "--timeout", "40")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAILED: simulated device failure" in run.stdout.splitlines()[-1]


LIMITED_SITE = SITE.read_text() + "\n[site_limits]\nimport_kw = 90.0\n"


def test_site_import_limit_and_operator_limit_hold_when_the_schedule_exceeds_them(broker, events, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(LIMITED_SITE)
    stack = ServiceProcesses(broker.host, broker.port, site, tmp_path / "logs")
    try:
        stack.start_all()
        command(stack, "limit", "ast_bay_1", "20", "--duration", "600")
        idx = pd.date_range(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2), periods=1, freq="2s")
        csv = tmp_path / "schedule.csv"
        pd.DataFrame({"ev_001_kw": [80.0], "ev_002_kw": [80.0]}, index=idx).to_csv(csv)
        published = qubit(stack, "publish", str(csv), "--asset-map", "ev_001=ast_bay_1,ev_002=ast_bay_2",
                          "--schedule-id", "sch_over", "--follow", "--timeout", "40", identity="layer3")
        assert published.returncode == 0, published.stdout + published.stderr
        events.wait_for(lambda evs: len([e for e in evs if e.event_type.value == "COMMAND_COMPLETED"
                                         and e.payload.schedule_id == "sch_over"]) == 2, what="both completed")
        applied = {e.payload.asset_id: e.payload.parameters["power_kw"] for e in events.of("COMMAND_COMPLETED")
                   if e.payload.schedule_id == "sch_over"}
        assert applied == {"ast_bay_1": 18.0, "ast_bay_2": 72.0}  # 20 + 80 scaled to 90
        assert sum(applied.values()) <= 90.0
        caps = sorted((e.payload.asset_id, e.payload.limit, e.payload.requested, e.payload.applied)
                      for e in events.of("SETPOINT_CAPPED"))
        assert caps == [("ast_bay_1", "operator", 80.0, 20.0), ("ast_bay_1", "site_import", 20.0, 18.0),
                        ("ast_bay_2", "site_import", 80.0, 72.0)]
    finally:
        stack.stop_all()


def test_start_stop_availability_and_reset_over_ocpp(ocpp_stack, events, plain):
    """Both OCPP versions (the ``version`` fixture), with the charge point simulator."""
    start_simulator(ocpp_stack, events)
    control(plain, "CP001", "plug_in")
    wait_state(events, "PREPARING")
    command(ocpp_stack, "start", "ast_bay_1")  # RemoteStartTransaction / RequestStartTransaction
    events.wait_for(lambda evs: ocpp_states(events)[-1:] in (["CHARGING"], ["SUSPENDED"]), what="session started")
    command(ocpp_stack, "stop", "ast_bay_1")  # RemoteStop / RequestStopTransaction, the session's id filled in
    wait_state(events, "FINISHING")
    control(plain, "CP001", "unplug")
    wait_state(events, "AVAILABLE")
    command(ocpp_stack, "availability", "ast_bay_1", "inoperative")
    wait_state(events, "UNAVAILABLE")
    command(ocpp_stack, "availability", "ast_bay_1", "operative")
    wait_state(events, "AVAILABLE")
    command(ocpp_stack, "limit", "ast_bay_1", "11", "--duration", "600")  # the charger-wide maximum profile
    control(plain, "CP001", "fault")
    wait_state(events, "FAULTED")
    command(ocpp_stack, "reset", "ast_bay_1")  # Reset through the bus, not the simulator's topic
    wait_state(events, "AVAILABLE")


def ocpp_states(events, asset="ast_bay_1"):
    return [e.payload.to_state for e in events.events
            if e.event_type.value == "STATE_CHANGED" and e.payload.asset_id == asset]


def test_soc_target_power_limit_and_reset_over_modbus(site_stack, events):  # noqa: F811 - the imported fixture
    """The battery simulator behind the Modbus gateway: each command written and read back."""
    modbus_start(site_stack, *MODBUS_ALL)
    command(site_stack, "soc", "ast_batt_a", "80")  # register 40004
    command(site_stack, "limit", "ast_batt_a", "40", "--duration", "600")  # register 40003
    modbus_control(site_stack.ports["port_a"], 1)  # the battery trips
    events.wait_for(state_is(events, "ast_batt_a", "FAULTED"), what="battery faulted")
    command(site_stack, "reset", "ast_batt_a")  # the reset register 40005, taken while faulted
    events.wait_for(state_is(events, "ast_batt_a", "IDLE"), what="battery back to IDLE after the reset")
