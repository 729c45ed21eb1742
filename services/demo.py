"""`make demo`: the whole stack on this machine, driven by one Layer 3 schedule.

Starts a private Mosquitto, the ingester, planner, tracker and loopback gateway as
separate processes, publishes a schedule of eight 3-second slots and prints every event
as SCADA would see it on qubit/events/#. Midway the battery faults and is reset (its
commands are held, then the newest goes out) and bus 12 leaves early (its remaining
commands are cancelled). Ends with a summary and a clean shutdown, in about 40 seconds.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from coordinator.codec import DecodeError, decode_event, encode_schedule
from coordinator.events import EventType
from coordinator.mqtt_client import BrokerSettings, MqttClient
from coordinator.timeutil import utcnow
from coordinator.topics import (
    ASSET_STATES_ALL,
    EVENTS_ALL,
    SCHEDULES_IN,
    simulator_topic,
)
from coordinator.wire import AssetStateMessage, StatusReport, decode

from .broker import start_broker
from .event_lines import describe
from .launcher import ServiceProcesses
from .runtime import DEFAULT_SITE_CONFIG, load_site
from .walkthrough import ASSET_MAP, sample_schedule

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

    def on_event(self, topic: str, data: bytes) -> None:
        try:
            event = decode_event(data)
        except DecodeError as exc:
            print(f"unreadable event on {topic}: {exc.reason}")
            return
        print(describe(event), flush=True)
        p = event.payload
        if p.get("schedule_id") != self.schedule_id:
            return
        if event.event_type is EventType.SCHEDULE_RECEIVED:
            self.expected = p["command_count"]
        elif event.event_type is EventType.SCHEDULE_REJECTED:
            self.rejected = f"{p['reason']}: {p['message']}"
        elif "command_id" in p:
            self.statuses[p["command_id"]] = p["status"]

    def on_state(self, topic: str, data: bytes) -> None:
        msg = decode(AssetStateMessage, data)
        self.states[msg.asset_id] = msg.state

    @property
    def done(self) -> bool:
        ended = sum(s in FINAL for s in self.statuses.values())
        return self.rejected is not None or (self.expected is not None and ended >= self.expected)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="qubit-demo-"))
    site = load_site(None)
    print(f"starting Mosquitto and the services (logs in {workdir})")
    broker = start_broker(workdir / "broker")
    procs = ServiceProcesses(broker.host, broker.port, DEFAULT_SITE_CONFIG, workdir / "logs")
    watcher = Watcher("sch_demo_0001")
    client = MqttClient("demo", BrokerSettings(broker.host, broker.port), persistent=False, announce=False)
    try:
        procs.start_all()
        client.subscribe(EVENTS_ALL, watcher.on_event)
        client.subscribe(ASSET_STATES_ALL, watcher.on_state)
        client.start()
        print(f"all services online: {', '.join(procs.procs)}\n")

        start = utcnow().replace(microsecond=0) + 2 * SLOT
        df = sample_schedule(start, SLOT)
        print("Layer 3 schedule (kW), slots of 3 s:")
        print(df.to_string(float_format=lambda v: f"{v:g}"), "\n", flush=True)
        client.publish(SCHEDULES_IN, encode_schedule(df, asset_map=ASSET_MAP, site_id=site.site_id, schedule_id="sch_demo_0001"))

        incidents = [
            (start + 3.5 * SLOT, "ast_batt_001", "FAULTED", "battery reports a fault"),
            (start + 5.5 * SLOT, "ast_batt_001", "IDLE", "battery reset by the operator"),
            (start + 5.2 * SLOT, "ast_bay_2", "AVAILABLE", "bus 12 unplugs and leaves early"),
        ]
        run_until(watcher, client, sorted(incidents), deadline=time.monotonic() + DEADLINE)
    finally:
        codes = procs.stop_all()
        client.stop()
        broker.stop()
    summary(watcher, codes)
    return 0 if watcher.done and all(c == 0 for c in codes.values()) else 1


def run_until(watcher: Watcher, client: MqttClient, incidents: list, deadline: float) -> None:
    gateway = "loopback"
    while not watcher.done and time.monotonic() < deadline:
        now = datetime.now(timezone.utc)
        while incidents and incidents[0][0] <= now:
            _, asset_id, state, what = incidents.pop(0)
            print(f"--- {what}", flush=True)
            report = StatusReport(asset_id=asset_id, state=state, at=now)
            client.publish(simulator_topic(gateway), report.encode())
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
