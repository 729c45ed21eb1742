"""A schedule's commands that are not due yet, kept compact: one ledger row per slot.

A 5,000-asset day is 480,000 commands. Written as 480,000 rows of the commands table it costs
seconds of SQLite and fsync, and read back as 480,000 Command objects hundreds of megabytes;
yet only the commands due within minutes are of any use to the dispatcher. So a schedule is
recorded as its columns (per slot: command ids, asset indices, command types, powers) and a
slot's commands become rows and Command objects only when it falls within the planner's
look-ahead (``materialise``). Until then a command is as durable, and as visible to
``qubit status``, as any other: its id, its values and its fate are in the ledger.

What happens to a command before it is materialised is recorded as a **cancellation rule**:
a newer schedule taking an asset over from a slot on (superseded), an early departure
(every pending command of the asset made before the vehicle left). A rule cancels each
command of its asset created before ``created_before`` and scheduled at or after
``scheduled_from``; the command is written CANCELLED, with its transition, when its slot is
materialised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from coordinator.base import Command, CommandStatus, CommandType
from coordinator.lazy_imports import LazyModule

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a schedule is first planned, not when the process starts
    np = LazyModule("numpy", globals(), "np")

SETPOINT_TYPES = (CommandType.SET_CHARGE_RATE, CommandType.SET_DISCHARGE_RATE)
"""Command types by code, as coordinator.schedule plans them."""
ID_BYTES = 6
"""A command id is ``cmd_`` and the hex of 6 random bytes (coordinator.ids)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What every command of one schedule shares."""

    schedule_id: str
    asset_ids: tuple[str, ...]
    """The schedule's assets; a slot's entries index into this."""
    created_at: int
    """Microseconds since the epoch, as every time in the ledger."""
    priority: int
    max_retries: int
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class PlannedSlot:
    """One slot's commands of one schedule, columnar."""

    schedule_id: str
    scheduled_at: int
    command_ids: bytes
    """ID_BYTES per command, raw."""
    assets: np.ndarray
    """int32 indices into Plan.asset_ids"""
    types: np.ndarray
    """int8 codes into SETPOINT_TYPES"""
    powers: np.ndarray
    """float64 kW"""

    def __len__(self) -> int:
        return len(self.assets)

    def row(self) -> tuple[str, int, bytes, bytes, bytes, bytes]:
        return (self.schedule_id, self.scheduled_at, self.command_ids, self.assets.astype("<i4").tobytes(),
                self.types.astype("i1").tobytes(), self.powers.astype("<f8").tobytes())

    @classmethod
    def from_row(cls, row: tuple[str, int, bytes, bytes, bytes, bytes]) -> PlannedSlot:
        schedule_id, scheduled_at, ids, assets, types, powers = row
        return cls(schedule_id, scheduled_at, bytes(ids), np.frombuffer(assets, dtype="<i4"),
                   np.frombuffer(types, dtype="i1"), np.frombuffer(powers, dtype="<f8"))

    def only(self, entries: list[int]) -> PlannedSlot:
        """This slot with ``entries`` only."""
        ids = b"".join(self.command_ids[i * ID_BYTES:(i + 1) * ID_BYTES] for i in entries)
        return PlannedSlot(self.schedule_id, self.scheduled_at, ids, self.assets[entries], self.types[entries],
                           self.powers[entries])

    def command_id(self, i: int) -> str:
        return "cmd_" + self.command_ids[i * ID_BYTES:(i + 1) * ID_BYTES].hex()

    def find(self, command_id: str) -> int | None:
        """The entry of ``command_id`` in this slot, or None."""
        if not command_id.startswith("cmd_") or len(command_id) != 4 + 2 * ID_BYTES:
            return None
        try:
            raw = bytes.fromhex(command_id[4:])
        except ValueError:
            return None
        at = self.command_ids.find(raw)
        while at >= 0:
            if at % ID_BYTES == 0:
                return at // ID_BYTES
            at = self.command_ids.find(raw, at + 1)
        return None


