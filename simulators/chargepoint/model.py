"""What one simulated charger is doing, and what it must tell the CSMS about it. Pure.

``ChargerModel`` holds the connector's physical and session state. Every event (a CSMS
call, a control action) is a method that changes the state and returns the *effects*: the
messages the charger owes the CSMS, in order, in words of both OCPP versions. The
version-specific ``points`` turn effects into calls; nothing here does I/O or reads a clock.

The connector status is derived from the state, never set by hand, so a status can only
be reported when it is true (``_settle`` emits a StatusChanged when the derived status moved).

Charging profiles stack as in OCPP: per scope (connector, station) the charger holds profiles
by stack level; the highest one still valid is in force (a TxProfile over any TxDefaultProfile).
A profile with a validTo stops counting once ``expire`` is told that time has passed, and the
one below it (the gateway's fallback, docs/ocpp.md) is in force again.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ocpp.v16.enums import (
    AvailabilityStatus,
    ChargePointErrorCode,
    ChargePointStatus,
    ChargingProfilePurposeType,
    ChargingRateUnitType,
    Reason,
)
from ocpp.v201.enums import (
    ChargingProfilePurposeEnumType,
    ChargingStateEnumType,
    ConnectorStatusEnumType,
    TriggerReasonEnumType,
)

MAX_POWER_W = 22_000.0
"""What the simulated vehicle draws at most: an AC bus charger's 3 x 32 A."""
FREE_VEND_ID_TAG = "FREEVEND"
"""idTag of a transaction the charger starts by itself when a setpoint arrives (1.6)."""
VOLTS_PER_PHASE = 230.0
"""For charging profiles in A: W = A x 230 V x phases (3 unless the period says otherwise)."""

# In a transaction, the 1.6 status and the 2.0.1 chargingState say the same thing.
_CHARGING_STATE = {
    ChargePointStatus.charging: ChargingStateEnumType.charging,
    ChargePointStatus.suspended_ev: ChargingStateEnumType.suspended_ev,
    ChargePointStatus.suspended_evse: ChargingStateEnumType.suspended_evse,
}


@dataclass(frozen=True)
class StatusChanged:
    """The connector's status moved (or, with ``announce``, must be said again after a boot)."""

    status: ChargePointStatus
    """The 1.6 word, which 2.0.1 splits into the two below."""
    connector: ConnectorStatusEnumType
    charging_state: ChargingStateEnumType | None
    """Only in a transaction: 2.0.1 reports it with TransactionEvent Updated."""
    transaction: str | None
    """The local id of the transaction in progress."""
    error_code: ChargePointErrorCode = ChargePointErrorCode.no_error
    announce: bool = False


@dataclass(frozen=True)
class TransactionStarted:
    local_id: str
    """The charger's own id: the 2.0.1 transactionId; in 1.6 the CSMS issues the id instead."""
    id_tag: str
    meter_wh: int
    trigger: TriggerReasonEnumType
    charging_state: ChargingStateEnumType
    id_token_type: str | None = None
    remote_start_id: int | None = None

    @property
    def free_vend(self) -> bool:
        return self.id_tag == FREE_VEND_ID_TAG


@dataclass(frozen=True)
class Authorization:
    """A remote start the charger accepted: who, and the CSMS's request id (2.0.1)."""

    id_tag: str
    id_token_type: str | None = None
    remote_start_id: int | None = None


@dataclass(frozen=True)
class TransactionEnded:
    local_id: str
    meter_wh: int
    reason: Reason
    """1.6 word; 2.0.1's stoppedReason has the same value."""
    trigger: TriggerReasonEnumType
    charging_state: ChargingStateEnumType | None
    """EVConnected while the vehicle is still plugged in, else none."""


@dataclass(frozen=True)
class MeterSample:
    local_id: str
    power_w: float
    energy_wh: float


Effect = StatusChanged | TransactionStarted | TransactionEnded | MeterSample


@dataclass(frozen=True)
class HeldProfile:
    """One charging profile the charger holds, reduced to what decides its limit."""

    watts: float
    stack_level: int = 0
    profile_id: int | None = None
    valid_to: float | None = None
    """POSIX seconds from which it no longer counts; None: no end."""
    tx: bool = False
    """A TxProfile (the transaction's own), in force over every TxDefaultProfile."""

    def replaces(self, other: HeldProfile) -> bool:
        """OCPP: a profile replaces one with the same id, or with the same purpose and stack level."""
        if self.profile_id is not None and self.profile_id == other.profile_id:
            return True
        return self.tx == other.tx and self.stack_level == other.stack_level


