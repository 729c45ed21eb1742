"""OCPP adapter: commands to CSMS-initiated OCPP 1.6 / 2.0.1 calls, as JSON payloads.

Payloads are built from the ``ocpp`` package's own call dataclasses and enums (calls.py),
then serialised to exactly what ``ocpp.ChargePoint.call`` would send (payload.py). The
gateway sends ``payload`` as the Call's payload under ``action``; the result validates
against the package's JSON schemas.

    >>> from datetime import datetime, timezone
    >>> from coordinator.base import Command, CommandType
    >>> cmd = Command("ast_ev_001", CommandType.SET_CHARGE_RATE, {"power_kw": 7.4},
    ...               datetime(2025, 1, 15, 8, 0, tzinfo=timezone.utc))
    >>> out = OCPPAdapter("ocpp_site_1").translate(cmd)
    >>> out["action"], out["payload"]["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]
    ('SetChargingProfile', [{'startPeriod': 0, 'limit': 7400.0}])
"""

from __future__ import annotations

import math
import zlib
from datetime import UTC, datetime
from typing import Any

from ocpp.v201 import enums as v201_enums

from coordinator.adapters.base import ProtocolAdapter, TranslationError
from coordinator.base import Command, CommandType

from .calls import CallBuilder, action_of, calls_for
from .composite import COMPOSITE_SECONDS
from .payload import call_payload, json_payload
from .version import OCPPVersion

__all__ = ["DEFAULT_ID_TAG", "DEFAULT_PROFILE_ID_BASE", "DEFAULT_STACK_LEVEL", "FALLBACK_STACK_LEVEL", "OCPPAdapter",
           "OCPPVersion", "call_payload"]

DEFAULT_ID_TAG = "qubit"
DEFAULT_STACK_LEVEL = 1
"""Setpoint profiles sit here, above the fallback: while one is valid it is in force."""
FALLBACK_STACK_LEVEL = 0
"""The fallback TxDefaultProfile: no validTo, in force whenever no setpoint profile is."""
DEFAULT_PROFILE_ID_BASE = 1000
"""Station-wide max profile gets this id; the TxDefaultProfile of connector/EVSE n gets base + 1 + n,
its fallback base + 501 + n."""
FALLBACK_PROFILE_ID_OFFSET = 500


class OCPPAdapter(ProtocolAdapter):
    """Translates commands for one connector (1.6) or EVSE (2.0.1) of an OCPP charger.

    ``translate`` returns ``{"action", "payload", "ocpp_version"}``; see docs/adapters.md for
    the mapping. ``connector_id`` 0 addresses the whole charger. Raises ValueError at
    construction for an unsupported ``ocpp_version`` or bad ids.
    """

    protocol = "ocpp"

    def __init__(
        self,
        gateway_id: str,
        ocpp_version: str = "1.6",
        connector_id: int = 1,
        *,
        id_tag: str = DEFAULT_ID_TAG,
        stack_level: int = DEFAULT_STACK_LEVEL,
        profile_id_base: int = DEFAULT_PROFILE_ID_BASE,
    ) -> None:
        super().__init__(gateway_id)
        try:
            self.ocpp_version = OCPPVersion(ocpp_version)
        except ValueError:
            supported = ", ".join(repr(v.value) for v in OCPPVersion)
            raise ValueError(f"unsupported OCPP version {ocpp_version!r}; supported: {supported}") from None
        ids = {"connector_id": connector_id, "stack_level": stack_level, "profile_id_base": profile_id_base}
        for name, value in ids.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        self.connector_id = connector_id
        self.stack_level = stack_level
        self.profile_id_base = profile_id_base
        self._calls: CallBuilder = calls_for(self.ocpp_version)
        try:
            self.id_tag = self._checked_id_tag(id_tag)
        except TranslationError as exc:  # a configuration error, not a refused command
            raise ValueError(str(exc)) from None

    @property
    def tx_default_profile_id(self) -> int:
        """chargingProfileId of this connector's setpoint profile; reusing it makes the charger replace it."""
        return self.profile_id_base + 1 + self.connector_id

    @property
    def station_max_profile_id(self) -> int:
        """chargingProfileId of the charger-wide limit (ChargePointMaxProfile / ChargingStationMaxProfile)."""
        return self.profile_id_base

    @property
    def fallback_profile_id(self) -> int:
        """chargingProfileId of this connector's fallback profile (stack level FALLBACK_STACK_LEVEL)."""
        return self.profile_id_base + FALLBACK_PROFILE_ID_OFFSET + 1 + self.connector_id

    def fallback_call(self, fallback_kw: float, start: datetime) -> Any:
        """The fallback TxDefaultProfile at ``fallback_kw``, without validTo, below every
        setpoint profile: what the charger falls back to when a setpoint's lease ends."""
        if not math.isfinite(fallback_kw) or fallback_kw < 0:
            raise TranslationError(f"fallback_kw must be finite and >= 0, got {fallback_kw!r}")
        if self.stack_level <= FALLBACK_STACK_LEVEL:
            raise ValueError(f"setpoint stack level {self.stack_level} must be above the fallback's")
        return self._calls.set_charging_profile(
            self.connector_id, profile_id=self.fallback_profile_id, stack_level=FALLBACK_STACK_LEVEL,
            station_max=False, watts=round(fallback_kw * 1000, 1), start=_start_schedule(start),
        )

    def translate(self, command: Command) -> dict[str, Any]:
        call = self.build_call(command)
        return {
            "action": action_of(call, self.ocpp_version),
            "payload": json_payload(call),
            "ocpp_version": self.ocpp_version.value,
        }

    def build_call(self, command: Command, valid_to: datetime | None = None) -> Any:
        """The ``ocpp`` package's call object for ``command`` (what ``ChargePoint.call`` sends);
        raises TranslationError like ``translate``. ``valid_to`` ends a setpoint profile (its lease)."""
        calls, ctype = self._calls, command.command_type
        until = None if valid_to is None else _valid_to(valid_to)
        if ctype is CommandType.SET_CHARGE_RATE:
            return calls.set_charging_profile(
                self.connector_id, profile_id=self.tx_default_profile_id, stack_level=self.stack_level,
                station_max=False, watts=_watts(command), start=_start_schedule(command.scheduled_at), valid_to=until,
            )
        if ctype is CommandType.SET_POWER_LIMIT:
            return calls.set_charging_profile(
                0, profile_id=self.station_max_profile_id, stack_level=self.stack_level,
                station_max=True, watts=_watts(command), start=_start_schedule(command.scheduled_at), valid_to=until,
            )
        if ctype is CommandType.START_CHARGING:
            id_tag = self._checked_id_tag(command.parameters.get("id_tag", self.id_tag))
            return calls.start_transaction(self.connector_id, id_tag, _remote_start_id(command))
        if ctype is CommandType.STOP_CHARGING:
            return calls.stop_transaction(_transaction_id(command))
        if ctype is CommandType.CHANGE_AVAILABILITY:
            return calls.change_availability(self.connector_id, _operative(command))
        if ctype is CommandType.RESET:
            return calls.reset()
        raise TranslationError(f"{ctype} is not supported by OCPP chargers")

    def composite_schedule_call(self) -> Any:
        """GetCompositeSchedule for this connector / EVSE: the call that proves a setpoint is in
        force (composite.py). The connector's composite includes the charger-wide maximum, so
        it proves both setpoint kinds."""
        return self._calls.get_composite_schedule(self.connector_id, COMPOSITE_SECONDS)

    def _checked_id_tag(self, id_tag: object) -> str:
        limit = self._calls.id_tag_max_length
        if not isinstance(id_tag, str) or not 0 < len(id_tag) <= limit:
            raise TranslationError(
                f"id_tag must be a string of 1..{limit} characters for OCPP {self.ocpp_version}, got {id_tag!r}"
            )
        return id_tag

    def __repr__(self) -> str:
        version, connector = self.ocpp_version.value, self.connector_id
        return f"OCPPAdapter({self.gateway_id!r}, ocpp_version={version!r}, connector_id={connector})"


