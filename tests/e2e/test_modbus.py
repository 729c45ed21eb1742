"""The Modbus gateway end to end: broker, planner, tracker, gateway and battery simulator
as separate processes, real Modbus TCP between gateway and simulator."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from coordinator.contract.codec import encode_schedule
from coordinator.contract.topics import SCHEDULES_IN
from tools.broker import free_port, wait_for_port
from tools.launcher import ServiceProcesses

pytestmark = pytest.mark.timeout(180)

# timeout_seconds 3 (the default is 1): on a loaded 2-core machine running other tests a request
# waited longer than 1 s for the CPU, and the link was reported down mid-test.
SITE = """
site_id = "sit_modbus_test"

[coordinator]
dispatch_interval_seconds = 0.2
command_timeout_seconds = 8.0
max_retries = {retries}
retry_base_delay_seconds = 0.5

[[gateways]]
gateway_id = "modbus"
protocol = "modbus"

[[assets]]
asset_id = "ast_batt_a"
kind = "battery"
gateway_id = "modbus"
max_power_kw = 100.0
[assets.modbus]
port = {port_a}
max_charge_kw = 50.0
capacity_kwh = {capacity}
poll_interval_seconds = 0.2
verify_window_seconds = 1.0
timeout_seconds = 3.0

[[assets]]
asset_id = "ast_batt_b"
kind = "battery"
gateway_id = "modbus"
max_power_kw = 100.0
[assets.modbus]
port = {port_b}
device_id = 7
poll_interval_seconds = 0.2
verify_window_seconds = 1.0
timeout_seconds = 3.0
[assets.modbus.registers.SET_CHARGE_RATE]
address = 40201
data_type = "int32"
scale = 100
word_order = "little"
[assets.modbus.registers.SET_DISCHARGE_RATE]
address = 40203
data_type = "int32"
scale = 100
word_order = "little"
[assets.modbus.status_registers.active_power_kw]
address = 40301
data_type = "int32"
scale = 100
"""


@pytest.fixture
def modbus_site(tmp_path, request):
    marker = request.node.get_closest_marker("site")
    options = {"retries": 0, "capacity": 200.0} | (marker.kwargs if marker else {})
    ports = {"port_a": free_port(), "port_b": free_port()}
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(**ports, **options))
    return path, ports


class ModbusStack(ServiceProcesses):
    """The processes of a Modbus site, with the simulator ports its config names."""

    def __init__(self, host: str, port: int, site_config: Path, logs: Path, *, ports: dict[str, int]) -> None:
        super().__init__(host, port, site_config, logs)
        self.ports = ports


@pytest.fixture
def site_stack(broker, tmp_path, modbus_site):
    path, ports = modbus_site
    procs = ModbusStack(broker.host, broker.port, path, tmp_path / "logs", ports=ports)
    yield procs
    procs.stop_all()


def start(stack, *names):
    stack.start_all(names)
    if "battery-simulator" in names:
        assert all(wait_for_port("127.0.0.1", p, 10) for p in stack.ports.values())


ALL = ("ingester", "planner", "tracker", "battery-simulator", "gateway-modbus")


def control(port: int, value: int, unit: int = 1) -> None:
    """Steer the simulator through its control register, as a commissioning tool would."""
    async def write() -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        await client.connect()
        await client.write_register(899, value, device_id=unit)
        client.close()

    asyncio.run(write())


def publish_schedule(plain, columns, slots=2, slot=timedelta(seconds=2), schedule_id="sch_m", asset_map=None):
    import pandas as pd

    idx = pd.date_range(datetime.now(UTC) + timedelta(seconds=0.5), periods=slots, freq=slot)
    df = pd.DataFrame(columns, index=idx, dtype=float)
    asset_map = asset_map or {"battery_a": "ast_batt_a", "battery_b": "ast_batt_b"}
    plain().publish(SCHEDULES_IN, encode_schedule(df, asset_map=asset_map, site_id="sit_modbus_test",
                                                  schedule_id=schedule_id))


def of(events, kind, asset=None):
    return [e for e in events.events
            if e.event_type.value == kind and (asset is None or e.payload.get("asset_id") == asset)]


def links_up(events):
    """Both batteries connected: a command sent earlier fails at once (link down) and, with
    max_retries 0 here, is not tried again; a loaded machine connects late."""
    events.wait_for(lambda ev: len(of(events, "DEVICE_LINK_UP")) >= 2, timeout=15, what="links up")


def states(events, asset):
    return [e.payload["to_state"] for e in of(events, "STATE_CHANGED", asset)]


def test_charge_discharge_direct_switch_clamp_and_custom_32bit_map(site_stack, events, plain):
    start(site_stack, *ALL)
    links_up(events)
    publish_schedule(plain, {
        "battery_a_charge_kw": [80.0, 0.0], "battery_a_discharge_kw": [0.0, 30.0],
        "battery_b_charge_kw": [0.0, 12.34], "battery_b_discharge_kw": [45.67, 0.0],
    })
    events.wait_for(lambda ev: len(of(events, "COMMAND_COMPLETED")) >= 4, timeout=30, what="4 commands completed")
    events.wait_for(lambda ev: (states(events, "ast_batt_a")[-1:] == ["DISCHARGING"]
                                and states(events, "ast_batt_b")[-1:] == ["CHARGING"]),
                    timeout=10, what="states follow")
    assert of(events, "COMMAND_FAILED") == []
    # charge 80 kW is above this battery's 50 kW charge limit: applied as 50 and reported
    (clamp,) = of(events, "SETPOINT_CLAMPED")
    assert (clamp.payload["asset_id"], clamp.payload["requested"], clamp.payload["applied"]) == (
        "ast_batt_a", 80.0, 50.0)
    assert states(events, "ast_batt_a") == ["CHARGING", "DISCHARGING"]  # direct switch, one command
    assert states(events, "ast_batt_b") == ["DISCHARGING", "CHARGING"]
    # the custom map: signed 32-bit little-endian registers with scale 100 carry 12.34 kW exactly
    async def read_b():
        client = AsyncModbusTcpClient("127.0.0.1", port=site_stack.ports["port_b"], timeout=2, retries=0)
        await client.connect()
        charge = await client.read_holding_registers(200, count=4, device_id=7)
        power = await client.read_holding_registers(300, count=2, device_id=7)
        client.close()
        return charge.registers, power.registers
    charge_words, power_words = asyncio.run(read_b())
    assert charge_words == [1234, 0, 0, 0]  # 12.34 kW charge (low word first), discharge zeroed
    assert power_words == [0, 1234] or power_words == [0, 1230]  # active power, big-endian int32 x100


@pytest.mark.site(capacity=0.01)
def test_soc_bounds_stop_the_battery(site_stack, events, plain):
    start(site_stack, *ALL)
    links_up(events)
    publish_schedule(plain, {"battery_a_charge_kw": [50.0]}, slots=1, asset_map={"battery_a": "ast_batt_a"})
    # 0.01 kWh at 50 kW: full in under a second; at SOC max the battery stops drawing power
    events.wait_for(lambda ev: states(events, "ast_batt_a")[-2:] == ["CHARGING", "IDLE"], timeout=20,
                    what="charging, then idle at the SOC bound")


def test_fault_holds_commands_until_reset(site_stack, events, plain):
    start(site_stack, *ALL)
    links_up(events)
    control(site_stack.ports["port_a"], 1)
    events.wait_for(lambda ev: "FAULTED" in states(events, "ast_batt_a"), timeout=10, what="fault seen")
    publish_schedule(plain, {"battery_a_charge_kw": [20.0]}, slots=1, asset_map={"battery_a": "ast_batt_a"})
    events.wait_for(lambda ev: of(events, "COMMAND_HELD", "ast_batt_a"), timeout=10, what="command held")
    control(site_stack.ports["port_a"], 0)
    events.wait_for(lambda ev: of(events, "COMMAND_COMPLETED", "ast_batt_a"), timeout=15,
                    what="released after the reset")
    events.wait_for(lambda ev: states(events, "ast_batt_a") == ["FAULTED", "IDLE", "CHARGING"], timeout=5,
                    what="FAULTED, IDLE after the reset, then CHARGING")


def test_device_that_ignores_writes_is_caught_by_read_back(site_stack, events, plain):
    start(site_stack, *ALL)
    links_up(events)
    control(site_stack.ports["port_a"], 3)
    publish_schedule(plain, {"battery_a_charge_kw": [20.0]}, slots=1, asset_map={"battery_a": "ast_batt_a"})
    events.wait_for(lambda ev: of(events, "COMMAND_FAILED", "ast_batt_a"), timeout=15, what="read-back failure")
    (failed,) = of(events, "COMMAND_FAILED", "ast_batt_a")
    assert failed.payload["error"].startswith("not applied: after 1 s the device shows")
    assert of(events, "COMMAND_ACKNOWLEDGED", "ast_batt_a")  # the Modbus write itself was acknowledged


def test_silent_device_times_out_without_delaying_the_other(site_stack, events, plain):
    start(site_stack, *ALL)
    links_up(events)
    control(site_stack.ports["port_a"], 2)  # battery a stops answering
    publish_schedule(plain, {"battery_a_charge_kw": [20.0], "battery_b_charge_kw": [10.0]}, slots=1)
    events.wait_for(lambda ev: of(events, "COMMAND_COMPLETED", "ast_batt_b"), timeout=10, what="b completes")
    events.wait_for(lambda ev: of(events, "COMMAND_FAILED", "ast_batt_a"), timeout=20, what="a fails")
    events.wait_for(lambda ev: of(events, "DEVICE_LINK_DOWN", "ast_batt_a"), timeout=5, what="a's link reported down")
    b_done = of(events, "COMMAND_COMPLETED", "ast_batt_b")[0].timestamp
    a_failed = of(events, "COMMAND_FAILED", "ast_batt_a")[0].timestamp
    assert b_done < a_failed


@pytest.mark.site(retries=5)
def test_disconnect_and_reconnect(site_stack, events, plain):
    start(site_stack, *ALL)
    links_up(events)
    site_stack.kill("battery-simulator")
    events.wait_for(lambda ev: of(events, "DEVICE_LINK_DOWN", "ast_batt_a"), timeout=15, what="link down")
    publish_schedule(plain, {"battery_a_charge_kw": [20.0]}, slots=1, asset_map={"battery_a": "ast_batt_a"})
    events.wait_for(lambda ev: of(events, "COMMAND_RETRY_SCHEDULED", "ast_batt_a"), timeout=10, what="a failed attempt")
    site_stack.start("battery-simulator")
    events.wait_for(lambda ev: of(events, "COMMAND_COMPLETED", "ast_batt_a"), timeout=40,
                    what="completed after reconnect")
    assert len(of(events, "DEVICE_LINK_UP", "ast_batt_a")) >= 2


def test_a_command_for_an_asset_not_on_the_gateway_gets_one_answer_and_does_not_hold_up_shutdown(site_stack, plain):
    """Refused at once, and ended there: SIGTERM does not wait for it, nor answer it a second time."""
    import signal
    import time

    from coordinator.base import Command, CommandType
    from coordinator.contract.messages import CommandBatch, Outcome, ResultBatch, command_to_wire, decode
    from coordinator.contract.topics import commands_topic, results_topic

    start(site_stack, "gateway-modbus")
    results = plain(results_topic("modbus"))
    cmd = Command("ast_not_here", CommandType.SET_CHARGE_RATE, {"power_kw": 5.0}, attempts=1)
    batch = CommandBatch(gateway_id="modbus", commands=[command_to_wire(cmd)])
    plain().publish(commands_topic("modbus"), batch.encode())
    first = [r for m in results.drain(3.0) for r in decode(ResultBatch, m.payload).results]
    assert [(r.command_id, r.outcome) for r in first] == [(cmd.command_id, Outcome.REFUSED)]

    began = time.monotonic()
    assert site_stack.kill("gateway-modbus", signal.SIGTERM) == 0
    assert time.monotonic() - began < 4.0  # nothing in flight: no grace period waited out
    later = [r for m in results.drain(1.0) for r in decode(ResultBatch, m.payload).results]
    assert later == []


def test_after_a_crash_mid_write_the_device_is_read_back_and_a_newer_setpoint_wins(site_stack, plain, data_dir):
    """A record as a gateway killed during writes leaves it: battery a's command shows on the
    device (0 kW, at rest), battery b's does not (20 kW). The restarted gateway reads them back."""
    from datetime import UTC, datetime, timedelta

    from coordinator.base import Command, CommandType
    from coordinator.contract.messages import CommandBatch, CommandResult, Outcome, ResultBatch, decode
    from coordinator.contract.topics import commands_topic, results_topic
    from coordinator.runtime.gateway_record import GatewayRecord

    now = datetime.now(UTC)
    shown = Command("ast_batt_a", CommandType.SET_CHARGE_RATE, {"power_kw": 0.0}, now, attempts=1)
    not_shown = Command("ast_batt_b", CommandType.SET_CHARGE_RATE, {"power_kw": 20.0}, now, attempts=1)
    record = GatewayRecord(data_dir / "gateway-modbus.sqlite")
    record.accept([shown, not_shown])
    record.applying(shown)
    record.applying(not_shown)
    record.close()

    results = plain(results_topic("modbus"))
    start(site_stack, "battery-simulator", "gateway-modbus")
    got: dict[str, CommandResult] = {}
    deadline = time.monotonic() + 20
    while len(got) < 2 and time.monotonic() < deadline:
        for m in results.drain(0.2):
            got |= {r.command_id: r for r in decode(ResultBatch, m.payload).results if r.outcome != "acknowledged"}
    assert got[shown.command_id].outcome is Outcome.COMPLETED
    assert got[not_shown.command_id].outcome is Outcome.FAILED
    assert "after the gateway restarted: not applied" in (got[not_shown.command_id].error or "")

    # shown is in force now: an older setpoint for battery a is superseded, a repeat answered from the record
    older = Command("ast_batt_a", CommandType.SET_CHARGE_RATE, {"power_kw": 30.0}, now,
                    created_at=shown.created_at - timedelta(minutes=1), attempts=1)
    plain().publish(commands_topic("modbus"), CommandBatch.of("modbus", [shown, older]).encode())
    answered: list[tuple[str, Outcome]] = []
    deadline = time.monotonic() + 10
    while len(answered) < 3 and time.monotonic() < deadline:
        answered += [(r.command_id, r.outcome)
                     for m in results.drain(0.2) for r in decode(ResultBatch, m.payload).results]
    assert answered == [(shown.command_id, Outcome.ACKNOWLEDGED), (shown.command_id, Outcome.COMPLETED),
                        (older.command_id, Outcome.SUPERSEDED)]
