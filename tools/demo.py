"""`make demo`: the whole stack on this machine, driven by one Layer 3 schedule.

Starts a private Mosquitto and, as separate processes, the ingester, planner, tracker, the
OCPP gateway with two simulated chargers connected to it over real OCPP-J websockets (bay 1
speaks 1.6, bay 2 speaks 2.0.1), the Modbus gateway and a simulated battery on real Modbus
TCP. Both buses plug in, a schedule of eight 3-second slots goes out, and every event is
printed as SCADA would see it on qubit/events/#. Midway the battery faults and the operator
resets it with an operator command on the bus, as `qubit command reset` does (its
commands are held, then the newest goes out) and bus 12 leaves early (its remaining
commands are cancelled). Ends with a summary and a clean shutdown, in about 45 seconds.

The broker is secured as on a site: each process logs in as itself, and the demo as the
roles a site would have (docs/security.md): it watches as ``scada``, publishes the schedule
as ``layer3`` and drives the simulated chargers as ``simulator``.
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import ModbusTcpClient

from coordinator.contract.codec import DecodeError, decode_event, encode_schedule
from coordinator.contract.events import CommandPayload, DeviceLinkUp, ScheduleReceived, ScheduleRejected
from coordinator.contract.messages import (
    AssetStateMessage,
    ChargerControl,
    OperatorAction,
    OperatorCommand,
    decode,
)
from coordinator.contract.topics import (
    ASSET_STATES_ALL,
    EVENTS_ALL,
    OPERATOR_COMMANDS,
    SCHEDULES_IN,
    simulator_topic,
)
from coordinator.runtime.mqtt import MqttClient, refused_credentials
from coordinator.runtime.service import load_site
from coordinator.runtime.settings import DEFAULT_SITE_CONFIG
from coordinator.timeutil import utcnow
from simulators.battery import CONTROL, Control
from tools.broker import free_port, start_broker
from tools.credentials import SiteFacts, provision_ocpp
from tools.event_lines import describe
from tools.launcher import ServiceProcesses
from tools.walkthrough import ASSET_MAP, sample_schedule

SLOT = timedelta(seconds=3)
FINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}
DEADLINE = 60.0


class Watcher:
    """Prints events as they arrive and keeps what the summary needs."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        self.expected: int | None = None
        self.statuses: dict[str, str] = {}
        self.states: dict[str, str] = {}
        self.rejected: str | None = None
        self.linked: set[str] = set()

    def on_event(self, topic: str, data: bytes) -> None:
        try:
            event = decode_event(data)
        except DecodeError as exc:
            print(f"unreadable event on {topic}: {exc.reason}")
            return
        print(describe(event), flush=True)
        p = event.payload
        if isinstance(p, DeviceLinkUp):
            self.linked.add(p.asset_id)
        if not isinstance(p, (ScheduleReceived, ScheduleRejected, CommandPayload)) or p.schedule_id != self.schedule_id:
            return
        if isinstance(p, ScheduleReceived):
            self.expected = p.command_count
        elif isinstance(p, ScheduleRejected):
            self.rejected = f"{p.reason}: {p.message}"
        else:
            self.statuses[p.command_id] = p.status.value

    def on_state(self, topic: str, data: bytes) -> None:
        msg = decode(AssetStateMessage, data)
        self.states[msg.asset_id] = msg.state

    @property
    def done(self) -> bool:
        ended = sum(s in FINAL for s in self.statuses.values())
        return self.rejected is not None or (self.expected is not None and ended >= self.expected)


PROCESSES = ("ingester", "planner", "tracker", "gateway-ocpp", "chargepoint-simulator", "battery-simulator",
             "gateway-modbus")
CHARGERS = {"ast_bay_1": "CP_BAY_1", "ast_bay_2": "CP_BAY_2"}


