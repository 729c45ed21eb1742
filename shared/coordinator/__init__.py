"""qubit-energy-coordinator: the Layer 4 coordination engine of the Qubit energy stack.

Layer 3 schedules become timed commands (``DispatchEngine``), guarded per asset by state
machines (``StateMachine`` and its presets), translated for devices by protocol adapters
(``OCPPAdapter``, ``ModbusAdapter``) and reported on an ``EventBus``.
"""

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
