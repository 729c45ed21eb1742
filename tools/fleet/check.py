"""The fleet check: what `make fleet` runs and tests/fleet/test_fleet.py asserts.

1. Every site up; the central SCADA subscriber sees every site's services, asset states and events.
2. Isolation: logged in as site A's bridge, a client can neither write into site B's tree (a forged
   event, a forged operator command) nor read anything of it.
3. One operator command through the central broker to one site: that site accepts and completes
   it; no other site hears it.
4. A cut: one site's link severed; a schedule published to that site runs to completion on its
   own; the link restored; the central subscriber receives every event the site emitted meanwhile
   (event ids compared with a subscriber on the site's own broker: none lost).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd

from coordinator.contract.codec import DecodeError, encode_event, encode_schedule
from coordinator.contract.events import CommandPayload, EventType, OperatorCommandAccepted
from coordinator.contract.messages import Availability, OperatorAction, OperatorCommand, decode
from coordinator.contract.topics import OPERATOR_COMMANDS, ROOT, SCHEDULES_IN
from coordinator.events import Event
from coordinator.ids import new_id
from coordinator.runtime.mqtt import BrokerLogin
from tools.broker import LocalMosquitto
from tools.bus_access import BRIDGE_STATE, FLEET_SCADA, HARNESS, bridge_identity, central_topic
from tools.fleet import tally
from tools.fleet.costs import process_cpu_s, process_rss_mb
from tools.fleet.observer import Observer, Seen
from tools.fleet.stack import ASSETS, CHARGERS, Fleet, Site
from tools.launcher import CORE

STEP_TIMEOUT_S = 60.0
BURST_TOPIC = f"{ROOT}/telemetry/fleet-check/burst"
"""Under a bridged tree, not under events/: no site process or SCADA reads it as an event."""


@dataclass
class Measured:
    """What the cut and the catch-up took, for bench/fleet.py."""

    cut_events: int = 0
    reconnect_s: float = 0.0
    """Link restored -> the bridge's "up" notification on the central broker."""
    catch_up_s: float = 0.0
    """Link restored -> the last event of the cut received centrally."""
    duplicates: int = 0
    burst: int = 0
    """Messages a harness published on the cut site's broker, beyond the site's own events."""
    burst_catch_up_s: float = 0.0
    """Link restored -> the last of the burst received centrally."""
    cut_payloads: list[tuple[str, bytes]] = field(default_factory=list)
    """The cut site's events of the cut, as its own broker carried them (topic, bytes)."""


@dataclass
class Story:
    """Prints each step as it happens, keeps the verdicts."""

    failures: list[str] = field(default_factory=list)
    measured: Measured = field(default_factory=Measured)

    def say(self, text: str) -> None:
        print(text, flush=True)

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        self.say(f"  {'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")
        if not ok:
            self.failures.append(what)
        return ok

    @property
    def passed(self) -> bool:
        return not self.failures


def central_events(fleet: Fleet) -> list[tally.Received]:
    assert fleet.scada is not None
    return tally.events(fleet.scada.snapshot())


def local_events(site: Site) -> list[tally.Received]:
    assert site.local is not None
    return tally.events(site.local.snapshot())


def _of_site(site_id: str, kind: str) -> Callable[[list[Seen]], bool]:
    prefix = central_topic(site_id, f"{ROOT}/{kind}/")
    return lambda seen: any(s.topic.startswith(prefix) for s in seen)


