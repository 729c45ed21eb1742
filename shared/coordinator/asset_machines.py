"""State machine presets for the two asset kinds Layer 4 controls.

The charger machine follows OCPP 1.6 ChargePointStatus (SuspendedEV and SuspendedEVSE
both map to SUSPENDED). Transition tables are in docs/state-machines.md.

    >>> charger = create_ev_charger_state_machine("ast_charger_001")
    >>> [charger.trigger(t) for t in ("plug_in", "start_charge", "complete", "unplug")]
    ['PREPARING', 'CHARGING', 'FINISHING', 'AVAILABLE']
"""

from __future__ import annotations

from enum import StrEnum

from .events import EventBus
from .statemachine import StateMachine, TransitionTable


class ChargerState(StrEnum):
    AVAILABLE = "AVAILABLE"
    PREPARING = "PREPARING"
    CHARGING = "CHARGING"
    SUSPENDED = "SUSPENDED"
    FINISHING = "FINISHING"
    FAULTED = "FAULTED"
    UNAVAILABLE = "UNAVAILABLE"


class ChargerTrigger(StrEnum):
    PLUG_IN = "plug_in"
    START_CHARGE = "start_charge"
    SUSPEND = "suspend"
    RESUME = "resume"
    COMPLETE = "complete"
    UNPLUG = "unplug"
    FAULT = "fault"
    RESET = "reset"
    DISABLE = "disable"
    ENABLE = "enable"


class BatteryState(StrEnum):
    IDLE = "IDLE"
    CHARGING = "CHARGING"
    DISCHARGING = "DISCHARGING"
    STANDBY = "STANDBY"
    FAULTED = "FAULTED"


class BatteryTrigger(StrEnum):
    CHARGE = "charge"
    DISCHARGE = "discharge"
    STOP = "stop"
    STANDBY = "standby"
    ACTIVATE = "activate"
    FAULT = "fault"
    RESET = "reset"


C, CT = ChargerState, ChargerTrigger
CHARGER_TRANSITIONS: dict[str, dict[str, str]] = {
    C.AVAILABLE: {CT.PLUG_IN: C.PREPARING, CT.DISABLE: C.UNAVAILABLE},
    C.PREPARING: {CT.START_CHARGE: C.CHARGING, CT.UNPLUG: C.AVAILABLE},
    C.CHARGING: {CT.SUSPEND: C.SUSPENDED, CT.COMPLETE: C.FINISHING, CT.UNPLUG: C.AVAILABLE},
    C.SUSPENDED: {CT.RESUME: C.CHARGING, CT.COMPLETE: C.FINISHING, CT.UNPLUG: C.AVAILABLE},
    C.FINISHING: {CT.UNPLUG: C.AVAILABLE},
    C.FAULTED: {CT.RESET: C.AVAILABLE},
    C.UNAVAILABLE: {CT.ENABLE: C.AVAILABLE},
}
# A fault can strike in any other state.
for _state in C:
    if _state is not C.FAULTED:
        CHARGER_TRANSITIONS[_state][CT.FAULT] = C.FAULTED

B, BT = BatteryState, BatteryTrigger
BATTERY_TRANSITIONS: dict[str, dict[str, str]] = {
    B.IDLE: {BT.CHARGE: B.CHARGING, BT.DISCHARGE: B.DISCHARGING, BT.STANDBY: B.STANDBY},
    B.CHARGING: {BT.DISCHARGE: B.DISCHARGING, BT.STOP: B.IDLE},
    B.DISCHARGING: {BT.CHARGE: B.CHARGING, BT.STOP: B.IDLE},
    B.STANDBY: {BT.ACTIVATE: B.IDLE},
    B.FAULTED: {BT.RESET: B.IDLE},
}
for _battery_state in B:
    if _battery_state is not B.FAULTED:
        BATTERY_TRANSITIONS[_battery_state][BT.FAULT] = B.FAULTED

# Early departure: the vehicle leaves before the session finished.
EARLY_DEPARTURE_STATES = frozenset({C.PREPARING, C.CHARGING, C.SUSPENDED})
# Assets in these states get no commands; theirs are held until the asset recovers.
HOLDING_STATES = frozenset({C.FAULTED, C.UNAVAILABLE, B.FAULTED})


def is_early_departure(from_state: str, trigger: str) -> bool:
    """True for a vehicle that unplugs before its session finished."""
    return trigger == ChargerTrigger.UNPLUG and from_state in EARLY_DEPARTURE_STATES


_CHARGER_TABLE = TransitionTable(ChargerState, CHARGER_TRANSITIONS)
_BATTERY_TABLE = TransitionTable(BatteryState, BATTERY_TRANSITIONS)
"""Shared by every machine of the kind (a machine never changes its table)."""


def create_ev_charger_state_machine(asset_id: str, event_bus: EventBus | None = None) -> StateMachine:
    """An EV charger machine: 7 states, 10 triggers, starting in AVAILABLE."""
    return StateMachine(asset_id, _CHARGER_TABLE.states, ChargerState.AVAILABLE, _CHARGER_TABLE, event_bus)


def create_battery_state_machine(asset_id: str, event_bus: EventBus | None = None) -> StateMachine:
    """A battery machine: 5 states, 7 triggers, starting in IDLE, with direct charge <-> discharge."""
    return StateMachine(asset_id, _BATTERY_TABLE.states, BatteryState.IDLE, _BATTERY_TABLE, event_bus)
