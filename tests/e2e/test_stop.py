"""SIGTERM stops a gateway promptly whatever its device links are doing: the Modbus gateway
and the battery simulator as real processes, real Modbus TCP, a real broker.

docker compose and systemd send SIGTERM and then SIGKILL after a timeout (10 s by default
for compose); a gateway that is still draining then loses its farewell and its results."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from coordinator.base import Command, CommandType
from coordinator.contract.messages import CommandBatch, Outcome, ResultBatch, ServiceStatus, command_to_wire, decode
from coordinator.contract.topics import commands_topic, results_topic, service_topic
from tools.broker import free_port, wait_for_port
from tools.launcher import ServiceProcesses

pytestmark = pytest.mark.timeout(120)

STOP_BOUND = 5.0
"""Seconds from SIGTERM to exit: well inside compose's 10 s, whatever the device is doing."""

VERIFY_WINDOW = 20.0
"""Longer than the bound: a drain that waited out the read-back window would fail the test."""

SITE = """
site_id = "sit_stop_test"

[coordinator]
dispatch_interval_seconds = 0.2
command_timeout_seconds = 30.0
max_retries = 0

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
poll_interval_seconds = 0.2
verify_window_seconds = {verify}

[[assets]]
asset_id = "ast_batt_b"
kind = "battery"
gateway_id = "modbus"
max_power_kw = 100.0
[assets.modbus]
port = {port_b}
poll_interval_seconds = 0.2
verify_window_seconds = {verify}
"""

IGNORE_WRITES = 3  # the simulator's control register (simulators/battery.py): acknowledge, do not apply


@pytest.fixture
def modbus(broker, tmp_path):
    ports = {"port_a": free_port(), "port_b": free_port()}
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(**ports, verify=VERIFY_WINDOW))
    procs = ServiceProcesses(broker.host, broker.port, path, tmp_path / "logs")
    procs.start_all(("battery-simulator", "gateway-modbus"))
    assert all(wait_for_port("127.0.0.1", p, 10) for p in ports.values())
    procs.wait_for_log("gateway-modbus", "ast_batt_a link up", 15)
    procs.wait_for_log("gateway-modbus", "ast_batt_b link up", 15)
    yield procs, ports
    procs.stop_all()


def sigterm(procs: ServiceProcesses, name: str) -> tuple[int, float]:
    """SIGTERM ``name``; (exit code, seconds until it exited). Killed past the bound + a margin."""
    began = time.monotonic()
    proc = procs.procs[name]
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(STOP_BOUND + 10)
    except Exception:
        proc.kill()
        raise
    return code, time.monotonic() - began


def farewell(plain, service: str) -> ServiceStatus:
    """The retained status the process left behind, as a late subscriber reads it."""
    (message,) = plain(service_topic(service)).drain(1.0)
    return decode(ServiceStatus, message.payload)


def test_a_gateway_whose_devices_are_gone_exits_at_once_and_says_offline(modbus, plain):
    procs, _ = modbus
    procs.kill("battery-simulator")
    procs.wait_for_log("gateway-modbus", "ast_batt_a link down", 10)
    procs.wait_for_log("gateway-modbus", "ast_batt_b link down", 10)
    # Between its reconnect attempts (pymodbus logs each "Failed to connect"): the moment a
    # cancelled connect used to swallow the cancellation and reconnect for ever.
    procs.wait_for_log("gateway-modbus", "Failed to connect", 10)
    code, took = sigterm(procs, "gateway-modbus")
    assert code == 0
    assert took < STOP_BOUND, f"stopped after {took:.1f} s"
    log = procs.log("gateway-modbus")
    assert "gateway-modbus offline" in log
    assert "still running" not in log  # no task outlived its cancellation
    status = farewell(plain, "gateway-modbus")
    assert (status.status, status.lifecycle) == ("offline", "Offline")
    assert "Last Will" not in " ".join(status.reasons)  # its own goodbye, not the broker's


def test_a_command_waiting_on_a_device_that_vanished_is_answered_failed_and_the_gateway_exits(modbus, plain):
    """The write is acknowledged, the read-back waits for the device to show the value (it never
    will: it ignores writes); the device goes away; SIGTERM. The drain does not wait out the
    read-back window: the command is answered FAILED (the planner may retry it) and the gateway
    exits."""
    import asyncio

    from pymodbus.client import AsyncModbusTcpClient

    procs, ports = modbus

    async def ignore_writes() -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=ports["port_a"], timeout=2, retries=0)
        await client.connect()
        await client.write_register(899, IGNORE_WRITES, device_id=1)
        client.close()

    asyncio.run(ignore_writes())
    results = plain(results_topic("modbus"))
    cmd = Command("ast_batt_a", CommandType.SET_CHARGE_RATE, {"power_kw": 20.0}, attempts=1)
    batch = CommandBatch(gateway_id="modbus", commands=[command_to_wire(cmd)])
    plain().publish(commands_topic("modbus"), batch.encode())

    seen: list[tuple[str, Outcome]] = []

    def collect(timeout: float) -> None:
        seen.extend((r.command_id, r.outcome) for m in results.drain(timeout)
                    for r in decode(ResultBatch, m.payload).results)

    deadline = time.monotonic() + 10
    while (cmd.command_id, Outcome.ACKNOWLEDGED) not in seen and time.monotonic() < deadline:
        collect(0.2)
    assert (cmd.command_id, Outcome.ACKNOWLEDGED) in seen  # written; now in its read-back window

    procs.kill("battery-simulator")
    code, took = sigterm(procs, "gateway-modbus")
    assert code == 0
    assert took < STOP_BOUND, f"stopped after {took:.1f} s (read-back window {VERIFY_WINDOW:g} s)"
    collect(1.0)
    assert seen[-1] == (cmd.command_id, Outcome.FAILED)
    assert [o for c, o in seen if c == cmd.command_id].count(Outcome.FAILED) == 1  # answered once
    assert "gateway-modbus offline" in procs.log("gateway-modbus")
    assert farewell(plain, "gateway-modbus").status == "offline"


def test_stop_all_times_every_exit(modbus):
    procs, _ = modbus
    codes = procs.stop_all()
    assert codes == {"battery-simulator": 0, "gateway-modbus": 0}
    lines = (Path(procs.logs) / "stops.log").read_text().splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["battery-simulator", "gateway-modbus"]
    assert all("KILLED" not in line for line in lines)
