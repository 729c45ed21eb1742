"""Dispatch planner: accepted schedules -> timed commands -> the gateways that own the assets.

It runs the library's DispatchEngine: releases commands when due, sends each tick's due
commands to each gateway as one batch, handles results, retries with backoff, detects
timeouts, holds commands for assets the tracker reports FAULTED or UNAVAILABLE, and lets a
newer schedule supersede the future commands of an older one.

    qubit-planner --site-config deploy/site.toml
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from coordinator.adapters import RoutingTable
from coordinator.asset_machines import is_early_departure
from coordinator.contract.codec import MAX_SCHEDULE_BYTES, DecodeError, decode_schedule
from coordinator.contract.events import EmergencyStopActivated, EmergencyStopReset, ScheduleRejected
from coordinator.contract.messages import (
    AcceptedSchedule,
    AssetStateMessage,
    CommandBatch,
    EmergencyStop,
    Outcome,
    ResultBatch,
    command_to_wire,
    decode,
)
from coordinator.contract.topics import (
    ASSET_STATES_ALL,
    RESULTS_ALL,
    SCHEDULES_ACCEPTED,
    commands_topic,
)
from coordinator.dispatch import DispatchEngine
from coordinator.events import EventBus, EventType
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
from coordinator.schedule import ScheduleError
from coordinator.site import SiteConfig
from coordinator.timeutil import utcnow

log = logging.getLogger(__name__)

# Finished commands stay queryable in the engine this long.
KEEP_FINISHED = timedelta(hours=1)


class Planner(Service):
    bus: EventBus
    publishes = (commands_topic("{gateway}"),)

    def __init__(self, site: SiteConfig, publish: Publish, clock: Callable[[], datetime] = utcnow) -> None:
        self.site = site
        self.clock = clock
        self.publish = publish
        self.bus = EventBus()
        # The ingester announces SCHEDULE_RECEIVED; the engine's own would say it twice.
        forward_events(self.bus, publish, skip=frozenset({EventType.SCHEDULE_RECEIVED}))
        # Commands travel to their gateway as they are; each gateway translates them, once.
        self.routes = RoutingTable.from_site(site)
        self.engine = DispatchEngine(event_bus=self.bus, config=site.coordinator)
        self.tick_interval = site.coordinator.dispatch_interval_seconds
        self._versions: dict[str, int] = {}  # schedule_id -> version
        self._asset_versions: dict[str, int] = {}  # asset_id -> newest schedule version applied

    def subscriptions(self) -> list[Inbound]:
        return [
            Inbound(ASSET_STATES_ALL, self.on_asset_state),
            # on_schedule reads its bytes itself: a larger size limit, a nested schedule
            Inbound(SCHEDULES_ACCEPTED, self.on_schedule),
            Inbound(RESULTS_ALL, self.on_results),
        ]

    # -- inputs --------------------------------------------------------------------

    def on_schedule(self, topic: str, data: bytes) -> None:
        try:
            accepted = decode(AcceptedSchedule, data, max_bytes=MAX_SCHEDULE_BYTES + 4096)
            msg = decode_schedule(accepted.schedule)
        except DecodeError as exc:
            log.error("unreadable accepted schedule on %s: %s", topic, exc.reason)
            self.bus.emit(EventType.SCHEDULE_REJECTED, ScheduleRejected(
                schedule_id=None, reason="malformed", message=exc.reason, site_id=self.site.site_id))
            return
        sid = accepted.schedule_id
        if sid in self._versions:
            log.info("schedule %s already planned (redelivery or resend); ignored", sid)
            return
        assets = set(msg.asset_map.values())
        newer = sorted(a for a in assets if self._asset_versions.get(a, -1) > accepted.version)
        if newer:
            self.bus.emit(
                EventType.SCHEDULE_REJECTED,
                ScheduleRejected(
                    schedule_id=sid, reason="stale_version", site_id=self.site.site_id,
                    message=f"version {accepted.version} is older than the schedule already in force"
                            f" for {', '.join(newer)}"),
            )
            return
        try:
            commands = self.engine.schedule_to_commands(msg.frame, msg.asset_map, schedule_id=sid)
        except ScheduleError as exc:  # the engine has published SCHEDULE_REJECTED
            log.error("schedule %s passed the ingester but not the engine: %s", sid, exc)
            return
        self._versions[sid] = accepted.version
        planned = {c.asset_id for c in commands}
        for asset_id in planned:
            self._asset_versions[asset_id] = accepted.version
        if len(msg.frame.index):
            self.engine.supersede(planned, msg.frame.index[0].to_pydatetime(), sid)
        log.info("schedule %s v%s planned: %d commands", sid, accepted.version, len(commands))

    @receives(ResultBatch, "result batch")
    def on_results(self, topic: str, batch: ResultBatch) -> None:
        for result in batch.results:
            cmd = self.engine.get_command(result.command_id)
            if cmd is None or cmd.asset_id != result.asset_id:
                log.warning("result for unknown command %s (%s) from %s",
                            result.command_id, result.asset_id, batch.gateway_id)
                continue
            # Our clock, not the device's: backoff and timeouts must not depend on device clocks.
            if result.outcome is Outcome.ACKNOWLEDGED:
                self.engine.handle_acknowledgement(cmd, now=self.clock())
            else:
                self.engine.handle_response(
                    cmd,
                    success=result.outcome is Outcome.COMPLETED,
                    error=result.error,
                    now=self.clock(),
                    retryable=result.outcome is not Outcome.REFUSED,
                )

    @receives(AssetStateMessage, "asset state")
    def on_asset_state(self, topic: str, msg: AssetStateMessage) -> None:
        self.engine.set_asset_state(msg.asset_id, msg.state)
        if msg.previous_state and msg.trigger and is_early_departure(msg.previous_state, msg.trigger):
            # Only commands that existed when the vehicle left: a retained state replayed
            # after a restart must not cancel a schedule made since.
            self.engine.cancel_pending_for_asset(
                msg.asset_id, f"early departure: vehicle unplugged while {msg.previous_state}", created_before=msg.since
            )

    # -- the site's emergency stop (called by coordinator.runtime.service, ahead of any backlog) ----

    def emergency_stop(self, order: EmergencyStop) -> None:
        """Dispatch nothing more; what falls due meanwhile is held. Recorded as an event."""
        self.engine.hold_site(f"emergency stop: {order.reason}")
        self.bus.emit(EventType.EMERGENCY_STOP_ACTIVATED,
                      EmergencyStopActivated(reason=order.reason, issued_by=order.issued_by, ordered_at=order.at))

    def emergency_reset(self, order: EmergencyStop) -> None:
        """Dispatching resumes: the newest held setpoint per asset goes out at the next tick."""
        self.engine.release_site()
        self.bus.emit(EventType.EMERGENCY_STOP_RESET,
                      EmergencyStopReset(reason=order.reason, issued_by=order.issued_by, ordered_at=order.at))

    # -- clock ---------------------------------------------------------------------

    def tick(self, now: datetime) -> None:
        self.engine.check_timeouts(now)
        batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for cmd in self.engine.get_pending_commands(now):
            route = self.engine.dispatch_to_gateway(cmd, self.routes, now=now)
            if route is not None:
                batches[route.gateway_id].append(command_to_wire(cmd))
        for gateway_id, items in batches.items():
            batch = CommandBatch(gateway_id=gateway_id, commands=items)
            self.publish(commands_topic(gateway_id), batch.encode(), qos=1)
        self.engine.forget_finished(now - KEEP_FINISHED)


def main(argv: list[str] | None = None) -> int:
    args = base_arguments(__doc__.splitlines()[0]).parse_args(argv)
    return run("planner", Planner, load_site(args.site_config))


if __name__ == "__main__":
    raise SystemExit(main())
