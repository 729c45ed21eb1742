"""What every gateway with real device links shares: the command intake and its durable
record, batched results, status reports and telemetry, the link state its health is judged
by, and the site's emergency stop: every asset to its safe state at once (``make_safe``, one
task per asset), commands refused until the reset. Device I/O runs on the process's event
loop, beside the MQTT handlers, so none of this state is shared between threads.

A gateway hands each new delivery to ``submit`` (its per-asset queue); right before the
device is touched it awaits ``begin`` (the ordering rule, then "applying" committed) and, once
the device confirmed, ``mark_applied``. Both marks are group commits (``GroupCommit``): the
per-asset tasks a slot boundary wakes together share one SQLite transaction. On start
``resume`` finishes what the record shows unfinished: accepted deliveries are submitted
again, ones a crash left applying go to ``reconcile``, which each gateway answers from its
device as far as it can know.

After an emergency-stop reset nothing is restored here: the planner sends the newest
setpoint per asset (docs/durability.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from coordinator.base import Command
from coordinator.contract.events import AssetSafeState, DeviceLink
from coordinator.contract.messages import CommandBatch, CommandResult, EmergencyStop, Outcome, StatusReport, Telemetry
from coordinator.contract.topics import commands_topic, results_topic, status_topic, telemetry_topic
from coordinator.events import Event, EventBus, EventType
from coordinator.runtime.command_intake import CommandIntake, ResultBatcher, result
from coordinator.runtime.gateway_record import GatewayRecord, Progress, record_path
from coordinator.runtime.metrics import ServiceMetrics
from coordinator.runtime.service import Inbound, Publish, Service, forward_events, receives
from coordinator.runtime.settings import settings
from coordinator.runtime.supervision import Supervisor
from coordinator.site import Protocol, SiteConfig
from coordinator.timeutil import utcnow

log = logging.getLogger(__name__)

SAFE_STATE_TIMEOUT = 10.0
"""Seconds an asset may take to confirm its safe state before the gateway reports it could not."""
TASK_STOP_SECONDS = 5.0
"""How long ``stop_tasks`` waits for a device link's tasks to end before it gives up on them."""


async def stop_tasks(tasks: list[asyncio.Task[Any]], bound: float = TASK_STOP_SECONDS, what: str = "tasks") -> None:
    """Cancel ``tasks`` and wait (up to ``bound`` seconds) until they ended, cancelling again
    those still running. One cancel is not enough on Python 3.11: ``asyncio.wait_for`` (used
    inside pymodbus for every connect and request) swallows a cancellation that arrives as
    the awaited call completes, and the task carries on as if never cancelled. A task still
    running after ``bound`` is logged and left to ``asyncio.run``'s own cleanup: a stop never
    waits for ever on one."""
    pending = {t for t in tasks if not t.done()}
    deadline = asyncio.get_running_loop().time() + bound
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            log.error("%s: %d still running %g s after being cancelled: %s", what, len(pending), bound,
                      ", ".join(sorted(t.get_name() for t in pending)))
            return
        _, pending = await asyncio.wait(pending, timeout=min(0.1, left))
    for task in tasks:  # retrieved, so asyncio does not log them as never retrieved
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task %s failed", what, task.get_name(), exc_info=task.exception())


class GroupCommit:
    """Marks that many per-device tasks ask for at about the same moment, committed together.

    ``await commits.mark(cmd)`` returns once ``cmd`` is committed, in one transaction with every
    other mark asked for before the loop's next turn: a slot boundary wakes one task per device
    at once, and a commit each (two per command: applying, applied) was a large share of the
    gateway's time per command. Nothing waits for more: a lone mark is committed on the next turn.
    A failed commit raises in every task whose mark it held.
    """

    def __init__(self, commit: Callable[[list[Command]], None]) -> None:
        self._commit = commit
        self._waiting: list[tuple[Command, asyncio.Future[None]]] = []

    async def mark(self, cmd: Command) -> None:
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._flush)
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.append((cmd, done))
        await done

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        try:
            self._commit([cmd for cmd, _ in waiting])
        except Exception as exc:
            for _, done in waiting:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, done in waiting:
            if not done.done():  # a task cancelled while it waited: its mark is committed all the same
                done.set_result(None)


