"""What one event does to the three layers: a pure function of the current states.

    >>> from coordinator.state.state_events import StateEvent, EventType
    >>> from coordinator.state.state_types import StateSnapshot
    >>> [f"{s.layer}: {s.old} → {s.new}" for s in resolve(StateSnapshot(), StateEvent(EventType.START))]
    ['lifecycle: Offline → Initializing']

The machine (``unified.py``) only queues, applies the steps and calls back; every rule
lives here and in the tables of ``state_types``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .state_events import LAYERS, EventType, StateEvent
from .state_types import (
    ACTIVE_ONLY_EVENTS,
    CROSS_LAYER_TRANSITIONS,
    HEALTH_TRANSITIONS,
    LIFECYCLE_TRANSITIONS,
    OPERATIONAL_TRANSITIONS,
    OVERRIDE_EXTRA_KEYS,
    RECOVER_TARGETS,
    HealthState,
    InvalidTransitionError,
    LifecycleState,
    State,
    StateSnapshot,
    documented_targets,
    parse_state,
)


class Step(NamedTuple):
    """One layer's move; ``old == new`` for accepted events that leave the state as it is
    (FAULT while Critical, RESET while Healthy, an override to the current state)."""

    layer: str
    old: State
    new: State


TABLES: Mapping[str, Mapping[Any, Mapping[EventType, Any]]] = {
    "lifecycle": LIFECYCLE_TRANSITIONS,
    "operational": OPERATIONAL_TRANSITIONS,
    "health": HEALTH_TRANSITIONS,
}
_TARGETS = {layer: documented_targets(table) for layer, table in TABLES.items()}


def resolve(states: StateSnapshot, event: StateEvent) -> tuple[Step, ...]:
    """The steps ``event`` makes from ``states``, in callback order; ``()`` when it is
    accepted but moves nothing. Raises InvalidTransitionError (refused by the tables or
    rules) or ValueError (a malformed RECOVER or PRIORITY_OVERRIDE payload)."""
    event_type = event.event_type
    if event_type is EventType.PRIORITY_OVERRIDE:
        return _override(states, event.payload)
    if event_type in CROSS_LAYER_TRANSITIONS:
        return _cross_layer(states, CROSS_LAYER_TRANSITIONS[event_type])
    layer = event_type.layer
    if layer is None:  # STATUS_UPDATE
        return ()
    current: State = getattr(states, layer)
    target = TABLES[layer].get(current, {}).get(event_type)
    if event_type is EventType.RECOVER:
        wanted = _recover_target(event.payload)
        if target is not None:
            target = wanted
        else:
            raise InvalidTransitionError(current, wanted, event_type, layer=layer)
    if target is None:
        raise InvalidTransitionError(current, _TARGETS[layer][event_type], event_type, layer=layer)
    if event_type in ACTIVE_ONLY_EVENTS and states.lifecycle is not LifecycleState.ACTIVE:
        raise InvalidTransitionError(
            current, target, event_type, layer=layer, reason=f"lifecycle is {states.lifecycle}, not Active"
        )
    return (Step(layer, current, target),)


def _recover_target(payload: Mapping[str, Any] | None) -> HealthState:
    if not payload or "to" not in payload:
        return HealthState.HEALTHY
    target = parse_state("health", payload["to"])
    if target not in RECOVER_TARGETS:
        raise ValueError(f"RECOVER leads to Healthy or Warning, not {target}")
    return target  # type: ignore[return-value]


def _cross_layer(states: StateSnapshot, effects: Mapping[str, Mapping[State, State]]) -> tuple[Step, ...]:
    steps = []
    for layer, table in effects.items():
        current = getattr(states, layer)
        if current in table:
            steps.append(Step(layer, current, table[current]))
    return tuple(steps)


def _override(states: StateSnapshot, payload: Mapping[str, Any] | None) -> tuple[Step, ...]:
    # All of the payload is checked before anything moves: an override applies whole or not at all.
    if not payload:
        raise ValueError('PRIORITY_OVERRIDE needs a payload naming target states, e.g. {"operational": "Idle"}')
    unknown = set(payload) - set(LAYERS) - OVERRIDE_EXTRA_KEYS
    if unknown:
        raise ValueError(
            f"PRIORITY_OVERRIDE payload has unknown keys {sorted(unknown)}; "
            f"allowed: {', '.join(LAYERS)} and {', '.join(sorted(OVERRIDE_EXTRA_KEYS))}"
        )
    # same layer order as EMERGENCY_STOP: health, operational, lifecycle
    targets = [(layer, parse_state(layer, payload[layer])) for layer in reversed(LAYERS) if layer in payload]
    if not targets:
        raise ValueError("PRIORITY_OVERRIDE payload names no layer (lifecycle, operational, health)")
    return tuple(Step(layer, getattr(states, layer), target) for layer, target in targets)
