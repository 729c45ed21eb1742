"""What a charger says about its connector and its sessions -> the charger's state. Pure.

StatusNotification (both versions) and TransactionEvent (2.0.1); answers to our calls are
read in answers.py, meter values in meter.py.
"""

from __future__ import annotations

from ocpp.v16 import enums as v16
from ocpp.v201 import enums as v201

from coordinator.asset_machines import ChargerState

V16_STATUS = {
    v16.ChargePointStatus.available: ChargerState.AVAILABLE,
    v16.ChargePointStatus.preparing: ChargerState.PREPARING,
    v16.ChargePointStatus.charging: ChargerState.CHARGING,
    v16.ChargePointStatus.suspended_ev: ChargerState.SUSPENDED,
    v16.ChargePointStatus.suspended_evse: ChargerState.SUSPENDED,
    v16.ChargePointStatus.finishing: ChargerState.FINISHING,
    v16.ChargePointStatus.reserved: ChargerState.AVAILABLE,
    v16.ChargePointStatus.unavailable: ChargerState.UNAVAILABLE,
    v16.ChargePointStatus.faulted: ChargerState.FAULTED,
}

# 2.0.1 splits what 1.6 says in one word: the connector (StatusNotification) and the
# session (TransactionEvent chargingState).
V201_CONNECTOR = {
    v201.ConnectorStatusEnumType.available: ChargerState.AVAILABLE,
    v201.ConnectorStatusEnumType.occupied: ChargerState.PREPARING,
    v201.ConnectorStatusEnumType.reserved: ChargerState.AVAILABLE,
    v201.ConnectorStatusEnumType.unavailable: ChargerState.UNAVAILABLE,
    v201.ConnectorStatusEnumType.faulted: ChargerState.FAULTED,
}
V201_CHARGING = {
    v201.ChargingStateEnumType.charging: ChargerState.CHARGING,
    v201.ChargingStateEnumType.ev_connected: ChargerState.PREPARING,
    v201.ChargingStateEnumType.suspended_ev: ChargerState.SUSPENDED,
    v201.ChargingStateEnumType.suspended_evse: ChargerState.SUSPENDED,
    v201.ChargingStateEnumType.idle: ChargerState.PREPARING,
}


def v16_state(status: str) -> ChargerState | None:
    """A 1.6 StatusNotification status -> the connector's state; None for a word 1.6 does not have."""
    try:
        return V16_STATUS[v16.ChargePointStatus(status)]
    except ValueError:
        return None


def v201_connector_state(status: str) -> ChargerState | None:
    """A 2.0.1 StatusNotification connectorStatus -> the connector's state; None for an unknown word."""
    try:
        return V201_CONNECTOR[v201.ConnectorStatusEnumType(status)]
    except ValueError:
        return None


# A session that ended because the vehicle left: 1.6 says Available straight after Charging,
# 2.0.1 says it with the stoppedReason (or the trigger, which some stations send alone).
_DEPARTED_REASONS = {v201.ReasonEnumType.ev_disconnected}
_DEPARTED_TRIGGERS = {v201.TriggerReasonEnumType.ev_communication_lost, v201.TriggerReasonEnumType.ev_departed}


def v201_transaction_state(event_type: str, charging_state: str | None, stopped_reason: str | None = None,
                           trigger_reason: str | None = None) -> ChargerState | None:
    """A TransactionEvent's meaning for the connector; None when it says nothing new.

    Ended with the vehicle gone is AVAILABLE (an early departure when it was still charging);
    Ended with the vehicle still plugged in is FINISHING.
    """
    if event_type == v201.TransactionEventEnumType.ended:
        if stopped_reason in _DEPARTED_REASONS or trigger_reason in _DEPARTED_TRIGGERS:
            return ChargerState.AVAILABLE
        return ChargerState.FINISHING
    if charging_state is None:
        return None
    try:
        return V201_CHARGING[v201.ChargingStateEnumType(charging_state)]
    except ValueError:
        return None
