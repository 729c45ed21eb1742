"""The CSMS-initiated calls we send, built from the ``ocpp`` package's own call dataclasses
and enums, one builder per version. Pure; arguments are already checked (adapter.py)."""

from __future__ import annotations

import re
from typing import Any, Protocol

from ocpp.v16 import call as v16_call
from ocpp.v16 import datatypes as v16_types
from ocpp.v16 import enums as v16_enums
from ocpp.v201 import call as v201_call
from ocpp.v201 import datatypes as v201_types
from ocpp.v201 import enums as v201_enums

from coordinator.adapters.base import TranslationError

from .version import OCPPVersion


class CallBuilder(Protocol):
    """What each version can be asked to build. ``connector_id`` is the connector (1.6) or EVSE (2.0.1).

    ``valid_to`` (RFC 3339, UTC) ends a profile: once it passes, the charger drops it by itself
    and the profile below it in the stack is in force (docs/ocpp.md, leases). None: no end.
    """

    id_tag_max_length: int

    def set_charging_profile(
        self, connector_id: int, *, profile_id: int, stack_level: int, station_max: bool, watts: float, start: str,
        valid_to: str | None = None,
    ) -> Any: ...
    def start_transaction(self, connector_id: int, id_tag: str, remote_start_id: int) -> Any: ...
    def stop_transaction(self, transaction_id: int | str) -> Any: ...
    def change_availability(self, connector_id: int, operative: bool) -> Any: ...
    def reset(self) -> Any: ...
    def get_composite_schedule(self, connector_id: int, duration: int) -> Any: ...


class V16Calls:
    """Call objects for OCPP 1.6 (connector ids)."""

    id_tag_max_length = 20  # IdToken is CiString20Type

    def set_charging_profile(
        self, connector_id: int, *, profile_id: int, stack_level: int, station_max: bool, watts: float, start: str,
        valid_to: str | None = None,
    ) -> Any:
        purpose = v16_enums.ChargingProfilePurposeType
        chosen = purpose.charge_point_max_profile if station_max else purpose.tx_default_profile
        return v16_call.SetChargingProfile(
            connector_id=connector_id,
            cs_charging_profiles=v16_types.ChargingProfile(
                charging_profile_id=profile_id,
                stack_level=stack_level,
                charging_profile_purpose=chosen,
                charging_profile_kind=v16_enums.ChargingProfileKindType.absolute,
                valid_to=valid_to,
                charging_schedule=v16_types.ChargingSchedule(
                    charging_rate_unit=v16_enums.ChargingRateUnitType.watts,
                    start_schedule=start,
                    charging_schedule_period=[v16_types.ChargingSchedulePeriod(start_period=0, limit=watts)],
                ),
            ),
        )

    def start_transaction(self, connector_id: int, id_tag: str, remote_start_id: int) -> Any:
        # 1.6 has no remoteStartId; connectorId 0 is not a connector, so "any connector" is left to the charger.
        return v16_call.RemoteStartTransaction(id_tag=id_tag, connector_id=connector_id or None)

    def stop_transaction(self, transaction_id: int | str) -> Any:
        # A 1.6 transactionId is an integer; accept its decimal text too (ids travel as strings in events).
        if isinstance(transaction_id, str):
            if not re.fullmatch(r"-?[0-9]+", transaction_id):
                raise TranslationError(f"OCPP 1.6 transaction_id must be an integer, got {transaction_id!r}")
            transaction_id = int(transaction_id)
        return v16_call.RemoteStopTransaction(transaction_id=transaction_id)

    def change_availability(self, connector_id: int, operative: bool) -> Any:
        kind = v16_enums.AvailabilityType
        return v16_call.ChangeAvailability(
            connector_id=connector_id, type=kind.operative if operative else kind.inoperative
        )

    def reset(self) -> Any:
        # Soft: the charger ends its sessions and restarts its software, which clears a fault;
        # a hard reset (power cycle) is for a technician on site.
        return v16_call.Reset(type=v16_enums.ResetType.soft)

    def get_composite_schedule(self, connector_id: int, duration: int) -> Any:
        # In W, as our profiles are: the answer then needs no voltage to compare (composite.py).
        return v16_call.GetCompositeSchedule(connector_id=connector_id, duration=duration,
                                             charging_rate_unit=v16_enums.ChargingRateUnitType.watts)


class V201Calls:
    """Call objects for OCPP 2.0.1 (the adapter's connector_id is the EVSE id)."""

    id_tag_max_length = 36  # IdTokenType.idToken maxLength
    transaction_id_max_length = 36

    def set_charging_profile(
        self, evse_id: int, *, profile_id: int, stack_level: int, station_max: bool, watts: float, start: str,
        valid_to: str | None = None,
    ) -> Any:
        purpose = v201_enums.ChargingProfilePurposeEnumType
        chosen = purpose.charging_station_max_profile if station_max else purpose.tx_default_profile
        return v201_call.SetChargingProfile(
            evse_id=evse_id,
            charging_profile=v201_types.ChargingProfileType(
                id=profile_id,
                stack_level=stack_level,
                charging_profile_purpose=chosen,
                charging_profile_kind=v201_enums.ChargingProfileKindEnumType.absolute,
                valid_to=valid_to,
                charging_schedule=[
                    v201_types.ChargingScheduleType(
                        id=profile_id,
                        charging_rate_unit=v201_enums.ChargingRateUnitEnumType.watts,
                        start_schedule=start,
                        charging_schedule_period=[v201_types.ChargingSchedulePeriodType(start_period=0, limit=watts)],
                    )
                ],
            ),
        )

    def start_transaction(self, evse_id: int, id_tag: str, remote_start_id: int) -> Any:
        return v201_call.RequestStartTransaction(
            id_token=v201_types.IdTokenType(id_token=id_tag, type=v201_enums.IdTokenEnumType.central),
            remote_start_id=remote_start_id,
            evse_id=evse_id or None,  # evseId is > 0; absent lets the station choose
        )

    def stop_transaction(self, transaction_id: int | str) -> Any:
        text = str(transaction_id)
        if not 0 < len(text) <= self.transaction_id_max_length:
            raise TranslationError(
                f"OCPP 2.0.1 transaction_id must have 1..{self.transaction_id_max_length} characters, got {text!r}"
            )
        return v201_call.RequestStopTransaction(transaction_id=text)

    def change_availability(self, evse_id: int, operative: bool) -> Any:
        status = v201_enums.OperationalStatusEnumType
        return v201_call.ChangeAvailability(
            operational_status=status.operative if operative else status.inoperative,
            evse=v201_types.EVSEType(id=evse_id) if evse_id else None,  # no evse = the whole station
        )

    def reset(self) -> Any:
        # Immediate, the whole station: an operator resets a faulted charger now (OnIdle would
        # wait for a session that a faulted charger does not have).
        return v201_call.Reset(type=v201_enums.ResetEnumType.immediate)

    def get_composite_schedule(self, evse_id: int, duration: int) -> Any:
        return v201_call.GetCompositeSchedule(duration=duration, evse_id=evse_id,
                                              charging_rate_unit=v201_enums.ChargingRateUnitEnumType.watts)


def calls_for(version: OCPPVersion) -> CallBuilder:
    return V16Calls() if version is OCPPVersion.V16 else V201Calls()


def action_of(call: Any, version: OCPPVersion) -> str:
    """The OCPP action a call dataclass is sent under: its class name, checked against the
    version's Action enum (ValueError for a call the version does not have)."""
    actions = v16_enums.Action if version is OCPPVersion.V16 else v201_enums.Action
    return str(actions(type(call).__name__).value)
