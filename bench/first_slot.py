"""5,000 loopback chargers, a 5,000 x 96-slot schedule: how long until the whole first slot is COMPLETED?

Real parts: a private Mosquitto, ingester, planner, tracker and loopback gateway as OS processes.
The schedule goes to qubit/schedules/in; a subscriber counts COMMAND_COMPLETED events of the
first slot (slot 0 carries a value no other slot has). Printed beside a floor measured in the
same run: the library's schedule_to_commands of the same frame plus one broker round trip of
the schedule bytes. On a timeout it says how many of the first slot completed.

    python bench/first_slot.py [--assets 5000] [--slots 96] [--timeout 180]
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pandas as pd
from paho.mqtt.enums import CallbackAPIVersion
from results import Figure, record

from coordinator.contract.codec import DecodeError, decode_event, encode_schedule
from coordinator.contract.events import CommandPayload
from coordinator.contract.topics import ROOT, SCHEDULES_IN
from coordinator.schedule import schedule_to_commands
from tools.broker import LocalMosquitto
from tools.launcher import ServiceProcesses

FIRST_SLOT_KW = 7.0
SITE_ID = "sit_bench_first_slot"


def site_toml(assets: int) -> str:
    lines = [f'site_id = "{SITE_ID}"', "", "[coordinator]", "dispatch_interval_seconds = 0.5",
             "command_timeout_seconds = 60.0", "max_retries = 3", "",
             "[[gateways]]", 'gateway_id = "loopback"', 'protocol = "loopback"', ""]
    for i in range(assets):
        lines += ["[[assets]]", f'asset_id = "ast_ev_{i:05d}"', 'kind = "ev_charger"', 'gateway_id = "loopback"',
                  "max_power_kw = 50.0", ""]
    return "\n".join(lines)


LOOPBACK_STACK = ("ingester", "planner", "tracker", "gateway-loopback")


@contextmanager
def loopback_site(prefix: str, assets: int) -> Iterator[tuple[LocalMosquitto, ServiceProcesses, Path]]:
    """A private broker and the services of a site of ``assets`` loopback chargers, not started
    yet (``stack.start_all(LOOPBACK_STACK)``), each with its own data directory; both stopped on
    exit. Also yields the work directory (logs in ``work / "logs"``)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    site = work / "site.toml"
    site.write_text(site_toml(assets))
    broker = LocalMosquitto(work / "broker").start()
    stack = ServiceProcesses(broker.host, broker.port, site, work / "logs")
    stack.env["QUBIT_DATA_DIR"] = str(work / "data")
    try:
        yield broker, stack, work
    finally:
        stack.stop_all()
        broker.stop()


def frame(assets: int, slots: int, start: datetime) -> tuple[pd.DataFrame, dict[str, str]]:
    """Slot 0 is FIRST_SLOT_KW everywhere; every later slot a different value, so every slot is a command."""
    index = pd.date_range(start, periods=slots, freq="15min")
    values = [FIRST_SLOT_KW] + [10.0 + s * 0.1 for s in range(1, slots)]
    df = pd.DataFrame({f"ev_{i:05d}_kw": values for i in range(assets)}, index=index)
    return df, {f"ev_{i:05d}": f"ast_ev_{i:05d}" for i in range(assets)}


