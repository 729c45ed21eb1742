"""The dispatch engine: schedules in, commands out, every command tracked to an end.

    >>> from coordinator import DispatchEngine, EventBus
    >>> engine = DispatchEngine(event_bus=EventBus())

Rules that keep a site safe (docs/dispatch.md has the reasoning):

* one command in flight per asset; an asset's commands go out in slot order;
* when several power setpoints of one asset are due, only the newest is sent, the older
  ones are CANCELLED as superseded: a setpoint is never applied out of order;
* commands for an asset whose state machine is FAULTED or UNAVAILABLE are held, not sent,
  until it recovers;
* a failed or timed-out attempt is retried after an exponential backoff, at most
  ``max_retries`` times; a command the adapter cannot express fails at once;
* a vehicle that unplugs before its session finished cancels its pending commands.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar

from . import schedule as schedule_conversion
from .adapters.base import ProtocolAdapter, TranslationError
from .adapters.registry import AdapterRegistry
from .adapters.routing import Route
from .asset_machines import HOLDING_STATES, is_early_departure
from .base import Command, CommandStatus, CommandType
from .config import CoordinatorConfig
from .contract import events as ev
from .events import EventBus, EventType
from .schedule import ScheduleError
from .setpoint_order import channel_of
from .statemachine import StateMachine
from .timeutil import require_aware, utcnow

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)



class _Batch:
    """Commands not yet due, in slot order, consumed from the front."""

    __slots__ = ("commands", "cursor")

    def __init__(self, commands: list[Command]) -> None:
        self.commands = commands
        self.cursor = 0


class DispatchEngine:
    """Turns schedules into commands and drives each command through its lifecycle.

    Used from one thread (a process's event loop). Methods that depend on the clock take
    ``now`` (timezone-aware; default: the current time).
    """

    def __init__(
        self,
        event_bus: EventBus | None = None,
        adapter_registry: AdapterRegistry | None = None,
        config: CoordinatorConfig | None = None,
    ) -> None:
        self.config = config or CoordinatorConfig()
        self.event_bus = event_bus if event_bus is not None else EventBus()
        self.adapter_registry = adapter_registry
        self._commands: dict[str, Command] = {}
        self._by_asset: dict[str, list[Command]] = {}
        self._upcoming: list[_Batch] = []
        self._ready: dict[str, list[Command]] = {}  # due by slot time, not finished, per asset in order
        self._in_flight: dict[str, Command] = {}
        self._machines: dict[str, StateMachine] = {}
        self._reported_states: dict[str, str] = {}
        self._hold_announced: set[str] = set()
        self._site_hold: str | None = None

    # -- schedules and commands in -------------------------------------------------

    def schedule_to_commands(
        self,
        df: pd.DataFrame,
        asset_map: Mapping[str, str],
        *,
        schedule_id: str | None = None,
        now: datetime | None = None,
        announce: bool = True,
    ) -> list[Command]:
        """Convert a Layer 3 schedule (see ``coordinator.schedule``) and queue its commands.

        ``now`` is the commands' created_at (default: the current time). ``announce=False``:
        no COMMAND_CREATED per command, the caller announces them together (the planner does,
        with SCHEDULE_PLANNED). A schedule that cannot be converted raises ScheduleError after
        a SCHEDULE_REJECTED event; nothing is queued.
        """
        try:
            commands = schedule_conversion.schedule_to_commands(
                df,
                asset_map,
                schedule_id=schedule_id,
                timeout_seconds=self.config.command_timeout_seconds,
                max_retries=self.config.max_retries,
                now=now,
            )
        except ScheduleError as exc:
            self.event_bus.emit(
                EventType.SCHEDULE_REJECTED,
                ev.ScheduleRejected(schedule_id=schedule_id, reason=exc.reason, message=str(exc),
                                    site_id=self.config.site_id, columns=exc.columns),
            )
            raise
        self._register(commands)
        starts_at, ends_at = schedule_conversion.schedule_span(df.index)
        self.event_bus.emit(
            EventType.SCHEDULE_RECEIVED,
            ev.ScheduleReceived(
                schedule_id=schedule_id,
                site_id=self.config.site_id,
                command_count=len(commands),
                asset_count=len({c.asset_id for c in commands}),
                slot_count=len(df.index),
                starts_at=starts_at,
                ends_at=ends_at,
            ),
        )
        if announce:
            self._announce_created(commands)
        return commands

    def add_commands(self, commands: Iterable[Command]) -> None:
        """Queue commands built elsewhere (an operator's START_CHARGING, say)."""
        commands = list(commands)
        self._register(commands)
        self._announce_created(commands)

    def restore(self, commands: Iterable[Command]) -> list[Command]:
        """Take back unfinished commands from a durable record (a restarted planner), in the
        state recorded, without events (nothing changed): PENDING ones are queued by slot
        time, DISPATCHED and ACKNOWLEDGED ones are in flight again. Returns those in flight,
        for the caller to reconcile with their gateways."""
        commands = list(commands)
        self._register(commands)
        in_flight = []
        for cmd in commands:
            if not cmd.status.is_in_flight:
                continue
            busy = self._in_flight.get(cmd.asset_id)
            if busy is not None:  # the engine never records two; a record that says so is answered by timeout
                log.error("restored %s and %s both in flight for %s", busy.command_id, cmd.command_id, cmd.asset_id)
            self._in_flight[cmd.asset_id] = cmd
            in_flight.append(cmd)
        return in_flight

    def has_unfinished(self, asset_id: str, command_types: frozenset[CommandType]) -> bool:
        """Whether ``asset_id`` has a command of ``command_types`` not yet finished."""
        return any(
            c.command_type in command_types and not c.status.is_terminal for c in self._by_asset.get(asset_id, ())
        )

    def _register(self, commands: list[Command]) -> None:
        known = self._commands.keys() & {c.command_id for c in commands}
        if known:
            raise ValueError(f"commands already queued: {', '.join(sorted(known)[:5])}")
        by_asset = self._by_asset
        for cmd in commands:
            self._commands[cmd.command_id] = cmd
            by_asset.setdefault(cmd.asset_id, []).append(cmd)
        if commands:
            self._upcoming.append(_Batch(sorted(commands, key=attrgetter("scheduled_at"))))

    def _announce_created(self, commands: list[Command]) -> None:
        # Skipped when nobody listens: a large schedule makes tens of thousands of these.
        if self.event_bus.has_subscribers(EventType.COMMAND_CREATED):
            for cmd in commands:
                self.event_bus.emit(EventType.COMMAND_CREATED, ev.CommandCreated.of(cmd))

    # -- asset states --------------------------------------------------------------

    def register_state_machine(self, machine: StateMachine) -> None:
        """Let ``machine`` decide whether its asset may receive commands (held when FAULTED/UNAVAILABLE)."""
        self._machines[machine.asset_id] = machine
        machine.add_listener(partial(self._on_transition, machine.asset_id))

    def set_asset_state(self, asset_id: str, state: str) -> None:
        """Record an asset state reported from elsewhere (a tracker in another process)."""
        self._reported_states[asset_id] = state

    def asset_state(self, asset_id: str) -> str | None:
        machine = self._machines.get(asset_id)
        return machine.state if machine is not None else self._reported_states.get(asset_id)

    def is_held(self, asset_id: str) -> bool:
        return self._site_hold is not None or self.asset_state(asset_id) in HOLDING_STATES

    def hold_site(self, reason: str) -> None:
        """Dispatch nothing until ``release_site`` (the site's emergency stop).

        Commands that fall due meanwhile are held as for a faulted asset: announced once
        (COMMAND_HELD with ``site_hold``), older setpoints superseded by newer ones, and on
        release the newest per asset goes out.
        """
        self._site_hold = reason

    def release_site(self) -> None:
        self._site_hold = None

    @property
    def site_hold(self) -> str | None:
        """Why the whole site is held, or None."""
        return self._site_hold

    def _on_transition(self, asset_id: str, from_state: str, to_state: str, trigger: str) -> None:
        if is_early_departure(from_state, trigger):
            self.cancel_pending_for_asset(asset_id, f"early departure: vehicle unplugged while {from_state}")

    # -- dispatch ------------------------------------------------------------------

    def get_pending_commands(self, now: datetime | None = None) -> list[Command]:
        """Commands to dispatch now: at most one per asset, most urgent first.

        Does not change their status; ``dispatch_command`` does. Side effects: superseded
        setpoints are cancelled and newly held commands are announced (COMMAND_HELD).
        """
        now = _now(now)
        self._release_due(now)
        ready = []
        for asset_id in list(self._ready):
            head = self._next_for_asset(asset_id, now)
            if head is not None:
                ready.append(head)
        ready.sort(key=lambda c: (-c.priority, c.scheduled_at))
        return ready

    def _release_due(self, now: datetime) -> None:
        for batch in self._upcoming:
            commands = batch.commands
            while batch.cursor < len(commands) and commands[batch.cursor].scheduled_at <= now:
                cmd = commands[batch.cursor]
                batch.cursor += 1
                if not cmd.status.is_terminal:
                    queue = self._ready.setdefault(cmd.asset_id, [])
                    if queue and queue[-1].scheduled_at > cmd.scheduled_at:
                        bisect.insort(queue, cmd, key=lambda c: c.scheduled_at)
                    else:
                        queue.append(cmd)
        self._upcoming = [b for b in self._upcoming if b.cursor < len(b.commands)]

    def _next_for_asset(self, asset_id: str, now: datetime) -> Command | None:
        queue = [c for c in self._ready[asset_id] if not c.status.is_terminal]
        self._supersede(queue, now)
        queue = [c for c in queue if not c.status.is_terminal]
        if not queue:
            del self._ready[asset_id]
            return None
        self._ready[asset_id] = queue
        if asset_id in self._in_flight:
            return None
        if self.is_held(asset_id):
            # What brings a held asset back (a reset, an operator's "operative") is not held.
            head = next((c for c in queue if self._releases(c)), None)
            if head is None:
                self._announce_held(asset_id, queue)
                return None
        else:
            head = queue[0]
        if head.next_attempt_at is not None and head.next_attempt_at > now:
            return None
        return head

    def _supersede(self, queue: list[Command], now: datetime) -> None:
        newest: dict[str, Command] = {}
        for cmd in reversed(queue):
            channel = channel_of(cmd.command_type)
            if channel is None:
                continue
            if channel in newest and cmd.status is CommandStatus.PENDING:
                self._finish(cmd, CommandStatus.CANCELLED, f"superseded by {newest[channel].command_id}", now)
            else:
                newest.setdefault(channel, cmd)

    def _announce_held(self, asset_id: str, queue: list[Command]) -> None:
        for cmd in queue:
            if cmd.command_id not in self._hold_announced:
                self._hold_announced.add(cmd.command_id)
                self.event_bus.emit(EventType.COMMAND_HELD, ev.CommandHeld.of(
                    cmd, asset_state=self.asset_state(asset_id), site_hold=self._site_hold))

    def dispatch_command(
        self,
        cmd: Command,
        adapter: ProtocolAdapter | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any] | None:
        """Translate ``cmd`` with ``adapter`` (default: the registry's) and mark it DISPATCHED.

        Returns the protocol payload for the gateway to send, or None when the command was
        not sent: held (asset faulted/unavailable, stays PENDING) or failed at once (no
        adapter, or the adapter cannot express it; COMMAND_FAILED is published).
        """
        now = _now(now)
        if not self._may_dispatch(cmd):
            return None
        if adapter is None and self.adapter_registry is not None:
            adapter = self.adapter_registry.get(cmd.asset_id)
        self._start_attempt(cmd, now)
        if adapter is None:
            self._finish(cmd, CommandStatus.FAILED, f"no protocol adapter registered for {cmd.asset_id}", now)
            return None
        # DISPATCHED before translating, so that the payload describes the command as sent.
        cmd.status = CommandStatus.DISPATCHED
        try:
            payload = adapter.translate(cmd)
        except TranslationError as exc:
            self._finish(cmd, CommandStatus.FAILED, f"cannot translate for {adapter.protocol}: {exc}", now)
            return None
        self._now_in_flight(cmd, adapter.protocol, adapter.gateway_id)
        return payload

    def dispatch_to_gateway(
        self, cmd: Command, routes: Mapping[str, Route], now: datetime | None = None
    ) -> Route | None:
        """Mark ``cmd`` DISPATCHED to the gateway ``routes`` names for its asset, without
        translating it: for a process (the planner) whose gateways translate. Same lifecycle,
        holds and events as ``dispatch_command``.

        Returns the route the command goes to, or None when it was not sent: held (stays
        PENDING) or, for an asset without a route, failed at once (COMMAND_FAILED is published).
        """
        now = _now(now)
        if not self._may_dispatch(cmd):
            return None
        route = routes.get(cmd.asset_id)
        self._start_attempt(cmd, now)
        if route is None:
            self._finish(cmd, CommandStatus.FAILED, f"no gateway routes commands for {cmd.asset_id}", now)
            return None
        cmd.status = CommandStatus.DISPATCHED
        self._now_in_flight(cmd, route.protocol, route.gateway_id)
        return route

    def _may_dispatch(self, cmd: Command) -> bool:
        """Raises for a command that must not be dispatched; False (and COMMAND_HELD) when held."""
        if cmd.command_id not in self._commands:
            self._register([cmd])
        if cmd.status is not CommandStatus.PENDING:
            raise ValueError(f"{cmd.command_id} is {cmd.status}, only PENDING commands can be dispatched")
        busy = self._in_flight.get(cmd.asset_id)
        if busy is not None and busy is not cmd:
            raise ValueError(
                f"{cmd.asset_id} already has {busy.command_id} in flight; an asset takes one command at a time"
            )
        if self.is_held(cmd.asset_id) and not self._releases(cmd):
            self._announce_held(cmd.asset_id, [cmd])
            return False
        return True

    def _releases(self, cmd: Command) -> bool:
        """Whether ``cmd`` is what recovers its held asset: RESET of a FAULTED one, CHANGE_AVAILABILITY
        of an UNAVAILABLE one. The site's emergency stop holds these too."""
        if self._site_hold is not None:
            return False
        state = self.asset_state(cmd.asset_id)
        if cmd.command_type is CommandType.RESET:
            return state == "FAULTED"
        return cmd.command_type is CommandType.CHANGE_AVAILABILITY and state == "UNAVAILABLE"

    @staticmethod
    def _start_attempt(cmd: Command, now: datetime) -> None:
        cmd.attempts += 1
        cmd.next_attempt_at = None
        cmd.dispatched_at = now

    def _now_in_flight(self, cmd: Command, protocol: str, gateway_id: str) -> None:
        self._in_flight[cmd.asset_id] = cmd
        self.event_bus.emit(
            EventType.COMMAND_DISPATCHED,
            ev.CommandDispatched.of(cmd, protocol=protocol, gateway_id=gateway_id),
        )

    # -- results -------------------------------------------------------------------

    def handle_acknowledgement(self, cmd: Command, now: datetime | None = None) -> None:
        """The device accepted ``cmd``; completion (``handle_response``) is still awaited."""
        if cmd.status is not CommandStatus.DISPATCHED:
            log.warning("ignoring acknowledgement of %s in status %s", cmd.command_id, cmd.status)
            return
        cmd.status = CommandStatus.ACKNOWLEDGED
        self.event_bus.emit(EventType.COMMAND_ACKNOWLEDGED, ev.CommandAcknowledged.of(cmd))

    def handle_response(
        self,
        cmd: Command,
        success: bool,
        error: str | None = None,
        now: datetime | None = None,
        *,
        retryable: bool = True,
    ) -> CommandStatus:
        """Record the outcome of the last attempt; returns the command's new status.

        A failure is retried after a backoff while attempts remain, unless ``retryable``
        is False (the device refused it for a reason a retry would not change). A success that arrives
        after the attempt timed out still completes the command (the device did it); its
        ``error``, if any, is the gateway's detail (OCPP: no session in progress). An
        answer for a finished command changes nothing and is logged.
        """
        now = _now(now)
        if cmd.status.is_terminal:
            outcome = "success" if success else "failure"
            log.warning("late %s answer for %s, already %s", outcome, cmd.command_id, cmd.status)
            return cmd.status
        if cmd.attempts == 0:
            raise ValueError(f"{cmd.command_id} was never dispatched")
        was_waiting_retry = cmd.status is CommandStatus.PENDING
        if self._in_flight.get(cmd.asset_id) is cmd:
            del self._in_flight[cmd.asset_id]
        if success:
            self._finish(cmd, CommandStatus.COMPLETED, error, now)  # a detail, e.g. no session drew it
        elif not retryable:
            self._finish(cmd, CommandStatus.FAILED, error or "refused (no reason given)", now)
        elif not was_waiting_retry:
            self._fail_attempt(cmd, error or "failed (no reason given)", now, timed_out=False)
        return cmd.status

    def handle_superseded(self, cmd: Command, reason: str, now: datetime | None = None) -> CommandStatus:
        """The gateway did not apply ``cmd`` because a newer setpoint of its channel is in force
        on the device: it ends CANCELLED with ``reason``, never retried."""
        if cmd.status.is_terminal:
            log.warning("late superseded answer for %s, already %s", cmd.command_id, cmd.status)
            return cmd.status
        if self._in_flight.get(cmd.asset_id) is cmd:
            del self._in_flight[cmd.asset_id]
        self._finish(cmd, CommandStatus.CANCELLED, reason, _now(now))
        return cmd.status

    def check_timeouts(self, now: datetime | None = None) -> list[Command]:
        """Commands whose attempt got no answer within ``timeout_seconds``.

        Each is retried while attempts remain (COMMAND_RETRY_SCHEDULED), else TIMED_OUT.
        """
        now = _now(now)
        expired = []
        for cmd in list(self._in_flight.values()):
            assert cmd.dispatched_at is not None
            if now - cmd.dispatched_at >= timedelta(seconds=cmd.timeout_seconds):
                del self._in_flight[cmd.asset_id]
                self._fail_attempt(cmd, f"no answer within {cmd.timeout_seconds:g} s", now, timed_out=True)
                expired.append(cmd)
        return expired

    def _fail_attempt(self, cmd: Command, reason: str, now: datetime, *, timed_out: bool) -> None:
        if cmd.attempts <= cmd.max_retries:
            delay = self.config.retry_base_delay_seconds * self.config.retry_backoff_factor ** (cmd.attempts - 1)
            cmd.status = CommandStatus.PENDING
            cmd.error = reason
            cmd.next_attempt_at = now + timedelta(seconds=delay)
            self.event_bus.emit(
                EventType.COMMAND_RETRY_SCHEDULED,
                ev.CommandRetryScheduled.of(cmd, timed_out=timed_out, retry_at=cmd.next_attempt_at),
            )
        else:
            self._finish(cmd, CommandStatus.TIMED_OUT if timed_out else CommandStatus.FAILED, reason, now)

    # -- cancellation --------------------------------------------------------------

    def cancel_command(self, cmd: Command, reason: str, now: datetime | None = None) -> bool:
        """Cancel a PENDING command; returns False if it is already in flight or finished."""
        if cmd.status is not CommandStatus.PENDING or self._in_flight.get(cmd.asset_id) is cmd:
            return False
        self._finish(cmd, CommandStatus.CANCELLED, reason, _now(now))
        return True

    def cancel_pending_for_asset(
        self, asset_id: str, reason: str, now: datetime | None = None, *, created_before: datetime | None = None
    ) -> list[Command]:
        """Cancel every PENDING command of ``asset_id`` (created before ``created_before``,
        if given); commands in flight finish normally."""
        return [
            c for c in list(self._by_asset.get(asset_id, ()))
            if (created_before is None or c.created_at < created_before) and self.cancel_command(c, reason, now)
        ]

    def supersede(
        self, asset_ids: Iterable[str], starting_at: datetime, by_schedule_id: str, now: datetime | None = None
    ) -> list[Command]:
        """A newer schedule takes over ``asset_ids`` from ``starting_at``: cancel the PENDING
        commands of other schedules for those assets in that span."""
        reason = f"superseded by schedule {by_schedule_id}"
        cancelled = []
        for asset_id in asset_ids:
            for cmd in list(self._by_asset.get(asset_id, ())):
                if (
                    cmd.schedule_id != by_schedule_id
                    and cmd.scheduled_at >= starting_at
                    and self.cancel_command(cmd, reason, now)
                ):
                    cancelled.append(cmd)
        return cancelled

    def forget_finished(self, finished_before: datetime) -> int:
        """Drop finished commands older than ``finished_before`` (a long-running process
        would otherwise keep every command ever made); returns how many were dropped."""
        old = [
            c for c in self._commands.values()
            if c.status.is_terminal and c.finished_at is not None and c.finished_at < finished_before
        ]
        for cmd in old:
            del self._commands[cmd.command_id]
        for asset_id in {c.asset_id for c in old}:
            kept = [c for c in self._by_asset[asset_id] if c.command_id in self._commands]
            if kept:
                self._by_asset[asset_id] = kept
            else:
                del self._by_asset[asset_id]
        return len(old)

    _TERMINAL_EVENTS: ClassVar[dict[CommandStatus, tuple[EventType, type[ev.CommandPayload]]]] = {
        CommandStatus.COMPLETED: (EventType.COMMAND_COMPLETED, ev.CommandCompleted),
        CommandStatus.FAILED: (EventType.COMMAND_FAILED, ev.CommandFailed),
        CommandStatus.TIMED_OUT: (EventType.COMMAND_TIMED_OUT, ev.CommandTimedOut),
        CommandStatus.CANCELLED: (EventType.COMMAND_CANCELLED, ev.CommandCancelled),
    }

    def _finish(self, cmd: Command, status: CommandStatus, error: str | None, now: datetime) -> None:
        cmd.status = status
        cmd.error = error
        cmd.finished_at = now
        cmd.next_attempt_at = None
        self._hold_announced.discard(cmd.command_id)
        event_type, model = self._TERMINAL_EVENTS[status]
        self.event_bus.emit(event_type, model.of(cmd))

    # -- lookups -------------------------------------------------------------------

    def get_command(self, command_id: str) -> Command | None:
        return self._commands.get(command_id)

    def get_commands_for_asset(self, asset_id: str) -> list[Command]:
        return list(self._by_asset.get(asset_id, ()))

    @property
    def commands(self) -> list[Command]:
        return list(self._commands.values())


def _now(now: datetime | None) -> datetime:
    return utcnow() if now is None else require_aware(now, "now")
