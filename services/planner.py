"""Dispatch planner: accepted schedules -> timed commands -> the gateways that own the assets.

It runs the library's DispatchEngine: releases commands when due, sends each tick's due
commands to each gateway in batches under the message size limit, handles results, retries
with backoff, detects timeouts, holds commands for assets the tracker reports FAULTED or
UNAVAILABLE, and lets a newer schedule supersede the future commands of an older one.

Every input is one unit of work in the durable ledger (coordinator.ledger): what it changed
and the messages announcing it are committed together before anything leaves, and before
the broker is told the input was handled. Killed at any moment, the planner restarts from
its last commit: due commands go out, those in flight are sent again as they were (same
command id and attempt: a gateway answers a repeat from its record), unsent messages are
sent. The ledger also answers `qubit status` for commands and schedules. docs/durability.md.

    qubit-planner --site-config deploy/site.toml
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import sys
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import pydantic

from coordinator.adapters import RoutingTable
from coordinator.asset_machines import is_early_departure
from coordinator.base import Command, CommandStatus, CommandType
from coordinator.contract.codec import DecodeError, decode_event
from coordinator.contract.events import (
    CommandCancelled,
    CommandPayload,
    EmergencyStopActivated,
    EmergencyStopReset,
    OperatorCommandAccepted,
    OperatorCommandRejected,
    RefusalReason,
    SchedulePlanned,
    ScheduleRejected,
    SetpointCapped,
)
from coordinator.contract.messages import (
    MAX_ACCEPTED_SCHEDULE_BYTES,
    VERSION_AHEAD_US,
    AcceptedSchedule,
    AssetStateMessage,
    CommandBatch,
    CommandResult,
    EmergencyStop,
    OperatorCommand,
    Outcome,
    Query,
    QueryKind,
    QueryReply,
    ReceivedResultBatch,
    decode,
)
from coordinator.contract.topics import (
    ASSET_STATES_ALL,
    OPERATOR_COMMANDS,
    QUERY_REQUESTS,
    RESULTS_ALL,
    SCHEDULE_REJECTIONS,
    SCHEDULES_ACCEPTED,
    commands_topic,
    last_level,
)
from coordinator.dispatch import DispatchEngine
from coordinator.events import Event, EventBus, EventType
from coordinator.lazy_imports import LazyModule
from coordinator.ledger import Ledger, LedgerError, OutboxSender
from coordinator.ledger.plans import ID_BYTES, Cancellation, Plan, slots_of
from coordinator.ledger.store import REPLAY_WINDOW, Unit
from coordinator.limits import REQUESTED, Cap, OperatorLimit, cap_setpoints, signed_kw
from coordinator.operator_commands import OPERATOR_PRIORITY, OperatorRejection, operator_command
from coordinator.runtime.mqtt import MqttClient
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
from coordinator.runtime.settings import settings
from coordinator.schedule_review import Accepted, Rejected, review_schedule
from coordinator.setpoint_order import CHANNEL
from coordinator.site import SiteConfig
from coordinator.timeutil import utcnow

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:  # imported when the first schedule is planned, not when the process starts
    np = LazyModule("numpy", globals(), "np")
    pd = LazyModule("pandas", globals(), "pd")

log = logging.getLogger(__name__)

LEDGER_FILE = "planner-ledger.sqlite"
# Finished commands stay in the engine's memory this long; the ledger keeps them for the retention.
KEEP_FINISHED = timedelta(hours=1)
# A schedule's commands become Command objects (and ledger rows) this long before they fall due
# (at least three ticks ahead); until then they are kept compact (coordinator.ledger.plans).
LOOK_AHEAD = timedelta(seconds=60)
PRUNE_EVERY = timedelta(hours=1)
# Setpoint channels an emergency-stop reset restores: the newest of each, once.
RESTORED_CHANNELS = tuple(frozenset(t for t, c in CHANNEL.items() if c == channel) for channel in ("power", "limit"))

DRAWS_NOTHING = frozenset({"AVAILABLE", "FAULTED", "UNAVAILABLE"})
"""Asset states in which a device draws or feeds nothing, whatever its last setpoint
(no vehicle, tripped, out of service): for the site's limits its setpoint in force is 0."""

P = ParamSpec("P")
R = TypeVar("R")