def limit_in_force(profiles: list[HeldProfile]) -> float | None:
    """The limit of the highest profile (TxProfiles first, then by stack level); None when none."""
    if not profiles:
        return None
    return max(profiles, key=lambda p: (p.tx, p.stack_level)).watts


def schedule_limit_w(schedule: Mapping[str, Any]) -> float | None:
    """The limit of a charging schedule's first period in W (the ``ocpp`` package hands the
    schedule over as a snake_case dict, with 1.6 limits as Decimal); None when it has none."""
    periods = schedule.get("charging_schedule_period") or []
    if not periods:
        return None
    first = periods[0]
    try:
        limit = float(first["limit"])
    except (KeyError, TypeError, ValueError):
        return None
    if schedule.get("charging_rate_unit") == ChargingRateUnitType.amps:
        limit *= VOLTS_PER_PHASE * (first.get("number_phases") or 3)
    return max(limit, 0.0)


def purpose_scope(purpose: str | None) -> str | None:
    """Which limit a profile purpose sets: "station" (the whole charger) or "connector"."""
    if purpose in (ChargingProfilePurposeType.charge_point_max_profile,
                   ChargingProfilePurposeEnumType.charging_station_max_profile):
        return "station"
    # 2.0.1 names these two purposes with the same words
    if purpose in (ChargingProfilePurposeType.tx_default_profile, ChargingProfilePurposeType.tx_profile):
        return "connector"
    return None


def profile_scope(target_id: int, purpose: str | None, own_id: int, in_transaction: bool) -> str | None:
    """The limit a SetChargingProfile sets, or None when the charger must reject it: a station
    limit off connector 0, another connector, a TxProfile outside a transaction."""
    scope = purpose_scope(purpose)
    if scope == "station":
        return scope if target_id == 0 else None
    if purpose == ChargingProfilePurposeType.tx_profile:
        return scope if target_id == own_id and in_transaction else None
    return scope if scope is not None and target_id in (0, own_id) else None


