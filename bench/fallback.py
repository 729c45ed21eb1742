"""Leases: once the whole coordinator dies, how long until every device is at its safe value?

Starts a private Mosquitto, the services (ingester, planner, tracker, the OCPP and the Modbus
gateway) and the simulators (OCPP chargers, half 1.6 and half 2.0.1; Modbus batteries with a
watchdog register), each simulator with ``--applied-log``. Gives every device a non-zero
setpoint and waits until each applied it, then kill -9 every coordinator process and the
broker, and reads the simulators' applied logs until every device shows its safe value: the
charger's fallback profile once its setpoint's validTo passed (LEASE_EXPIRED), the battery's
fallback once its heartbeat stopped for the timeout (WATCHDOG).

The lease bounds it: a setpoint renewed just before the kill lives one lease, a heartbeat
written just before it one timeout (here the same figure). Renewals every half lease and
heartbeats every third of it put the expected figure between half and the whole lease.

    .venv/bin/python bench/fallback.py [--chargers 4] [--batteries 2] [--lease 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from results import Figure, record

from coordinator.base import Command, CommandType
from coordinator.contract.messages import CommandBatch
from coordinator.contract.topics import commands_topic
from coordinator.runtime.mqtt import BrokerLogin
from tools.broker import LocalMosquitto, free_port, wait_for_port
from tools.launcher import ServiceProcesses

SERVICES = ("ingester", "planner", "tracker", "gateway-ocpp", "gateway-modbus")
SETPOINT_KW = 11.0
CHARGER_FALLBACKS = (0.0, 3.7)
"""Chargers take these fallback_kw in turn: 0 (the default) and a site's trickle limit."""


@dataclass(frozen=True)
class Device:
    asset_id: str
    kind: str
    """"charger" or "battery"."""
    fallback_kw: float


def site_config(lease: float, chargers: int, batteries: int) -> tuple[str, list[Device], list[int]]:
    """The site TOML, its devices and the batteries' Modbus ports."""
    ocpp_port = free_port()
    lines = [
        'site_id = "sit_leases"',
        "[coordinator]", f"lease_seconds = {lease}", "command_timeout_seconds = 10.0",
        "[[gateways]]", 'gateway_id = "ocpp"', 'protocol = "ocpp"',
        "[gateways.ocpp]", 'host = "127.0.0.1"', f"port = {ocpp_port}", "require_auth = false",
        "[[gateways]]", 'gateway_id = "modbus"', 'protocol = "modbus"',
    ]
    devices, ports = [], []
    for i in range(chargers):
        fallback = CHARGER_FALLBACKS[i % len(CHARGER_FALLBACKS)]
        devices.append(Device(f"ast_cp_{i}", "charger", fallback))
        lines += ["[[assets]]", f'asset_id = "ast_cp_{i}"', 'kind = "ev_charger"', 'gateway_id = "ocpp"',
                  "max_power_kw = 22.0", f"fallback_kw = {fallback}",
                  "[assets.ocpp]", f'charge_point_id = "CP_{i}"', f'version = "{("1.6", "2.0.1")[i % 2]}"']
    for i in range(batteries):
        port = free_port()
        ports.append(port)
        devices.append(Device(f"ast_batt_{i}", "battery", 0.0))
        lines += ["[[assets]]", f'asset_id = "ast_batt_{i}"', 'kind = "battery"', 'gateway_id = "modbus"',
                  "max_power_kw = 100.0",
                  "[assets.modbus]", 'host = "127.0.0.1"', f"port = {port}", "device_id = 1",
                  "[assets.modbus.watchdog]", "address = 40201"]
    return "\n".join(lines) + "\n", devices, ports


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def in_force(lines: list[dict], since: datetime | None = None) -> dict[tuple[str, str], tuple[float, datetime]]:
    """(asset, channel) -> (value, when) of the last applied line, optionally only after ``since``."""
    out: dict[tuple[str, str], tuple[float, datetime]] = {}
    for line in lines:
        if line.get("boot"):
            continue
        at = datetime.fromisoformat(line["at"])
        if since is not None and at < since:
            continue
        kind = line.get("command_type", "")
        channel = "discharge" if kind == "SET_DISCHARGE_RATE" else "charge"
        if kind == "WATCHDOG" and line["power_kw"] == 0.0 and (line["asset_id"], "charge") in out:
            channel = "discharge"  # the watchdog writes charge first, then discharge
        out[(line["asset_id"], channel)] = (float(line["power_kw"]), at)
    return out


def safe_since(devices: list[Device], lines: list[dict], killed: datetime) -> dict[str, float | None]:
    """Seconds after ``killed`` at which each device showed its safe value (None: not yet)."""
    after = [ln for ln in lines if not ln.get("boot") and datetime.fromisoformat(ln["at"]) >= killed]
    out: dict[str, float | None] = {}
    for device in devices:
        mine = [ln for ln in after if ln["asset_id"] == device.asset_id]
        expected = "LEASE_EXPIRED" if device.kind == "charger" else "WATCHDOG"
        hits = [ln for ln in mine if ln.get("command_type") == expected and ln["power_kw"] == device.fallback_kw]
        out[device.asset_id] = ((datetime.fromisoformat(hits[-1]["at"]) - killed).total_seconds() if hits else None)
    return out


def publish(host: str, port: int, batches: list[tuple[str, bytes]], login: BrokerLogin) -> None:
    client = login.apply(paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311))
    client.connect(host, port)
    client.loop_start()
    try:
        for topic, payload in batches:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


