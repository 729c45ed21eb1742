"""One battery's Modbus TCP link: its own client, its own command queue, its own poller.

Each device has its own asyncio tasks, so a slow or dead battery never delays another.
A command is: clamp -> the ordering rule (SUPERSEDED when a newer setpoint is in force) ->
"applying" recorded -> write -> ACKNOWLEDGED -> read back until the device shows the value
("applied" recorded, COMPLETED) or the verify window ends ("not applied", FAILED). A Modbus
write acknowledgement is not proof that the device took the value.

A battery with a watchdog register gets a new heartbeat value every third of its timeout
while the link is up; when the gateway dies the heartbeat stops and the battery falls back to
its safe value by itself (docs/modbus.md, leases).

After a restart, a command a crash left "applying" is reconciled by reading the setpoint
registers back: the device shows the planned value -> it was applied (COMPLETED); it does
not -> FAILED (the planner retries).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from coordinator.adapters import TranslationError
from coordinator.base import Command, CommandType
from coordinator.contract.events import DeviceLinkDown, DeviceLinkUp, SetpointClamped
from coordinator.contract.messages import CommandResult, Outcome
from coordinator.events import EventBus, EventType
from coordinator.protocols.modbus.device import DeviceStatus, decode_status, next_heartbeat
from coordinator.protocols.modbus.registers import decode_registers
from coordinator.protocols.modbus.setpoints import SetpointPlan, coalesce, plan_command, shows
from coordinator.runtime.command_intake import CommandIntake, result
from coordinator.runtime.device_gateway import stop_tasks
from coordinator.site import AssetConfig
from coordinator.timeutil import utcnow

log = logging.getLogger(__name__)

READBACK_INTERVAL = 0.05  # seconds between read-back attempts within the verify window


class Work(StrEnum):
    EXECUTE = "execute"
    RECONCILE = "reconcile"
    RESTORE = "restore"
    """The battery's last applied setpoint again, after its link came (back) up: it may have
    fallen back (watchdog) or restarted meanwhile. Not a delivery: nothing is answered."""


@dataclass(frozen=True)
class Marks:
    """How a command's "applying" and "applied" are committed: the gateway's group commits
    (DeviceGateway.mark_applying / mark_applied), or one transaction each."""

    applying: Callable[[Command], Awaitable[None]]
    applied: Callable[[Command], Awaitable[None]]

    @classmethod
    def each(cls, intake: CommandIntake) -> Marks:
        async def applying(cmd: Command) -> None:
            intake.applying(cmd)

        async def applied(cmd: Command) -> None:
            intake.applied(cmd)

        return cls(applying, applied)


class LinkError(Exception):
    """The device did not answer, or answered with a Modbus exception."""


class BatteryLink:
    def __init__(
        self,
        asset: AssetConfig,
        bus: EventBus,
        intake: CommandIntake,
        send_results: Callable[[list[CommandResult]], None],
        report: Callable[[str, DeviceStatus], None],
        telemetry: Callable[[str, dict[str, Any]], None],
        lease_seconds: float = 300.0,
        marks: Marks | None = None,
    ) -> None:
        assert asset.modbus is not None
        self.asset = asset
        self.device = asset.modbus
        self.register_map = self.device.register_map()
        self.status_registers = self.device.status()
        self.bus, self.intake = bus, intake
        self.send_results, self.report, self.telemetry = send_results, report, telemetry
        self.marks = marks or Marks.each(intake)
        self.queue: asyncio.Queue[tuple[Command, Work]] = asyncio.Queue()
        """What the battery is to do, in order: a command to execute, one a crash left applying
        to reconcile, or a setpoint in force to restore."""
        self._client: AsyncModbusTcpClient | None = None  # made in start(): it needs the running loop
        self.up = False
        self.last_state: str | None = None
        self._tasks: list[asyncio.Task] = []
        self.halted: str | None = None
        """Why commands are refused (the site's emergency stop), or None."""
        self.lease_seconds = lease_seconds
        self.heartbeat = 0
        """The last value written to the watchdog register."""
        self.draining = False
        """SIGTERM: no new connection is opened; a link that is down fails what waits for it."""
        self.stopped = False
        """``stop`` was called: every loop of the link ends at its next turn."""

    @property
    def where(self) -> str:
        return f"{self.device.host}:{self.device.port} unit {self.device.device_id}"

    @property
    def client(self) -> AsyncModbusTcpClient:
        if self._client is None:
            raise RuntimeError(f"{self.asset.asset_id}: link used before start()")
        return self._client

    def start(self) -> None:
        """Call on the gateway's event loop."""
        self._client = AsyncModbusTcpClient(
            self.device.host, port=self.device.port, timeout=self.device.timeout_seconds, retries=0,
            reconnect_delay=0,  # we reconnect ourselves, with backoff and link events
        )
        name = self.asset.asset_id
        self._tasks = [asyncio.create_task(self._commands(), name=f"{name} commands"),
                       asyncio.create_task(self._poll(), name=f"{name} poller")]
        if self.device.watchdog is not None:
            self._tasks.append(asyncio.create_task(self._heartbeats(), name=f"{name} heartbeats"))

    def drain(self) -> None:
        """SIGTERM: stop reconnecting. What is in flight keeps its own bounds (the request
        timeout, the verify window) while the link is up, and fails at once when it is down."""
        self.draining = True

    async def stop(self) -> None:
        self.stopped = True  # a loop whose cancellation was swallowed ends at its next turn
        await stop_tasks(self._tasks, what=f"{self.asset.asset_id} link")
        if self._client is not None:  # a link stopped before it started has nothing to close
            self._client.close()

    # -- link ----------------------------------------------------------------------

    def _set_up(self, up: bool, reason: str = "") -> None:
        if up == self.up:
            return
        self.up = up
        log.log(logging.INFO if up else logging.WARNING, "%s link %s %s %s", self.asset.asset_id,
                "up" if up else "down", self.where, reason)
        if up:
            self.bus.emit(EventType.DEVICE_LINK_UP,
                          DeviceLinkUp(asset_id=self.asset.asset_id, endpoint=self.where, reason=reason))
            self._restore_in_force()
        else:
            self.bus.emit(EventType.DEVICE_LINK_DOWN,
                          DeviceLinkDown(asset_id=self.asset.asset_id, endpoint=self.where, reason=reason))
        if not up:
            self.client.close()  # a device that stopped answering gets a fresh connection

    async def _call(self, request: Callable[[], Awaitable[Any]]) -> Any:
        if not self.client.connected:
            raise LinkError(f"device link down ({self.where})")
        try:
            response = await request()
        except (TimeoutError, ModbusException, OSError) as exc:
            self._set_up(False, str(exc))
            raise LinkError(f"no answer from {self.where}: {exc}") from None
        if response.isError():
            raise LinkError(f"device refused: Modbus exception {getattr(response, 'exception_code', '?')}")
        return response

    async def read(self, offset: int, count: int) -> list[int]:
        response = await self._call(
            lambda: self.client.read_holding_registers(offset, count=count, device_id=self.device.device_id))
        return list(response.registers)

    async def write(self, offset: int, words: list[int]) -> None:
        await self._call(lambda: self.client.write_registers(offset, words, device_id=self.device.device_id))

    # -- polling -------------------------------------------------------------------

    async def _poll(self) -> None:
        backoff = 0.5
        first, count = self.status_registers.span()
        unreadable = ""  # the last decoding error, logged once rather than at every poll
        while not self.stopped:
            if not self.client.connected:
                if self.draining:  # shutting down: the device is not called again
                    return
                if not await self.client.connect():
                    self._set_up(False, "connect failed")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.5
            try:
                words = [0] * count
                for offset, n in self.status_registers.reads():
                    words[offset - first : offset - first + n] = await self.read(offset, n)
                status = decode_status(self.status_registers, first, words)
            except LinkError:
                await asyncio.sleep(backoff)
                continue
            except ValueError as exc:  # the device reported something we cannot read
                if str(exc) != unreadable:
                    log.error("%s: unreadable status registers: %s", self.asset.asset_id, exc)
                unreadable = str(exc)
            else:
                unreadable = ""
                self._set_up(True)
                if status.state != self.last_state:
                    self.last_state = status.state
                    self.report(self.asset.asset_id, status)
                self.telemetry(self.asset.asset_id, status.telemetry())
            await asyncio.sleep(self.device.poll_interval_seconds)

    # -- watchdog ------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        """A new value in the watchdog register every interval while the link is up (the poller
        connects it). A failed write is logged; the next one tries again."""
        assert self.device.watchdog is not None
        offset = self.device.watchdog.spec().offset
        interval = self.device.watchdog.interval(self.lease_seconds)
        failing = False
        while not self.stopped:
            if self.client.connected:
                value = next_heartbeat(self.heartbeat)
                try:
                    await self.write(offset, [value])
                except LinkError as exc:
                    if not failing:
                        log.warning("%s: heartbeat not written: %s", self.asset.asset_id, exc)
                    failing = True
                else:
                    self.heartbeat, failing = value, False
            await asyncio.sleep(interval)

    # -- commands ------------------------------------------------------------------

    def submit(self, cmd: Command, reconcile: bool = False) -> None:
        self.queue.put_nowait((cmd, Work.RECONCILE if reconcile else Work.EXECUTE))

    def _restore_in_force(self) -> None:
        """In the queue, behind what came before: the setpoints the record holds as applied
        (not those an emergency stop overrode, nor one a newer write may have replaced), the
        same rule as for a charger that reboots (docs/durability.md)."""
        for applied in self.intake.record.restorable(self.asset.asset_id):
            cmd = Command(applied.asset_id, applied.command_type, dict(applied.parameters), applied.scheduled_at,
                          command_id=applied.command_id, attempts=applied.attempt, created_at=applied.created_at)
            self.queue.put_nowait((cmd, Work.RESTORE))

    async def _commands(self) -> None:
        work = {Work.EXECUTE: self.execute, Work.RECONCILE: self.reconcile, Work.RESTORE: self.restore}
        while not self.stopped:
            cmd, kind = await self.queue.get()
            try:
                await work[kind](cmd)
            except Exception:
                log.exception("%s: command %s crashed", self.asset.asset_id, cmd.command_id)
                self.send_results([result(cmd.command_id, cmd.asset_id, Outcome.FAILED, "gateway error (see its log)")])

    async def execute(self, cmd: Command) -> None:
        if not self.intake.open(cmd):  # handed back (shutdown) while it waited in the queue
            return
        answer = lambda outcome, error=None: result(cmd.command_id, cmd.asset_id, outcome, error)  # noqa: E731
        try:
            plan = plan_command(cmd, self.device, self.register_map, self.asset.max_power_kw)
        except TranslationError as exc:
            self.send_results([answer(Outcome.REFUSED, str(exc))])
            return
        if plan.clamped:
            self.bus.emit(EventType.SETPOINT_CLAMPED, SetpointClamped(
                asset_id=cmd.asset_id, command_id=cmd.command_id, command_type=cmd.command_type,
                requested=plan.requested, applied=plan.applied, limit=plan.limit,
            ))
        if self.halted is not None:
            self.send_results([answer(Outcome.REFUSED, self.halted)])
            return
        superseded = self.intake.check(cmd)
        if superseded is not None:
            self.send_results([superseded])
            return
        await self.marks.applying(cmd)
        if self.halted is not None:  # the stop came while the mark was committed: idle stays
            self.send_results([answer(Outcome.REFUSED, self.halted)])
            return
        if not self.intake.open(cmd):  # handed back (shutdown) meanwhile
            return
        failure = await self.apply(plan, on_written=lambda: self.send_results([answer(Outcome.ACKNOWLEDGED)]))
        if failure is None:
            await self.marks.applied(cmd)
        self.send_results([answer(Outcome.COMPLETED) if failure is None else answer(Outcome.FAILED, failure)])

    async def apply(self, plan: SetpointPlan, on_written: Callable[[], None] = lambda: None) -> str | None:
        """Write ``plan`` and read it back until the device shows it; None when it does, else why not."""
        try:
            for offset, words in coalesce(plan.writes):
                await self.write(offset, words)
        except LinkError as exc:
            return str(exc)
        on_written()
        return await self.verify(plan, self.device.verify_window_seconds)

    async def verify(self, plan: SetpointPlan, window: float) -> str | None:
        """Read ``plan``'s registers back until the device shows it (None) or ``window`` seconds
        passed (why not)."""
        requests = coalesce(plan.writes)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        seen = "nothing"
        while True:
            try:
                shown: dict[int, int] = {}  # offset -> word, read back with the same requests as written
                for offset, words in requests:
                    shown.update(enumerate(await self.read(offset, len(words)), start=offset))
                shown_values = [
                    decode_registers(
                        w.spec, [shown[o] for o in range(w.spec.offset, w.spec.offset + w.spec.word_count)]
                    )
                    for w in plan.writes
                ]
                checks = [shows(w.spec, value, w.value if w.expected is None else w.expected,
                                self.device.verify_tolerance_kw)
                          for w, value in zip(plan.writes, shown_values, strict=True)]
                seen = ", ".join(
                    f"{w.spec.address}={value:g}" for w, value in zip(plan.writes, shown_values, strict=True)
                )
                if all(checks):
                    return None
            except LinkError as exc:
                seen = str(exc)
                if self.draining and not self.client.connected:  # no reconnect is coming: do not wait it out
                    return f"not verified: {seen}; the gateway is shutting down"
            if loop.time() >= deadline:
                return (f"not applied: after {window:g} s the "
                        f"device shows {seen} (wanted {plan.applied:g})")
            await asyncio.sleep(READBACK_INTERVAL)

    async def restore(self, cmd: Command) -> None:
        """Write ``cmd``, applied before, again and read it back; logged, never answered."""
        if self.halted is not None or self.intake.check(cmd) is not None:
            return  # stopped, or something newer was applied since it was queued
        try:
            plan = plan_command(cmd, self.device, self.register_map, self.asset.max_power_kw)
        except TranslationError as exc:
            log.error("%s: setpoint %s not restored: %s", cmd.asset_id, cmd.command_id, exc)
            return
        failure = await self.apply(plan)
        log.log(logging.INFO if failure is None else logging.WARNING, "%s: setpoint of %s restored after the link "
                "came up: %s", cmd.asset_id, cmd.command_id, failure or "shown by the device")

    async def reconcile(self, cmd: Command) -> None:
        """``cmd`` was being written when the gateway stopped: does the device show it?"""
        answer = lambda outcome, error=None: result(cmd.command_id, cmd.asset_id, outcome, error)  # noqa: E731
        try:
            plan = plan_command(cmd, self.device, self.register_map, self.asset.max_power_kw)
        except TranslationError as exc:  # it was planned before the restart; the config changed since
            self.send_results([answer(Outcome.REFUSED, str(exc))])
            return
        # the link is coming up with this run: give it the command's own timeout to answer
        failure = await self.verify(plan, max(cmd.timeout_seconds / 2, self.device.verify_window_seconds))
        if failure is None:
            log.warning("%s: %s attempt %d, interrupted by the restart, is shown by the device: applied",
                        cmd.asset_id, cmd.command_id, cmd.attempts)
            await self.marks.applied(cmd)
            self.send_results([answer(Outcome.ACKNOWLEDGED), answer(Outcome.COMPLETED)])
        else:
            self.send_results([answer(Outcome.FAILED, f"after the gateway restarted: {failure}")])

    # -- emergency stop ------------------------------------------------------------

    async def make_safe(self, reason: str) -> str:
        """Idle: charge and discharge 0, written ahead of any queued command, read back.

        Commands queued or arriving until ``resume`` are refused with ``reason``. Raises
        LinkError when the device cannot be reached or does not show idle."""
        self.halted = reason
        while not self.queue.empty():
            cmd, _ = self.queue.get_nowait()
            self.send_results([result(cmd.command_id, cmd.asset_id, Outcome.REFUSED, reason)])
        idle = Command(self.asset.asset_id, CommandType.SET_CHARGE_RATE, {"power_kw": 0.0}, utcnow())
        failure = await self.apply(plan_command(idle, self.device, self.register_map, self.asset.max_power_kw))
        if failure is not None:
            raise LinkError(failure)
        return f"idle: charge and discharge 0 kW, read back from {self.where}"

    def resume(self) -> None:
        self.halted = None
