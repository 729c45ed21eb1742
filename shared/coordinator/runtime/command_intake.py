"""What every gateway does with a command batch before a device sees anything.

Each item of a batch is taken or refused on its own: a malformed command, one for an asset
that is not this gateway's, or one out of its asset's limits (coordinator.setpoint_limits:
NaN, infinite, negative, above max_power_kw) is answered REFUSED when it carries ids a result
can name, and is a MESSAGE_REFUSED event either way; the batch's other commands go on. A
batch addressed to another gateway is refused whole. Every well-formed
delivery (a command_id with its attempt number: a retry from the planner is new work) is
written to the gateway's durable record (runtime/gateway_record.py) inside the MQTT handler,
before the broker's ack: a delivery seen before, in this run or an earlier one, is answered
from the record and never applied again; a new attempt of a command an earlier attempt of
which was applied is answered COMPLETED without touching the device. Right before the device
is touched, ``check`` applies the ordering rule (coordinator.setpoint_order): a setpoint
older than the one in force on its asset and channel is answered SUPERSEDED.

A gateway drives each delivery through ``applying`` (before the device is touched),
``applied`` (the device confirmed it) and its results (``send``), each committed first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime

import pydantic

from coordinator.base import Command
from coordinator.contract.codec import DecodeError, command_from_wire
from coordinator.contract.events import RefusalReason
from coordinator.contract.messages import (
    CommandBatch,
    CommandResult,
    Outcome,
    ResultBatch,
)
from coordinator.contract.topics import commands_topic, results_topic
from coordinator.runtime.gateway_record import Delivery, GatewayRecord, Progress
from coordinator.runtime.service import Publish, max_message_bytes
from coordinator.setpoint_limits import out_of_range
from coordinator.setpoint_order import Verdict, decide, ordering
from coordinator.site import AssetConfig
from coordinator.timeutil import utcnow

log = logging.getLogger(__name__)

DeliveryKey = tuple[str, int]  # (command_id, attempts)

FINAL = frozenset({Outcome.COMPLETED, Outcome.FAILED, Outcome.REFUSED, Outcome.SUPERSEDED})


def result(
    cmd_id: str, asset_id: str, outcome: Outcome, error: str | None = None, at: datetime | None = None,
    attempt: int | None = None,
) -> CommandResult:
    """A result; ``attempt`` is filled in by ``CommandIntake.send`` from the delivery it answers."""
    return CommandResult(command_id=cmd_id, asset_id=asset_id, outcome=outcome, at=at or utcnow(), error=error,
                         attempt=attempt)


Refuse = Callable[..., None]
"""refuse(topic, reason, detail, message_id=..., asset_id=...), as ``Service.refuse``."""


def _log_refusal(topic: str, reason: RefusalReason, detail: str, **ids: object) -> None:
    log.warning("refused %s on %s: %s", reason.value, topic, detail)


class CommandIntake:
    def __init__(self, gateway_id: str, publish: Publish, record: GatewayRecord,
                 assets: Iterable[AssetConfig] | None = None, refuse: Refuse | None = None) -> None:
        """``assets``: the gateway's assets, whose limits every command is held to (None: no
        check, for tests of the record alone); ``refuse`` reports each refusal (MESSAGE_REFUSED)."""
        self.gateway_id = gateway_id
        self.publish = publish
        self.record = record
        self.assets = None if assets is None else {a.asset_id: a for a in assets}
        self.refuse = refuse or _log_refusal
        self.topic = commands_topic(gateway_id)
        self._latest: dict[str, DeliveryKey] = {}  # command_id -> its delivery being worked on

    def limits(self, cmd: Command) -> tuple[RefusalReason, str] | None:
        """Why ``cmd`` must not reach its device (not this gateway's asset, out of range), or None."""
        if self.assets is None:
            return None
        asset = self.assets.get(cmd.asset_id)
        if asset is None:
            return RefusalReason.NOT_YOURS, f"{cmd.asset_id} is not an asset of gateway {self.gateway_id}"
        why = out_of_range(cmd, asset)
        return None if why is None else (RefusalReason.OUT_OF_RANGE, why)

    def _refuse_item(self, item: object, reason: RefusalReason, detail: str,
                     answers: list[CommandResult], attempt: int | None = None) -> None:
        """One item refused: answered REFUSED when its ids can name a result, an event either way."""
        cid, aid = (item.get("command_id"), item.get("asset_id")) if isinstance(item, dict) else (None, None)
        answer: CommandResult | None = None
        if isinstance(cid, str) and isinstance(aid, str):
            try:
                answer = result(cid, aid, Outcome.REFUSED, detail[:2000], attempt=attempt)
            except pydantic.ValidationError:  # an id no topic or result may carry ('/', NUL, too long)
                answer = None
        if answer is not None:
            answers.append(answer)
        self.refuse(self.topic, reason, detail + ("" if answer else " (no usable ids: not answered)"),
                    message_id=cid if answer else None, asset_id=aid if answer else None)

    def accept(self, batch: CommandBatch) -> list[Command]:
        """The batch's new, well-formed deliveries within their assets' limits, recorded as
        accepted (committed); refusals, repeats and attempts applied before are answered here."""
        if batch.gateway_id != self.gateway_id:
            self.refuse(self.topic, RefusalReason.NOT_YOURS,
                        f"command batch for gateway {batch.gateway_id!r} on {self.gateway_id}'s topic: "
                        f"{len(batch.commands)} commands not taken")
            return []
        fresh: list[Command] = []
        answered: list[tuple[Command, list[CommandResult]]] = []
        answers: list[CommandResult] = []
        in_batch: set[DeliveryKey] = set()
        for item in batch.commands:
            try:
                cmd = command_from_wire(item)
            except DecodeError as exc:
                self._refuse_item(item, RefusalReason.MALFORMED_ITEM, f"malformed command: {exc.reason}", answers)
                continue
            refusal = self.limits(cmd)
            if refusal is not None:
                self._refuse_item(item, refusal[0], refusal[1], answers, cmd.attempts)
                continue
            key = (cmd.command_id, cmd.attempts)
            if key in in_batch:
                log.info("command %s attempt %d twice in one batch: taken once", *key)
                continue
            in_batch.add(key)
            seen = self.record.delivery(*key)
            decision = decide(cmd, seen=seen is not None, applied_attempt=self.record.applied_attempt(cmd.command_id),
                              in_force=None)  # the ordering rule is checked right before the device (check)
            if decision.verdict is Verdict.ANSWER_FROM_RECORD and seen is not None:
                answers += self._from_record(seen)
            elif decision.verdict is Verdict.ALREADY_APPLIED:
                done = [result(cmd.command_id, cmd.asset_id, Outcome.COMPLETED, decision.reason,
                               attempt=cmd.attempts)]
                answered.append((cmd, done))
                answers += done
            else:
                fresh.append(cmd)
        self.record.accept(fresh, answered)
        for cmd in fresh:
            self._latest[cmd.command_id] = (cmd.command_id, cmd.attempts)
        self._publish(answers)
        return fresh

    @staticmethod
    def _from_record(seen: Delivery) -> list[CommandResult]:
        if seen.progress is not Progress.FINISHED:
            log.info("command %s attempt %d delivered again while in progress: its results will follow",
                     seen.command_id, seen.attempt)
            return []
        log.info("command %s attempt %d delivered again: answered from the record", seen.command_id, seen.attempt)
        return seen.results

    def resume(self) -> list[tuple[Delivery, Command]]:
        """After a restart: the deliveries left accepted or applying, in arrival order, to be
        finished by the gateway (their results go out through ``send`` as usual)."""
        left = self.record.unfinished()
        for delivery, _ in left:
            self._latest[delivery.command_id] = (delivery.command_id, delivery.attempt)
        return left

    def open(self, cmd: Command) -> bool:
        """Is this delivery still to be worked on? False once it was answered finally (a
        shutdown handed it back while it waited in its queue, say): leave the device alone."""
        return self._latest.get(cmd.command_id) == (cmd.command_id, cmd.attempts)

    def check(self, cmd: Command) -> CommandResult | None:
        """Right before the device: None to go ahead, else the answer (REFUSED out of range,
        SUPERSEDED) instead. The limits again: a delivery resumed from the record was accepted
        by an earlier run."""
        refusal = self.limits(cmd)
        if refusal is not None:
            self.refuse(self.topic, refusal[0], refusal[1], message_id=cmd.command_id, asset_id=cmd.asset_id)
            return result(cmd.command_id, cmd.asset_id, Outcome.REFUSED, refusal[1])
        decision = ordering(cmd, self.record.in_force(cmd.asset_id, cmd.command_type))
        if decision.verdict is Verdict.SUPERSEDED:
            log.warning("%s attempt %d not applied: %s", cmd.command_id, cmd.attempts, decision.reason)
            return result(cmd.command_id, cmd.asset_id, Outcome.SUPERSEDED, decision.reason)
        return None

    def applying(self, cmd: Command) -> None:
        """Committed before the device is touched."""
        self.record.applying(cmd)

    def applied(self, cmd: Command) -> None:
        """Committed once the device confirmed ``cmd``: it is in force now."""
        self.record.applied(cmd)

    def applying_all(self, cmds: list[Command]) -> None:
        """``applying`` for many devices touched at once, in one commit."""
        self.record.applying_all(cmds)

    def applied_all(self, cmds: list[Command]) -> None:
        """``applied`` for many devices that confirmed at once, in one commit."""
        self.record.applied_all(cmds)

    def settled(self, cmd: Command) -> None:
        """``cmd`` ends without a result of ours (no answer: the planner's timeout decides)."""
        self.record.results([(cmd.command_id, cmd.attempts, [], True)])
        self._latest.pop(cmd.command_id, None)

    def send(self, results: list[CommandResult], remember: bool = True) -> None:
        """Record ``results`` with their deliveries (committed), then publish them."""
        if not results:
            return
        # Each result names the attempt it answers: the planner refuses one for another attempt.
        results = [r if r.attempt is not None or (key := self._latest.get(r.command_id)) is None
                   else r.model_copy(update={"attempt": key[1]}) for r in results]
        if remember:
            by_delivery: dict[DeliveryKey, list[CommandResult]] = {}
            for r in results:
                key = self._latest.get(r.command_id)
                if key is not None:
                    by_delivery.setdefault(key, []).append(r)
            self.record.results([(cid, attempt, rs, any(r.outcome in FINAL for r in rs))
                                 for (cid, attempt), rs in by_delivery.items()])
            for key, rs in by_delivery.items():
                if any(r.outcome in FINAL for r in rs) and self._latest.get(key[0]) == key:
                    del self._latest[key[0]]
        self._publish(results)

    def _publish(self, results: list[CommandResult]) -> None:
        # Many results (a slot boundary at a large site) leave in as many messages as the
        # size limit requires, in order.
        for batch in ResultBatch.split(self.gateway_id, results, max_message_bytes()):
            self.publish(results_topic(self.gateway_id), batch.encode(), qos=1)


class ResultBatcher:
    """On a gateway's event loop: results that come out together leave in one message.

    One MQTT client moves only a few thousand messages a second (field notes); a slot
    boundary at a large site finishes hundreds of commands within milliseconds.
    """

    WINDOW = 0.002  # seconds a result waits for others to share its message

    def __init__(self, intake: CommandIntake) -> None:
        self.intake = intake
        self._unsent: list[CommandResult] = []
        self._timer: asyncio.TimerHandle | None = None

    def send(self, results: list[CommandResult]) -> None:
        """Call on the running loop: ``results`` leave within WINDOW seconds."""
        if not results:
            return
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.WINDOW, self.flush)
        self._unsent += results

    def flush(self) -> None:
        """Publish what waits now (the timer does it otherwise; a gateway that stops, explicitly)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        results, self._unsent = self._unsent, []
        self.intake.send(results)
