"""State tracker: one state machine per asset, driven by what the gateways report.

- Status reports (qubit/status/{gateway}/{asset}) move each asset's machine; every
  transition is a STATE_CHANGED event and the asset's state is kept as a retained message
  on qubit/state/{asset}, so a late subscriber sees every asset's state at once. On start
  the tracker reads those retained states back: a restart loses nothing.
- It answers operators' asset-state queries on qubit/query/requests (`qubit states`);
  commands and schedules are the planner's to answer, from its ledger (`qubit status`).

    qubit-tracker --site-config deploy/site.toml
"""

from __future__ import annotations

import logging
from datetime import datetime

from coordinator.contract.events import RefusalReason
from coordinator.contract.messages import (
    AssetStateMessage,
    Query,
    QueryKind,
    QueryReply,
    StatusReport,
)
from coordinator.contract.topics import (
    ASSET_STATES_ALL,
    QUERY_REQUESTS,
    STATUS_ALL,
    asset_state_topic,
    last_level,
    relative,
)
from coordinator.events import EventBus
from coordinator.runtime.refusals import Refused
from coordinator.runtime.service import (
    Inbound,
    Publish,
    Service,
    base_arguments,
    forward_events,
    load_site,
    receives,
    run,
)
from coordinator.site import SiteConfig
from coordinator.statemachine import StateMachine
from coordinator.timeutil import utcnow

log = logging.getLogger(__name__)

GRACE_BEFORE_INITIAL_STATES = 2.0  # seconds to wait for retained states before publishing defaults


class StateTracker(Service):
    bus: EventBus
    tick_interval = 1.0
    publishes = (asset_state_topic("{asset}"), "{query.reply_to}")

    def __init__(self, site: SiteConfig, publish: Publish) -> None:
        self.site = site
        self.publish = publish
        self.bus = EventBus()
        forward_events(self.bus, publish)
        self.machines: dict[str, StateMachine] = {a.asset_id: a.create_state_machine(self.bus) for a in site.assets}
        self.kinds = {a.asset_id: a.kind for a in site.assets}
        self.gateways = {a.asset_id: a.gateway_id for a in site.assets}
        self.since: dict[str, datetime] = {}
        self._started = utcnow()
        self._announced = False

    def subscriptions(self) -> list[Inbound]:
        # Retained states first: they restore the machines before any new report moves them.
        return [
            Inbound(ASSET_STATES_ALL, self.on_retained_state),
            Inbound(STATUS_ALL, self.on_status),
            Inbound(QUERY_REQUESTS, self.on_query),
        ]

    # -- asset states --------------------------------------------------------------

    @receives(AssetStateMessage, "retained state")
    def on_retained_state(self, topic: str, msg: AssetStateMessage) -> None:
        machine = self.machines.get(msg.asset_id)
        if machine is None or msg.asset_id in self.since:
            return  # not ours, or our own publication coming back
        if last_level(topic) != msg.asset_id:
            raise Refused(RefusalReason.NOT_YOURS, f"state of {msg.asset_id} on another asset's topic",
                          asset_id=msg.asset_id)
        if msg.state not in machine.states:
            raise Refused(RefusalReason.INVALID, f"{msg.state!r} is not a state of {msg.asset_id}'s machine",
                          asset_id=msg.asset_id)
        machine.restore(msg.state)
        self.since[msg.asset_id] = msg.since

    @receives(StatusReport, "status report")
    def on_status(self, topic: str, report: StatusReport) -> None:
        """A gateway's report moves its asset's machine. Refused (MESSAGE_REFUSED, nothing
        changed): an unknown asset, one that is not on the gateway the topic names (the ACL
        lets only gateway X write qubit/status/X/+), a topic about another asset, a state
        the machine does not have or cannot reach."""
        machine = self.machines.get(report.asset_id)
        if machine is None:
            raise Refused(RefusalReason.UNKNOWN_ASSET, f"{report.asset_id} is not an asset of the site",
                          asset_id=report.asset_id)
        levels = ["", *(relative(topic) or [])]  # [_, "status", gateway_id, asset_id] under the root
        gateway_id = levels[2] if len(levels) == 4 else None
        owner = self.gateways[report.asset_id]
        if gateway_id != owner or levels[3] != report.asset_id:
            raise Refused(RefusalReason.NOT_YOURS,
                          f"report about {report.asset_id} (on gateway {owner}) arrived on {topic}",
                          asset_id=report.asset_id)
        if report.state not in machine.states:
            raise Refused(RefusalReason.INVALID, f"{report.state!r} is not a state of {report.asset_id}'s machine",
                          asset_id=report.asset_id)
        path = machine.triggers_to(report.state)
        if path is None:
            raise Refused(RefusalReason.INVALID,
                          f"no transition leads from {machine.state} to {report.state}", asset_id=report.asset_id)
        for trigger in path:
            previous = machine.state
            machine.trigger(trigger)
            self._publish_state(report.asset_id, previous, trigger, report.at)
        if not path and report.asset_id not in self.since:
            self._publish_state(report.asset_id, None, None, report.at)

    def _publish_state(self, asset_id: str, previous: str | None, trigger: str | None, at: datetime) -> None:
        self.since[asset_id] = at
        msg = AssetStateMessage(
            asset_id=asset_id, kind=self.kinds[asset_id].value, state=self.machines[asset_id].state,
            previous_state=previous, trigger=trigger, since=at,
        )
        self.publish(asset_state_topic(asset_id), msg.encode(), qos=1, retain=True)

    def tick(self, now: datetime) -> None:
        # Assets nobody has reported on (and with no retained state) get their initial state
        # published once, so `qubit states` lists every asset of the site.
        if not self._announced and (now - self._started).total_seconds() >= GRACE_BEFORE_INITIAL_STATES:
            self._announced = True
            for asset_id in self.machines:
                if asset_id not in self.since:
                    self._publish_state(asset_id, None, None, now)

    # -- queries ---------------------------------------------------------------------

    @receives(Query, "query")
    def on_query(self, topic: str, query: Query) -> None:
        reply = self.answer(query)
        if reply is not None:
            self.publish(query.reply_to, reply.encode(), qos=1)

    def answer(self, query: Query) -> QueryReply | None:
        """Asset states; None for the other kinds: the planner answers those from its ledger."""
        if query.kind is not QueryKind.ASSET_STATES:
            return None
        result = {a: {"state": m.state, "since": self.since.get(a)} for a, m in self.machines.items()}
        return QueryReply(query_id=query.query_id, ok=True, result=result)


def main(argv: list[str] | None = None) -> int:
    args = base_arguments(__doc__.splitlines()[0]).parse_args(argv)
    return run("tracker", StateTracker, load_site(args.site_config))


if __name__ == "__main__":
    raise SystemExit(main())
