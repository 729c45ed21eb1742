"""Commands: what Layer 4 asks an asset to do, and where that request is in its life.

``Command`` is a plain dataclass so that a schedule can yield tens of thousands of them
cheaply; the same class is validated by pydantic (``COMMAND_ADAPTER``) wherever a
command crosses the wire (see ``coordinator.contract.codec``).

    >>> from datetime import datetime, timezone
    >>> cmd = Command(
    ...     asset_id="ast_charger_001",
    ...     command_type=CommandType.SET_CHARGE_RATE,
    ...     parameters={"power_kw": 22.0},
    ...     scheduled_at=datetime(2025, 1, 15, 8, 0, tzinfo=timezone.utc),
    ... )
    >>> cmd.status, cmd.max_retries, cmd.timeout_seconds
    (<CommandStatus.PENDING: 'PENDING'>, 3, 30.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field, TypeAdapter

from .ids import COMMAND_PREFIX, new_id
from .timeutil import require_aware, utcnow


class CommandType(StrEnum):
    SET_CHARGE_RATE = "SET_CHARGE_RATE"
    SET_DISCHARGE_RATE = "SET_DISCHARGE_RATE"
    SET_POWER_LIMIT = "SET_POWER_LIMIT"
    START_CHARGING = "START_CHARGING"
    STOP_CHARGING = "STOP_CHARGING"
    CHANGE_AVAILABILITY = "CHANGE_AVAILABILITY"
    SET_SOC_TARGET = "SET_SOC_TARGET"
    RESET = "RESET"
    """Clear a fault: the device restarts its controller (OCPP Reset, a battery's reset register)."""


class CommandStatus(StrEnum):
    PENDING = "PENDING"
    """Waiting for its scheduled time (or for a retry, or for its asset to recover)."""
    DISPATCHED = "DISPATCHED"
    """Sent to the asset's adapter; no answer yet."""
    ACKNOWLEDGED = "ACKNOWLEDGED"
    """The device accepted it; completion not yet confirmed."""
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"
    """Withdrawn before it ran: superseded, early departure, or cancelled by an operator."""

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_in_flight(self) -> bool:
        return self in (CommandStatus.DISPATCHED, CommandStatus.ACKNOWLEDGED)


_TERMINAL = frozenset(
    {CommandStatus.COMPLETED, CommandStatus.FAILED, CommandStatus.TIMED_OUT, CommandStatus.CANCELLED}
)

ParameterValue = float | int | str | bool | None


@dataclass(slots=True, eq=False)
class Command:
    """One request to one asset, with its lifecycle bookkeeping.

    ``attempts`` counts dispatches; a command is tried at most ``1 + max_retries`` times.
    ``priority``: higher is more urgent. Equality is identity: two commands with the same
    fields are still two commands.
    """

    asset_id: Annotated[str, Field(min_length=1, max_length=128)]
    command_type: CommandType
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    scheduled_at: AwareDatetime = field(default_factory=utcnow)
    command_id: Annotated[str, Field(pattern=r"^cmd_[0-9a-zA-Z_-]{1,64}$")] = field(
        default_factory=lambda: new_id(COMMAND_PREFIX)
    )
    status: CommandStatus = CommandStatus.PENDING
    attempts: Annotated[int, Field(ge=0)] = 0
    max_retries: Annotated[int, Field(ge=0, le=100)] = 3
    timeout_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30.0
    priority: int = 1
    schedule_id: str | None = None
    created_at: AwareDatetime = field(default_factory=utcnow)
    dispatched_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    next_attempt_at: AwareDatetime | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        # Runs for every command of every schedule: the common case costs two attribute reads.
        if self.scheduled_at.__class__ is not datetime or self.scheduled_at.tzinfo is None:
            require_aware(self.scheduled_at, "scheduled_at")
        if self.command_type.__class__ is not CommandType:
            self.command_type = CommandType(self.command_type)

    @property
    def due_at(self) -> datetime:
        """When the command may next be dispatched: its slot, or its retry time."""
        return self.next_attempt_at or self.scheduled_at


COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
"""Validates untrusted data (a decoded wire message) into a Command."""
