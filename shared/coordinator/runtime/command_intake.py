"""What every gateway does with a command batch before a device sees anything.

Malformed commands are refused (when they carry ids to answer to), and a delivery seen
before is answered again from memory, never applied twice: QoS 1 delivers at least once.
A delivery is a command_id with its attempt number: a retry from the planner is new work.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime

from coordinator.base import Command
from coordinator.contract.codec import DecodeError, command_from_wire
from coordinator.contract.messages import (
    CommandBatch,
    CommandResult,
    Outcome,
    ResultBatch,
)
from coordinator.contract.topics import results_topic
from coordinator.runtime.service import Publish, max_message_bytes
from coordinator.timeutil import utcnow

log = logging.getLogger(__name__)

REMEMBERED_DELIVERIES = 100_000

Delivery = tuple[str, int]  # (command_id, attempts)


def result(
    cmd_id: str, asset_id: str, outcome: Outcome, error: str | None = None, at: datetime | None = None
) -> CommandResult:
    return CommandResult(command_id=cmd_id, asset_id=asset_id, outcome=outcome, at=at or utcnow(), error=error)


class CommandIntake:
    def __init__(self, gateway_id: str, publish: Publish) -> None:
        self.gateway_id = gateway_id
        self.publish = publish
        self._answers: OrderedDict[Delivery, list[CommandResult]] = OrderedDict()
        self._latest: dict[str, Delivery] = {}  # command_id -> the delivery being worked on

    def accept(self, batch: CommandBatch) -> list[Command]:
        """The batch's new, well-formed deliveries; refusals and repeats are answered here."""
        fresh: list[Command] = []
        answers: list[CommandResult] = []
        for item in batch.commands:
            try:
                cmd = command_from_wire(item)
            except DecodeError as exc:
                cid, aid = (item.get("command_id"), item.get("asset_id")) if isinstance(item, dict) else (None, None)
                if isinstance(cid, str) and isinstance(aid, str):
                    answers.append(result(cid, aid, Outcome.REFUSED, f"malformed command: {exc.reason}"))
                else:
                    log.error("unanswerable malformed command in batch: %s", exc.reason)
                continue
            delivery = (cmd.command_id, cmd.attempts)
            earlier = self._answers.get(delivery)
            if earlier is None:
                self._remember(delivery)
            if earlier is None:
                fresh.append(cmd)
            else:
                log.info("command %s attempt %d delivered again: answering from memory", *delivery)
                answers += earlier
        self.send(answers, remember=False)
        return fresh

    def _remember(self, delivery: Delivery) -> None:
        self._answers[delivery] = []
        self._latest[delivery[0]] = delivery
        while len(self._answers) > REMEMBERED_DELIVERIES:
            old, _ = self._answers.popitem(last=False)
            if self._latest.get(old[0]) == old:
                del self._latest[old[0]]

    def send(self, results: list[CommandResult], remember: bool = True) -> None:
        if not results:
            return
        if remember:
            for r in results:
                delivery = self._latest.get(r.command_id)
                if delivery is not None:
                    self._answers[delivery].append(r)
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
