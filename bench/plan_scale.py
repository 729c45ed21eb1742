"""A 5,000-asset site's 96-slot schedule through the real services: plan time and peak memory.

Real parts: a private Mosquitto; ingester, planner, tracker and loopback gateway as OS processes.

- **Plan time**: from the schedule's publication on qubit/schedules/in (the clock read just
  before publish) to the arrival of its SCHEDULE_PLANNED event at a subscriber. The planner
  publishes that event from its outbox only after the ledger commit that holds the schedule's
  480,000 commands, so this span covers the ingester's checks, both broker hops, the planner's
  checks, the ledger commit and the event's hop. Floor, measured in the same run: one broker
  round trip of the same schedule bytes (QoS 1, publisher to subscriber) plus decoding them
  once with the library (``decode_schedule``): what any planner behind a broker pays at least.
- **Peak RSS** (VmHWM in /proc/<pid>/status) of the planner and the tracker, read once the
  first slot's commands completed (so the tracker has followed every asset's report as well).
  Floor: an idle Python process that imports the same service module (same interpreter, same
  libraries: what the process costs before it holds any asset).

    python bench/plan_scale.py [--assets 5000] [--slots 96]
"""

from __future__ import annotations

import argparse
import queue
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
from first_slot import LOOPBACK_STACK, SITE_ID, Counter, broker_round_trip, frame, loopback_site
from paho.mqtt.enums import CallbackAPIVersion
from results import Figure, record

from coordinator.contract.codec import decode_schedule, encode_schedule
from coordinator.contract.topics import SCHEDULES_IN
from tools.broker import LocalMosquitto

COMMAND = "make bench-plan"
ROOT_DIR = Path(__file__).resolve().parent.parent


class Watch(Counter):
    """Arrival times of SCHEDULE_RECEIVED and SCHEDULE_PLANNED, and the first slot's COMMAND_COMPLETED."""

    def __init__(self, broker: LocalMosquitto) -> None:
        self.planned: queue.Queue[float] = queue.Queue()
        self.received: queue.Queue[float] = queue.Queue()
        super().__init__(broker, "bench-plan-scale", ("SCHEDULE_PLANNED", "SCHEDULE_RECEIVED"))

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        at = time.perf_counter()
        if "/SCHEDULE_PLANNED/" in message.topic:
            self.planned.put(at)
        elif "/SCHEDULE_RECEIVED/" in message.topic:
            self.received.put(at)
        else:
            super()._on_message(client, userdata, message)


def peak_rss_mb(pid: int) -> float:
    """VmHWM of ``pid``: the most resident memory it ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def idle_rss_mb(module: str) -> float:
    """Peak RSS of a Python process that imports ``module`` and does nothing else."""
    code = f"import {module}, pathlib; print(pathlib.Path('/proc/self/status').read_text())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT_DIR, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def publish(broker: LocalMosquitto, data: bytes) -> float:
    """Publish ``data`` on qubit/schedules/in; returns the clock read just before."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    broker.login().apply(client)
    client.connect(broker.host, broker.port)
    client.loop_start()
    start = time.perf_counter()
    client.publish(SCHEDULES_IN, data, qos=1).wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    return start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=5000)
    parser.add_argument("--slots", type=int, default=96)
    parser.add_argument("--lead", type=float, default=15.0, help="seconds from publishing to the first slot")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the first slot")
    args = parser.parse_args(argv)
    with loopback_site("qubit-plan-scale-", args.assets) as (broker, stack, _work):
        watch: Watch | None = None
        try:
            stack.start_all(LOOPBACK_STACK, timeout=120)
            watch = Watch(broker)
            start = (datetime.now(UTC) + timedelta(seconds=args.lead)).replace(microsecond=0)
            df, amap = frame(args.assets, args.slots, start)
            data = encode_schedule(df, asset_map=amap, site_id=SITE_ID, schedule_id="sch_bench_plan_scale")
            del df
            t = time.perf_counter()
            decode_schedule(data)
            decode = time.perf_counter() - t
            trip = broker_round_trip(broker, data)
            floor = decode + trip
            cells = args.assets * args.slots
            print(f"{args.assets} assets x {args.slots} slots: {cells} commands, schedule {len(data) / 1e6:.1f} MB")
            print(f"floor: decode_schedule {decode:.2f} s + broker round trip {trip:.2f} s = {floor:.2f} s")
            published = publish(broker, data)
            planned = watch.planned.get(timeout=120) - published
            received = watch.received.get(timeout=10) - published
            print(f"publication to SCHEDULE_RECEIVED (the ingester's checks) {received:.2f} s, "
                  f"to SCHEDULE_PLANNED {planned:.2f} s")
            deadline = time.monotonic() + args.lead + args.timeout
            while watch.count() < args.assets and time.monotonic() < deadline:
                time.sleep(0.2)
            print(f"first slot: {watch.count()}/{args.assets} COMPLETED")
            rss = {name: peak_rss_mb(stack.procs[name].pid) for name in ("planner", "tracker", "ingester")}
            idle = {name: idle_rss_mb(f"services.{name}") for name in ("planner", "tracker")}
            print(f"ingester peak RSS {rss['ingester']:.0f} MB")
            size = f"{args.assets:,} assets x {args.slots} slots ({cells:,} commands)"
            record(Figure(f"plan time, {size}: publication to SCHEDULE_PLANNED", planned, floor, "s",
                          floor_is="decode_schedule of the same bytes + one broker round trip of them",
                          command=COMMAND, absolute=2.0))
            for name in ("planner", "tracker"):
                record(Figure(f"{name} peak RSS, {size}", rss[name], idle[name], "MB",
                              floor_is=f"idle python importing services.{name}", command=COMMAND, absolute=200.0,
                              detail=f"first slot {watch.count()}/{args.assets} completed"))
            return 0 if watch.count() >= args.assets else 1
        finally:
            if watch is not None:
                watch.close()


if __name__ == "__main__":
    sys.exit(main())
