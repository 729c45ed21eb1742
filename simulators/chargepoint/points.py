"""The OCPP side of a simulated charger, one thin ``ocpp.ChargePoint`` subclass per version.

A point translates: CSMS calls -> ``SimulatedCharger`` decisions -> answers, and model
effects -> the version's calls. It owns no charger state beyond what it last told the CSMS
on this connection.

Every CSMS call is answered in its own task, so a "slow" or "drop" charger never stalls the
reading of answers to its own calls. Follow-up messages (StartTransaction after
RemoteStartTransaction, ...) are queued only once the answer went out: a charger never
sends them before it said Accepted, and a handler never awaits a call (that deadlocks the
``ocpp`` package until its timeout).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

from ocpp.exceptions import OCPPError
from ocpp.messages import Call, MessageType, unpack
from ocpp.routing import on
from ocpp.v16 import ChargePoint as V16ChargePoint
from ocpp.v16 import call as v16_call
from ocpp.v16 import call_result as v16_result
from ocpp.v16 import datatypes as v16_types
from ocpp.v16.enums import (
    Action as V16Action,
)
from ocpp.v16.enums import (
    AuthorizationStatus,
    AvailabilityStatus,
    AvailabilityType,
    ChargingProfileStatus,
    ChargingRateUnitType,
    ClearChargingProfileStatus,
    GetCompositeScheduleStatus,
    Measurand,
    ReadingContext,
    RegistrationStatus,
    RemoteStartStopStatus,
    ResetStatus,
    UnitOfMeasure,
)
from ocpp.v201 import ChargePoint as V201ChargePoint
from ocpp.v201 import call as v201_call
from ocpp.v201 import call_result as v201_result
from ocpp.v201 import datatypes as v201_types
from ocpp.v201.enums import (
    Action as V201Action,
)
from ocpp.v201.enums import (
    BootReasonEnumType,
    ChangeAvailabilityStatusEnumType,
    ChargingProfileStatusEnumType,
    ChargingRateUnitEnumType,
    ChargingStateEnumType,
    ClearChargingProfileStatusEnumType,
    ConnectorStatusEnumType,
    GenericStatusEnumType,
    IdTokenEnumType,
    MeasurandEnumType,
    OperationalStatusEnumType,
    ReadingContextEnumType,
    ReasonEnumType,
    RegistrationStatusEnumType,
    RequestStartStopStatusEnumType,
    ResetStatusEnumType,
    StandardizedUnitsOfMeasureType,
    TransactionEventEnumType,
    TriggerReasonEnumType,
)
from websockets.exceptions import ConnectionClosed

from coordinator.protocols.ocpp.internals import handle_call, receive
from simulators.chargepoint.model import (
    VOLTS_PER_PHASE,
    Effect,
    MeterSample,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
)

if TYPE_CHECKING:
    from ocpp.charge_point import ChargePoint as _OcppChargePoint
else:
    _OcppChargePoint = object  # a mixin at run time: each point's other base is the real ChargePoint

log = logging.getLogger(__name__)

VENDOR = "Qubit"
MODEL = "SimCharger"
RESPONSE_TIMEOUT = 30.0


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Charger(Protocol):
    """What a point reads and calls on its charger (``SimulatedCharger``): the point
    translates, the charger decides. Each decision returns the answer and the effects."""

    charge_point_id: str
    connector_id: int
    validate_calls: bool
    rejecting: bool
    slow_seconds: float
    dropping: bool
    hangup_after: float | None
    csms_transaction_ids: dict[str, int]
    seq_nos: dict[str, int]
    meter_kw: bool
    meter_multiplier: int

    def set_profile(self, target_id: int, purpose: str | None, schedule: Mapping[str, Any], *,
                    stack_level: int = 0, profile_id: int | None = None,
                    valid_to: str | None = None) -> tuple[bool, list[Effect]]: ...

    def clear_profiles(self, target_id: int | None, purpose: str | None) -> tuple[bool, list[Effect]]: ...

    def composite_schedule(self, target_id: int) -> tuple[bool, float | None]: ...

    def remote_start(self, target_id: int | None, id_tag: str, id_token_type: str | None,
                     remote_start_id: int | None, schedule: Mapping[str, Any]) -> tuple[bool, list[Effect]]: ...

    def remote_stop(self, transaction_id: int | str) -> tuple[bool, list[Effect]]: ...

    def change_availability(self, target_id: int,
                            operative: bool) -> tuple[AvailabilityStatus | None, list[Effect]]: ...

    def remote_reset(self) -> tuple[bool, list[Effect]]: ...

    def transaction_bound(self, local_id: str, transaction_id: int) -> None: ...

    def enqueue(self, effects: list[Effect]) -> None: ...

    async def hang_up(self) -> bool: ...


class _SimulatedPoint(_OcppChargePoint):
    """What both versions share: answering in tasks, deferring follow-ups, the call wrapper."""

    subprotocol: str
    charger: Charger
    id: str

    def _setup(self, charger: Charger) -> None:
        self.charger = charger
        if not charger.validate_calls:
            # The ocpp package's own per-handler switch: what a thousand-charger load test
            # needs, since each call would otherwise be checked against its JSON schema twice.
            for handlers in self.route_map.values():
                handlers["_skip_schema_validation"] = True
        self._deferred: dict[str, list[Effect]] = {}
        self._answering: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Read until the connection closes (ConnectionClosed); CSMS calls are answered in tasks."""
        while True:
            raw = await receive(self)
            try:
                message = unpack(raw)
            except OCPPError as exc:
                log.warning("%s: unreadable message from the CSMS: %s", self.id, exc)
                continue
            if message.message_type_id != MessageType.Call:
                await self.route_message(raw)
            elif self.charger.dropping:
                log.info("%s: not answering %s (control: drop)", self.id, message.action)
            else:
                task = asyncio.create_task(self._answer(raw, message))
                self._answering.add(task)
                task.add_done_callback(self._answering.discard)

    async def _answer(self, raw: str, message: Any) -> None:
        unique_id = message.unique_id
        if self.charger.slow_seconds > 0:
            log.info("%s: answering %s in %g s (control: slow)", self.id, unique_id, self.charger.slow_seconds)
            await asyncio.sleep(self.charger.slow_seconds)
        try:
            await self.route_message(raw)
        except ConnectionClosed:
            log.info("%s: connection closed before the answer to %s went out", self.id, unique_id)
        finally:
            # The decision was taken (and the model moved) even if the answer was lost;
            # transaction messages survive a reconnect, so they are queued either way.
            self.charger.enqueue(self._deferred.pop(unique_id, []))

    async def _handle_call(self, msg: Call) -> None:
        """The package's routing hands every CSMS call here: ``handle_call``, its answer without
        its per-call costs (coordinator/protocols/ocpp/internals.py). As the load generator for a
        thousand chargers the package's own path was most of the simulator's time per call, and
        the simulator, not the gateway, set the pace."""
        await handle_call(self, msg)

    def _decided(self, unique_id: str, decision: tuple[Any, list[Effect]]) -> Any:
        answer, effects = decision
        if effects:
            self._deferred[unique_id] = effects
        return answer

    async def _send(self, message: str) -> None:
        # The ``hangup`` control: the call was decided (the setpoint applied), then the link
        # drops instead of the answer, a charger that disconnects mid-call. Only answers
        # (OCPP-J CallResult, message type 3) hang up, never the charger's own calls.
        if message.startswith("[3") and await self.charger.hang_up():
            raise ConnectionClosed(None, None)
        await super()._send(message)

    def close(self) -> None:
        for task in list(self._answering):
            task.cancel()

    async def _request(self, payload: Any) -> Any:
        # Without validation (a load test) the charger's own calls and their answers are not
        # schema-checked either: with a thousand chargers that, in executor threads, was a third
        # of the simulator's time during an emergency stop.
        return await self.call(payload, suppress=False, skip_schema_validation=not self.charger.validate_calls)


