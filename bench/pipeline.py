"""Sustained throughput of the whole stack: schedule in -> COMMAND_COMPLETED out, commands per second.

Real parts: a private Mosquitto; ingester, planner, tracker and loopback gateway as OS processes.
One schedule of short slots (default 2,000 loopback chargers x 30 slots of 1 s, every slot a new
value for every charger: 2,000 commands falling due every second, 60,000 in all) is published on
qubit/schedules/in; a subscriber counts COMMAND_COMPLETED and COMMAND_CANCELLED events. The
figure is COMMAND_COMPLETED events per second between the first slot's start and the last
COMPLETED event. The load offered is higher than the stack can take on this machine on purpose:
what it cannot send in time is superseded by the asset's next setpoint (CANCELLED, never applied
late: docs/dispatch.md), so the completions per second are the stack's capacity, not the offer.

Floor, measured in the same run: raw paho QoS 1 messages per second between two processes on
the same broker (a publisher process sending 20,000 messages of 200 bytes; this process
subscribed), from the first message received to the last.

    python bench/pipeline.py [--assets 2000] [--slots 30] [--slot-seconds 1]
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pandas as pd
from first_slot import LOOPBACK_STACK, SITE_ID, loopback_site
from paho.mqtt.enums import CallbackAPIVersion
from results import Figure, record

from coordinator.contract.codec import encode_schedule
from coordinator.contract.topics import ROOT, SCHEDULES_IN
from tools.broker import HARNESS, LocalMosquitto

FLOOR_MESSAGES = 20_000
FLOOR_TOPIC = "bench/floor"


class Tally:
    """Arrival times of events on ``topics`` (prefix -> count, first and last arrival)."""

    def __init__(self, broker: LocalMosquitto, client_id: str, topics: list[str]) -> None:
        self.counts: dict[str, int] = {t: 0 for t in topics}
        self.first: float | None = None
        self.last: dict[str, float] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                  protocol=paho.MQTTv311)
        self.client.max_queued_messages_set(0)
        subscribed: queue.Queue[int] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(mid)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe([(f"{t}/#" if "/" in t else t, 1) for t in topics])
        self.client.on_message = self._on_message
        broker.login().apply(self.client)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        subscribed.get(timeout=10)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        at = time.perf_counter()
        with self.lock:
            for prefix in self.counts:
                if message.topic.startswith(prefix):
                    self.counts[prefix] += 1
                    self.last[prefix] = at
                    if self.first is None:
                        self.first = at
                    return

    def count(self, prefix: str) -> int:
        with self.lock:
            return self.counts[prefix]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def floor_rate(broker: LocalMosquitto) -> float:
    """Raw paho QoS 1 messages per second, publisher process -> this process, same broker."""
    tally = Tally(broker, "bench-pipeline-floor", [FLOOR_TOPIC])
    env = os.environ | broker.env(HARNESS)  # its login: a password file, never a password on argv
    publisher = subprocess.Popen([sys.executable, __file__, "--floor-publisher"],
                                 cwd=Path(__file__).resolve().parent.parent, env=env)
    deadline = time.monotonic() + 120
    while tally.count(FLOOR_TOPIC) < FLOOR_MESSAGES and time.monotonic() < deadline:
        time.sleep(0.05)
    publisher.wait(timeout=60)
    tally.close()
    got = tally.count(FLOOR_TOPIC)
    assert tally.first is not None
    return (got - 1) / (tally.last[FLOOR_TOPIC] - tally.first)


def publish_floor() -> None:
    """The floor's publisher: FLOOR_MESSAGES QoS 1 messages as fast as paho takes them."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(1000)  # as the services' client (runtime/mqtt.py)
    password = Path(os.environ["QUBIT_MQTT_PASSWORD_FILE"]).read_text().strip()
    client.username_pw_set(os.environ["QUBIT_MQTT_USERNAME"], password)
    client.connect(os.environ["QUBIT_MQTT_HOST"], int(os.environ["QUBIT_MQTT_PORT"]))
    client.loop_start()
    payload = bytes(200)
    infos = [client.publish(FLOOR_TOPIC, payload, qos=1) for _ in range(FLOOR_MESSAGES)]
    infos[-1].wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def schedule(assets: int, slots: int, slot_seconds: float, start: datetime) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every slot a new value for every charger: each slot is ``assets`` commands."""
    index = pd.date_range(start, periods=slots, freq=pd.Timedelta(seconds=slot_seconds))
    values = [1.0 + (s % 40) * 0.5 for s in range(slots)]
    df = pd.DataFrame({f"ev_{i:05d}_kw": values for i in range(assets)}, index=index)
    return df, {f"ev_{i:05d}": f"ast_ev_{i:05d}" for i in range(assets)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=30)
    parser.add_argument("--slot-seconds", type=float, default=1.0)
    parser.add_argument("--lead", type=float, default=10.0, help="seconds from publishing to the first slot")
    parser.add_argument("--floor-publisher", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_publisher:
        publish_floor()
        return 0
    with loopback_site("qubit-pipeline-", args.assets) as (broker, stack, _work):
        completed, cancelled = f"{ROOT}/events/COMMAND_COMPLETED", f"{ROOT}/events/COMMAND_CANCELLED"
        tally: Tally | None = None
        try:
            floor = floor_rate(broker)
            print(f"floor: raw paho QoS 1 between two processes: {floor:,.0f} msg/s")
            stack.start_all(LOOPBACK_STACK, timeout=120)
            tally = Tally(broker, "bench-pipeline", [completed, cancelled])
            start = (datetime.now(UTC) + timedelta(seconds=args.lead)).replace(microsecond=0)
            df, amap = schedule(args.assets, args.slots, args.slot_seconds, start)
            data = encode_schedule(df, asset_map=amap, site_id=SITE_ID, schedule_id="sch_bench_pipeline")
            total = args.assets * args.slots
            client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
            broker.login().apply(client)
            client.connect(broker.host, broker.port)
            client.loop_start()
            client.publish(SCHEDULES_IN, data, qos=1).wait_for_publish(60)
            client.disconnect()
            client.loop_stop()
            began = time.perf_counter() + (start - datetime.now(UTC)).total_seconds()
            span = args.slots * args.slot_seconds
            # Done when every command ended (completed or superseded), or quiet for 10 s after the schedule
            deadline = time.monotonic() + args.lead + span + 300
            quiet_since, seen = time.monotonic(), -1
            while time.monotonic() < deadline:
                ended = tally.count(completed) + tally.count(cancelled)
                if ended >= total:
                    break
                if ended != seen:
                    seen, quiet_since = ended, time.monotonic()
                elif time.monotonic() - quiet_since > 10 and time.perf_counter() > began + span:
                    break
                time.sleep(0.2)
            done, superseded = tally.count(completed), tally.count(cancelled)
            last = tally.last.get(completed, began)
            rate = done / max(last - began, 1e-9)
            offered = args.assets / args.slot_seconds
            print(f"{args.assets} chargers x {args.slots} slots of {args.slot_seconds:g} s: {total} commands offered "
                  f"({offered:,.0f}/s); {done} COMPLETED, {superseded} CANCELLED (superseded) in {last - began:.1f} s")
            record(Figure("pipeline: schedule in to COMMAND_COMPLETED out, sustained", rate, floor, "cmd/s",
                          floor_is="raw paho QoS 1 messages/s between two processes, same broker",
                          command="make bench-pipeline", goal=1.0, higher_is_better=True,
                          detail=f"{args.assets:,} loopback chargers, {args.slots} slots of {args.slot_seconds:g} s "
                                 f"({offered:,.0f} cmd/s offered): {done:,} completed, {superseded:,} superseded"))
            return 0
        finally:
            if tally is not None:
                tally.close()


if __name__ == "__main__":
    sys.exit(main())