@dataclass
class ChargerModel:
    """One connector (1.6) / EVSE (2.0.1) with the vehicle that may be plugged into it."""

    max_power_w: float = MAX_POWER_W
    issues_transaction_ids: bool = False
    """2.0.1: the charger names its transactions; 1.6: the CSMS does (see bind_transaction)."""
    plugged: bool = False
    operative: bool = True
    faulted: bool = False
    error_code: ChargePointErrorCode = ChargePointErrorCode.no_error
    ev_suspended: bool = False
    finished: bool = False
    """A transaction ended with the vehicle still plugged in (1.6 Finishing)."""
    in_transaction: bool = False
    local_id: str | None = None
    transaction_id: int | str | None = None
    """The id the CSMS knows the transaction by; RemoteStop must name it."""
    connector_limit_w: float | None = None
    """In force now, from ``profiles`` (derived: change it through hold/set_limit/clear_limits/expire)."""
    station_limit_w: float | None = None
    profiles: dict[str, list[HeldProfile]] = field(default_factory=lambda: {"connector": [], "station": []})
    """Held profiles by scope."""
    pending_start: Authorization | None = None
    """A remote start accepted before the cable was plugged in: it starts on plug-in."""
    energy_wh: float = 0.0
    """Energy.Active.Import.Register: grows over the charger's life, never reset."""
    overdraw_w: float = 0.0
    """The ``overdraw`` control: the vehicle draws this much above the limit in force (a charger
    whose composite schedule says one thing while its contactor does another)."""
    _reported: tuple[Any, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._reported = self._status_key(self.report())

    # -- derived -------------------------------------------------------------------

    @property
    def limit_w(self) -> float | None:
        limits = [w for w in (self.connector_limit_w, self.station_limit_w) if w is not None]
        return min(limits) if limits else None

    @property
    def status(self) -> ChargePointStatus:
        if self.faulted:
            return ChargePointStatus.faulted
        if self.in_transaction:
            if self.ev_suspended:
                return ChargePointStatus.suspended_ev
            return ChargePointStatus.suspended_evse if self.limit_w == 0 else ChargePointStatus.charging
        if not self.operative:
            return ChargePointStatus.unavailable
        if self.plugged:
            return ChargePointStatus.finishing if self.finished else ChargePointStatus.preparing
        return ChargePointStatus.available

    @property
    def connector_status(self) -> ConnectorStatusEnumType:
        if self.faulted:
            return ConnectorStatusEnumType.faulted
        if self.in_transaction:
            return ConnectorStatusEnumType.occupied
        if not self.operative:
            return ConnectorStatusEnumType.unavailable
        return ConnectorStatusEnumType.occupied if self.plugged else ConnectorStatusEnumType.available

    @property
    def charging_state(self) -> ChargingStateEnumType | None:
        return _CHARGING_STATE.get(self.status) if self.in_transaction else None

    @property
    def power_w(self) -> float:
        """What the vehicle draws now: min(limit, 22 kW) while charging, else nothing."""
        if self.status is not ChargePointStatus.charging:
            return 0.0
        limit = self.limit_w
        return self.max_power_w if limit is None else min(limit + self.overdraw_w, self.max_power_w)

    def report(self, announce: bool = False) -> StatusChanged:
        return StatusChanged(self.status, self.connector_status, self.charging_state, self.local_id,
                             self.error_code, announce)

    # -- events: each returns the effects, in the order the CSMS must see them -----

    def plug_in(self) -> list[Effect]:
        if self.plugged:
            return []
        self.plugged, self.finished = True, False
        effects = self._settle([])  # Preparing first, as a real charger reports the cable
        if not self._may_start():
            return effects
        if self.pending_start is not None:
            pending, self.pending_start = self.pending_start, None
            effects.append(self._start(pending.id_tag, TriggerReasonEnumType.cable_plugged_in,
                                       pending.id_token_type, pending.remote_start_id))
        elif self.connector_limit_w:  # a setpoint in force: free vend starts at once
            effects.append(self._start(FREE_VEND_ID_TAG, TriggerReasonEnumType.cable_plugged_in))
        return self._settle(effects)

    def unplug(self) -> list[Effect]:
        if not self.plugged:
            return []
        self.plugged = self.finished = False
        self.pending_start = None
        effects: list[Effect] = []
        if self.in_transaction:
            effects.append(self._end(Reason.ev_disconnected, TriggerReasonEnumType.ev_communication_lost))
        return self._settle(effects)

    def suspend(self) -> list[Effect]:
        """The vehicle pauses (SuspendedEV); only meaningful in a transaction."""
        if self.in_transaction:
            self.ev_suspended = True
        return self._settle([])

    def resume(self) -> list[Effect]:
        self.ev_suspended = False
        return self._settle([])

    def fault(self, error_code: ChargePointErrorCode = ChargePointErrorCode.ground_failure) -> list[Effect]:
        """A tripped charger stops delivering energy, so it ends the transaction first."""
        effects: list[Effect] = []
        if self.in_transaction:
            effects.append(self._end(Reason.other, TriggerReasonEnumType.abnormal_condition))
        self.faulted, self.error_code = True, error_code
        return self._settle(effects)

    def reset(self) -> list[Effect]:
        """Back to a clean, empty connector: fault cleared, vehicle gone."""
        effects: list[Effect] = []
        if self.in_transaction:
            effects.append(self._end(Reason.other, TriggerReasonEnumType.reset_command))
        self.faulted, self.error_code = False, ChargePointErrorCode.no_error
        self.plugged = self.finished = self.ev_suspended = False
        self.pending_start = None
        return self._settle(effects)

    def set_limit(self, watts: float, scope: str, *, stack_level: int = 0, profile_id: int | None = None,
                  valid_to: float | None = None) -> list[Effect]:
        """A charging profile was accepted. A connector limit in force above 0 with a vehicle
        plugged in and no transaction starts one (free vend): a schedule of setpoints alone charges."""
        self.hold(scope, HeldProfile(watts, stack_level, profile_id, valid_to))
        effects: list[Effect] = []
        if (scope == "connector" and (self.connector_limit_w or 0) > 0 and self.plugged
                and not self.in_transaction and self._may_start()):
            effects.append(self._start(FREE_VEND_ID_TAG, TriggerReasonEnumType.charging_rate_changed))
        return self._settle(effects)

    def hold(self, scope: str, profile: HeldProfile) -> None:
        """Keep ``profile`` (replacing what it replaces); no other effect."""
        held = [p for p in self.profiles[scope] if not profile.replaces(p)]
        self.profiles[scope] = [*held, profile]
        self._recompute()

    def clear_limits(self, scope: str | None = None) -> list[Effect]:
        """ClearChargingProfile: one scope, or every limit when None."""
        for name in self.profiles:
            if scope in (None, name):
                self.profiles[name] = []
        self._recompute()
        return self._settle([])

    def expire(self, now: float) -> list[Effect]:
        """Drop every profile whose validTo is at or before ``now`` (POSIX seconds)."""
        for name, held in self.profiles.items():
            self.profiles[name] = [p for p in held if p.valid_to is None or p.valid_to > now]
        self._recompute()
        return self._settle([])

    @property
    def next_expiry(self) -> float | None:
        """The earliest validTo among the held profiles (POSIX seconds), or None."""
        ends = [p.valid_to for held in self.profiles.values() for p in held if p.valid_to is not None]
        return min(ends) if ends else None

    def remote_start(self, id_tag: str, id_token_type: str | None = None,
                     remote_start_id: int | None = None) -> tuple[bool, list[Effect]]:
        """Accepted unless busy, faulted or inoperative; without a vehicle it waits for one."""
        if self.in_transaction or self.pending_start is not None or not self._may_start():
            return False, []
        if not self.plugged:
            self.pending_start = Authorization(id_tag, id_token_type, remote_start_id)
            return True, []
        started = self._start(id_tag, TriggerReasonEnumType.remote_start, id_token_type, remote_start_id)
        return True, self._settle([started])

    def remote_stop(self, transaction_id: int | str) -> tuple[bool, list[Effect]]:
        """Accepted only for the transaction in progress, named as the CSMS knows it."""
        if not self.in_transaction or self.transaction_id is None or str(self.transaction_id) != str(transaction_id):
            return False, []
        return True, self._settle([self._end(Reason.remote, TriggerReasonEnumType.remote_stop)])

    def change_availability(self, operative: bool) -> tuple[AvailabilityStatus, list[Effect]]:
        """Inoperative during a transaction is Scheduled: it takes effect when the session ends."""
        self.operative = operative
        answer = AvailabilityStatus.scheduled if not operative and self.in_transaction else AvailabilityStatus.accepted
        return answer, self._settle([])

    def bind_transaction(self, local_id: str, transaction_id: int | str) -> None:
        """The CSMS answered StartTransaction (1.6) with the id it knows this transaction by."""
        if self.in_transaction and self.local_id == local_id:
            self.transaction_id = transaction_id

    def advance(self, seconds: float) -> None:
        """Integrate the meter over ``seconds`` at the current power."""
        if seconds > 0:
            self.energy_wh += self.power_w * seconds / 3600.0

    def meter(self) -> MeterSample | None:
        """A periodic sample, taken only during a transaction."""
        if not self.in_transaction or self.local_id is None:
            return None
        return MeterSample(self.local_id, self.power_w, self.energy_wh)

    # -- internals -----------------------------------------------------------------

    def _recompute(self) -> None:
        self.connector_limit_w = limit_in_force(self.profiles["connector"])
        self.station_limit_w = limit_in_force(self.profiles["station"])

    def _may_start(self) -> bool:
        return self.operative and not self.faulted

    def _start(self, id_tag: str, trigger: TriggerReasonEnumType, id_token_type: str | None = None,
               remote_start_id: int | None = None) -> TransactionStarted:
        self.in_transaction, self.finished, self.ev_suspended = True, False, False
        self.local_id = uuid.uuid4().hex
        self.transaction_id = self.local_id if self.issues_transaction_ids else None
        state = self.charging_state or ChargingStateEnumType.charging
        return TransactionStarted(self.local_id, id_tag, int(self.energy_wh), trigger, state,
                                  id_token_type, remote_start_id)

    def _end(self, reason: Reason, trigger: TriggerReasonEnumType) -> TransactionEnded:
        local_id = self.local_id or ""
        self.in_transaction, self.ev_suspended = False, False
        self.local_id = self.transaction_id = None
        self.finished = self.plugged
        state = ChargingStateEnumType.ev_connected if self.plugged else None
        return TransactionEnded(local_id, int(self.energy_wh), reason, trigger, state)

    def _settle(self, effects: list[Effect]) -> list[Effect]:
        """Append a StatusChanged when the derived status differs from the last one reported."""
        now = self.report()
        key = self._status_key(now)
        if key != self._reported:
            self._reported = key
            effects.append(now)
        return effects

    @staticmethod
    def _status_key(report: StatusChanged) -> tuple[Any, ...]:
        return report.status, report.connector, report.charging_state, report.error_code