def durable(method: Callable[Concatenate[Planner, P], R]) -> Callable[Concatenate[Planner, P], R]:
    """Run ``method`` as one unit of work of the ledger.

    A unit that cannot be recorded ends the process (SystemExit escapes the MQTT client
    before it acknowledges the input): the restarted planner resumes from the last
    recorded state and the broker delivers the input again."""

    @functools.wraps(method)
    def unit_of_work(self: Planner, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with self.ledger.unit():
                return method(self, *args, **kwargs)
        except (LedgerError, sqlite3.Error) as exc:  # a read can fail as a write does
            log.critical("%s; stopping so that a restart resumes from the last recorded state", exc)
            raise SystemExit(3) from exc

    return unit_of_work


class Planner(Service):
    bus: EventBus
    publishes = (commands_topic("{gateway}"), "{query.reply_to}")
    warm_imports = ("numpy", "pandas")

    def __init__(
        self,
        site: SiteConfig,
        publish: Publish,
        clock: Callable[[], datetime] = utcnow,
        *,
        ledger: Ledger | None = None,
        retention: timedelta | None = None,
        max_message_bytes: int | None = None,
        look_ahead: timedelta | None = None,
    ) -> None:
        config = settings()
        self.site = site
        self.clock = clock
        self.publish = publish
        self.ledger = ledger or Ledger.open(config.data_dir / LEDGER_FILE)
        self.retention = retention or timedelta(days=config.ledger_retention_days)
        self.max_message_bytes = max_message_bytes or config.max_message_bytes
        self.outbox = OutboxSender(self.ledger, publish)
        self.bus = EventBus()
        self.bus.subscribe_all(self._record)
        # The ingester announces SCHEDULE_RECEIVED; the engine's own would say it twice. A
        # schedule's commands (and those of older schedules it replaces before they fall due)
        # are announced together by SCHEDULE_PLANNED: one event, not one per command: a
        # 5,000-asset day is 480,000 of them (docs/durability.md).
        self._planning = False
        self._recorded: set[str] = set()  # commands whose event the ledger has recorded already
        forward_events(self.bus, self._publish_event, skip=frozenset({EventType.SCHEDULE_RECEIVED}),
                       unless=lambda event: self._planning and isinstance(event.payload, CommandPayload))
        # Commands travel to their gateway as they are; each gateway translates them, once.
        self.routes = RoutingTable.from_site(site)
        self.engine = DispatchEngine(event_bus=self.bus, config=site.coordinator)
        self.tick_interval = site.coordinator.dispatch_interval_seconds
        # What the ledger says, read back: a restart resumes where the last commit left off.
        self._asset_versions = self._bounded(self.ledger.asset_versions())  # asset_id -> newest version applied
        self._newest_created = self.ledger.newest_created_at()
        self._unreconciled = self.engine.restore(self.ledger.open_commands())
        # Compact commands scheduled up to here are the engine's; None: the first tick decides.
        self._loaded_until: datetime | None = None
        ticks = timedelta(seconds=3 * site.coordinator.dispatch_interval_seconds)
        self.look_ahead = look_ahead or max(LOOK_AHEAD, ticks)
        self._next_prune = clock()
        # Limits (coordinator.limits): the power in force per asset, and operators' caps.
        self.in_force: dict[str, float] = {}
        for asset_id, cmd in self.ledger.completed_setpoints(RESTORED_CHANNELS[0]).items():
            value = signed_kw(cmd)
            if value is not None:
                self.in_force[asset_id] = value
        self.operator_limits: dict[str, OperatorLimit] = {}
        # An operator's limit holds from its creation, sent or not: the newest completed one, or
        # one still unfinished (restored into the engine above).
        for cmd in [*self.ledger.completed_setpoints(RESTORED_CHANNELS[1]).values(), *self.engine.commands]:
            self._take_operator_limit(cmd)
        if self.engine.commands:
            log.info("resumed from %s: %d unfinished commands, %d of them in flight",
                     self.ledger.path, len(self.engine.commands), len(self._unreconciled))

    def _bounded(self, versions: dict[str, int]) -> dict[str, int]:
        """The versions in force, less any further ahead than a version can be (one a forged
        schedule left in the ledger of a planner older than the bound): they outrank nothing."""
        limit = _micros(self.clock()) + VERSION_AHEAD_US
        ahead = sorted(a for a, v in versions.items() if v > limit)
        if ahead:
            log.warning("versions in force for %s lie in the future beyond the bound: ignored", ", ".join(ahead))
        return {a: v for a, v in versions.items() if v <= limit}

    def attach_client(self, client: MqttClient) -> None:
        """Publish through ``client`` at the pace the broker confirms (the outbox's window);
        send again what the broker may have lost when it comes back without our session."""
        self.outbox.transport = client
        client.on_session_lost = self._broker_lost_state

    def _broker_lost_state(self) -> None:
        again = self.outbox.replay()
        log.warning("the broker has no session of ours (first start, or it lost its state): "
                    "%d messages of the last %s sent again", again, REPLAY_WINDOW)

    async def open(self) -> None:
        # Committed before a crash, never confirmed: sent again (receivers are idempotent).
        self.outbox.enqueue(self.ledger.unsent())

    async def close(self) -> None:
        self.ledger.close()

    def subscriptions(self) -> list[Inbound]:
        return [
            Inbound(ASSET_STATES_ALL, self.on_asset_state),
            # on_schedule reads its bytes itself: a larger size limit, a nested schedule
            Inbound(SCHEDULES_ACCEPTED, self.on_schedule),
            Inbound(RESULTS_ALL, self.on_results),
            Inbound(SCHEDULE_REJECTIONS, self.on_rejected_schedule),  # events have a codec of their own
            Inbound(QUERY_REQUESTS, self.on_query),
            Inbound(OPERATOR_COMMANDS, self.on_operator_command),
        ]

    # -- the ledger ----------------------------------------------------------------

    def _record(self, event: Event) -> None:
        payload = event.payload
        if not isinstance(payload, CommandPayload) or payload.command_id in self._recorded:
            return
        cmd = self.engine.get_command(payload.command_id)
        unit = self.ledger.current
        if cmd is None or unit is None:
            raise RuntimeError(f"{event.event_type} of {payload.command_id} outside a unit of work of the ledger")
        unit.record(cmd, event.event_type.value, event.timestamp)

    def _publish_event(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        unit = self.ledger.current
        if unit is None:
            raise RuntimeError(f"event for {topic} published outside a unit of work of the ledger")
        unit.publish(topic, payload, qos, retain)

    def _created_at(self) -> datetime:
        """Now, but always after the previous schedule's: gateways order setpoints by it."""
        now = self.clock()
        if self._newest_created is not None and now <= self._newest_created:
            now = self._newest_created + timedelta(microseconds=1)
        self._newest_created = now
        return now

    # -- inputs --------------------------------------------------------------------

    @durable
    def on_schedule(self, topic: str, data: bytes) -> None:
        """An accepted schedule, checked again against the site (coordinator.schedule_review)
        and its version bound before anything is planned: one the ingester would have refused
        (or one nobody accepted: forged) is SCHEDULE_REJECTED, recorded in the ledger, and
        MESSAGE_REFUSED; nothing of it is planned."""
        try:
            accepted = decode(AcceptedSchedule, data, max_bytes=MAX_ACCEPTED_SCHEDULE_BYTES)
        except DecodeError as exc:
            self.refuse(topic, RefusalReason.UNREADABLE, f"accepted schedule: {exc.reason}")
            self.bus.emit(EventType.SCHEDULE_REJECTED, ScheduleRejected(
                schedule_id=None, reason="malformed", message=exc.reason, site_id=self.site.site_id))
            return
        sid = accepted.schedule_id
        known = self.ledger.schedule_status(sid)
        if known == "planned":  # a schedule refused before is checked again: a forgery must not block its id
            self._answer_resend(sid, accepted.version)
            return
        now = self.clock()
        review = review_schedule(accepted.schedule, self.site)
        if isinstance(review, Rejected):
            self._refuse_schedule(topic, accepted, now, review.reason, review.message, _REFUSAL.get(review.reason))
            return
        if review.schedule_id != sid:
            self._refuse_schedule(topic, accepted, now, "mismatched_id",
                                  f"the envelope says {sid}, the schedule it carries {review.schedule_id}")
            return
        if accepted.version > _micros(now) + VERSION_AHEAD_US:
            self._refuse_schedule(topic, accepted, now, "future_version",
                                  f"version {accepted.version} lies more than {VERSION_AHEAD_US // 3_600_000_000} h "
                                  "ahead of the planner's clock", RefusalReason.FUTURE_VERSION)
            return
        msg = review.schedule
        unit = self.ledger.current
        assert unit is not None  # @durable
        assets = set(msg.asset_map.values())
        newer = sorted(a for a in assets if self._asset_versions.get(a, -1) > accepted.version)
        if newer:
            message = (f"version {accepted.version} is older than the schedule already in force"
                       f" for {', '.join(newer)}")
            self._refuse_schedule(topic, accepted, now, "stale_version", message, RefusalReason.STALE_VERSION)
            return
        self._plan(accepted, review, now, unit)

    def _plan(self, accepted: AcceptedSchedule, review: Accepted, now: datetime, unit: Unit) -> None:
        """The schedule's commands into the ledger, compact (coordinator.ledger.plans): one row per
        slot, no Command object; those due within the look-ahead become commands of the engine now,
        the others at the tick that brings them within it. Older schedules' pending commands for
        its assets from its first slot on end CANCELLED (superseded)."""
        sid, msg, planned = accepted.schedule_id, review.schedule, review.plan
        created = self._created_at()
        config = self.site.coordinator
        index = pd.DatetimeIndex(msg.frame.index)
        slot_times = [_micros_exact(t) for t in index.to_pydatetime()]
        used = np.unique(planned.key_index).tolist()  # keys with at least one command
        asset_ids = sorted(msg.asset_map[planned.keys[i]] for i in used)
        where = {a: i for i, a in enumerate(asset_ids)}
        by_key = np.array([where.get(msg.asset_map[k], -1) for k in planned.keys], dtype=np.int32)
        asset_index = by_key[planned.key_index] if len(by_key) else planned.key_index
        plan = Plan(sid, tuple(asset_ids), _micros_exact(created), 1, config.max_retries,
                    config.command_timeout_seconds)
        count = len(planned.slot)
        unit.add_plan(plan, slots_of(plan, planned.slot, asset_index, planned.command_type, planned.power_kw,
                                     slot_times, os.urandom(ID_BYTES * count)))
        superseded = 0
        first_due = None
        if count:
            first_due = index[int(planned.slot[0])].to_pydatetime()
            starting_at = index[0].to_pydatetime()
            assets = set(asset_ids)
            superseded = self.ledger.planned_pending(assets, starting_at, sid)
            self._planning = True  # superseded commands are announced by SCHEDULE_PLANNED, not each
            try:
                superseded += len(self.engine.supersede(assets, starting_at, sid, now=now))
            finally:
                self._planning = False
            reason = f"superseded by schedule {sid}"
            unit.cancel_planned(Cancellation(a, plan.created_at, _micros_exact(starting_at), _micros_exact(now), reason,
                                             announce=False) for a in asset_ids)
        self._load(now)
        for asset_id in asset_ids:
            self._asset_versions[asset_id] = accepted.version
            unit.set_asset_version(asset_id, accepted.version)
        unit.schedule_planned(sid, accepted.version, accepted.received_at, now, count, superseded)
        self.bus.emit(EventType.SCHEDULE_PLANNED, SchedulePlanned(
            schedule_id=sid, version=accepted.version, site_id=self.site.site_id, command_count=count,
            asset_count=len(asset_ids), superseded=superseded, first_due_at=first_due))
        log.info("schedule %s v%s planned: %d commands, %d superseded", sid, accepted.version, count, superseded)

    def _load(self, now: datetime) -> None:
        """Every compact command due within the look-ahead of ``now`` into the engine."""
        until = now + self.look_ahead
        if self._loaded_until is not None:
            until = max(until, self._loaded_until)
        self._materialise(until)
        self._loaded_until = until

    def _materialise(self, until: datetime) -> None:
        """Compact commands scheduled up to ``until`` become the engine's, or rows CANCELLED by
        the rule that cancelled them while compact."""
        live, _ = self.ledger.materialise(until)  # the cancelled ones were announced (or not) when cancelled
        if live:
            self.engine.restore(live)

    def _answer_resend(self, sid: str, version: int) -> None:
        """A schedule already planned: a redelivery of the same accepted message (same version)
        is ignored; a resend through the ingester (a new version) is answered with
        SCHEDULE_REJECTED reason ``already_planned``, so whoever sent it learns at once that
        nothing changed (docs/cli.md). Not a MESSAGE_REFUSED: nothing untrusted was refused."""
        record = self.ledger.schedule_record(sid) or {}
        if record.get("version") == version:
            log.info("schedule %s v%s redelivered; ignored", sid, version)
            return
        log.info("schedule %s resent as v%s; already planned as v%s", sid, version, record.get("version"))
        self.bus.emit(EventType.SCHEDULE_REJECTED, ScheduleRejected(
            schedule_id=sid, reason="already_planned", site_id=self.site.site_id,
            message=f"{sid} was planned as version {record.get('version')}; the resend (version {version}) changes "
                    f"nothing (`qubit status {sid}` shows its progress)"))

    def _refuse_schedule(self, topic: str, accepted: AcceptedSchedule, now: datetime, reason: str, message: str,
                         refusal: RefusalReason | None = None) -> None:
        """SCHEDULE_REJECTED (the schedule's story, in the ledger for `qubit status`) and
        MESSAGE_REFUSED (an accepted schedule the planner will not plan: the ingester was
        bypassed, or raced by a newer one)."""
        unit = self.ledger.current
        assert unit is not None  # @durable
        unit.schedule_rejected(accepted.schedule_id, accepted.version, now, reason, message)
        self.bus.emit(EventType.SCHEDULE_REJECTED, ScheduleRejected(
            schedule_id=accepted.schedule_id, reason=reason, site_id=self.site.site_id, message=message))
        self.refuse(topic, refusal or RefusalReason.INVALID, f"accepted schedule: {reason}: {message}",
                    message_id=accepted.schedule_id)

    def on_rejected_schedule(self, topic: str, data: bytes) -> None:
        """The ingester's refusals, so that `qubit status` answers for every schedule."""
        try:
            event = decode_event(data)
        except DecodeError as exc:
            self.refuse(topic, RefusalReason.UNREADABLE, f"event: {exc.reason}")
            return
        rejected = event.payload
        if not isinstance(rejected, ScheduleRejected) or rejected.schedule_id is None:
            return
        if self.ledger.schedule_status(rejected.schedule_id) is None:
            self._record_rejection(rejected, event.timestamp)

    @durable
    def _record_rejection(self, rejected: ScheduleRejected, at: datetime) -> None:
        assert rejected.schedule_id is not None and self.ledger.current is not None
        self.ledger.current.schedule_rejected(rejected.schedule_id, None, at, rejected.reason, rejected.message or "")

    @receives(ReceivedResultBatch, "result batch")
    @durable
    def on_results(self, topic: str, batch: ReceivedResultBatch) -> None:
        """Each result is taken or refused on its own (MESSAGE_REFUSED, nothing changed): one
        that cannot be read, one from a gateway the command was not routed to (the topic's
        gateway is the sender: the broker's ACL lets only that gateway write it), one for a
        command the planner does not have, or for one that is not in flight."""
        gateway_id = last_level(topic)
        if batch.gateway_id != gateway_id:
            raise Refused(RefusalReason.NOT_YOURS,
                          f"batch says gateway {batch.gateway_id!r}, its topic is {gateway_id!r}'s")
        for item in batch.results:
            try:
                result = CommandResult.model_validate(item)
            except pydantic.ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "result"
                self.refuse(topic, RefusalReason.MALFORMED_ITEM, f"result: field {where}: {first['msg']}")
                continue
            refusal = self._result_refusal(result, gateway_id)
            if refusal is not None:
                self.refuse(topic, refusal[0], refusal[1], message_id=result.command_id, asset_id=result.asset_id)
                continue
            cmd = self.engine.get_command(result.command_id)
            assert cmd is not None  # _result_refusal
            # Our clock, not the device's: backoff and timeouts must not depend on device clocks.
            if result.outcome is Outcome.ACKNOWLEDGED:
                self.engine.handle_acknowledgement(cmd, now=self.clock())
            elif result.outcome is Outcome.SUPERSEDED:
                self.engine.handle_superseded(cmd, f"superseded at the gateway: {result.error or 'a newer setpoint'}",
                                              now=self.clock())
            else:
                self.engine.handle_response(
                    cmd,
                    success=result.outcome is Outcome.COMPLETED,
                    error=result.error,
                    now=self.clock(),
                    retryable=result.outcome is not Outcome.REFUSED,
                )

    def _result_refusal(self, result: CommandResult, gateway_id: str) -> tuple[RefusalReason, str] | None:
        """Why ``result`` from ``gateway_id`` must not be applied, or None. A late answer for a
        finished command is not refused: the engine ignores it (a gateway's answer from its
        record after a resend is one)."""
        cmd = self.engine.get_command(result.command_id)
        if cmd is None:
            if self.ledger.command_record(result.command_id) is not None:  # not due yet: compact in the ledger
                return RefusalReason.NOT_DISPATCHED, f"{result.command_id} was never dispatched"
            return RefusalReason.UNKNOWN_COMMAND, f"result for {result.command_id}, a command the planner does not have"
        if cmd.asset_id != result.asset_id:
            return RefusalReason.NOT_YOURS, f"result names {result.asset_id}, {cmd.command_id} is for {cmd.asset_id}"
        route = self.routes.get(cmd.asset_id)
        if route is None or route.gateway_id != gateway_id:
            owner = route.gateway_id if route is not None else "no gateway"
            return RefusalReason.NOT_YOURS, f"result from {gateway_id} for {cmd.command_id}, routed to {owner}"
        if cmd.attempts == 0:
            return RefusalReason.NOT_DISPATCHED, f"{cmd.command_id} was never dispatched"
        if not cmd.status.is_terminal and result.attempt is not None and result.attempt != cmd.attempts:
            return RefusalReason.REPLAYED, f"result for attempt {result.attempt}, {cmd.command_id} is at {cmd.attempts}"
        return None

    @receives(AssetStateMessage, "asset state")
    @durable
    def on_asset_state(self, topic: str, msg: AssetStateMessage) -> None:
        if msg.asset_id not in self.routes or last_level(topic) != msg.asset_id:
            raise Refused(RefusalReason.NOT_YOURS if msg.asset_id in self.routes else RefusalReason.UNKNOWN_ASSET,
                          f"state of {msg.asset_id} on {topic}", asset_id=msg.asset_id)
        self.engine.set_asset_state(msg.asset_id, msg.state)
        if msg.state in DRAWS_NOTHING:  # its share of the site's limits is free for the others again
            self.in_force[msg.asset_id] = 0.0
        if msg.previous_state and msg.trigger and is_early_departure(msg.previous_state, msg.trigger):
            # Only commands that existed when the vehicle left: a retained state replayed
            # after a restart must not cancel a schedule made since.
            reason = f"early departure: vehicle unplugged while {msg.previous_state}"
            self.engine.cancel_pending_for_asset(msg.asset_id, reason, created_before=msg.since)
            self._cancel_planned(msg.asset_id, msg.since, reason)

    def _cancel_planned(self, asset_id: str, created_before: datetime, reason: str) -> None:
        """The compact commands of ``asset_id`` made before ``created_before`` end CANCELLED: a rule
        in the ledger (written out when they are materialised), one COMMAND_CANCELLED each now."""
        unit = self.ledger.current
        assert unit is not None  # @durable
        now = self.clock()
        ending = self.ledger.planned_for(asset_id, created_before)
        unit.cancel_planned([Cancellation(asset_id, _micros_exact(created_before), 0, _micros_exact(now), reason,
                                          announce=True)])
        self._recorded.update(c.command_id for c in ending)  # the rule is their record
        try:
            for cmd in ending:
                cmd.status, cmd.error, cmd.finished_at = CommandStatus.CANCELLED, reason, now
                self.bus.emit(EventType.COMMAND_CANCELLED, CommandCancelled.of(cmd))
        finally:
            self._recorded.clear()

    # -- operators: qubit/operator/commands ---------------------------------------------

    @receives(OperatorCommand, "operator command")
    @durable
    def on_operator_command(self, topic: str, order: OperatorCommand) -> None:
        """An operator's command: checked against the site (coordinator.operator_commands),
        queued due now (the next tick dispatches it, ahead of any schedule's) and answered
        OPERATOR_COMMAND_ACCEPTED; or refused (MESSAGE_REFUSED and OPERATOR_COMMAND_REJECTED),
        nothing queued. A resend of a request already taken is answered again, not queued again."""
        now = self.clock()
        made = operator_command(order, self.site, now)
        if isinstance(made, OperatorRejection):
            self.bus.emit(EventType.OPERATOR_COMMAND_REJECTED, OperatorCommandRejected(
                request_id=order.request_id, asset_id=order.asset_id, action=order.action.value,
                reason=made.reason, message=made.message))
            refusal = {"unknown_asset": RefusalReason.UNKNOWN_ASSET, "out_of_range": RefusalReason.OUT_OF_RANGE}
            raise Refused(refusal.get(made.reason, RefusalReason.INVALID), f"{made.reason}: {made.message}",
                          message_id=order.request_id, asset_id=order.asset_id)
        known = self.ledger.command_record(made.command_id) or self.engine.get_command(made.command_id)
        if known is None:
            made.created_at = self._created_at()
            self.engine.add_commands([made])
            self._take_operator_limit(made)
            log.info("operator %s: %s %s as %s", order.issued_by, order.action.value, order.asset_id, made.command_id)
        self.bus.emit(EventType.OPERATOR_COMMAND_ACCEPTED, OperatorCommandAccepted(
            request_id=order.request_id, asset_id=made.asset_id, command_id=made.command_id,
            action=order.action.value))

    def _take_operator_limit(self, cmd: Command) -> None:
        """An operator's SET_POWER_LIMIT (one with a duration) caps the asset's setpoints until it ends."""
        duration = cmd.parameters.get("duration_s")
        power = cmd.parameters.get("power_kw")
        if cmd.command_type is not CommandType.SET_POWER_LIMIT or cmd.schedule_id is not None:
            return
        if not isinstance(duration, int | float) or not isinstance(power, int | float):
            return
        until = cmd.created_at + timedelta(seconds=float(duration))
        known = self.operator_limits.get(cmd.asset_id)
        if until > self.clock() and (known is None or known.until - known.duration <= cmd.created_at):
            self.operator_limits[cmd.asset_id] = OperatorLimit(float(power), until, cmd.command_id,
                                                               timedelta(seconds=float(duration)))

    def _apply_limits(self, due: list[Command], now: datetime) -> None:
        """Cap the due setpoints (coordinator.limits), one SETPOINT_CAPPED per cap; the
        schedule's value stays in the parameter requested_kw."""
        for asset_id, limit in list(self.operator_limits.items()):
            if limit.until <= now:
                del self.operator_limits[asset_id]
                self._lift_limit(asset_id, limit, now)
        caps = cap_setpoints(due, self.in_force, self.operator_limits, self.site.site_limits, now)
        final: dict[str, Cap] = {}
        for cap in caps:
            final[cap.command_id] = cap
            self.bus.emit(EventType.SETPOINT_CAPPED, SetpointCapped(
                asset_id=cap.asset_id, command_id=cap.command_id, command_type=cap.command_type,
                requested=cap.requested, applied=cap.applied, limit=cap.limit, limit_kw=cap.limit_kw))
        for cmd in due:
            last = final.get(cmd.command_id)
            if last is not None:
                cmd.parameters.setdefault(REQUESTED, cmd.parameters.get("power_kw"))
                cmd.parameters["power_kw"] = last.applied
            elif REQUESTED in cmd.parameters:  # a retry after the cap is gone: the schedule's value again
                cmd.parameters["power_kw"] = cmd.parameters.pop(REQUESTED)

    def _lift_limit(self, asset_id: str, limit: OperatorLimit, now: datetime) -> None:
        """An operator's limit ended: the device's cap goes back to the asset's max_power_kw."""
        asset = self.site.asset(asset_id)
        if asset is None:
            return
        self.engine.add_commands([Command(
            asset_id, CommandType.SET_POWER_LIMIT, {"power_kw": asset.max_power_kw}, now,
            priority=OPERATOR_PRIORITY, max_retries=self.site.coordinator.max_retries,
            timeout_seconds=self.site.coordinator.command_timeout_seconds, created_at=self._created_at())])
        log.info("operator power limit of %s (%s) ended: back to %s kW", asset_id, limit.command_id,
                 asset.max_power_kw)

    # -- queries: `qubit status cmd_... | sch_...` ------------------------------------

    @receives(Query, "query")
    def on_query(self, topic: str, query: Query) -> None:
        if query.kind is QueryKind.ASSET_STATES:
            return  # the tracker's to answer
        self.publish(query.reply_to, self.answer(query).encode(), qos=1)

    def answer(self, query: Query) -> QueryReply:
        found: dict[str, Any] | None
        if query.kind is QueryKind.COMMAND:
            found = self.ledger.command_record(query.id or "")
        else:
            found = self.ledger.schedule_record(query.id or "")
        if found is None:
            return QueryReply(query_id=query.query_id, ok=False, error=f"no {query.kind.value} {query.id} known")
        return QueryReply(query_id=query.query_id, ok=True, result=found)

    # -- the site's emergency stop (called by coordinator.runtime.service, ahead of any backlog) ----

    @durable
    def emergency_stop(self, order: EmergencyStop) -> None:
        """Dispatch nothing more; what falls due meanwhile is held. Recorded as an event."""
        self.engine.hold_site(f"emergency stop: {order.reason}")
        self.bus.emit(EventType.EMERGENCY_STOP_ACTIVATED,
                      EmergencyStopActivated(reason=order.reason, issued_by=order.issued_by, ordered_at=order.at))

    @durable
    def emergency_reset(self, order: EmergencyStop) -> None:
        """Dispatching resumes with the newest setpoint per asset and channel, once: the one
        held during the stop, else the one in force before it, issued again as a new command
        (gateways put assets to 0 kW on the stop and restore nothing by themselves)."""
        self.engine.release_site()
        self.bus.emit(EventType.EMERGENCY_STOP_RESET,
                      EmergencyStopReset(reason=order.reason, issued_by=order.issued_by, ordered_at=order.at))
        now = self.clock()
        again = []
        planned = self.ledger.planned_assets()  # a schedule's setpoints, still compact: the power channel
        for channel in RESTORED_CHANNELS:
            for asset_id, in_force in self.ledger.completed_setpoints(channel).items():
                if channel is RESTORED_CHANNELS[0] and asset_id in planned:
                    continue
                if asset_id in self.routes and not self.engine.has_unfinished(asset_id, channel):
                    again.append(Command(
                        asset_id, in_force.command_type, dict(in_force.parameters), now,
                        max_retries=in_force.max_retries, timeout_seconds=in_force.timeout_seconds,
                        priority=in_force.priority, schedule_id=in_force.schedule_id, created_at=self._created_at(),
                    ))
        self.engine.add_commands(again)
        log.info("emergency stop reset: %d setpoints in force issued again", len(again))

    # -- clock ---------------------------------------------------------------------

    @durable
    def tick(self, now: datetime) -> None:
        batches: dict[str, list[Command]] = defaultdict(list)
        self._load(now)
        if self._unreconciled:
            self._reconcile(now, batches)
        self.engine.check_timeouts(now)
        due = self.engine.get_pending_commands(now)
        self._apply_limits(due, now)
        for cmd in due:
            route = self.engine.dispatch_to_gateway(cmd, self.routes, now=now)
            if route is not None:
                batches[route.gateway_id].append(cmd)
                value = signed_kw(cmd)
                if value is not None:
                    self.in_force[cmd.asset_id] = value
        unit = self.ledger.current
        assert unit is not None  # @durable
        for gateway_id, items in batches.items():
            for batch in CommandBatch.split(gateway_id, items, self.max_message_bytes):
                unit.publish(commands_topic(gateway_id), batch.encode(), urgent=True)
        self.engine.forget_finished(now - KEEP_FINISHED)
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            commands, schedules = self.ledger.prune(now - self.retention)
            if commands or schedules:
                log.info("ledger: %d commands and %d schedules older than %s pruned", commands, schedules,
                         self.retention)

    def _reconcile(self, now: datetime, batches: dict[str, list[Command]]) -> None:
        """In flight when the planner stopped: sent again exactly as they were (same command
        id and attempt), so a gateway that has it answers from its record and one that never
        got it applies it now. The timeout counts from this send."""
        unit = self.ledger.current
        assert unit is not None
        for cmd in self._unreconciled:
            route = self.routes.get(cmd.asset_id)
            if not cmd.status.is_in_flight or route is None:
                continue
            cmd.dispatched_at = now
            unit.record(cmd, "COMMAND_RESENT", now)
            batches[route.gateway_id].append(cmd)
        log.info("%d commands in flight before the restart sent again", len(self._unreconciled))
        self._unreconciled = []


_REFUSAL = {
    "wrong_site": RefusalReason.WRONG_SITE, "unknown_asset": RefusalReason.UNKNOWN_ASSET,
    "above_limit": RefusalReason.OUT_OF_RANGE, "too_large": RefusalReason.TOO_LARGE,
    "malformed": RefusalReason.UNREADABLE, "not_msgpack": RefusalReason.UNREADABLE,
}
"""The schedule review's reasons as refusal reasons; the others are ``invalid``."""


def _micros_exact(at: datetime) -> int:
    """``at`` in the ledger's unit, exactly (microseconds since the epoch)."""
    return (at - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(at: datetime) -> int:
    """``at`` as a version: microseconds since the epoch, as the ingester stamps them."""
    return int(at.timestamp() * 1_000_000)


def main(argv: list[str] | None = None) -> int:
    args = base_arguments(__doc__.splitlines()[0]).parse_args(argv)
    site = load_site(args.site_config)
    try:
        planner_ledger = Ledger.open(settings().data_dir / LEDGER_FILE)
    except LedgerError as exc:
        print(f"qubit-planner: {exc}", file=sys.stderr)
        return 2
    return run("planner", lambda s, publish: Planner(s, publish, ledger=planner_ledger), site)


if __name__ == "__main__":
    raise SystemExit(main())
