"""A 5,000-asset site on real protocols: how long until the first slot's 5,000 commands are verified?

The site a large depot runs: 4,900 chargers behind five OCPP gateway processes (980 each, OCPP
1.6 and 2.0.1 alternating) and 100 batteries behind two Modbus gateway processes (50 each),
with the ingester, planner and tracker, on a private Mosquitto. The devices are real protocol
peers: the charge point simulator (OCPP-J over websockets, its chargers shared by a few
processes, ``--part K/N``) and the battery simulator (Modbus TCP, one process per gateway).
A 96-slot schedule for every asset goes to qubit/schedules/in; the clock starts at the first
slot's start and stops at the last of its 5,000 commands COMPLETED as a gateway result
(a charger: SetChargingProfile accepted and proven by GetCompositeSchedule; a battery: written
and read back).

The floor, measured in the same run before the stack starts: the raw protocol round trips to
the same number of devices, split over the same processes, all at once. Bare websockets: echo
servers in as many processes as OCPP gateways, clients in as many as charger simulators, two
request/response round trips per connection (the set and its proof); raw pymodbus: one client
process per Modbus gateway, write + read-back to each real simulated battery. The floor is the
time to the last of both (they run together), the median of three rounds.

    make bench-site    (or: .venv/bin/python bench/site_scale.py [--chargers 980] [--ocpp-gateways 5] ...)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import paho.mqtt.client as paho
import pandas as pd
from ocpp_gateway import ECHO_SERVER
from paho.mqtt.enums import CallbackAPIVersion
from results import Figure, record
from websockets.asyncio.client import ClientConnection, connect

from coordinator.contract.codec import DecodeError, decode_event, encode_schedule
from coordinator.contract.events import CommandPayload
from coordinator.contract.messages import CommandBatch, Outcome, ResultBatch, decode
from coordinator.contract.topics import RESULTS_ALL, ROOT, SCHEDULES_IN
from coordinator.runtime.mqtt import BrokerLogin
from tools.broker import start_broker, wait_for_port
from tools.launcher import ServiceProcesses

SITE_ID = "sit_bench_site"
PASSWORD = "bench-password-0123456789"
FIRST_SLOT_KW = 7.0
COMMAND = "make bench-site"
FLOOR_ROUNDS = 3

# About the size of a SetChargingProfile call and of a GetCompositeSchedule call (as in bench-ocpp).
SET_MESSAGE = ('[2,"0c43b85b-b429-43bf-8133-52698b9d34e4","SetChargingProfile",{"connectorId":1,'
               + '"x":0,' * 40 + '"y":1}]')
PROOF_MESSAGE = ('[2,"1d54c96c-c53a-44cf-9244-63709c0e45f5","GetCompositeSchedule",{"connectorId":1,'
                 '"duration":60,"chargingRateUnit":"W"}]')

P = TypeVar("P")

@dataclass(frozen=True)
class Layout:
    """Which gateway has which devices, and which process simulates them."""

    ocpp_gateways: int
    chargers_per_gateway: int
    modbus_gateways: int
    batteries_per_gateway: int
    charger_processes: int
    ocpp_ports: list[int] = field(default_factory=list)
    battery_ports: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def build(cls, ocpp: int, chargers: int, modbus: int, batteries: int, processes: int) -> Layout:
        ports = iter(listen_ports(ocpp + modbus * batteries))
        return cls(ocpp, chargers, modbus, batteries, processes, [next(ports) for _ in range(ocpp)],
                   {g: [next(ports) for _ in range(batteries)] for g in modbus_ids(modbus)})

    @property
    def ocpp_ids(self) -> list[str]:
        return [f"ocpp-{g + 1}" for g in range(self.ocpp_gateways)]

    @property
    def modbus_ids(self) -> list[str]:
        return modbus_ids(self.modbus_gateways)

    def chargers(self, g: int) -> list[tuple[str, str, str]]:
        """(asset id, charge point id, version) of gateway ``g``'s chargers; versions alternate."""
        return [(f"ast_cp_{g + 1}_{i:04d}", f"CP{g + 1}_{i:04d}", "1.6" if i % 2 == 0 else "2.0.1")
                for i in range(self.chargers_per_gateway)]

    def batteries(self, gateway_id: str) -> list[tuple[str, int]]:
        return [(f"ast_bat_{gateway_id}_{i:03d}", port) for i, port in enumerate(self.battery_ports[gateway_id])]

    @property
    def assets(self) -> list[str]:
        return ([a for g in range(self.ocpp_gateways) for a, _, _ in self.chargers(g)]
                + [a for gid in self.modbus_ids for a, _ in self.batteries(gid)])