def demo_site(workdir: Path) -> tuple[Path, int]:
    """deploy/site.toml with the CSMS and the battery moved to free ports; the battery's port.

    With the sample's OCPP secrets made beside it (secrets/, the layout of qubit-credentials):
    the demo runs security profile 2, wss:// and a password per charger, end to end."""
    text = DEFAULT_SITE_CONFIG.read_text()
    battery_port = free_port()
    for fixed, free in (("port = 9000", free_port()), ("port = 15020", battery_port)):
        if fixed not in text:
            raise SystemExit(f"deploy/site.toml no longer has {fixed!r}; update tools/demo.py")
        text = text.replace(fixed, f"port = {free}")
    path = workdir / "site.toml"
    path.write_text(text)
    provision_ocpp(workdir / "secrets", SiteFacts.read(path))  # read from the TOML: its secrets do not exist yet
    return path, battery_port


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="qubit-demo", description=__doc__.split("\n\n")[0],
        epilog="Reads no QUBIT_* setting: it starts its own broker on a free port, with its own identities, "
               "and a site config of its own in a temporary directory (printed first).",
    ).parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="qubit-demo-"))
    site_path, battery_port = demo_site(workdir)
    site = load_site(str(site_path))
    print(f"starting Mosquitto and the services (logs in {workdir})")
    broker = start_broker(workdir / "broker")
    procs = ServiceProcesses(broker.host, broker.port, site_path, workdir / "logs")
    watcher = Watcher("sch_demo_0001")
    watching = MqttClient("demo-scada", broker.settings("scada"), persistent=False)
    layer3 = MqttClient("demo-layer3", broker.settings("layer3"), persistent=False)
    simulator = MqttClient("demo-simulator", broker.settings("simulator"), persistent=False)
    operator = MqttClient("demo-operator", broker.settings("operator"), persistent=False)
    clients = (watching, layer3, simulator, operator)
    try:
        procs.start_all(PROCESSES[:-3] + PROCESSES[-2:])
        watching.subscribe(EVENTS_ALL, watcher.on_event)
        watching.subscribe(ASSET_STATES_ALL, watcher.on_state)
        for client in clients:
            client.start()
        procs.start("chargepoint-simulator")  # now, so that the chargers connecting show up as events
        print(f"all services online: {', '.join(procs.procs)}\n")
        wait_until(lambda: watcher.linked >= CHARGERS.keys(), timeout=20, what="both chargers connected over OCPP")
        print("--- a stranger on the site's LAN tries the broker without a password:",
              stranger_tries(broker.host, broker.port), flush=True)
        for cp_id in CHARGERS.values():
            print(f"--- a bus plugs in at {cp_id}", flush=True)
            simulator.publish(simulator_topic("ocpp"), ChargerControl(charge_point_id=cp_id, action="plug_in").encode())
        wait_until(lambda: all(watcher.states.get(a) == "PREPARING" for a in CHARGERS), timeout=10,
                   what="both chargers PREPARING")

        start = utcnow().replace(microsecond=0) + 2 * SLOT
        df = sample_schedule(start, SLOT)
        print("Layer 3 schedule (kW), slots of 3 s:")
        print(df.to_string(float_format=lambda v: f"{v:g}"), "\n", flush=True)
        schedule = encode_schedule(df, asset_map=ASSET_MAP, site_id=site.site_id, schedule_id="sch_demo_0001")
        layer3.publish(SCHEDULES_IN, schedule)

        incidents = [
            (start + 3.5 * SLOT, "battery faults (fault code set on the device)",
             lambda: battery_control(battery_port, Control.FAULT)),
            (start + 5.5 * SLOT, "the operator resets the battery over the bus (`qubit command reset ast_batt_001`)",
             lambda: operator.publish(OPERATOR_COMMANDS, OperatorCommand(
                 request_id="req_demo_reset", asset_id="ast_batt_001", action=OperatorAction.RESET,
                 issued_by="demo operator", issued_at=utcnow()).encode())),
            (start + 5.2 * SLOT, "bus 12 unplugs and leaves early", lambda: simulator.publish(
                simulator_topic("ocpp"),
                ChargerControl(charge_point_id=CHARGERS["ast_bay_2"], action="unplug").encode())),
        ]
        run_until(watcher, sorted(incidents, key=lambda i: i[0]), deadline=time.monotonic() + DEADLINE)
    finally:
        codes = procs.stop_all()
        for client in clients:
            client.stop()
        broker.stop()
    summary(watcher, codes)
    return 0 if watcher.done and all(c == 0 for c in codes.values()) else 1


def stranger_tries(host: str, port: int) -> str:
    """What the broker answers an anonymous client (it admits none: docs/security.md)."""
    answer: queue.Queue[str] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.on_connect = lambda c, u, flags, reason, props: answer.put(
        f"refused ({reason})" if refused_credentials(reason) else f"ADMITTED ({reason})")
    client.connect(host, port)
    client.loop_start()
    try:
        return answer.get(timeout=5)
    except queue.Empty:
        return "no answer"
    finally:
        client.disconnect()
        client.loop_stop()


def battery_control(port: int, value: Control) -> None:
    """What a technician's commissioning tool does: write the simulator's control register."""
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    client.connect()
    client.write_register(CONTROL.offset, int(value), device_id=1)
    client.close()


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo stopped: no sign of {what} within {timeout:g} s")
        time.sleep(0.1)


def run_until(watcher: Watcher, incidents: list, deadline: float) -> None:
    while not watcher.done and time.monotonic() < deadline:
        while incidents and incidents[0][0] <= datetime.now(UTC):
            _, what, act = incidents.pop(0)
            print(f"--- {what}", flush=True)
            act()
        time.sleep(0.1)
    time.sleep(1.0)  # the last state changes


def summary(watcher: Watcher, codes: dict[str, int]) -> None:
    counts: dict[str, int] = {}
    for status in watcher.statuses.values():
        counts[status] = counts.get(status, 0) + 1
    print()
    if watcher.rejected:
        print(f"Schedule rejected: {watcher.rejected}")
    print(f"Summary: {watcher.expected} commands: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    print("Final states: " + ", ".join(f"{a} {s}" for a, s in sorted(watcher.states.items())))
    print("Shutdown: " + ", ".join(f"{n} exit {c}" for n, c in codes.items()))


if __name__ == "__main__":
    sys.exit(main())