def step_everyone_seen(fleet: Fleet, story: Story) -> None:
    assert fleet.scada is not None
    story.say(f"1. {len(fleet.sites)} sites up in {fleet.started_in_s:.1f} s "
              f"({len(fleet.sites) * len(CORE)} processes, {len(fleet.sites) + 1} brokers, bridges over "
              f"{'TLS' if fleet.tls else 'plain MQTT'}); what the central SCADA subscriber sees:")

    def everything(seen: list[Seen]) -> bool:
        topics = {s.topic for s in seen}
        return all(central_topic(site.site_id, f"{ROOT}/state/{a}") in topics for site in fleet.sites for a in ASSETS) \
            and all(central_topic(site.site_id, f"{ROOT}/services/{n}/status") in topics
                    for site in fleet.sites for n in CORE) \
            and all(_of_site(site.site_id, "events")(seen) for site in fleet.sites)

    fleet.scada.wait_for(everything, STEP_TIMEOUT_S)
    topics = {s.topic for s in fleet.scada.snapshot()}
    for site in fleet.sites:
        states = [a for a in ASSETS if central_topic(site.site_id, f"{ROOT}/state/{a}") in topics]
        services = [n for n in CORE if central_topic(site.site_id, f"{ROOT}/services/{n}/status") in topics]
        events = [e for e in central_events(fleet) if e.site_id == site.site_id]
        story.check(len(states) == len(ASSETS) and len(services) == len(CORE) and bool(events),
                    f"{site.site_id}", f"{len(states)}/{len(ASSETS)} asset states, {len(services)}/{len(CORE)} "
                    f"services, {len(events)} events")


@dataclass
class Probe:
    """Site A's bridge identity, used by a client of its own: what could a stolen bridge do?"""

    observer: Observer
    forged_event: Event
    forged_request: str


def step_isolation_probe(fleet: Fleet, story: Story) -> Probe:
    """Log in as bridge-A, subscribe to everything, forge into B's tree. What it received is
    judged at the end of the run (every other site's traffic has flowed by then)."""
    assert fleet.central is not None
    a, b = fleet.sites[0], fleet.sites[1]
    story.say(f"2. isolation: a client logged in as {bridge_identity(a.site_id)} subscribes to the whole "
              f"fleet and forges an event and an operator command into {b.site_id}'s tree")
    login = fleet.central.login(bridge_identity(a.site_id))
    probe = Observer(fleet.central.host, fleet.central.port, login, "#")
    forged = Event(EventType.OPERATOR_COMMAND_ACCEPTED,
                   OperatorCommandAccepted(asset_id=CHARGERS[0], request_id=new_id("req_"),
                                           command_id=new_id("cmd_"), action="reset"))
    request = new_id("req_")
    for topic, payload in ((central_topic(b.site_id, f"{ROOT}/events/OPERATOR_COMMAND_ACCEPTED/{CHARGERS[0]}"),
                            encode_event(forged)),
                           (central_topic(b.site_id, OPERATOR_COMMANDS),
                            _order(request, "reset", by="forger").encode())):
        story.say(f"     publish to {topic}: {forge(fleet.central.host, fleet.central.port, login, topic, payload)}")
    return Probe(probe, forged, request)


def forge(host: str, port: int, login: BrokerLogin, topic: str, payload: bytes) -> str:
    """Publish once (QoS 1) on a client of its own; what the broker did about it."""
    forger = Observer(host, port, login)
    try:
        forger.publish(topic, payload)
        return "acknowledged (and dropped by the ACL, if it holds)"
    except RuntimeError:
        # Debian's mosquitto 2.0.11 closes an MQTT 3.1.1 client's connection on a denied QoS 1
        # publish (measured here); the message goes nowhere either way.
        return "the broker closed the connection"
    finally:
        forger.close()


def _order(request_id: str, action: str, *, asset_id: str = CHARGERS[0], availability: Availability | None = None,
           by: str = FLEET_SCADA) -> OperatorCommand:
    return OperatorCommand(request_id=request_id, asset_id=asset_id, action=OperatorAction(action),
                           availability=availability, issued_by=by, issued_at=datetime.now(UTC))


def heard_by(fleet: Fleet, request_id: str) -> list[str]:
    """The sites whose own broker carried this operator command, or an answer to it."""
    def carried(seen: Seen) -> bool:
        try:
            if seen.topic == OPERATOR_COMMANDS:
                return decode(OperatorCommand, seen.payload).request_id == request_id
        except DecodeError:
            return False
        return False

    answered = {s.site_id for s in fleet.sites for r in local_events(s)
                if getattr(r.event.payload, "request_id", None) == request_id}
    return [s.site_id for s in fleet.sites
            if s.site_id in answered or (s.local is not None and any(carried(x) for x in s.local.snapshot()))]


