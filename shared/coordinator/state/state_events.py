"""The events that drive a module's state machine (seed 004, "Event System").

    >>> event = StateEvent(
    ...     event_type=EventType.TASK_START,
    ...     origin_layer="operational",
    ...     payload={"task_id": "task_123", "priority": "high"},
    ... )
    >>> event.payload["task_id"], event.priority.name, event.event_id[:4]
    ('task_123', 'NORMAL', 'evt_')

Not to be confused with ``coordinator.events.EventType``, the event bus's types: these are
the inputs of ``UnifiedStateMachine``, which is why neither name is exported at the top of
the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, IntEnum
from typing import Any, NoReturn

from ..ids import EVENT_PREFIX, new_id
from ..timeutil import require_aware, utcnow

LAYERS: tuple[str, ...] = ("lifecycle", "operational", "health")
"""The three layers, in the order the seed lists them; also the valid ``origin_layer`` values."""


class EventType(Enum):
    """Every event of seed 004. Values are the lower-case names (``"task_start"``), but
    ``handle_event`` only takes the members: a string is refused, as the seed asks."""

    # lifecycle
    START = "start"
    INIT_SUCCESS = "init_success"
    INIT_FAILURE = "init_failure"
    SHUTDOWN = "shutdown"
    FINISHED = "finished"
    FAULT_DETECTED = "fault_detected"
    RECOVERY_SUCCESS = "recovery_success"
    RECOVERY_FAILED = "recovery_failed"
    # operational
    SET_READY = "set_ready"
    TASK_START = "task_start"
    SET_BACKGROUND = "set_background"
    SET_FOREGROUND = "set_foreground"
    TASK_PAUSE = "task_pause"
    TASK_RESUME = "task_resume"
    TASK_COMPLETE = "task_complete"
    TASK_STOP = "task_stop"
    TASK_RESET = "task_reset"
    # health
    WARN = "warn"
    CLEAR_WARNING = "clear_warning"
    FAULT = "fault"
    RECOVER = "recover"
    RESET = "reset"
    # cross-layer
    INTERRUPT = "interrupt"
    EMERGENCY_STOP = "emergency_stop"
    PRIORITY_OVERRIDE = "priority_override"
    # The seed's low-priority class ("status updates, monitoring events") names no event;
    # this one carries such notes through the queue without changing any state.
    STATUS_UPDATE = "status_update"

    @property
    def layer(self) -> str | None:
        """The layer whose table holds this event; None for cross-layer and status events."""
        return EVENT_LAYER.get(self)

    @property
    def priority(self) -> EventPriority:
        return EVENT_PRIORITY.get(self, EventPriority.NORMAL)


class EventPriority(IntEnum):
    """Higher is more urgent, like command priorities elsewhere in the project."""

    LOW = 0
    NORMAL = 1
    HIGH = 2


LIFECYCLE_EVENTS = frozenset(
    {
        EventType.START,
        EventType.INIT_SUCCESS,
        EventType.INIT_FAILURE,
        EventType.SHUTDOWN,
        EventType.FINISHED,
        EventType.FAULT_DETECTED,
        EventType.RECOVERY_SUCCESS,
        EventType.RECOVERY_FAILED,
    }
)
OPERATIONAL_EVENTS = frozenset(
    {
        EventType.SET_READY,
        EventType.TASK_START,
        EventType.SET_BACKGROUND,
        EventType.SET_FOREGROUND,
        EventType.TASK_PAUSE,
        EventType.TASK_RESUME,
        EventType.TASK_COMPLETE,
        EventType.TASK_STOP,
        EventType.TASK_RESET,
    }
)
HEALTH_EVENTS = frozenset(
    {EventType.WARN, EventType.CLEAR_WARNING, EventType.FAULT, EventType.RECOVER, EventType.RESET}
)
CROSS_LAYER_EVENTS = frozenset({EventType.INTERRUPT, EventType.EMERGENCY_STOP, EventType.PRIORITY_OVERRIDE})

EVENT_LAYER: Mapping[EventType, str] = {
    **{e: "lifecycle" for e in LIFECYCLE_EVENTS},
    **{e: "operational" for e in OPERATIONAL_EVENTS},
    **{e: "health" for e in HEALTH_EVENTS},
}

EVENT_PRIORITY: Mapping[EventType, EventPriority] = {
    EventType.EMERGENCY_STOP: EventPriority.HIGH,
    EventType.FAULT: EventPriority.HIGH,
    EventType.INTERRUPT: EventPriority.HIGH,
    EventType.STATUS_UPDATE: EventPriority.LOW,
}
"""Events not listed here are NORMAL (the seed: lifecycle, operational, health events)."""


class FrozenPayload(dict[str, Any]):
    """A dict that refuses changes: an event is immutable, so is what it carries.

    A dict subclass rather than a MappingProxyType so that it prints, compares and
    serialises (json, msgpack) like the dict it was made from.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a StateEvent payload is read-only; build a new event instead")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle/copy would otherwise refill the new object through __setitem__
        return (type(self), (dict(self),))


def freeze_payload(payload: Mapping[str, Any]) -> FrozenPayload:
    """A read-only copy of ``payload``; nested mappings are frozen too (other values, such
    as lists, are kept as given)."""
    return FrozenPayload({key: _freeze(value) for key, value in payload.items()})


def _freeze(value: Any) -> Any:
    return freeze_payload(value) if isinstance(value, Mapping) else value


@dataclass(frozen=True, slots=True)
class StateEvent:
    """One immutable event (seed 004, "Event Structure").

    ``timestamp`` defaults to now (timezone-aware UTC; a naive datetime is refused),
    ``event_id`` to a fresh ``evt_`` id, ``payload`` is stored as a read-only copy.
    ``origin_layer`` is None or one of "lifecycle", "operational", "health".
    """

    event_type: EventType
    timestamp: datetime = field(default_factory=utcnow)
    origin_layer: str | None = None
    payload: Mapping[str, Any] | None = None
    event_id: str = field(default_factory=lambda: new_id(EVENT_PREFIX))

    def __post_init__(self) -> None:
        if not isinstance(self.event_type, EventType):
            raise TypeError(
                f"event_type must be an EventType member, got {type(self.event_type).__name__} {self.event_type!r}"
            )
        require_aware(self.timestamp, "timestamp")
        if self.origin_layer is not None and self.origin_layer not in LAYERS:
            raise ValueError(f"origin_layer must be None or one of {', '.join(LAYERS)}; got {self.origin_layer!r}")
        if self.payload is not None:
            if not isinstance(self.payload, Mapping):
                raise TypeError(f"payload must be a mapping, got {type(self.payload).__name__}")
            object.__setattr__(self, "payload", freeze_payload(self.payload))
        if not isinstance(self.event_id, str) or not self.event_id:
            raise ValueError("event_id must be a non-empty string")

    @property
    def priority(self) -> EventPriority:
        return self.event_type.priority

    @property
    def layer(self) -> str | None:
        return self.event_type.layer