def listen_ports(count: int) -> list[int]:
    """Free ports below the ephemeral range: 10,000 outgoing connections (the floor's, the
    chargers') take ephemeral ports, and one of them could take a port chosen there before
    its server binds it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports: list[int] = []
    candidate = random.randrange(10_000, low - count - 2_000)
    while len(ports) < count and candidate < low:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
                ports.append(candidate)
            except OSError:
                pass
        candidate += 1
    return ports


def modbus_ids(count: int) -> list[str]:
    return [f"modbus-{g + 1}" for g in range(count)]


def site_toml(layout: Layout) -> str:
    lines = [f'site_id = "{SITE_ID}"', "", "[coordinator]", "dispatch_interval_seconds = 0.5",
             "command_timeout_seconds = 60.0", "max_retries = 3"]
    for gid, port in zip(layout.ocpp_ids, layout.ocpp_ports, strict=True):
        lines += ["", "[[gateways]]", f'gateway_id = "{gid}"', 'protocol = "ocpp"', "[gateways.ocpp]",
                  'host = "127.0.0.1"', f"port = {port}"]
    for gid in layout.modbus_ids:
        lines += ["", "[[gateways]]", f'gateway_id = "{gid}"', 'protocol = "modbus"']
    for g, gid in enumerate(layout.ocpp_ids):
        for asset_id, cp_id, version in layout.chargers(g):
            lines += ["", "[[assets]]", f'asset_id = "{asset_id}"', 'kind = "ev_charger"', f'gateway_id = "{gid}"',
                      "max_power_kw = 22.0", "[assets.ocpp]", f'charge_point_id = "{cp_id}"',
                      f'password = "{PASSWORD}"', f'version = "{version}"']
    for gid in layout.modbus_ids:
        for asset_id, port in layout.batteries(gid):
            lines += ["", "[[assets]]", f'asset_id = "{asset_id}"', 'kind = "battery"', f'gateway_id = "{gid}"',
                      "max_power_kw = 500.0", "[assets.modbus]", 'host = "127.0.0.1"', f"port = {port}",
                      "poll_interval_seconds = 1.0"]
    return "\n".join(lines) + "\n"


def schedule(layout: Layout, slots: int, start: datetime) -> tuple[pd.DataFrame, dict[str, str]]:
    """Slot 0 is FIRST_SLOT_KW for every asset, every later slot another value: every slot is a command."""
    index = pd.date_range(start, periods=slots, freq="15min")
    values = [FIRST_SLOT_KW] + [10.0 + s * 0.1 for s in range(1, slots)]
    columns: dict[str, list[float]] = {}
    asset_map: dict[str, str] = {}
    for n, asset_id in enumerate(layout.assets):
        key = f"ev_{n:05d}" if asset_id.startswith("ast_cp_") else f"battery_{n:05d}"
        columns[f"{key}_kw" if key.startswith("ev_") else f"{key}_charge_kw"] = values
        asset_map[key] = asset_id
    return pd.DataFrame(columns, index=index), asset_map


# ----------------------------------------------------------------------------------- the floor


async def ws_peer(urls: list[str]) -> None:
    """A floor process: bare websocket clients; per GO line, two round trips on each, all at once."""
    connections = await asyncio.gather(
        *(connect(u, max_size=None, compression=None, ping_interval=None, open_timeout=60) for u in urls))
    await _serve_rounds(connections, _ws_two_trips)
    await asyncio.gather(*(ws.close() for ws in connections))


async def _ws_two_trips(ws: ClientConnection) -> None:
    await ws.send(SET_MESSAGE)
    await ws.recv()
    await ws.send(PROOF_MESSAGE)
    await ws.recv()


async def modbus_peer(ports: list[int]) -> None:
    """A floor process: one raw pymodbus client per battery; per GO line, write + read-back on each."""
    from pymodbus.client import AsyncModbusTcpClient

    clients = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=5, retries=0) for p in ports]
    await asyncio.gather(*(c.connect() for c in clients))

    async def write_read(client: AsyncModbusTcpClient) -> None:
        await client.write_registers(0, [0, 0], device_id=1)  # charge and discharge rate, as the gateway does
        await client.read_holding_registers(0, count=2, device_id=1)

    await _serve_rounds(clients, write_read)
    for c in clients:
        c.close()


async def _serve_rounds(peers: Sequence[P], one: Callable[[P], Awaitable[None]]) -> None:
    print("READY", flush=True)
    loop = asyncio.get_running_loop()

    async def timed(peer: P) -> float:
        await one(peer)
        return time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine

    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "GO":

        done = await asyncio.gather(*(timed(p) for p in peers))
        print(json.dumps({"last": max(done), "count": len(done)}), flush=True)


def peer_main(kind: str, targets: list[str]) -> None:
    if kind == "ws":
        asyncio.run(ws_peer(targets))
    else:
        asyncio.run(modbus_peer([int(t) for t in targets]))


@dataclass
class FloorRun:
    rounds: list[float]
    ws_rounds: list[float]
    modbus_rounds: list[float]

    @property
    def value(self) -> float:
        return statistics.median(self.rounds)


def measure_floor(layout: Layout) -> FloorRun:
    """Echo servers (one process per OCPP gateway) and the floor's client processes, then
    FLOOR_ROUNDS rounds: GO to every client at once, the time to the last answer of all."""
    ports = listen_ports(layout.ocpp_gateways)
    servers = [subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(p)]) for p in ports]
    peers: list[tuple[str, subprocess.Popen[str]]] = []
    try:
        assert all(wait_for_port("127.0.0.1", p, 20) for p in ports), "echo servers did not start"
        n = layout.charger_processes
        parts = [[f"ws://127.0.0.1:{port}/{cp_id}" for g, port in enumerate(ports)
                  for _, cp_id, _ in layout.chargers(g)[k * layout.chargers_per_gateway // n:
                                                        (k + 1) * layout.chargers_per_gateway // n]]
                 for k in range(n)]  # as the simulators' --part K/N splits each gateway's chargers
        for kind, targets in ([("ws", part) for part in parts]
                              + [("modbus", [str(p) for p in ps]) for ps in layout.battery_ports.values()]):
            proc = subprocess.Popen([sys.executable, __file__, "--peer", kind], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(targets) + "\n")
            proc.stdin.flush()
            peers.append((kind, proc))
        for _, proc in peers:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "READY", "a floor peer failed"
        rounds, ws_rounds, modbus_rounds = [], [], []
        for _ in range(FLOOR_ROUNDS):
            time.sleep(0.5)
            go = time.monotonic()
            for _, proc in peers:
                assert proc.stdin is not None
                proc.stdin.write("GO\n")
                proc.stdin.flush()
            lasts = {kind: 0.0 for kind in ("ws", "modbus")}
            for kind, proc in peers:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if not line:
                    raise SystemExit(f"a floor process ({kind}) failed: see its traceback above")
                lasts[kind] = max(lasts[kind], json.loads(line)["last"] - go)
            ws_rounds.append(lasts["ws"])
            modbus_rounds.append(lasts["modbus"])
            rounds.append(max(lasts.values()))
        return FloorRun(rounds, ws_rounds, modbus_rounds)
    finally:
        for _, proc in peers:
            if proc.stdin is not None:
                proc.stdin.close()
        for _, proc in peers:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in servers:
            server.terminate()
            server.wait()


# ------------------------------------------------------------------------------- the watcher


class Watch:
    """Devices linked up, and the first-slot commands as the gateways report them COMPLETED.

    A result is for the first slot when it is an asset's first COMPLETED after the schedule was
    published: nothing else is due before the second slot, 15 minutes later. The planner's
    COMMAND_COMPLETED events of the first slot (its own value) are counted beside them."""

    def __init__(self, host: str, port: int, login: BrokerLogin, assets: set[str]) -> None:
        self.assets = assets
        self.lock = threading.Lock()
        self.linked: set[str] = set()
        self.completed: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.planner_completed: set[str] = set()
        self.dispatched: dict[str, list[tuple[float, int]]] = {}
        """Per gateway: (arrival, commands) of each command batch the planner sent it."""
        self.gateway_last: dict[str, float] = {}
        self.counting = False
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-site", protocol=paho.MQTTv311)
        self.client.max_queued_messages_set(0)
        subscribed: queue.Queue[int] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(mid)
        self.client.on_message = self._on_message
        login.apply(self.client)
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe([(RESULTS_ALL, 1), (f"{ROOT}/events/DEVICE_LINK_UP/#", 1),
                               (f"{ROOT}/events/COMMAND_COMPLETED/#", 1),
                               (f"{ROOT}/commands/+", 1)])
        subscribed.get(timeout=10)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        at = time.time()
        if message.topic.startswith(f"{ROOT}/events/DEVICE_LINK_UP/"):
            with self.lock:
                self.linked.add(message.topic.rsplit("/", 1)[1])
            return
        if not self.counting:
            return
        try:
            if message.topic.startswith(f"{ROOT}/commands/"):
                batch = decode(CommandBatch, bytes(message.payload))
                with self.lock:
                    self.dispatched.setdefault(batch.gateway_id, []).append((at, len(batch.commands)))
            elif message.topic.startswith(f"{ROOT}/results/"):
                received = decode(ResultBatch, bytes(message.payload))
                with self.lock:
                    for r in received.results:
                        if r.outcome is Outcome.COMPLETED and r.asset_id not in self.completed:
                            self.completed[r.asset_id] = at
                            self.gateway_last[received.gateway_id] = at
                        elif r.outcome is Outcome.FAILED and r.asset_id not in self.completed:
                            self.failed[r.asset_id] = r.error or ""
            else:
                p = decode_event(bytes(message.payload)).payload
                if isinstance(p, CommandPayload) and p.parameters.get("power_kw") == FIRST_SLOT_KW:
                    with self.lock:
                        self.planner_completed.add(p.command_id)
        except (DecodeError, ValueError):
            return

    def linked_count(self) -> int:
        with self.lock:
            return len(self.linked & self.assets)

    def completed_count(self) -> int:
        with self.lock:
            return len(self.completed.keys() & self.assets)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(check: Callable[[], bool], limit: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process: its peak resident set, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, every core: /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def raise_open_files_limit() -> None:
    """Every process started here inherits it: a simulator holds a socket per charger."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def py_spy(name: str, pid: int, logs: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy's flame graph of one process for ``seconds`` (its sampling does not pause it)."""
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                             "--duration", str(max(1, round(seconds))), "--rate", "50", "--nonblocking",
                             "--format", "raw", "--output", str(logs / f"py-spy-{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


# -------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ocpp-gateways", type=int, default=5)
    parser.add_argument("--chargers", type=int, default=980, help="chargers per OCPP gateway")
    parser.add_argument("--modbus-gateways", type=int, default=2)
    parser.add_argument("--batteries", type=int, default=50, help="batteries per Modbus gateway")
    parser.add_argument("--charger-processes", type=int, default=2, help="charge point simulator processes")
    parser.add_argument("--slots", type=int, default=96)
    parser.add_argument("--lead", type=float, default=20.0, help="seconds from publishing to the first slot")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds after the first slot's start")
    parser.add_argument("--py-spy", type=float, default=0.0, metavar="SECONDS",
                        help="record the planner, the first gateway and the first simulator for this long from the "
                             "slot's start (py-spy, in the venv), into the log directory")
    parser.add_argument("--peer", choices=["ws", "modbus"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        peer_main(args.peer, json.loads(sys.stdin.readline()))
        return 0
    raise_open_files_limit()
    layout = Layout.build(args.ocpp_gateways, args.chargers, args.modbus_gateways, args.batteries,
                          args.charger_processes)
    assets = set(layout.assets)
    versions: dict[str, str | None] = {a: v for g in range(layout.ocpp_gateways) for a, _, v in layout.chargers(g)}
    size = (f"{len(assets)} assets: {args.ocpp_gateways} OCPP gateways x {args.chargers} chargers "
            f"(1.6 / 2.0.1 alternating, {args.charger_processes} simulator processes), "
            f"{args.modbus_gateways} Modbus gateways x {args.batteries} batteries")
    print(size, flush=True)
    work = Path(tempfile.mkdtemp(prefix="qubit-bench-site-"))
    site = work / "site.toml"
    site.write_text(site_toml(layout))
    broker = start_broker(work / "broker", gateways=[*layout.ocpp_ids, *layout.modbus_ids])
    procs = ServiceProcesses(broker.host, broker.port, site, work / "logs")
    watch: Watch | None = None
    try:
        for gid in layout.modbus_ids:
            procs.start_simulator("battery-simulator", gid, "--gateway-id", gid)
        assert all(wait_for_port("127.0.0.1", p, 60) for ps in layout.battery_ports.values() for p in ps), \
            "battery simulators did not start"
        t = time.monotonic()
        floor = measure_floor(layout)
        print(f"floor: {FLOOR_ROUNDS} rounds, to the last answer of all: "
              f"{', '.join(f'{r:.3f}' for r in floor.rounds)} s (websockets {max(floor.ws_rounds):.3f} s at most, "
              f"pymodbus {max(floor.modbus_rounds):.3f} s at most; measured in {time.monotonic() - t:.1f} s)",
              flush=True)

        t = time.monotonic()
        watch = Watch(broker.host, broker.port, broker.login(), assets)  # before the batteries link up
        gateways = ([procs.start_gateway(g, "ocpp") for g in layout.ocpp_ids]
                    + [procs.start_gateway(g, "modbus") for g in layout.modbus_ids])
        procs.start_all(("ingester", "planner", "tracker"), timeout=120)
        procs.wait_online(*gateways, timeout=120)
        print(f"stack online in {time.monotonic() - t:.1f} s: ingester, planner, tracker, {', '.join(gateways)}",
              flush=True)
        # The simulators are the load generator: a line per charger per setpoint would be their busiest work.
        procs.env["QUBIT_LOG_LEVEL"] = "WARNING"
        ocpp_args = [a for g in layout.ocpp_ids for a in ("--gateway-id", g)]
        simulators = [procs.start_simulator("chargepoint-simulator", str(k), *ocpp_args,
                                            "--part", f"{k}/{args.charger_processes}", "--no-validation",
                                            "--no-control", "--meter-interval", "3600")
                      for k in range(args.charger_processes)]
        t = time.monotonic()
        all_up = wait_until(lambda: watch.linked_count() >= len(assets), 150)
        linked = watch.linked_count()
        print(f"{linked} of {len(assets)} devices linked up in {time.monotonic() - t:.1f} s", flush=True)
        time.sleep(3)  # boots, status notifications and the fallback profiles settle

        start = (datetime.now(UTC) + timedelta(seconds=args.lead)).replace(microsecond=0)
        df, amap = schedule(layout, args.slots, start)
        data = encode_schedule(df, asset_map=amap, site_id=SITE_ID, schedule_id="sch_bench_site")
        print(f"schedule: {len(assets)} assets x {args.slots} slots, {len(data) / 1e6:.1f} MB; "
              f"first slot at {start:%H:%M:%S}", flush=True)
        watch.counting = True
        published = time.time()
        watch.client.publish(SCHEDULES_IN, data, qos=1).wait_for_publish(60)
        due = start.timestamp()
        wait_until(lambda: time.time() >= due, args.lead + 1, step=0.01)
        pids = {name: proc.pid for name, proc in procs.procs.items() if proc.poll() is None}
        cpu_at_due = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_at_due = machine_cpu_seconds()
        spies = [py_spy(name, pid, work / "logs", args.py_spy) for name, pid in pids.items()
                 if args.py_spy and name in ("planner", gateways[0], simulators[0])]
        finished = wait_until(lambda: watch.completed_count() >= len(assets),
                              due + args.timeout - time.time())
        cpu = {name: cpu_seconds(pid) - cpu_at_due[name] for name, pid in pids.items()}
        machine = machine_cpu_seconds() - machine_at_due
        window = time.time() - due
        for spy in spies:
            spy.wait()
        with watch.lock:
            done = {a: at for a, at in watch.completed.items() if a in assets}
            failed = len(watch.failed.keys() - done.keys())
            planner_done = len(watch.planner_completed)
            dispatched = {g: list(batches) for g, batches in watch.dispatched.items()}
            gateway_last = dict(watch.gateway_last)
        last = max(done.values()) - due if done else args.timeout
        before_due = sum(1 for at in done.values() if at < due)
        rss = {"planner": peak_rss_mb(procs.procs["planner"].pid)}
        rss |= {g: peak_rss_mb(procs.procs[g].pid) for g in gateways}
        sim_rss = {s: peak_rss_mb(procs.procs[s].pid) for s in simulators}
        alive = {g: procs.alive(g) for g in gateways}
    finally:
        if watch is not None:
            watch.close()
        procs.stop_all()
        broker.stop()

    print(f"published {due - published:.1f} s before the first slot; {len(done)} of {len(assets)} COMPLETED "
          f"(gateway results; {planner_done} COMMAND_COMPLETED events from the planner), {failed} failed at last "
          f"word, {before_due} before the slot's start; logs in {work / 'logs'}")
    cores = os.cpu_count() or 1
    print(f"CPU seconds in the {window:.1f} s from the slot's start to the end ({cores} cores: {cores * window:.0f} "
          f"at most): the machine {machine:.1f}, this site's processes {sum(cpu.values()):.1f}: "
          + ", ".join(f"{n} {c:.1f}" for n, c in sorted(cpu.items(), key=lambda x: -x[1])))
    for g in sorted(dispatched):
        batches = dispatched[g]
        print(f"  {g}: {sum(n for _, n in batches)} commands in {len(batches)} batches, arrived "
              f"{batches[0][0] - due:+.2f} .. {batches[-1][0] - due:+.2f} s; last COMPLETED "
              f"{gateway_last.get(g, float('nan')) - due:+.2f} s")
    for kind, version in (("1.6", "1.6"), ("2.0.1", "2.0.1"), ("battery", None)):
        times = sorted(at - due for a, at in done.items() if versions.get(a) == version)
        if times:
            print(f"  {kind:7}: {len(times)} COMPLETED, after the slot's start p10 {times[len(times) // 10]:.2f} s, "
                  f"p50 {times[len(times) // 2]:.2f} s, p90 {times[len(times) * 9 // 10]:.2f} s, "
                  f"last {times[-1]:.2f} s")
    print("peak RSS of the simulators: " + ", ".join(f"{s} {m:.0f} MB" for s, m in sim_rss.items()))
    if not all(alive.values()):
        print("exited early: " + ", ".join(g for g, up in alive.items() if not up))
    detail = (f"{size}; {len(done)} of {len(assets)} COMPLETED"
              + ("" if finished else f" within {args.timeout:g} s (value is the timeout)")
              + ("" if all_up else f"; only {linked} devices linked up")
              + f"; floor: websockets {statistics.median(floor.ws_rounds):.2f} s, "
                f"pymodbus {statistics.median(floor.modbus_rounds):.2f} s (median rounds)")
    record(Figure(f"Site of {len(assets):,} assets: first slot all COMPLETED after its start",
                  last if finished else args.timeout, floor.value, "s",
                  floor_is="raw protocol round trips to the same devices, same process split, all at once: "
                           "2 bare websocket round trips per charger with 1 pymodbus write + read-back per "
                           "battery, time to the last of both (median of 3 rounds)",
                  command=COMMAND, goal=2.0, detail=detail))
    for name, mb in rss.items():
        record(Figure(f"Site of {len(assets):,} assets: peak RSS of {name}", mb, None, "MB",
                      floor_is="-", command=COMMAND, detail="VmHWM from /proc/<pid>/status at the end of the run"))
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