def step_operator_command(fleet: Fleet, story: Story, target: Site, asset_id: str, availability: Availability,
                          number: str) -> None:
    """One operator command from the central SCADA to ``target``: accepted, completed, and
    carried by no other site's broker."""
    assert fleet.scada is not None
    request = new_id("req_")
    story.say(f"{number} {FLEET_SCADA} sends an operator command (set_availability {availability.value}, "
              f"{asset_id}) to {target.site_id} on {central_topic(target.site_id, OPERATOR_COMMANDS)}")
    sent = time.monotonic()
    fleet.scada.publish(central_topic(target.site_id, OPERATOR_COMMANDS),
                        _order(request, "set_availability", asset_id=asset_id, availability=availability).encode())

    def accepted() -> OperatorCommandAccepted | None:
        for r in central_events(fleet):
            p = r.event.payload
            if r.site_id == target.site_id and isinstance(p, OperatorCommandAccepted) and p.request_id == request:
                return p
        return None

    def completed(command_id: str) -> bool:
        return any(r.site_id == target.site_id and r.event.event_type.value == "COMMAND_COMPLETED"
                   and isinstance(r.event.payload, CommandPayload) and r.event.payload.command_id == command_id
                   for r in central_events(fleet))

    fleet.scada.wait_for(lambda seen: accepted() is not None, STEP_TIMEOUT_S)
    took = accepted()
    if not story.check(took is not None, f"{target.site_id} accepted it (OPERATOR_COMMAND_ACCEPTED seen centrally)"):
        return
    assert took is not None
    story.say(f"     accepted as {took.command_id} {time.monotonic() - sent:.2f} s after sending")
    done = fleet.scada.wait_for(lambda seen: completed(took.command_id), STEP_TIMEOUT_S)
    story.check(done, f"{target.site_id} completed it (COMMAND_COMPLETED {took.command_id} seen centrally)",
                f"{time.monotonic() - sent:.2f} s after sending")
    heard = heard_by(fleet, request)
    story.check(heard == [target.site_id], f"only {target.site_id}'s broker carried it or an answer to it",
                "carried by " + ", ".join(heard))


