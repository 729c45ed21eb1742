"""Benchmark: 1,000 simulated chargers connected to the OCPP gateway.

Time from the moment their SET_CHARGE_RATE commands fall due (one batch published on the
gateway's command topic, as the planner does at a slot boundary) to each
SetChargingProfile answered and proven by the charger's composite schedule (the gateway's
COMPLETED result: two OCPP calls per charger, one after the other): p50, p99 and the last.
Beside it, the floor: the same number of round trips over bare websockets between two
processes (a bare echo server process and this one, 1,000 connections, all at once, two
round trips one after the other on each), measured before and after in the same run. The
figure recorded (bench/results.py) is the gateway's p99 beside that floor's p99; the p99 of
a single round trip each is printed and kept in the figure's detail.

    make bench-ocpp    (or: .venv/bin/python bench/ocpp_gateway.py [--version 2.0.1])
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import websockets
from batch_timing import percentiles, time_batch
from paho.mqtt.enums import CallbackAPIVersion
from results import Figure, p99, record

from coordinator.base import Command, CommandType
from coordinator.contract.codec import decode_event
from coordinator.contract.topics import EVENTS_ALL, RESULTS_ALL, event_topic
from tools.broker import free_port, start_broker, wait_for_port
from tools.launcher import ServiceProcesses

CHARGERS, ROUNDS, ROUND_GAP = 1000, 5, 2.0
PASSWORD = "bench-password-0123456789"


def site_config(port: int, version: str) -> str:
    lines = ['site_id = "sit_bench"', "", "[[gateways]]", 'gateway_id = "ocpp"', 'protocol = "ocpp"',
             "[gateways.ocpp]", 'host = "127.0.0.1"', f"port = {port}"]
    for i in range(CHARGERS):
        lines += ["", "[[assets]]", f'asset_id = "ast_cp_{i:04d}"', 'kind = "ev_charger"', 'gateway_id = "ocpp"',
                  "max_power_kw = 22.0", "[assets.ocpp]", f'charge_point_id = "CP{i:04d}"', f'password = "{PASSWORD}"',
                  f'version = "{version}"']
    return "\n".join(lines) + "\n"


ECHO_SERVER = textwrap.dedent("""
    import asyncio, sys, websockets
    async def echo(ws):
        async for message in ws:
            await ws.send(message)
    async def main():
        async with websockets.serve(echo, "127.0.0.1", int(sys.argv[1]), max_size=None):
            await asyncio.Future()
    asyncio.run(main())
""")


async def floor_round(port: int, chargers: int = CHARGERS, trips: int = 1) -> list[float]:
    """Seconds from one start to each connection's ``trips``-th echo (round trips one after the other)."""
    connections = await asyncio.gather(
        *(websockets.connect(f"ws://127.0.0.1:{port}/CP{i:04d}") for i in range(chargers)))
    # About the size of a SetChargingProfile call and its answer.
    message = ('[2,"0c43b85b-b429-43bf-8133-52698b9d34e4","SetChargingProfile",{"connectorId":1,'
               + '"x":0,' * 40 + '"y":1}]')
    start = time.perf_counter()

    async def one(ws) -> float:
        for _ in range(trips):
            await ws.send(message)
            await ws.recv()
        return time.perf_counter() - start

    latencies = await asyncio.gather(*(one(ws) for ws in connections))
    await asyncio.gather(*(ws.close() for ws in connections))
    return list(latencies)


def floor() -> tuple[list[float], list[float]]:
    """(one round trip per charger, two one after the other), ROUNDS rounds of each."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)])
    try:
        assert wait_for_port("127.0.0.1", port, 10)
        one = [t for _ in range(ROUNDS) for t in asyncio.run(floor_round(port))]
        two = [t for _ in range(ROUNDS) for t in asyncio.run(floor_round(port, trips=2))]
        return one, two
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="1.6", choices=["1.6", "2.0.1"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qubit-bench-ocpp-"))
    port = free_port()
    (work / "site.toml").write_text(site_config(port, args.version))
    floor_before = floor()
    broker = start_broker(work / "broker")
    procs = ServiceProcesses(broker.host, broker.port, work / "site.toml", work / "logs")
    inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.on_message = lambda c, u, m: inbox.put(m)
    try:
        procs.start("gateway-ocpp")
        procs.wait_online("gateway-ocpp")
        broker.login().apply(client)
        client.connect(broker.host, broker.port)
        client.subscribe(RESULTS_ALL, qos=1)
        client.subscribe(EVENTS_ALL, qos=1)
        client.loop_start()
        # The simulator is the load generator: a line per charger per setpoint would be its busiest work.
        procs.env["QUBIT_LOG_LEVEL"] = "WARNING"
        procs.start("chargepoint-simulator", "--no-validation", "--no-control", "--meter-interval", "3600")
        ups: set[str] = set()
        deadline = time.monotonic() + 120
        while len(ups) < CHARGERS and time.monotonic() < deadline:
            try:
                m = inbox.get(timeout=1)
            except queue.Empty:
                continue
            if m.topic.startswith(event_topic("DEVICE_LINK_UP", "x").removesuffix("x")):
                ups.add(decode_event(bytes(m.payload)).payload["asset_id"])
        print(f"{len(ups)} chargers connected (OCPP {args.version})")
        time.sleep(3)  # let boots and status notifications settle
        assets = [f"ast_cp_{i:04d}" for i in range(CHARGERS)]
        gateway = []
        for r in range(ROUNDS):
            time.sleep(ROUND_GAP)
            now = datetime.now(UTC)
            batch = [Command(a, CommandType.SET_CHARGE_RATE, {"power_kw": 7.0 + r}, now, attempts=1) for a in assets]
            gateway += time_batch(inbox, client, "ocpp", batch)
    finally:
        client.loop_stop()
        procs.stop_all()
        broker.stop()
    floor_after = floor()
    one_trip, two_trips = floor_before[0] + floor_after[0], floor_before[1] + floor_after[1]
    print(f"{CHARGERS} chargers, {ROUNDS} rounds, OCPP {args.version}")
    print(f"floor   1 bare websocket round trip, 2 processes (before) : {percentiles(floor_before[0])}")
    print(f"floor   2 bare websocket round trips, 2 processes (before): {percentiles(floor_before[1])}")
    print(f"gateway due -> setpoint accepted and proven (MQTT in/out) : {percentiles(gateway)}")
    print(f"floor   1 bare websocket round trip, 2 processes (after)  : {percentiles(floor_after[0])}")
    print(f"floor   2 bare websocket round trips, 2 processes (after) : {percentiles(floor_after[1])}")
    record(Figure(f"OCPP {args.version} gateway p99, {CHARGERS:,} chargers (due -> accepted and proven)",
                  p99(gateway) * 1e3, p99(two_trips) * 1e3, "ms", command="make bench-ocpp", goal=2.0,
                  floor_is="2 bare websocket round trips p99 (SetChargingProfile, GetCompositeSchedule)",
                  detail=f"beside 1 round trip (p99 {p99(one_trip) * 1e3:.0f} ms): "
                         f"{p99(gateway) / p99(one_trip):.2f} x"))


if __name__ == "__main__":
    main()