class Counter:
    """Counts first-slot COMMAND_COMPLETED events (distinct commands) on a persistent session."""

    def __init__(self, broker: LocalMosquitto, client_id: str = "bench-first-slot",
                 more: tuple[str, ...] = ()) -> None:
        """``more``: further event types to hear (a subclass's ``_on_message`` takes them)."""
        self.completed: set[str] = set()
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                  protocol=paho.MQTTv311)
        self.client.max_queued_messages_set(0)
        subscribed: queue.Queue[int] = queue.Queue()
        topics = [(f"{ROOT}/events/{kind}/#", 1) for kind in ("COMMAND_COMPLETED", *more)]
        self.client.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(mid)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topics)
        self.client.on_message = self._on_message
        broker.login().apply(self.client)  # the test-only identity: reads events and results
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        subscribed.get(timeout=10)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            p = decode_event(bytes(message.payload)).payload
        except DecodeError:
            return
        if isinstance(p, CommandPayload) and p.parameters.get("power_kw") == FIRST_SLOT_KW:
            with self.lock:
                self.completed.add(p.command_id)

    def count(self) -> int:
        with self.lock:
            return len(self.completed)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def broker_round_trip(broker: LocalMosquitto, data: bytes) -> float:
    """Seconds for ``data`` to go through the broker once, QoS 1, publisher to subscriber."""
    got: queue.Queue[float] = queue.Queue()
    subscribed: queue.Queue[int] = queue.Queue()
    sub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    sub.on_message = lambda c, u, m: got.put(time.perf_counter())
    sub.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(mid)
    broker.login().apply(sub)
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    sub.subscribe("bench/round-trip", qos=1)
    subscribed.get(timeout=10)
    pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    broker.login().apply(pub)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    start = time.perf_counter()
    pub.publish("bench/round-trip", data, qos=1)
    arrived = got.get(timeout=60)
    for client in (pub, sub):
        client.disconnect()
        client.loop_stop()
    return arrived - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=5000)
    parser.add_argument("--slots", type=int, default=96)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the first slot")
    parser.add_argument("--lead", type=float, default=20.0, help="seconds from publishing to the first slot")
    args = parser.parse_args(argv)
    with loopback_site("qubit-first-slot-", args.assets) as (broker, stack, work):
        stack.start_all(LOOPBACK_STACK, timeout=120)
        counter = Counter(broker)
        try:
            return measure(args, broker, counter, work)
        finally:
            counter.close()


def measure(args: argparse.Namespace, broker: LocalMosquitto, counter: Counter, work: Path) -> int:
    """Publish the schedule, wait for the first slot, record the figure; 0 when it all completed."""
    start = (datetime.now(UTC) + timedelta(seconds=args.lead)).replace(microsecond=0)
    df, amap = frame(args.assets, args.slots, start)
    t = time.perf_counter()
    commands = schedule_to_commands(df, amap)
    convert = time.perf_counter() - t
    data = encode_schedule(df, asset_map=amap, site_id=SITE_ID, schedule_id="sch_bench_first_slot")
    trip = broker_round_trip(broker, data)
    first = sum(1 for c in commands if c.scheduled_at == start)
    print(f"{args.assets} assets x {args.slots} slots: {len(commands)} commands, {first} in the first slot, "
          f"schedule {len(data) / 1e6:.1f} MB")
    print(f"floor: schedule_to_commands {convert:.2f} s + broker round trip {trip:.2f} s = {convert + trip:.2f} s")
    stack_client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    broker.login().apply(stack_client)
    stack_client.connect(broker.host, broker.port)
    stack_client.loop_start()
    stack_client.publish(SCHEDULES_IN, data, qos=1).wait_for_publish(60)
    stack_client.disconnect()
    stack_client.loop_stop()
    due = start.timestamp()
    deadline = due + args.timeout
    while counter.count() < first and time.time() < deadline:
        time.sleep(0.2)
    done, elapsed = counter.count(), time.time() - due
    detail = "" if done >= first else f"only {done}/{first} completed within {args.timeout:g} s"
    record(Figure(f"first slot of {args.assets:,} loopback chargers x {args.slots} slots: slot start to the last "
                  "COMPLETED", elapsed, convert + trip, "s", goal=2.0, command="make bench-first-slot",
                  floor_is="schedule_to_commands of the same frame + one broker round trip of the schedule",
                  detail=detail))
    if done >= first:
        return 0
    print(f"first slot: only {done}/{first} COMPLETED within {args.timeout:g} s after the slot started; "
          f"logs in {work / 'logs'}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
