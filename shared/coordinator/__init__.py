"""qubit-energy-coordinator: the Layer 4 coordination engine of the Qubit energy stack.

Layer 3 schedules become timed commands (``DispatchEngine``), guarded per asset by state
machines (``StateMachine`` and its presets), translated for devices by protocol adapters
(``OCPPAdapter``, ``ModbusAdapter``) and reported on an ``EventBus``.

The names below are imported on first use (PEP 562): ``import coordinator.runtime.mqtt`` in
a process that never plans or speaks OCPP must not pay for pandas and the ocpp package
(about 0.7 s and 60 MB together), which ``DispatchEngine`` and the adapters bring in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy_imports import lazy_exports

if TYPE_CHECKING:  # what the lazy names are, for type checkers and readers
    from .adapters import (
        AdapterRegistry,
        ModbusAdapter,
        OCPPAdapter,
        ProtocolAdapter,
        RegisterMap,
        RegisterSpec,
        TranslationError,
    )
    from .asset_machines import (
        BatteryState,
        BatteryTrigger,
        ChargerState,
        ChargerTrigger,
        create_battery_state_machine,
        create_ev_charger_state_machine,
    )
    from .base import Command, CommandStatus, CommandType
    from .config import CoordinatorConfig
    from .dispatch import DispatchEngine
    from .events import Event, EventBus, EventType, Subscription
    from .schedule import ScheduleError
    from .state import UnifiedStateMachine
    from .statemachine import InvalidTransition, StateMachine
    from .timeutil import NaiveDatetimeError

_HOMES = {
    ".adapters": ("AdapterRegistry", "ModbusAdapter", "OCPPAdapter", "ProtocolAdapter", "RegisterMap",
                  "RegisterSpec", "TranslationError"),
    ".asset_machines": ("BatteryState", "BatteryTrigger", "ChargerState", "ChargerTrigger",
                        "create_battery_state_machine", "create_ev_charger_state_machine"),
    ".base": ("Command", "CommandStatus", "CommandType"),
    ".config": ("CoordinatorConfig",),
    ".dispatch": ("DispatchEngine",),
    ".events": ("Event", "EventBus", "EventType", "Subscription"),
    ".schedule": ("ScheduleError",),
    ".state": ("UnifiedStateMachine",),
    ".statemachine": ("InvalidTransition", "StateMachine"),
    ".timeutil": ("NaiveDatetimeError",),
}

__all__ = [
    "AdapterRegistry",
    "BatteryState",
    "BatteryTrigger",
    "ChargerState",
    "ChargerTrigger",
    "Command",
    "CommandStatus",
    "CommandType",
    "CoordinatorConfig",
    "DispatchEngine",
    "Event",
    "EventBus",
    "EventType",
    "InvalidTransition",
    "ModbusAdapter",
    "NaiveDatetimeError",
    "OCPPAdapter",
    "ProtocolAdapter",
    "RegisterMap",
    "RegisterSpec",
    "ScheduleError",
    "StateMachine",
    "Subscription",
    "TranslationError",
    "UnifiedStateMachine",
    "create_battery_state_machine",
    "create_ev_charger_state_machine",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _HOMES)