def step_cut_and_catch_up(fleet: Fleet, story: Story, burst: int) -> None:
    assert fleet.scada is not None
    cut = fleet.sites[-1]
    assert cut.local is not None
    story.say(f"4. the link of {cut.site_id} is severed (its bridge's TCP pass-through closes every connection "
              "and refuses new ones)")
    state_topic = central_topic(cut.site_id, BRIDGE_STATE)

    def bridge_state_is(value: bytes, since: int) -> Callable[[list[Seen]], bool]:
        return lambda seen: any(s.topic == state_topic and s.payload == value for s in seen[since:])

    mark_central = len(fleet.scada.snapshot())
    cut.link.sever()
    story.check(fleet.scada.wait_for(bridge_state_is(b"0", mark_central), STEP_TIMEOUT_S),
                "the central broker says the bridge is down (its will on " + state_topic + ")")
    # The cut's events are those the site carries once the centre knows the bridge is down: one
    # emitted just before the sever reaches the local subscriber after the bridge forwarded it
    # (and, unacknowledged, again after the link returns), so it is not an event of the cut.
    mark_local = len(cut.local.snapshot())
    schedule_id = new_id("sch_")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    frame = pd.DataFrame({f"ev_{n}_kw": [7.0 + n] for n in range(len(CHARGERS))},
                         index=pd.date_range(start, periods=1, freq="5s"))
    data = encode_schedule(frame, asset_map={f"ev_{n}": a for n, a in enumerate(CHARGERS)},
                           site_id=cut.site_id, schedule_id=schedule_id)
    layer3 = Observer(cut.broker.host, cut.broker.port, cut.broker.login("layer3"))
    layer3.publish(SCHEDULES_IN, data)
    layer3.close()
    story.say(f"   a schedule ({schedule_id}, {len(CHARGERS)} chargers) is published to {cut.site_id} on its own "
              "broker, as its Layer 3 does")

    def completed_locally(seen: list[Seen]) -> bool:
        return len({r.event.payload.command_id for r in tally.events(seen[mark_local:])
                    if r.event.event_type.value == "COMMAND_COMPLETED" and isinstance(r.event.payload, CommandPayload)
                    and r.event.payload.schedule_id == schedule_id}) == len(CHARGERS)

    alone = cut.local.wait_for(completed_locally, STEP_TIMEOUT_S)
    story.check(alone, f"{cut.site_id} ran it alone: {len(CHARGERS)} commands COMPLETED on its own broker")
    story.check(all(cut.procs.alive(n) for n in CORE), f"{cut.site_id}'s processes all running")
    during = [r for r in tally.events(cut.local.snapshot()[mark_local:])]
    ids = [r.event.event_id for r in during]
    story.measured.cut_events = len(ids)
    story.measured.cut_payloads = [(s.topic, s.payload) for s in cut.local.snapshot()[mark_local:]
                                   if tally.is_event_topic(s.topic)]
    leaked = {r.event.event_id for r in central_events(fleet) if r.site_id == cut.site_id} & set(ids)
    story.check(not leaked, f"none of its {len(ids)} events of the cut reached the central broker while cut",
                f"{len(leaked)} did" if leaked else "")

    counter = None
    if burst:
        assert fleet.central is not None
        counter = Observer(fleet.central.host, fleet.central.port, fleet.central.login(HARNESS),
                           central_topic(cut.site_id, BURST_TOPIC))
        publish_burst(cut, burst)
        story.say(f"   and {burst} numbered QoS 1 messages on {BURST_TOPIC} (more than Mosquitto's default queue "
                  "of 1,000 per client, which would drop the rest)")
        story.measured.burst = burst

    story.say(f"5. the link of {cut.site_id} is restored")
    mark_central = len(fleet.scada.snapshot())
    restored = time.monotonic()
    cut.link.restore()

    def all_arrived(seen: list[Seen]) -> bool:
        got = {r.event.event_id for r in tally.events(seen) if r.site_id == cut.site_id}
        return set(ids) <= got

    up = fleet.scada.wait_for(bridge_state_is(b"1", mark_central), STEP_TIMEOUT_S)
    reconnected = next((s.at for s in fleet.scada.snapshot()[mark_central:]
                        if s.topic == state_topic and s.payload == b"1"), restored)
    arrived = fleet.scada.wait_for(all_arrived, STEP_TIMEOUT_S)
    central = [r for r in central_events(fleet) if r.site_id == cut.site_id]
    last = max((r.at for r in central if r.event.event_id in set(ids)), default=restored)
    comparison = tally.compare(ids, [r.event.event_id for r in central])
    story.measured.reconnect_s = reconnected - restored
    story.measured.catch_up_s = last - restored
    story.measured.duplicates = len(comparison.duplicated)
    story.check(up, "the bridge is back", f"{story.measured.reconnect_s:.2f} s after the link returned")
    story.check(arrived and comparison.complete,
                f"the central subscriber got every one of the {comparison.expected} events of the cut",
                f"{len(comparison.lost)} lost, {len(comparison.duplicated)} delivered twice, last one "
                f"{story.measured.catch_up_s:.2f} s after the link returned")
    if counter is not None:
        counter.wait_for(lambda seen: len({x.payload for x in seen}) >= burst, STEP_TIMEOUT_S)
        got = counter.snapshot()
        counter.close()
        numbers = {int(x.payload) for x in got}
        story.measured.burst_catch_up_s = max((x.at for x in got), default=restored) - restored
        story.check(numbers == set(range(burst)), f"every one of the {burst} messages of the burst arrived",
                    f"{burst - len(numbers & set(range(burst)))} lost, {len(got) - len(numbers)} delivered twice, "
                    f"last one {story.measured.burst_catch_up_s:.2f} s after the link returned")