class DeviceGateway(Service):
    protocol: Protocol
    bus: EventBus
    tick_interval = 3600.0  # the record's pruning

    def __init__(self, site: SiteConfig, publish: Publish, gateway_id: str, record: Path | None = None) -> None:
        config = site.gateway(gateway_id)
        if config is None or config.protocol is not self.protocol:
            raise ValueError(f"{gateway_id!r} is not a {self.protocol} gateway of the site config")
        self.site, self.config, self.gateway_id, self.publish = site, config, gateway_id, publish
        self.publishes = (results_topic(gateway_id), status_topic(gateway_id, "{asset}"),
                          telemetry_topic(gateway_id, "{asset}"))
        self.bus = EventBus()
        forward_events(self.bus, publish)
        self.record = GatewayRecord(record or record_path(gateway_id))
        self.intake = CommandIntake(gateway_id, publish, self.record, site.assets_of(gateway_id), self.refuse)
        self._results = ResultBatcher(self.intake)
        self._applying = GroupCommit(self.record.applying_all)
        self._applied = GroupCommit(self.record.applied_all)
        self.halted: str | None = None
        """Why commands are refused (the site's emergency stop), or None."""
        self.draining = False
        self.in_flight: dict[str, Command] = {}
        """Accepted and not yet ended by a result: what SIGTERM waits for, or hands back."""
        self._none_in_flight = asyncio.Event()
        self._none_in_flight.set()
        self._running: set[asyncio.Task[Any]] = set()  # held: the loop keeps only weak references
        self.supervisor: Supervisor | None = None
        self.metrics: ServiceMetrics | None = None
        self._links_down: set[str] = {a.asset_id for a in site.assets_of(gateway_id)}  # none is up until it says so
        self._links_total = len(self._links_down)  # asked on every link event: a connect storm is n of them
        self.bus.subscribe(EventType.DEVICE_LINK_UP, self._on_link)
        self.bus.subscribe(EventType.DEVICE_LINK_DOWN, self._on_link)

    # -- health: the device links ----------------------------------------------------

    def attach(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._tell_links()

    def attach_metrics(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def _on_link(self, event: Event) -> None:
        link = event.payload
        if not isinstance(link, DeviceLink):  # subscribed to the two link events only, which carry one
            raise TypeError(f"{event.event_type} carries {type(link).__name__}, not a DeviceLink")
        asset_id = link.asset_id
        (self._links_down.discard if event.event_type is EventType.DEVICE_LINK_UP else self._links_down.add)(asset_id)
        self._tell_links()

    def _tell_links(self) -> None:
        if self.supervisor is not None:
            self.supervisor.update(links_down=frozenset(self._links_down),
                                   links_total=self._links_total)

    # -- the site's emergency stop (called ahead of any backlog) ----------------------

    def emergency_stop(self, order: EmergencyStop) -> None:
        self.halted = f"site emergency stop: {order.reason}"
        # what was in force before the stop is no longer: a charger that reboots is not given it again
        self.record.stop_restoring(a.asset_id for a in self.site.assets_of(self.gateway_id))
        self.spawn(self._make_all_safe(self.halted))

    def emergency_reset(self, order: EmergencyStop) -> None:
        """Commands are taken again; nothing is restored (the planner sends the newest setpoint)."""
        self.halted = None
        self.after_reset()

    async def _make_all_safe(self, reason: str) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assets = [a.asset_id for a in self.site.assets_of(self.gateway_id)]
        safe = await asyncio.gather(*(self._make_safe_one(a, reason) for a in assets))
        # One line for the whole stop: a warning per asset was a thousand log lines on the
        # loop while the last chargers were still being made safe. Failures keep a line each.
        log.warning("emergency stop: %d of %d assets in their safe state after %.0f ms%s", sum(safe), len(assets),
                    (loop.time() - started) * 1e3, "" if all(safe) else "; the others NOT (logged above)")

    async def _make_safe_one(self, asset_id: str, reason: str) -> bool:
        try:
            async with asyncio.timeout(SAFE_STATE_TIMEOUT):
                detail = await self.make_safe(asset_id, reason)
        except Exception as exc:  # every asset gets an answer, a failed one loudest
            message = str(exc) or type(exc).__name__
            log.error("%s NOT in its safe state: %s", asset_id, message)
            self.bus.emit(EventType.ASSET_SAFE_STATE, AssetSafeState(asset_id=asset_id, safe=False, error=message))
            return False
        log.debug("%s in its safe state: %s", asset_id, detail)  # the event carries the detail
        self.bus.emit(EventType.ASSET_SAFE_STATE, AssetSafeState(asset_id=asset_id, safe=True, detail=detail))
        return True

    async def make_safe(self, asset_id: str, reason: str) -> str:
        """Put the asset into its safe state and confirm it; what was done, or raise why not."""
        raise NotImplementedError

    def after_reset(self) -> None:
        """After the reset: let the device links take commands again. Never re-apply anything."""

    # -- commands ----------------------------------------------------------------------

    @receives(CommandBatch, "command batch")
    def on_commands(self, topic: str, batch: CommandBatch) -> None:
        """Recorded (committed) here, inside the MQTT handler: the broker's ack follows."""
        for cmd in self.accept(batch):
            self.submit(cmd)

    def submit(self, cmd: Command) -> None:
        """Queue a new delivery for its device (each asset's commands in arrival order)."""
        raise NotImplementedError

    async def begin(self, cmd: Command) -> bool:
        """Right before the device is touched: False when ``cmd`` was answered instead (the
        site's stop, a newer setpoint in force) or already handed back; else "applying" is
        committed: go ahead, without awaiting anything else before the device call (an
        emergency stop that came in meanwhile would otherwise be overtaken by it)."""
        if not self.intake.open(cmd):
            return False
        if self.halted is not None:
            self.send_results([result(cmd.command_id, cmd.asset_id, Outcome.REFUSED, self.halted)])
            return False
        superseded = self.intake.check(cmd)
        if superseded is not None:
            self.send_results([superseded])
            return False
        await self.mark_applying(cmd)
        if not self.intake.open(cmd):  # handed back (shutdown) while the mark was committed
            return False
        if self.halted is not None:  # the stop came while the mark was committed: the device is left alone
            self.send_results([result(cmd.command_id, cmd.asset_id, Outcome.REFUSED, self.halted)])
            return False
        return True

    async def mark_applying(self, cmd: Command) -> None:
        """"applying" committed (``CommandIntake.applying``), with the other marks of this loop turn."""
        await self._applying.mark(cmd)

    async def mark_applied(self, cmd: Command) -> None:
        """"applied" committed (``CommandIntake.applied``), with the other marks of this loop turn."""
        await self._applied.mark(cmd)

    def resume(self) -> None:
        """After a restart (call once the device links are started): finish the deliveries
        the record shows unfinished, in arrival order."""
        left = self.intake.resume()
        for delivery, cmd in left:
            self.in_flight[cmd.command_id] = cmd
            self._none_in_flight.clear()
            if delivery.progress is Progress.ACCEPTED:
                self.submit(cmd)
            elif delivery.applied:  # confirmed, the crash came before its results were recorded
                self.send_results([result(cmd.command_id, cmd.asset_id, Outcome.ACKNOWLEDGED),
                                   result(cmd.command_id, cmd.asset_id, Outcome.COMPLETED)])
            else:
                self.reconcile(cmd)
        if left:
            log.warning("record: %d deliveries left unfinished by the last run resumed", len(left))

    def reconcile(self, cmd: Command) -> None:
        """``cmd`` was being applied when the gateway stopped: find out from the device, if it
        can, and answer (COMPLETED when the device shows it, else FAILED: the planner retries)."""
        self.send_results([result(cmd.command_id, cmd.asset_id, Outcome.FAILED,
                                  "outcome unknown: the gateway restarted during the call")])

    def tick(self, now: datetime) -> None:
        pruned = self.record.prune(settings().ledger_retention_days)
        if pruned:
            log.info("record: %d finished deliveries pruned", pruned)

    def accept(self, batch: CommandBatch) -> list[Command]:
        """The batch's new commands, now in flight; none while shutting down (handed back)."""
        commands = self.intake.accept(batch)
        if self.draining:
            self.send_results([result(c.command_id, c.asset_id, Outcome.FAILED, "not sent: gateway shutting down")
                               for c in commands])
            return []
        self.in_flight.update((c.command_id, c) for c in commands)
        if self.in_flight:
            self._none_in_flight.clear()
        return commands

    def send_results(self, results: list[CommandResult]) -> None:
        """The one way out for results: every final one ends its command's in-flight entry."""
        for r in results:
            if r.outcome is not Outcome.ACKNOWLEDGED:
                self.in_flight.pop(r.command_id, None)
        self._results.send(results)
        self._check_idle()

    def settled(self, cmd: Command) -> None:
        """``cmd`` ended without a result of ours (no answer: the planner's timeout decides)."""
        self.intake.settled(cmd)
        self.in_flight.pop(cmd.command_id, None)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self.in_flight:
            self._none_in_flight.set()

    async def drain(self, timeout: float) -> None:
        """SIGTERM: take nothing new, let in-flight commands finish for up to ``timeout``
        seconds, hand the rest back as failed (the planner retries them while attempts remain)."""
        self.draining = True
        self.stop_reconnecting()
        try:
            async with asyncio.timeout(timeout):
                await self._none_in_flight.wait()
        except TimeoutError:
            left = list(self.in_flight.values())
            log.warning("%d commands unfinished after %g s; handed back", len(left), timeout)
            self.send_results([result(c.command_id, c.asset_id, Outcome.FAILED,
                                      "gateway shut down before the device answered; state unknown") for c in left])
        self._results.flush()  # what is still batching goes out before the farewell

    def subscriptions(self) -> list[Inbound]:
        return [Inbound(commands_topic(self.gateway_id), self.on_commands)]

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` as a task of its own on the loop, held until it ends; a task that
        raises is logged with its traceback, never lost."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._running.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task %s failed", self.gateway_id, task.get_name(), exc_info=task.exception())

    def report(self, asset_id: str, state: str, detail: dict[str, Any] | None = None) -> None:
        report = StatusReport(asset_id=asset_id, state=state, at=utcnow(), detail=detail)
        self.publish(status_topic(self.gateway_id, asset_id), report.encode(), qos=1)

    def telemetry(self, asset_id: str, values: dict[str, Any]) -> None:
        message = Telemetry(asset_id=asset_id, at=utcnow(), values=values)
        self.publish(telemetry_topic(self.gateway_id, asset_id), message.encode(), qos=0)
        if self.metrics is not None:  # qubit_asset_power_kw / _soc_percent of this gateway's own devices
            self.metrics.observe_telemetry(asset_id, values)

    def stop_reconnecting(self) -> None:
        """SIGTERM: a device link that is down stays down; what waits for it fails at once
        (FAILED: the planner retries it) rather than holding the drain."""

    async def stop_links(self) -> None:
        """Close every device link."""

    async def close(self) -> None:
        await self.stop_links()
        self.record.close()
