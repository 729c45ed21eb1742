"""The states of a module's three layers, and the transition tables of seed 004, as data.

Each table reads ``TABLE[current_state][event] -> next_state``; an event missing from the
current state's row is an invalid transition. The tables are exactly the seed's; the
rules it leaves open are written next to the tables that carry them (and in
docs/module-state.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

from .state_events import EventType


class LifecycleState(StrEnum):
    """Values are the seed's display names: ``str(LifecycleState.SHUTTING_DOWN) == "ShuttingDown"``."""

    OFFLINE = "Offline"
    INITIALIZING = "Initializing"
    ACTIVE = "Active"
    RECOVERING = "Recovering"
    SHUTTING_DOWN = "ShuttingDown"


class OperationalState(StrEnum):
    IDLE = "Idle"
    READY = "Ready"
    RUNNING = "Running"
    BACKGROUND_RUNNING = "BackgroundRunning"
    PAUSED = "Paused"
    STOPPED = "Stopped"


class HealthState(StrEnum):
    HEALTHY = "Healthy"
    WARNING = "Warning"
    CRITICAL = "Critical"


State = LifecycleState | OperationalState | HealthState
S = TypeVar("S", LifecycleState, OperationalState, HealthState)

LAYER_STATES: Mapping[str, type[StrEnum]] = {
    "lifecycle": LifecycleState,
    "operational": OperationalState,
    "health": HealthState,
}


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """The three layers at one instant. What ``handle_event`` returns."""

    lifecycle: LifecycleState = LifecycleState.OFFLINE
    operational: OperationalState = OperationalState.IDLE
    health: HealthState = HealthState.HEALTHY

    def as_dict(self) -> dict[str, State]:
        """``{"lifecycle": ..., "operational": ..., "health": ...}``; the values are str enums,
        so they compare equal to (and serialise as) their display names."""
        return {"lifecycle": self.lifecycle, "operational": self.operational, "health": self.health}

    def with_state(self, layer: str, state: State) -> StateSnapshot:
        return replace(self, **{layer: state})  # type: ignore[arg-type]  # the layer names its state's type

    def __str__(self) -> str:
        return f"{self.lifecycle}/{self.operational}/{self.health}"


class InvalidTransitionError(Exception):
    """An event the current state does not accept; no layer has changed.

    The message is the seed's: ``Cannot transition from Idle to Running with event
    TASK_START``, where the target is the state the event leads to in the seed's table.
    When the table allows the step but another rule refuses it, ``reason`` says which and
    is appended after a colon.
    """

    def __init__(
        self,
        from_state: State,
        to_state: State,
        event: EventType,
        *,
        layer: str,
        reason: str | None = None,
    ) -> None:
        self.from_state = from_state
        self.to_state = to_state
        self.event = event
        self.layer = layer
        self.reason = reason
        message = f"Cannot transition from {from_state} to {to_state} with event {event.name}"
        super().__init__(f"{message}: {reason}" if reason else message)


LIFECYCLE_TRANSITIONS: Mapping[LifecycleState, Mapping[EventType, LifecycleState]] = {
    LifecycleState.OFFLINE: {EventType.START: LifecycleState.INITIALIZING},
    LifecycleState.INITIALIZING: {
        EventType.INIT_SUCCESS: LifecycleState.ACTIVE,
        EventType.INIT_FAILURE: LifecycleState.RECOVERING,
    },
    LifecycleState.ACTIVE: {
        EventType.SHUTDOWN: LifecycleState.SHUTTING_DOWN,
        EventType.FAULT_DETECTED: LifecycleState.RECOVERING,
    },
    LifecycleState.RECOVERING: {
        EventType.RECOVERY_SUCCESS: LifecycleState.ACTIVE,
        EventType.RECOVERY_FAILED: LifecycleState.SHUTTING_DOWN,
    },
    LifecycleState.SHUTTING_DOWN: {EventType.FINISHED: LifecycleState.OFFLINE},
}

