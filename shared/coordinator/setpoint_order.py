"""The order of setpoints, and what a gateway does with a delivery given what it applied. Pure.

A setpoint belongs to a channel of its asset (power, limit, soc); within a channel a command
is newer than another when its ``order_key`` (created_at, scheduled_at) is greater. All
commands of one schedule share a created_at and the planner makes created_at increase from
schedule to schedule, so the key orders both across schedules and across the slots of one.
A gateway applies a setpoint only when nothing newer of its asset and channel was applied
before it; an equal key is the same instruction (a retry, a re-send), not a newer one.

Commands without a channel (START_CHARGING, STOP_CHARGING, ...) are not ordered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from coordinator.base import Command, CommandType

CHANNEL: dict[CommandType, str] = {
    CommandType.SET_CHARGE_RATE: "power",
    CommandType.SET_DISCHARGE_RATE: "power",
    CommandType.SET_POWER_LIMIT: "limit",
    CommandType.SET_SOC_TARGET: "soc",
}
"""Command type -> the channel of its asset it sets; a charge and a discharge rate are one channel."""

OrderKey = tuple[datetime, datetime]


def channel_of(command_type: CommandType) -> str | None:
    """The channel a command of ``command_type`` sets, None when it is not a setpoint."""
    return CHANNEL.get(command_type)


def order_key(cmd: Command) -> OrderKey:
    """Greater is newer, within one asset and channel."""
    return (cmd.created_at, cmd.scheduled_at)


@dataclass(frozen=True, slots=True)
class Applied:
    """The setpoint last applied on one asset's channel, as the gateway's record keeps it."""

    asset_id: str
    channel: str
    command_id: str
    attempt: int
    command_type: CommandType
    created_at: datetime
    scheduled_at: datetime
    parameters: dict[str, Any]

    @property
    def key(self) -> OrderKey:
        return (self.created_at, self.scheduled_at)

    @classmethod
    def of(cls, cmd: Command, channel: str) -> Applied:
        return cls(cmd.asset_id, channel, cmd.command_id, cmd.attempts, cmd.command_type,
                   cmd.created_at, cmd.scheduled_at, dict(cmd.parameters))


class Verdict(StrEnum):
    APPLY = "apply"
    """New work: touch the device."""
    ANSWER_FROM_RECORD = "answer_from_record"
    """This very delivery (command id and attempt) was seen before: answer what was answered."""
    ALREADY_APPLIED = "already_applied"
    """An earlier attempt of this command was applied: COMPLETED, the device is not touched."""
    SUPERSEDED = "superseded"
    """A newer setpoint of the same asset and channel is in force: not applied."""


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str | None = None
    """For the result: which attempt applied it, which command superseded it."""


APPLY = Decision(Verdict.APPLY)


def decide(cmd: Command, *, seen: bool, applied_attempt: int | None, in_force: Applied | None) -> Decision:
    """What to do with ``cmd`` (one delivery: command id and attempt).

    ``seen``: this delivery is in the record already; ``applied_attempt``: the attempt of this
    command that was applied, if any; ``in_force``: what was last applied on ``cmd``'s asset and
    channel (None for a command without a channel, or nothing applied yet).
    """
    if seen:
        return Decision(Verdict.ANSWER_FROM_RECORD)
    if applied_attempt is not None:
        return Decision(Verdict.ALREADY_APPLIED, f"already applied by attempt {applied_attempt}")
    return ordering(cmd, in_force)


def ordering(cmd: Command, in_force: Applied | None) -> Decision:
    """APPLY unless a newer setpoint of ``cmd``'s asset and channel is in force."""
    if in_force is None or channel_of(cmd.command_type) is None:
        return APPLY
    if in_force.asset_id != cmd.asset_id or in_force.channel != channel_of(cmd.command_type):
        raise ValueError(f"{in_force.command_id} is not of {cmd.command_id}'s asset and channel")
    if in_force.key > order_key(cmd):
        return Decision(Verdict.SUPERSEDED, f"superseded by {in_force.command_id} (attempt {in_force.attempt}), "
                                            f"a newer setpoint of the {in_force.channel} channel in force")
    return APPLY