def _transaction_id(command: Command) -> int | str:
    tx = command.parameters.get("transaction_id")
    if tx is None:
        raise TranslationError("STOP_CHARGING needs parameter transaction_id")
    # bool is an int subclass: True must not stop transaction 1.
    if isinstance(tx, bool) or not isinstance(tx, int | str):
        raise TranslationError(f"transaction_id must be an integer or a string, got {tx!r}")
    return tx


def _watts(command: Command) -> float:
    """power_kw as a charging-schedule limit in W, one decimal (the 1.6 schema's multipleOf 0.1)."""
    kw = command.parameters.get("power_kw")
    if kw is None:
        raise TranslationError(f"{command.command_type} needs parameter power_kw")
    if isinstance(kw, bool) or not isinstance(kw, int | float):
        raise TranslationError(f"power_kw must be a number, got {kw!r}")
    if not math.isfinite(kw) or kw < 0:
        raise TranslationError(f"power_kw must be finite and >= 0, got {kw!r}")
    return round(float(kw) * 1000, 1)


def _start_schedule(at: datetime) -> str:
    # Absolute profiles must carry a startSchedule (2.0.1 K01.FR.41; strict 1.6 chargers reject
    # them without one too). The slot start is the same on every retry and is never in the
    # future at dispatch, so the limit applies at once.
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _valid_to(at: datetime) -> str:
    # Milliseconds: a lease of a few seconds must not lose most of a second to rounding.
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _remote_start_id(command: Command) -> int:
    # Derived from the command id, not a counter: every retry of one command carries the same
    # remoteStartId, and the gateway can map a TransactionEvent back to the command.
    return zlib.crc32(command.command_id.encode()) & 0x7FFFFFFF


def _operative(command: Command) -> bool:
    params = command.parameters
    if ("available" in params) == ("availability" in params):
        raise TranslationError(
            'CHANGE_AVAILABILITY needs exactly one of "available" (bool) or "availability" (Operative/Inoperative)'
        )
    if "available" in params:
        available = params["available"]
        if not isinstance(available, bool):
            raise TranslationError(f"available must be a boolean, got {available!r}")
        return available
    wanted = params["availability"]
    for status in v201_enums.OperationalStatusEnumType:  # same words as 1.6 AvailabilityType
        if isinstance(wanted, str) and wanted.lower() == status.value.lower():
            return status is v201_enums.OperationalStatusEnumType.operative
    raise TranslationError(f"availability must be 'Operative' or 'Inoperative', got {wanted!r}")
