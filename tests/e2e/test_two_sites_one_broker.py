"""Two sites on one broker, each under its own topic root (QUBIT_TOPIC_ROOT): each sees only
its own schedules, commands and events."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from coordinator.contract.codec import decode_event, encode_schedule
from coordinator.contract.messages import CommandBatch, decode
from coordinator.contract.topics import EVENTS_ALL, SCHEDULES_IN, commands_topic, under
from tools.bus_access import HARNESS
from tools.launcher import CORE, ServiceProcesses

pytestmark = pytest.mark.timeout(120)

SITE = Path(__file__).resolve().parents[2] / "tests" / "sites" / "loopback.toml"
ROOTS = ("depot_a", "acme/depot_b")


def site(broker, tmp_path, root: str) -> ServiceProcesses:
    # The test broker's ACL is written for the default root; the sites' processes log in as the
    # test-only harness identity, so this checks what the processes publish and subscribe to.
    folder = tmp_path / root.replace("/", "_")
    procs = ServiceProcesses(broker.host, broker.port, SITE, folder / "logs", folder / "data",
                             logins=lambda identity: broker.env(HARNESS), watcher=broker.login(HARNESS))
    procs.env["QUBIT_TOPIC_ROOT"] = root
    return procs


def schedule(schedule_id: str, power_kw: float) -> bytes:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    df = pd.DataFrame({"ev_007_kw": [power_kw]}, index=pd.date_range(start, periods=1, freq="2s"))
    return encode_schedule(df, asset_map={"ev_007": "ast_bay_1"}, site_id="sit_demo_depot", schedule_id=schedule_id)


def test_two_sites_share_a_broker_and_never_see_each_other(broker, tmp_path, plain):
    sites = {root: site(broker, tmp_path, root) for root in ROOTS}
    try:
        for procs in sites.values():
            procs.start_all(CORE)
        watch = plain("#")  # everything on the broker, to see what goes where
        for n, root in enumerate(ROOTS):
            watch.publish(under(root, SCHEDULES_IN), schedule(f"sch_{n}", 11.0 + n))
        seen: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not all(
                any(t.startswith(f"{root}/events/COMMAND_COMPLETED/") for t, _ in seen) for root in ROOTS):
            seen += [(m.topic, bytes(m.payload)) for m in watch.drain(0.2)]
        for n, root in enumerate(ROOTS):
            events = [decode_event(p) for t, p in seen if t.startswith(under(root, EVENTS_ALL).removesuffix("#"))]
            completed = [e for e in events if e.event_type.value == "COMMAND_COMPLETED"]
            assert completed, f"{root}: no command completed"
            schedules = {e.payload["schedule_id"] for e in events if "schedule_id" in dict(e.payload)}
            assert schedules == {f"sch_{n}"}, f"{root} saw {schedules}"
            batches = [decode(CommandBatch, p) for t, p in seen if t == under(root, commands_topic("loopback"))]
            assert {c["schedule_id"] for b in batches for c in b.commands} == {f"sch_{n}"}
            assert {c["parameters"]["power_kw"] for b in batches for c in b.commands} == {11.0 + n}
        roots = {t.split("/events/")[0] for t, _ in seen if "/events/" in t}
        assert roots == set(ROOTS), "nothing is published outside the sites' roots"
        assert not [t for t, _ in seen if t.startswith("qubit/")]
    finally:
        for procs in sites.values():
            procs.stop_all()