def publish_burst(site: Site, count: int) -> float:
    """``count`` numbered QoS 1 messages on the site broker's BURST_TOPIC, all acknowledged;
    the seconds that took."""
    publisher = Observer(site.broker.host, site.broker.port, site.broker.login(HARNESS))
    try:
        began = time.monotonic()
        infos = [publisher.client.publish(BURST_TOPIC, str(n).encode(), qos=1) for n in range(count)]
        for info in infos:
            info.wait_for_publish(60)
        return time.monotonic() - began
    finally:
        publisher.close()


def step_verdicts(fleet: Fleet, story: Story, probe: Probe) -> None:
    assert fleet.scada is not None
    a, b = fleet.sites[0], fleet.sites[1]
    story.say("6. the whole run, every site: each event its own broker carried, against the central subscriber's")
    for site in fleet.sites:
        ids = [r.event.event_id for r in local_events(site)]
        # Events still crossing when the run ends are waited for, not counted lost.
        fleet.scada.wait_for(_all_of(site.site_id, ids), STEP_TIMEOUT_S)
        result = tally.compare(ids, [r.event.event_id for r in central_events(fleet) if r.site_id == site.site_id])
        story.check(result.complete, f"{site.site_id}: {result.expected} events",
                    f"{len(result.lost)} lost, {len(result.duplicated)} delivered twice")
    seen = probe.observer.snapshot()
    outside = sorted({s.topic for s in seen if tally.site_of(s.topic) != a.site_id})
    story.check(not outside, f"{bridge_identity(a.site_id)} read nothing outside {a.site_id}'s tree (not the "
                "other sites' retained states, nor their events, nor the operator command of 3b)",
                f"{len(seen)} messages received, all {a.site_id}'s" if not outside else ", ".join(outside[:5]))
    forged = [r for r in central_events(fleet) if r.event.event_id == probe.forged_event.event_id]
    story.check(not forged, f"its forged event never reached the central subscriber under {b.site_id}")
    assert b.local is not None
    story.check(not heard_by(fleet, probe.forged_request), f"its forged operator command never reached {b.site_id}")
    probe.observer.close()


def _all_of(site_id: str, ids: list[str]) -> Callable[[list[Seen]], bool]:
    return lambda seen: set(ids) <= {r.event.event_id for r in tally.events(seen) if r.site_id == site_id}


def costs(fleet: Fleet, story: Story) -> dict[str, float]:
    """Resident memory (MB) and CPU time (s) of the central broker and of the site brokers."""
    assert fleet.central is not None
    central = _process_costs(fleet.central)
    sites = [_process_costs(s.broker) for s in fleet.sites]
    out = {"central_rss_mb": central[0], "central_cpu_s": central[1],
           "site_broker_rss_mb": max(s[0] for s in sites), "site_broker_cpu_s": max(s[1] for s in sites)}
    stacks = [sum(process_rss_mb(p.pid) for p in s.procs.procs.values() if p.poll() is None) for s in fleet.sites]
    out["site_processes_rss_mb"] = max(stacks)
    story.say(f"   central broker: {central[0]:.1f} MB resident, {central[1]:.2f} s CPU for {len(fleet.sites)} "
              f"bridges; a site broker (with its bridge): at most {out['site_broker_rss_mb']:.1f} MB, "
              f"{out['site_broker_cpu_s']:.2f} s CPU; a site's {len(CORE)} processes: at most "
              f"{out['site_processes_rss_mb']:.0f} MB resident together")
    return out


def _process_costs(broker: LocalMosquitto) -> tuple[float, float]:
    return process_rss_mb(broker.pid), process_cpu_s(broker.pid)


def run(fleet: Fleet, burst: int = 2000) -> Story:
    """The whole check on a running fleet of at least two sites; ``burst`` messages more are
    published on the cut site while it is cut."""
    story = Story()
    step_everyone_seen(fleet, story)
    probe = step_isolation_probe(fleet, story)
    step_operator_command(fleet, story, fleet.sites[0], CHARGERS[0], Availability.INOPERATIVE, "3.")
    step_operator_command(fleet, story, fleet.sites[1], CHARGERS[1], Availability.OPERATIVE, "3b.")
    step_cut_and_catch_up(fleet, story, burst)
    step_verdicts(fleet, story, probe)
    story.say("7. costs")
    costs(fleet, story)
    return story