@dataclass(frozen=True, slots=True)
class Cancellation:
    """A rule: the asset's commands created before ``created_before`` and scheduled at or after
    ``scheduled_from`` are CANCELLED at ``at`` with ``reason`` (if still pending then)."""

    asset_id: str
    created_before: int
    scheduled_from: int
    at: int
    reason: str
    announce: bool
    """Announced one COMMAND_CANCELLED each when the rule was made (an early departure); a
    schedule's supersessions are announced by its SCHEDULE_PLANNED instead. Either way the
    commands are written CANCELLED, with their transition at ``at``, when materialised."""

    def row(self) -> tuple[str, int, int, int, str, int]:
        return (self.asset_id, self.created_before, self.scheduled_from, self.at, self.reason, int(self.announce))


def slots_of(plan: Plan, slot_of: np.ndarray, asset_index: np.ndarray, types: np.ndarray, powers: np.ndarray,
             slot_times: Sequence[int], command_ids: bytes) -> list[PlannedSlot]:
    """Columns of a whole schedule (one entry per command, sorted by slot) -> one PlannedSlot per slot."""
    if not len(slot_of):
        return []
    starts = np.flatnonzero(np.r_[True, slot_of[1:] != slot_of[:-1]])
    ends = np.r_[starts[1:], len(slot_of)]
    return [
        PlannedSlot(plan.schedule_id, int(slot_times[int(slot_of[a])]), command_ids[a * ID_BYTES:b * ID_BYTES],
                    asset_index[a:b].astype(np.int32), types[a:b].astype(np.int8), powers[a:b].astype(np.float64))
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
    ]


def cancelled_from(plan: Plan, rules: Iterable[Cancellation]) -> dict[str, Cancellation]:
    """Per asset of ``plan``, the rule that cancels its commands from the earliest slot on."""
    assets = set(plan.asset_ids)
    found: dict[str, Cancellation] = {}
    for rule in rules:
        if rule.asset_id in assets and rule.created_before > plan.created_at:
            known = found.get(rule.asset_id)
            if known is None or (rule.scheduled_from, rule.at) < (known.scheduled_from, known.at):
                found[rule.asset_id] = rule
    return found


def cancel_mask(plan: Plan, slot: PlannedSlot, rules: dict[str, Cancellation]) -> list[Cancellation | None]:
    """For each entry of ``slot``: the rule that cancels it, or None (it is pending)."""
    names = plan.asset_ids
    out: list[Cancellation | None] = []
    for i in slot.assets.tolist():
        rule = rules.get(names[i])
        out.append(rule if rule is not None and rule.scheduled_from <= slot.scheduled_at else None)
    return out


def commands_of(plan: Plan, slot: PlannedSlot, rules: dict[str, Cancellation],
                dt: Callable[[int], datetime]) -> tuple[list[Command], list[tuple[Command, Cancellation]]]:
    """The slot's commands as Command objects: (pending ones, cancelled ones with their rule).
    ``dt`` turns ledger microseconds into an aware datetime."""
    scheduled = dt(slot.scheduled_at)
    created = dt(plan.created_at)
    names, types, pending_status = plan.asset_ids, SETPOINT_TYPES, CommandStatus.PENDING
    ids = slot.command_ids.hex()
    live: list[Command] = []
    cancelled: list[tuple[Command, Cancellation]] = []
    masks = cancel_mask(plan, slot, rules) if rules else [None] * len(slot)
    for i, (asset, ctype, power, rule) in enumerate(
            zip(slot.assets.tolist(), slot.types.tolist(), slot.powers.tolist(), masks, strict=True)):
        cmd = Command(names[asset], types[ctype], {"power_kw": power}, scheduled, "cmd_" + ids[12 * i:12 * i + 12],
                      pending_status, 0, plan.max_retries, plan.timeout_seconds, plan.priority, plan.schedule_id,
                      created)
        if rule is None:
            live.append(cmd)
        else:
            cmd.status = CommandStatus.CANCELLED
            cmd.error = rule.reason
            cmd.finished_at = dt(rule.at)
            cancelled.append((cmd, rule))
    return live, cancelled