class V16Point(_SimulatedPoint, V16ChargePoint):
    """OCPP 1.6J: the CSMS issues transaction ids (StartTransaction answer)."""

    subprotocol = "ocpp1.6"

    def __init__(self, charger: Charger, connection: Any) -> None:
        super().__init__(charger.charge_point_id, connection, response_timeout=RESPONSE_TIMEOUT)
        self._setup(charger)

    async def boot(self) -> tuple[bool, int]:
        answer = await self._request(v16_call.BootNotification(charge_point_model=MODEL, charge_point_vendor=VENDOR))
        return answer.status == RegistrationStatus.accepted, int(answer.interval)

    async def heartbeat(self) -> None:
        await self._request(v16_call.Heartbeat())

    async def send(self, effect: Effect) -> None:
        charger = self.charger
        match effect:
            case StatusChanged():
                await self._request(v16_call.StatusNotification(
                    connector_id=charger.connector_id, error_code=effect.error_code, status=effect.status,
                    timestamp=_now()))
            case TransactionStarted():
                answer = await self._request(v16_call.StartTransaction(
                    connector_id=charger.connector_id, id_tag=effect.id_tag, meter_start=effect.meter_wh,
                    timestamp=_now()))
                charger.transaction_bound(effect.local_id, answer.transaction_id)
                status = (answer.id_tag_info or {}).get("status")
                if status != AuthorizationStatus.accepted:  # a real charger might stop; this one carries on
                    log.warning("%s: StartTransaction answered with idTag status %s", self.id, status)
            case TransactionEnded():
                transaction_id = charger.csms_transaction_ids.get(effect.local_id)
                if transaction_id is None:
                    log.warning("%s: the CSMS never gave this transaction an id; StopTransaction not sent", self.id)
                    return
                await self._request(v16_call.StopTransaction(
                    meter_stop=effect.meter_wh, timestamp=_now(), transaction_id=transaction_id, reason=effect.reason))
                charger.csms_transaction_ids.pop(effect.local_id, None)
            case MeterSample():
                await self._request(v16_call.MeterValues(
                    connector_id=charger.connector_id,
                    transaction_id=charger.csms_transaction_ids.get(effect.local_id),
                    meter_value=[v16_types.MeterValue(timestamp=_now(), sampled_value=[
                        v16_types.SampledValue(
                            value=f"{effect.power_w / 1000:.4f}" if charger.meter_kw else f"{effect.power_w:.1f}",
                            context=ReadingContext.sample_periodic, measurand=Measurand.power_active_import,
                            unit=UnitOfMeasure.kw if charger.meter_kw else UnitOfMeasure.w),
                        v16_types.SampledValue(value=f"{effect.energy_wh:.1f}", context=ReadingContext.sample_periodic,
                                               measurand=Measurand.energy_active_import_register,
                                               unit=UnitOfMeasure.wh),
                    ])],
                ))

    # -- CSMS calls ----------------------------------------------------------------

    @on(V16Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict, call_unique_id: str,
                                **_: Any) -> v16_result.SetChargingProfile:
        if self.charger.rejecting:
            return v16_result.SetChargingProfile(status=ChargingProfileStatus.rejected)
        accepted = self._decided(call_unique_id, self.charger.set_profile(
            connector_id, cs_charging_profiles.get("charging_profile_purpose"),
            cs_charging_profiles.get("charging_schedule") or {},
            stack_level=cs_charging_profiles.get("stack_level", 0),
            profile_id=cs_charging_profiles.get("charging_profile_id"),
            valid_to=cs_charging_profiles.get("valid_to")))
        return v16_result.SetChargingProfile(
            status=ChargingProfileStatus.accepted if accepted else ChargingProfileStatus.rejected)

    @on(V16Action.get_composite_schedule)
    def on_get_composite_schedule(self, connector_id: int, duration: int, charging_rate_unit: str | None = None,
                                  **_: Any) -> v16_result.GetCompositeSchedule:
        known, limit_w = self.charger.composite_schedule(connector_id)
        if self.charger.rejecting or not known:
            return v16_result.GetCompositeSchedule(status=GetCompositeScheduleStatus.rejected)
        now = _now()
        if limit_w is None:  # no profile limits the connector: nothing to schedule
            return v16_result.GetCompositeSchedule(status=GetCompositeScheduleStatus.accepted,
                                                   connector_id=connector_id, schedule_start=now)
        unit, limit = _in_unit(limit_w, charging_rate_unit)
        return v16_result.GetCompositeSchedule(
            status=GetCompositeScheduleStatus.accepted, connector_id=connector_id, schedule_start=now,
            charging_schedule=asdict(v16_types.ChargingSchedule(
                charging_rate_unit=ChargingRateUnitType(unit), duration=duration, start_schedule=now,
                charging_schedule_period=[v16_types.ChargingSchedulePeriod(start_period=0, limit=limit)])))

    @on(V16Action.clear_charging_profile)
    def on_clear_charging_profile(self, call_unique_id: str, connector_id: int | None = None,
                                  charging_profile_purpose: str | None = None,
                                  **_: Any) -> v16_result.ClearChargingProfile:
        if self.charger.rejecting:
            return v16_result.ClearChargingProfile(status=ClearChargingProfileStatus.unknown)
        cleared = self._decided(call_unique_id, self.charger.clear_profiles(connector_id, charging_profile_purpose))
        return v16_result.ClearChargingProfile(
            status=ClearChargingProfileStatus.accepted if cleared else ClearChargingProfileStatus.unknown)

    @on(V16Action.remote_start_transaction)
    def on_remote_start(self, id_tag: str, call_unique_id: str, connector_id: int | None = None,
                        charging_profile: dict | None = None, **_: Any) -> v16_result.RemoteStartTransaction:
        if self.charger.rejecting:
            return v16_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        schedule = (charging_profile or {}).get("charging_schedule") or {}
        accepted = self._decided(call_unique_id, self.charger.remote_start(connector_id, id_tag, None, None, schedule))
        return v16_result.RemoteStartTransaction(
            status=RemoteStartStopStatus.accepted if accepted else RemoteStartStopStatus.rejected)

    @on(V16Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int, call_unique_id: str, **_: Any) -> v16_result.RemoteStopTransaction:
        if self.charger.rejecting:
            return v16_result.RemoteStopTransaction(status=RemoteStartStopStatus.rejected)
        accepted = self._decided(call_unique_id, self.charger.remote_stop(transaction_id))
        return v16_result.RemoteStopTransaction(
            status=RemoteStartStopStatus.accepted if accepted else RemoteStartStopStatus.rejected)

    @on(V16Action.reset)
    def on_reset(self, type: str, call_unique_id: str, **_: Any) -> v16_result.Reset:
        if self.charger.rejecting:
            return v16_result.Reset(status=ResetStatus.rejected)
        accepted = self._decided(call_unique_id, self.charger.remote_reset())
        return v16_result.Reset(status=ResetStatus.accepted if accepted else ResetStatus.rejected)

    @on(V16Action.change_availability)
    def on_change_availability(self, connector_id: int, type: str, call_unique_id: str,
                               **_: Any) -> v16_result.ChangeAvailability:
        if self.charger.rejecting:
            return v16_result.ChangeAvailability(status=AvailabilityStatus.rejected)
        status = self._decided(call_unique_id, self.charger.change_availability(
            connector_id, type == AvailabilityType.operative))
        return v16_result.ChangeAvailability(status=status or AvailabilityStatus.rejected)