OPERATIONAL_TRANSITIONS: Mapping[OperationalState, Mapping[EventType, OperationalState]] = {
    OperationalState.IDLE: {EventType.SET_READY: OperationalState.READY},
    OperationalState.READY: {EventType.TASK_START: OperationalState.RUNNING},
    OperationalState.RUNNING: {
        EventType.SET_BACKGROUND: OperationalState.BACKGROUND_RUNNING,
        EventType.TASK_PAUSE: OperationalState.PAUSED,
        EventType.TASK_COMPLETE: OperationalState.READY,
        EventType.TASK_STOP: OperationalState.STOPPED,
    },
    OperationalState.BACKGROUND_RUNNING: {EventType.SET_FOREGROUND: OperationalState.RUNNING},
    OperationalState.PAUSED: {EventType.TASK_RESUME: OperationalState.READY},
    OperationalState.STOPPED: {EventType.TASK_RESET: OperationalState.IDLE},
}

ACTIVE_ONLY_EVENTS = frozenset({EventType.SET_READY, EventType.TASK_START, EventType.TASK_RESUME})
"""Operational events that bring a module (back) to work need lifecycle Active. The others
(stop, pause, complete, reset, background/foreground) wind down or reshape work already
under way, so a module that is recovering or shutting down can still end its tasks."""

HEALTH_TRANSITIONS: Mapping[HealthState, Mapping[EventType, HealthState]] = {
    HealthState.HEALTHY: {
        EventType.WARN: HealthState.WARNING,
        EventType.FAULT: HealthState.CRITICAL,
        EventType.RESET: HealthState.HEALTHY,
    },
    HealthState.WARNING: {
        EventType.CLEAR_WARNING: HealthState.HEALTHY,
        EventType.FAULT: HealthState.CRITICAL,
        EventType.RESET: HealthState.HEALTHY,
    },
    HealthState.CRITICAL: {
        # "Any -> Critical": a further fault report while Critical is accepted (its payload
        # is news), it just does not move the state.
        EventType.FAULT: HealthState.CRITICAL,
        # The default target; payload {"to": "Warning"} picks the seed's other one.
        EventType.RECOVER: HealthState.HEALTHY,
        EventType.RESET: HealthState.HEALTHY,
    },
}

RECOVER_TARGETS = frozenset({HealthState.HEALTHY, HealthState.WARNING})

CROSS_LAYER_TRANSITIONS: Mapping[EventType, Mapping[str, Mapping[State, State]]] = {
    # The seed's order (health, operational, lifecycle) is also the order callbacks run in.
    EventType.EMERGENCY_STOP: {
        "health": {s: HealthState.CRITICAL for s in HealthState},
        # from every state, Idle and Ready included: after an emergency stop nothing starts
        # again until someone sends TASK_RESET
        "operational": {s: OperationalState.STOPPED for s in OperationalState},
        # an Offline module has nothing to shut down, so its lifecycle is left alone
        "lifecycle": {s: LifecycleState.SHUTTING_DOWN for s in LifecycleState if s is not LifecycleState.OFFLINE},
    },
    EventType.INTERRUPT: {
        # interrupting holds running work (TASK_RESUME continues it); with nothing running
        # the event is accepted and changes nothing
        "operational": {
            OperationalState.RUNNING: OperationalState.PAUSED,
            OperationalState.BACKGROUND_RUNNING: OperationalState.PAUSED,
        },
    },
}
"""Cross-layer events never fail: a layer whose current state has no row is left as it is."""

OVERRIDE_EXTRA_KEYS = frozenset({"reason"})
"""Besides the layer names, the only key a PRIORITY_OVERRIDE payload may carry (for the record)."""


def documented_targets(table: Mapping[S, Mapping[EventType, S]]) -> dict[EventType, S]:
    """``event -> the state it leads to`` over a whole table (each event of the seed's
    tables has one target); used to name the target in an InvalidTransitionError."""
    targets: dict[EventType, S] = {}
    for row in table.values():
        for event, target in row.items():
            targets.setdefault(event, target)
    return targets


def parse_state(layer: str, value: object) -> State:
    """The ``layer`` state named by ``value``: a member, its display name ("ShuttingDown")
    or its member name ("SHUTTING_DOWN"). ValueError for anything else."""
    cls = LAYER_STATES[layer]
    if isinstance(value, cls):
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        if value in cls._value2member_map_:
            return cls(value)  # type: ignore[return-value]
        if value in cls.__members__:
            return cls[value]  # type: ignore[return-value]
    raise ValueError(f"{value!r} is not a {layer} state; expected one of {', '.join(m.value for m in cls)}")
