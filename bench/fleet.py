"""The fleet (docs/fleet.md): catch-up after a cut, and events through the bridges, each beside a floor.

Runs the fleet check (tools/fleet/check.py) on N sites, then:

- catch-up: link restored -> the last of what the cut site published meanwhile (its events and
  a burst of 2,000 numbered QoS 1 messages) received centrally, beside the same burst crossing
  the healthy bridge; and the drain alone (bridge back up -> last message), beside the same floor.
- throughput: a burst of events published on every site broker at once (one publisher per
  site), counted on the central broker, beside the same burst published on the central broker
  directly (no bridge in the way).
- the central broker's memory with N bridges, beside the same broker before any bridge connected.

    python bench/fleet.py [--sites 10] [--burst 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from results import Figure, record

from coordinator.contract.topics import ROOT
from tools.broker import LocalMosquitto
from tools.bus_access import HARNESS, central_topic
from tools.fleet.check import BURST_TOPIC, publish_burst, run
from tools.fleet.costs import process_cpu_s, process_rss_mb
from tools.fleet.observer import Observer, Seen
from tools.fleet.stack import Fleet

COMMAND = "make bench-fleet"
THROUGHPUT_TOPIC = f"{ROOT}/events/BENCH_BURST/site"


def healthy_floor(fleet: Fleet, count: int) -> float:
    """Seconds for the same burst to cross the cut site's bridge, healthy this time: first
    publish on the site broker -> last arrival centrally."""
    assert fleet.central is not None
    cut = fleet.sites[-1]
    counter = Observer(fleet.central.host, fleet.central.port, fleet.central.login(HARNESS),
                       central_topic(cut.site_id, BURST_TOPIC))
    try:
        began = time.monotonic()
        publish_burst(cut, count)
        counter.wait_for(lambda seen: len(seen) >= count, 60)
        return max(s.at for s in counter.snapshot()) - began
    finally:
        counter.close()


def burst(fleet: Fleet, per_site: int, payload: bytes, *, direct: bool) -> tuple[float, int, float]:
    """``per_site`` events from each site at once (one publisher thread per site), counted on the
    central broker: (seconds first publish -> last arrival, arrivals, central broker CPU s).
    ``direct``: published on the central broker under each site's prefix (no bridge)."""
    central = fleet.central
    assert central is not None and central.pid is not None
    topics = [central_topic(s.site_id, THROUGHPUT_TOPIC) for s in fleet.sites]
    counter = Observer(central.host, central.port, central.login(HARNESS), *topics)
    brokers: list[LocalMosquitto] = [central if direct else s.broker for s in fleet.sites]
    publishers = [Observer(b.host, b.port, b.login(HARNESS)) for b in brokers]
    total = per_site * len(publishers)

    def send(publisher: Observer, topic: str) -> None:
        infos = [publisher.client.publish(topic, payload, qos=1) for _ in range(per_site)]
        for info in infos:
            info.wait_for_publish(60)

    try:
        cpu = process_cpu_s(central.pid)
        began = time.monotonic()
        threads = [threading.Thread(target=send, args=(p, t if direct else THROUGHPUT_TOPIC))
                   for p, t in zip(publishers, topics, strict=True)]
        for thread in threads:
            thread.start()
        counter.wait_for(lambda seen: len(seen) >= total, 120)
        for thread in threads:
            thread.join(60)
        seen: list[Seen] = counter.snapshot()
        return (max(s.at for s in seen) - began if seen else float("nan")), len(seen), process_cpu_s(central.pid) - cpu
    finally:
        for p in publishers:
            p.close()
        counter.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--burst", type=int, default=300, help="events per site in the throughput burst")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="qubit-bench-fleet-"))
    with Fleet(work, args.sites) as fleet:
        assert fleet.central is not None and fleet.central.pid is not None
        story = run(fleet)
        if not story.passed:
            print(f"FAIL: {'; '.join(story.failures)}; logs in {work}")
            return 1
        m = story.measured
        floor = healthy_floor(fleet, m.burst)
        n = args.sites
        what = f"{m.burst} messages and {m.cut_events} events"
        print(f"floor: the same {m.burst} messages across the healthy bridge in {floor:.3f} s")
        record(Figure(f"Fleet catch-up after a cut ({n} sites, {what})", m.burst_catch_up_s, floor, "s",
                      floor_is="the same burst crossing the healthy bridge (publish to last arrival)",
                      command=COMMAND,
                      detail=f"link restored -> last message centrally; of which bridge reconnect "
                             f"{m.reconnect_s:.2f} s (restart_timeout 1 2, TLS); 0 lost, {m.duplicates} events twice"))
        record(Figure(f"Fleet drain after the bridge reconnects ({n} sites, {what})",
                      m.burst_catch_up_s - m.reconnect_s, floor, "s", command=COMMAND,
                      floor_is="the same burst crossing the healthy bridge (publish to last arrival)",
                      detail="bridge up notification -> last message of the cut centrally"))
        if fleet.scada is not None:
            fleet.scada.close()
            fleet.scada = None
        for site in fleet.sites:  # the check is over: nothing else to watch, less for this process to do
            if site.local is not None:
                site.local.close()
                site.local = None
        payload = m.cut_payloads[0][1] if m.cut_payloads else b"x" * 300  # a real event's bytes
        bridged_s, bridged_n, bridged_cpu = burst(fleet, args.burst, payload, direct=False)
        direct_s, direct_n, direct_cpu = burst(fleet, args.burst, payload, direct=True)
        total = args.burst * n
        print(f"burst of {total} events ({len(payload)} bytes): through the bridges {bridged_n} in {bridged_s:.2f} s "
              f"(central broker CPU {bridged_cpu:.2f} s); directly on the central broker {direct_n} in "
              f"{direct_s:.2f} s (CPU {direct_cpu:.2f} s)")
        record(Figure(f"Fleet central event throughput through {n} bridges", bridged_n / bridged_s,
                      direct_n / direct_s, "events/s", higher_is_better=True, command=COMMAND,
                      floor_is="the same burst published on the central broker directly (no bridge)",
                      detail=f"{total} QoS 1 events, one publisher per site; {bridged_n} arrived; central broker "
                             f"CPU {1e6 * bridged_cpu / max(bridged_n, 1):.0f} us/event bridged, "
                             f"{1e6 * direct_cpu / max(direct_n, 1):.0f} us/event direct"))
        after = process_rss_mb(fleet.central.pid)
        up = fleet.central_up_rss_mb
        record(Figure(f"Fleet central broker memory with {n} bridges", up, fleet.central_idle_rss_mb, "MB",
                      floor_is="the same broker before any bridge connected", command=COMMAND,
                      detail=f"every site online; {(up - fleet.central_idle_rss_mb) * 1024 / n:.0f} kB per bridge "
                             f"(its sessions, retained states); {after:.1f} MB after the cut and the bursts"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