class V201Point(_SimulatedPoint, V201ChargePoint):
    """OCPP 2.0.1: the charger names its transactions; one EVSE (= connector_id) with connector 1."""

    subprotocol = "ocpp2.0.1"

    def __init__(self, charger: Charger, connection: Any) -> None:
        super().__init__(charger.charge_point_id, connection, response_timeout=RESPONSE_TIMEOUT)
        self._setup(charger)
        # What this connection last said: 2.0.1 reports the connector and the session apart.
        self._connector: ConnectorStatusEnumType | None = None
        self._charging: ChargingStateEnumType | None = None

    async def boot(self) -> tuple[bool, int]:
        answer = await self._request(v201_call.BootNotification(
            charging_station=v201_types.ChargingStationType(vendor_name=VENDOR, model=MODEL),
            reason=BootReasonEnumType.power_up))
        return answer.status == RegistrationStatusEnumType.accepted, int(answer.interval)

    async def heartbeat(self) -> None:
        await self._request(v201_call.Heartbeat())

    async def send(self, effect: Effect) -> None:
        charger = self.charger
        match effect:
            case StatusChanged():
                if effect.announce or effect.connector != self._connector:
                    await self._request(v201_call.StatusNotification(
                        timestamp=_now(), connector_status=effect.connector, evse_id=charger.connector_id,
                        connector_id=1))
                    self._connector = effect.connector
                if effect.transaction and effect.charging_state and effect.charging_state != self._charging:
                    await self._transaction_event(TransactionEventEnumType.updated,
                                                  TriggerReasonEnumType.charging_state_changed,
                                                  effect.transaction, charging_state=effect.charging_state)
                self._charging = effect.charging_state
            case TransactionStarted():
                id_token = None if effect.free_vend else v201_types.IdTokenType(
                    # the CSMS's own token type, handed back as it came (ocpp's dataclasses take the text)
                    id_token=effect.id_tag, type=cast(IdTokenEnumType, effect.id_token_type or IdTokenEnumType.central))
                await self._transaction_event(
                    TransactionEventEnumType.started, effect.trigger, effect.local_id,
                    charging_state=effect.charging_state, remote_start_id=effect.remote_start_id, id_token=id_token,
                    evse=v201_types.EVSEType(id=charger.connector_id, connector_id=1),
                    meter=self._meter(ReadingContextEnumType.transaction_begin, energy_wh=effect.meter_wh))
                self._charging = effect.charging_state
            case TransactionEnded():
                await self._transaction_event(
                    TransactionEventEnumType.ended, effect.trigger, effect.local_id,
                    charging_state=effect.charging_state, stopped_reason=ReasonEnumType(effect.reason.value),
                    meter=self._meter(ReadingContextEnumType.transaction_end, energy_wh=effect.meter_wh))
                charger.seq_nos.pop(effect.local_id, None)
                self._charging = None
            case MeterSample():
                await self._transaction_event(
                    TransactionEventEnumType.updated, TriggerReasonEnumType.meter_value_periodic, effect.local_id,
                    meter=self._meter(ReadingContextEnumType.sample_periodic, effect.energy_wh, effect.power_w))

    async def _transaction_event(self, event_type: TransactionEventEnumType, trigger: TriggerReasonEnumType,
                                 transaction_id: str, *, charging_state: ChargingStateEnumType | None = None,
                                 stopped_reason: ReasonEnumType | None = None, remote_start_id: int | None = None,
                                 meter: list[v201_types.MeterValueType] | None = None, **extra: Any) -> None:
        seq_no = self.charger.seq_nos.get(transaction_id, 0)
        self.charger.seq_nos[transaction_id] = seq_no + 1
        await self._request(v201_call.TransactionEvent(
            event_type=event_type, timestamp=_now(), trigger_reason=trigger, seq_no=seq_no,
            transaction_info=v201_types.TransactionType(
                transaction_id=transaction_id, charging_state=charging_state, stopped_reason=stopped_reason,
                remote_start_id=remote_start_id),
            meter_value=meter, **extra))

    def _meter(self, context: ReadingContextEnumType, energy_wh: float,
               power_w: float | None = None) -> list[v201_types.MeterValueType]:
        def sample(value: float, measurand: MeasurandEnumType, unit: StandardizedUnitsOfMeasureType,
                   multiplier: int | None = None) -> v201_types.SampledValueType:
            scaled = value / 10.0 ** (multiplier or 0)
            return v201_types.SampledValueType(
                value=round(scaled, 4), context=context, measurand=measurand,
                unit_of_measure=v201_types.UnitOfMeasureType(unit=unit, multiplier=multiplier))

        samples = [sample(energy_wh, MeasurandEnumType.energy_active_import_register,
                          StandardizedUnitsOfMeasureType.wh)]
        if power_w is not None:
            # The ``meter_kw`` / ``meter_multiplier`` controls: every form 2.0.1 allows for one reading.
            kw, multiplier = self.charger.meter_kw, self.charger.meter_multiplier or None
            samples.insert(0, sample(power_w / 1000 if kw else power_w, MeasurandEnumType.power_active_import,
                                     StandardizedUnitsOfMeasureType.kw if kw else StandardizedUnitsOfMeasureType.w,
                                     multiplier))
        return [v201_types.MeterValueType(timestamp=_now(), sampled_value=samples)]

    # -- CSMS calls ----------------------------------------------------------------

    @on(V201Action.set_charging_profile)
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict, call_unique_id: str,
                                **_: Any) -> v201_result.SetChargingProfile:
        if self.charger.rejecting:
            return v201_result.SetChargingProfile(status=ChargingProfileStatusEnumType.rejected)
        schedules = charging_profile.get("charging_schedule") or [{}]
        accepted = self._decided(call_unique_id, self.charger.set_profile(
            evse_id, charging_profile.get("charging_profile_purpose"), schedules[0],
            stack_level=charging_profile.get("stack_level", 0), profile_id=charging_profile.get("id"),
            valid_to=charging_profile.get("valid_to")))
        return v201_result.SetChargingProfile(
            status=ChargingProfileStatusEnumType.accepted if accepted else ChargingProfileStatusEnumType.rejected)

    @on(V201Action.get_composite_schedule)
    def on_get_composite_schedule(self, duration: int, evse_id: int, charging_rate_unit: str | None = None,
                                  **_: Any) -> v201_result.GetCompositeSchedule:
        known, limit_w = self.charger.composite_schedule(evse_id)
        if self.charger.rejecting or not known:
            return v201_result.GetCompositeSchedule(status=GenericStatusEnumType.rejected)
        if limit_w is None:  # no profile limits the EVSE: nothing to schedule
            return v201_result.GetCompositeSchedule(status=GenericStatusEnumType.accepted)
        unit, limit = _in_unit(limit_w, charging_rate_unit)
        return v201_result.GetCompositeSchedule(
            status=GenericStatusEnumType.accepted,
            schedule=v201_types.CompositeScheduleType(
                evse_id=evse_id, duration=duration, schedule_start=_now(),
                charging_rate_unit=ChargingRateUnitEnumType(unit),
                charging_schedule_period=[v201_types.ChargingSchedulePeriodType(start_period=0, limit=limit)]))

    @on(V201Action.clear_charging_profile)
    def on_clear_charging_profile(self, call_unique_id: str, charging_profile_criteria: dict | None = None,
                                  **_: Any) -> v201_result.ClearChargingProfile:
        if self.charger.rejecting:
            return v201_result.ClearChargingProfile(status=ClearChargingProfileStatusEnumType.unknown)
        criteria = charging_profile_criteria or {}
        cleared = self._decided(call_unique_id, self.charger.clear_profiles(
            criteria.get("evse_id"), criteria.get("charging_profile_purpose")))
        return v201_result.ClearChargingProfile(
            status=ClearChargingProfileStatusEnumType.accepted if cleared
                   else ClearChargingProfileStatusEnumType.unknown)

    @on(V201Action.request_start_transaction)
    def on_request_start(self, id_token: dict, remote_start_id: int, call_unique_id: str, evse_id: int | None = None,
                         charging_profile: dict | None = None, **_: Any) -> v201_result.RequestStartTransaction:
        if self.charger.rejecting:
            return v201_result.RequestStartTransaction(status=RequestStartStopStatusEnumType.rejected)
        schedules = (charging_profile or {}).get("charging_schedule") or [{}]
        accepted = self._decided(call_unique_id, self.charger.remote_start(
            evse_id, id_token.get("id_token", ""), id_token.get("type"), remote_start_id, schedules[0]))
        return v201_result.RequestStartTransaction(
            status=RequestStartStopStatusEnumType.accepted if accepted else RequestStartStopStatusEnumType.rejected)

    @on(V201Action.request_stop_transaction)
    def on_request_stop(self, transaction_id: str, call_unique_id: str, **_: Any) -> v201_result.RequestStopTransaction:
        if self.charger.rejecting:
            return v201_result.RequestStopTransaction(status=RequestStartStopStatusEnumType.rejected)
        accepted = self._decided(call_unique_id, self.charger.remote_stop(transaction_id))
        return v201_result.RequestStopTransaction(
            status=RequestStartStopStatusEnumType.accepted if accepted else RequestStartStopStatusEnumType.rejected)

    @on(V201Action.reset)
    def on_reset(self, type: str, call_unique_id: str, evse_id: int | None = None, **_: Any) -> v201_result.Reset:
        if self.charger.rejecting:
            return v201_result.Reset(status=ResetStatusEnumType.rejected)
        accepted = self._decided(call_unique_id, self.charger.remote_reset())
        return v201_result.Reset(status=ResetStatusEnumType.accepted if accepted else ResetStatusEnumType.rejected)

    @on(V201Action.change_availability)
    def on_change_availability(self, operational_status: str, call_unique_id: str, evse: dict | None = None,
                               **_: Any) -> v201_result.ChangeAvailability:
        if self.charger.rejecting:
            return v201_result.ChangeAvailability(status=ChangeAvailabilityStatusEnumType.rejected)
        status = self._decided(call_unique_id, self.charger.change_availability(
            (evse or {}).get("id", 0), operational_status == OperationalStatusEnumType.operative))
        return v201_result.ChangeAvailability(
            status=ChangeAvailabilityStatusEnumType(status.value) if status
                   else ChangeAvailabilityStatusEnumType.rejected)


def _in_unit(limit_w: float, unit: str | None) -> tuple[str, float]:
    """A limit in W as a composite schedule states it in the unit the CSMS asked for (W by default;
    A over three phases at the simulator's nominal voltage), one decimal as the 1.6 schema wants."""
    if unit == ChargingRateUnitType.amps:
        return ChargingRateUnitType.amps.value, round(limit_w / (VOLTS_PER_PHASE * 3), 1)
    return ChargingRateUnitType.watts.value, round(limit_w, 1)


POINTS: dict[str, type[V16Point] | type[V201Point]] = {"1.6": V16Point, "2.0.1": V201Point}
