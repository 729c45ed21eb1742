"""Per-module state machine of seed 004: lifecycle, operational and health layers driven by
events through one queue.

    >>> from coordinator.state import UnifiedStateMachine
    >>> from coordinator.state.state_events import EventType
    >>> state_machine = UnifiedStateMachine(module_name="my_module")
    >>> _ = state_machine.handle_event(EventType.START)
    >>> state_machine.get_lifecycle_state()
    <LifecycleState.INITIALIZING: 'Initializing'>

Tables and the rules the seed leaves open: docs/module-state.md. ``EventType`` here is the
state machine's, not the event bus's ``coordinator.EventType``.
"""

from .state_events import EventPriority, EventType, FrozenPayload, StateEvent
from .state_types import (
    HealthState,
    InvalidTransitionError,
    LifecycleState,
    OperationalState,
    StateSnapshot,
)
from .transitions import Step, resolve
from .unified import HandledEvent, UnifiedStateMachine

__all__ = [
    "EventPriority",
    "EventType",
    "FrozenPayload",
    "HandledEvent",
    "HealthState",
    "InvalidTransitionError",
    "LifecycleState",
    "OperationalState",
    "StateEvent",
    "StateSnapshot",
    "Step",
    "UnifiedStateMachine",
    "resolve",
]
