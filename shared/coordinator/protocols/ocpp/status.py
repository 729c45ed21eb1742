"""OCPP words, in both versions, to what the rest of the system understands. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ocpp.v16 import enums as v16
from ocpp.v201 import enums as v201

from coordinator.asset_machines import ChargerState
from coordinator.contract.messages import Outcome

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
    try:
        return V16_STATUS[v16.ChargePointStatus(status)]
    except ValueError:
        return None


def v201_connector_state(status: str) -> ChargerState | None:
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


# Statuses a charger may answer with, by what they mean for the command.
_ACCEPTED = {"Accepted"}
_NEVER = {"NotSupported", "NotImplemented", "Unknown"}


def outcome_of(answer: Mapping[str, Any]) -> tuple[Outcome, str | None]:
    """The payload of the charger's answer (snake_case) -> the command's outcome.

    Accepted (and Scheduled, for availability) completes; NotSupported can never succeed
    (refused); anything else (Rejected, a missing or unknown status, ...) failed this attempt
    and may be retried.
    """
    status = answer.get("status")
    if status in _ACCEPTED or status == "Scheduled":
        return Outcome.COMPLETED, None
    reason = f"charger answered {status}" if isinstance(status, str) else f"charger answered without a status: {answer!r:.200}"
    info = answer.get("status_info")
    if info:
        reason += f" ({info.get('reason_code') if isinstance(info, dict) else info})"
    return (Outcome.REFUSED if status in _NEVER else Outcome.FAILED), reason