def setpoints(devices: list[Device]) -> list[tuple[str, bytes]]:
    now = datetime.now(UTC)
    by_gateway: dict[str, list[Command]] = {"ocpp": [], "modbus": []}
    for device in devices:
        gateway = "ocpp" if device.kind == "charger" else "modbus"
        by_gateway[gateway].append(Command(device.asset_id, CommandType.SET_CHARGE_RATE, {"power_kw": SETPOINT_KW},
                                           now, timeout_seconds=10.0))
    return [(commands_topic(g), CommandBatch.of(g, cmds).encode()) for g, cmds in by_gateway.items() if cmds]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def measure(work: Path, lease: float, chargers: int, batteries: int, hold: float | None = None,
            recover: bool = False) -> dict:
    """Run the whole experiment in ``work``; the figures as a dict. ``hold``: seconds the stack
    runs with its setpoints before the kill (default 1.5 leases: several renewals and heartbeats).
    ``recover``: then start the broker and the coordinator again, and time until every device
    holds its setpoint again (the gateways restore what their records hold as applied)."""
    toml, devices, battery_ports = site_config(lease, chargers, batteries)
    site = work / "site.toml"
    site.write_text(toml)
    charger_log, battery_log = work / "chargers.jsonl", work / "batteries.jsonl"
    broker = LocalMosquitto(work / "broker").start()  # a process of ours: kill -9 is what this measures
    stack = ServiceProcesses(broker.host, broker.port, site, work / "logs")
    try:
        stack.start_all(SERVICES)
        stack.start("battery-simulator", "--applied-log", str(battery_log))
        stack.start("chargepoint-simulator", "--no-control", "--applied-log", str(charger_log))
        if not all(wait_for_port("127.0.0.1", p, 30) for p in battery_ports):
            raise RuntimeError("battery simulator did not open its ports")
        wait_until(lambda: all(f"CP_{i}: fallback profile" in stack.log("gateway-ocpp") for i in range(chargers)),
                   20, "every charger booted with its fallback profile")
        wait_until(lambda: all(f"ast_batt_{i} link up" in stack.log("gateway-modbus") for i in range(batteries)),
                   20, "every battery linked")
        publish(broker.host, broker.port, setpoints(devices), broker.login())

        def applied() -> bool:
            held = in_force(read_log(charger_log) + read_log(battery_log))
            return all(held.get((d.asset_id, "charge"), (None,))[0] == SETPOINT_KW for d in devices)

        wait_until(applied, 30, "every device applied its setpoint")
        held_from = datetime.now(UTC)
        time.sleep(lease * 1.5 if hold is None else hold)  # the stack runs: renewals, heartbeats
        killed = datetime.now(UTC)
        early = [ln for ln in read_log(charger_log) + read_log(battery_log)
                 if ln.get("command_type") in ("LEASE_EXPIRED", "WATCHDOG")
                 and held_from <= datetime.fromisoformat(ln["at"]) < killed]
        for name in SERVICES:
            stack.procs[name].send_signal(signal.SIGKILL)
        broker.kill()
        for name in SERVICES:
            stack.procs[name].wait(10)
        wait_until(lambda: None not in safe_since(devices, read_log(charger_log) + read_log(battery_log),
                                                 killed).values(), lease * 3 + 10, "every device at its safe value")
        per_device = safe_since(devices, read_log(charger_log) + read_log(battery_log), killed)
        restored_after = None
        if recover:
            back = datetime.now(UTC)
            broker.start()
            for name in SERVICES:
                stack.start(name)
            wait_until(lambda: all(in_force(read_log(charger_log) + read_log(battery_log), since=back)
                                   .get((d.asset_id, "charge"), (None,))[0] == SETPOINT_KW for d in devices),
                       60, "every device back at its setpoint")
            restored_after = round((datetime.now(UTC) - back).total_seconds(), 3)
    finally:
        stack.stop_all()
        broker.stop()
    worst = max(v for v in per_device.values() if v is not None)
    return {"lease_seconds": lease, "devices": len(devices), "chargers": chargers, "batteries": batteries,
            "all_safe_after_seconds": round(worst, 3), "fell_back_while_alive": len(early),
            "all_restored_after_seconds": restored_after,
            "per_device": {k: round(v, 3) for k, v in per_device.items() if v is not None}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=4)
    parser.add_argument("--batteries", type=int, default=2)
    parser.add_argument("--lease", type=float, default=3.0, help="[coordinator] lease_seconds of the bench site")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fallback-") as tmp:
        figures = measure(Path(tmp), args.lease, args.chargers, args.batteries, recover=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"kill -9 of every coordinator process and the broker, {figures['chargers']} OCPP chargers "
              f"+ {figures['batteries']} Modbus batteries:")
        print(f"  every device at its safe value after {figures['all_safe_after_seconds']:.2f} s "
              f"(lease {args.lease:g} s: renewed every {args.lease / 2:g} s, so between "
              f"{args.lease / 2:g} and {args.lease:g} s expected)")
        for asset, seconds in sorted(figures["per_device"].items()):
            print(f"    {asset:<12} {seconds:6.2f} s")
        print(f"  broker and coordinator started again: every device back at its setpoint after "
              f"{figures['all_restored_after_seconds']:.2f} s")
    # Not a floor measured beside it: the lease is the bound the design promises, so the ratio says
    # how much of the lease the devices took to fall back on their own.
    record(Figure(f"kill -9 of the coordinator and broker: last of {figures['devices']} devices safe",
                  figures["all_safe_after_seconds"], args.lease, "s", floor_is="the configured lease, the bound",
                  goal=1.0, command="make bench-fallback",
                  detail=f"{figures['chargers']} OCPP chargers, {figures['batteries']} Modbus batteries; "
                         f"back at setpoint {figures['all_restored_after_seconds']:.2f} s after restart"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
