"""The charge point simulator: its pure charger model, its control parsing, and one real
OCPP-J exchange per version against a tiny CSMS built from the ``ocpp`` package."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from dataclasses import asdict
from decimal import Decimal
from typing import Any, TypeVar

import msgpack
import pytest
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as V16Csms
from ocpp.v16 import call as v16_call
from ocpp.v16 import call_result as v16_result
from ocpp.v16 import datatypes as v16_types
from ocpp.v16 import enums as v16
from ocpp.v201 import ChargePoint as V201Csms
from ocpp.v201 import call as v201_call
from ocpp.v201 import call_result as v201_result
from ocpp.v201 import datatypes as v201_types
from ocpp.v201 import enums as v201
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from coordinator.site import AssetConfig, AssetKind, OcppChargerConfig, OcppListenConfig, SiteConfig
from simulators.applied_log import AppliedLog
from simulators.chargepoint import (
    ChargerModel,
    ControlListener,
    SimulatedCharger,
    chargers_of,
    default_url,
    parse_control,
)
from simulators.chargepoint.model import (
    FREE_VEND_ID_TAG,
    MeterSample,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
    profile_scope,
    schedule_limit_w,
)

E = TypeVar("E")
PASSWORD = "sixteen-bytes-at-least"
Status = v16.ChargePointStatus


def statuses(effects: list[Any]) -> list[str]:
    return [e.status.value for e in effects if isinstance(e, StatusChanged)]


def transaction_of(model: ChargerModel) -> str:
    assert model.local_id is not None, "no transaction"
    return model.local_id


def only(kind: type[E], effect: object) -> E:
    """``effect`` as a ``kind``: a failed assertion, not an attribute error, when it is another."""
    assert isinstance(effect, kind), effect
    return effect


def plugged_and_charging(watts: float = 11_000, **kwargs: Any) -> ChargerModel:
    model = ChargerModel(**kwargs)
    model.plug_in()
    model.set_limit(watts, "connector")
    return model


# -- the pure model ----------------------------------------------------------------


def test_plug_in_then_a_setpoint_starts_a_free_vend_transaction():
    model = ChargerModel()
    assert model.status is Status.available and model.power_w == 0
    effects = model.plug_in()
    assert statuses(effects) == ["Preparing"]
    preparing = only(StatusChanged, effects[0])
    assert preparing.connector is v201.ConnectorStatusEnumType.occupied and preparing.charging_state is None
    effects = model.set_limit(11_000, "connector")
    started, charging = effects
    started, charging = only(TransactionStarted, started), only(StatusChanged, charging)
    assert started.id_tag == FREE_VEND_ID_TAG and started.free_vend
    assert started.trigger is v201.TriggerReasonEnumType.charging_rate_changed
    assert started.charging_state is v201.ChargingStateEnumType.charging
    assert statuses([charging]) == ["Charging"] and charging.transaction == started.local_id
    assert model.in_transaction and model.power_w == 11_000


def test_setpoints_without_a_vehicle_or_for_the_station_start_nothing():
    model = ChargerModel()
    assert model.set_limit(11_000, "connector") == []
    assert not model.in_transaction
    model = ChargerModel()
    model.plug_in()
    assert model.set_limit(50_000, "station") == []  # a cap is not a reason to charge
    assert model.set_limit(0, "connector") == []
    assert model.status is Status.preparing


def test_plugging_in_with_a_setpoint_in_force_starts_at_once():
    model = ChargerModel()
    model.set_limit(7_000, "connector")
    effects = model.plug_in()
    assert statuses(effects) == ["Preparing", "Charging"]
    assert isinstance(effects[1], TransactionStarted) and model.power_w == 7_000


def test_limit_zero_suspends_and_a_limit_resumes_capped_at_22_kw():
    model = plugged_and_charging()
    effects = model.set_limit(0, "connector")
    assert statuses(effects) == ["SuspendedEVSE"]
    assert only(StatusChanged, effects[0]).charging_state is v201.ChargingStateEnumType.suspended_evse
    assert model.power_w == 0 and model.in_transaction
    assert statuses(model.set_limit(50_000, "connector")) == ["Charging"]
    assert model.power_w == 22_000
    assert model.set_limit(16_000, "connector") == []  # same status: nothing to report
    model.set_limit(9_000, "station")
    assert model.power_w == 9_000  # the lower of the connector and station limits


def test_ev_suspend_and_resume():
    model = plugged_and_charging()
    assert statuses(model.suspend()) == ["SuspendedEV"] and model.power_w == 0
    assert statuses(model.resume()) == ["Charging"] and model.power_w == 11_000
    idle = ChargerModel()
    assert idle.suspend() == [] and idle.status is Status.available


def test_unplug_ends_the_transaction_then_available():
    model = plugged_and_charging()
    local_id = model.local_id
    ended, available = model.unplug()
    ended, available = only(TransactionEnded, ended), only(StatusChanged, available)
    assert ended.local_id == local_id
    assert ended.reason is v16.Reason.ev_disconnected and ended.charging_state is None
    assert ended.trigger is v201.TriggerReasonEnumType.ev_communication_lost
    assert statuses([available]) == ["Available"] and available.connector is v201.ConnectorStatusEnumType.available
    assert not model.in_transaction and model.transaction_id is None


def test_remote_stop_needs_the_csms_transaction_id_then_finishing():
    model = plugged_and_charging()  # 1.6: the CSMS names the transaction
    assert model.remote_stop(42) == (False, [])  # not bound yet
    model.bind_transaction(transaction_of(model), 42)
    assert model.remote_stop(41) == (False, [])
    accepted, (ended, finishing) = model.remote_stop("42")  # ids travel as text too
    ended, finishing = only(TransactionEnded, ended), only(StatusChanged, finishing)
    assert accepted and ended.reason is v16.Reason.remote
    assert ended.charging_state is v201.ChargingStateEnumType.ev_connected
    assert statuses([finishing]) == ["Finishing"] and finishing.connector is v201.ConnectorStatusEnumType.occupied
    assert statuses(model.unplug()) == ["Available"]


def test_v201_models_name_their_own_transactions():
    model = plugged_and_charging(issues_transaction_ids=True)
    assert model.transaction_id == model.local_id and len(transaction_of(model)) <= 36
    accepted, _ = model.remote_stop(transaction_of(model))
    assert accepted


def test_remote_start_waits_for_the_cable():
    model = ChargerModel()
    accepted, effects = model.remote_start("BUS42", "Central", 7)
    assert accepted and effects == []
    assert model.remote_start("BUS43") == (False, [])  # one authorization at a time
    effects = model.plug_in()
    assert statuses(effects) == ["Preparing", "Charging"]
    started = only(TransactionStarted, effects[1])
    assert (started.id_tag, started.id_token_type, started.remote_start_id) == ("BUS42", "Central", 7)
    assert started.trigger is v201.TriggerReasonEnumType.cable_plugged_in
    assert model.power_w == 22_000  # no limit: the vehicle takes what it can
    assert model.remote_start("BUS44") == (False, [])  # busy


def test_fault_ends_the_session_and_reset_leaves_an_empty_connector():
    model = plugged_and_charging()
    ended, faulted = model.fault()
    ended, faulted = only(TransactionEnded, ended), only(StatusChanged, faulted)
    assert ended.reason is v16.Reason.other
    assert statuses([faulted]) == ["Faulted"] and faulted.error_code is v16.ChargePointErrorCode.ground_failure
    assert model.set_limit(11_000, "connector") == [] and model.remote_start("X") == (False, [])
    assert model.plug_in() == [] and model.power_w == 0
    effects = model.reset()
    assert statuses(effects) == ["Available"]
    assert only(StatusChanged, effects[0]).error_code is v16.ChargePointErrorCode.no_error
    assert not model.plugged


def test_availability_is_scheduled_during_a_transaction():
    model = plugged_and_charging()
    model.bind_transaction(transaction_of(model), 7)
    answer, effects = model.change_availability(False)
    assert answer is v16.AvailabilityStatus.scheduled and effects == []
    _, effects = model.remote_stop(7)
    assert statuses(effects) == ["Unavailable"]
    assert model.set_limit(11_000, "connector") == []  # inoperative: no free vend
    answer, effects = model.change_availability(True)
    assert answer is v16.AvailabilityStatus.accepted and statuses(effects) == ["Finishing"]


def test_meter_energy_accumulates_only_while_charging():
    model = ChargerModel()
    model.advance(3600)
    assert model.energy_wh == 0 and model.meter() is None
    model = plugged_and_charging(11_000)
    model.advance(1800)
    assert model.energy_wh == pytest.approx(5_500)
    model.set_limit(0, "connector")
    model.advance(600)
    sample = only(MeterSample, model.meter())
    assert sample.power_w == 0 and sample.energy_wh == pytest.approx(5_500)
    model.set_limit(22_000, "connector")
    model.advance(60)
    assert only(MeterSample, model.meter()).energy_wh == pytest.approx(5_500 + 22_000 / 60)
    ended, _ = model.fault()
    assert only(TransactionEnded, ended).meter_wh == 5_866


def test_charging_schedules_and_profile_scopes():
    def limit_w(unit: str, **period: object) -> float | None:
        return schedule_limit_w({"charging_rate_unit": unit, "charging_schedule_period": [period]})

    assert limit_w("W", start_period=0, limit=Decimal("7400.0")) == 7400.0
    assert limit_w("A", start_period=0, limit=16) == 16 * 230 * 3
    assert limit_w("A", limit=10, number_phases=1) == 2300
    assert schedule_limit_w({"charging_schedule_period": []}) is None
    assert schedule_limit_w({}) is None
    assert profile_scope(1, "TxDefaultProfile", 1, False) == "connector"
    assert profile_scope(0, "TxDefaultProfile", 1, False) == "connector"
    assert profile_scope(2, "TxDefaultProfile", 1, False) is None
    assert profile_scope(0, "ChargePointMaxProfile", 1, False) == "station"
    assert profile_scope(0, "ChargingStationMaxProfile", 1, False) == "station"
    assert profile_scope(1, "ChargePointMaxProfile", 1, False) is None
    assert profile_scope(1, "TxProfile", 1, False) is None
    assert profile_scope(1, "TxProfile", 1, True) == "connector"
    assert profile_scope(0, "ChargingStationExternalConstraints", 1, False) is None


# -- process pieces ----------------------------------------------------------------


def charger_asset(version: str = "1.6", cp_id: str = "CP001", password: str | None = PASSWORD) -> AssetConfig:
    ocpp = OcppChargerConfig(charge_point_id=cp_id, password=password, version=version)
    return AssetConfig(asset_id=f"ast_{cp_id.lower()}", kind=AssetKind.EV_CHARGER, gateway_id="ocpp",
                       max_power_kw=150.0, ocpp=ocpp)


def test_parse_control():
    packed = msgpack.packb({"charge_point_id": "CP001", "action": "slow", "value": 3})
    assert parse_control(packed) == ("CP001", "slow", 3.0)
    assert parse_control(msgpack.packb({"charge_point_id": "CP001", "action": "plug_in"})) == ("CP001", "plug_in", None)
    for bad in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"charge_point_id": 1, "action": "x"}),
                msgpack.packb({"charge_point_id": "CP001", "action": "slow", "value": "3"}),
                msgpack.packb({"charge_point_id": "CP001", "action": "x", "value": True}), b"\x92" * 5000):
        with pytest.raises(ValueError):
            parse_control(bad)


def test_control_messages_reach_the_charger_and_bad_ones_are_only_logged(caplog):
    charger = SimulatedCharger(charger_asset(), "ws://127.0.0.1:1")
    listener = ControlListener("ocpp", {"CP001": charger}, asyncio.new_event_loop())
    with caplog.at_level(logging.WARNING):
        listener.dispatch(b"garbage\xc1")
        listener.dispatch(msgpack.packb({"charge_point_id": "CP999", "action": "plug_in"}))
        listener.dispatch(msgpack.packb({"charge_point_id": "CP001", "action": "explode"}))
    assert "unreadable control message" in caplog.text and "CP999" in caplog.text and "explode" in caplog.text
    listener.dispatch(msgpack.packb({"charge_point_id": "CP001", "action": "plug_in"}))
    listener.dispatch(msgpack.packb({"charge_point_id": "CP001", "action": "reject", "value": 1}))
    listener.dispatch(msgpack.packb({"charge_point_id": "CP001", "action": "slow", "value": 2.5}))
    assert charger.model.plugged and charger.rejecting and charger.slow_seconds == 2.5
    assert statuses(list(charger.outbox)) == ["Preparing"]


def test_urls_and_charger_selection():
    assert default_url(OcppListenConfig()) == "ws://127.0.0.1:9000"
    assert default_url(OcppListenConfig(host="10.0.0.5", port=9443, tls_cert="c.pem", tls_key="k.pem")) == "wss://10.0.0.5:9443"
    assert default_url(OcppListenConfig(host="::1", port=9000)) == "ws://[::1]:9000"
    site = SiteConfig.model_validate({
        "site_id": "sit_t",
        "gateways": [{"gateway_id": "ocpp", "protocol": "ocpp"}],
        "assets": [charger_asset(cp_id="CP001").model_dump(), charger_asset("2.0.1", "CP002").model_dump(),
                   {"asset_id": "ast_plain", "kind": "ev_charger", "gateway_id": "ocpp", "max_power_kw": 22.0}],
    })
    assert [a.ocpp.charge_point_id for a in chargers_of(site, "ocpp") if a.ocpp] == ["CP001", "CP002"]
    assert [a.asset_id for a in chargers_of(site, "ocpp", ["CP002"])] == ["ast_cp002"]
    with pytest.raises(ValueError, match="CP404"):
        chargers_of(site, "ocpp", ["CP404"])
    charger = SimulatedCharger(charger_asset("2.0.1", "CP002"), "ws://h:1/")
    assert charger.url == "ws://h:1/CP002" and charger.subprotocol == "ocpp2.0.1"


# -- real OCPP-J over websockets -----------------------------------------------------

V16_TRANSACTION_ID = 42


class Recorder:
    """What the CSMS received, in order, with a way to wait for the next matching message."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def add(self, action: str, payload: dict[str, Any]) -> None:
        self.messages.append((action, payload))

    async def wait(self, action: str, where=lambda p: True, timeout: float = 5.0) -> dict[str, Any]:
        # Polling keeps this free of wake-up races; 10 ms is far below what the tests wait for.
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for got, payload in self.messages:
                if got == action and where(payload):
                    return payload
            if asyncio.get_running_loop().time() > deadline:
                seen = [m[0] for m in self.messages]
                raise AssertionError(f"no {action} as expected within {timeout:g} s; saw {seen}")
            await asyncio.sleep(0.01)


class Csms16(V16Csms):
    def __init__(self, cp_id: str, connection: Any, seen: Recorder) -> None:
        super().__init__(cp_id, connection)
        self.seen = seen

    @on(v16.Action.boot_notification)
    def on_boot(self, **payload: Any) -> v16_result.BootNotification:
        self.seen.add("BootNotification", payload)
        return v16_result.BootNotification(current_time="2025-01-01T00:00:00Z", interval=60,
                                           status=v16.RegistrationStatus.accepted)

    @on(v16.Action.status_notification)
    def on_status(self, **payload: Any) -> v16_result.StatusNotification:
        self.seen.add("StatusNotification", payload)
        return v16_result.StatusNotification()

    @on(v16.Action.start_transaction)
    def on_start(self, **payload: Any) -> v16_result.StartTransaction:
        self.seen.add("StartTransaction", payload)
        return v16_result.StartTransaction(transaction_id=V16_TRANSACTION_ID,
                                           id_tag_info=v16_types.IdTagInfo(status=v16.AuthorizationStatus.accepted))

    @on(v16.Action.stop_transaction)
    def on_stop(self, **payload: Any) -> v16_result.StopTransaction:
        self.seen.add("StopTransaction", payload)
        return v16_result.StopTransaction()

    @on(v16.Action.meter_values)
    def on_meter_values(self, **payload: Any) -> v16_result.MeterValues:
        self.seen.add("MeterValues", payload)
        return v16_result.MeterValues()

    @on(v16.Action.heartbeat)
    def on_heartbeat(self) -> v16_result.Heartbeat:
        return v16_result.Heartbeat(current_time="2025-01-01T00:00:00Z")


class Csms201(V201Csms):
    def __init__(self, cp_id: str, connection: Any, seen: Recorder) -> None:
        super().__init__(cp_id, connection)
        self.seen = seen

    @on(v201.Action.boot_notification)
    def on_boot(self, **payload: Any) -> v201_result.BootNotification:
        self.seen.add("BootNotification", payload)
        return v201_result.BootNotification(current_time="2025-01-01T00:00:00Z", interval=60,
                                            status=v201.RegistrationStatusEnumType.accepted)

    @on(v201.Action.status_notification)
    def on_status(self, **payload: Any) -> v201_result.StatusNotification:
        self.seen.add("StatusNotification", payload)
        return v201_result.StatusNotification()

    @on(v201.Action.transaction_event)
    def on_transaction_event(self, **payload: Any) -> v201_result.TransactionEvent:
        self.seen.add("TransactionEvent", payload)
        return v201_result.TransactionEvent()

    @on(v201.Action.heartbeat)
    def on_heartbeat(self) -> v201_result.Heartbeat:
        return v201_result.Heartbeat(current_time="2025-01-01T00:00:00Z")


def power_of(meter_values: list[dict[str, Any]]) -> float | None:
    for meter_value in meter_values or []:
        for sample in meter_value["sampled_value"]:
            if sample.get("measurand") == "Power.Active.Import":
                return float(sample["value"])
    return None


def v16_profile(watts: float) -> v16_call.SetChargingProfile:
    return v16_call.SetChargingProfile(connector_id=1, cs_charging_profiles=v16_types.ChargingProfile(
        charging_profile_id=1, stack_level=0,
        charging_profile_purpose=v16.ChargingProfilePurposeType.tx_default_profile,
        charging_profile_kind=v16.ChargingProfileKindType.absolute,
        charging_schedule=v16_types.ChargingSchedule(
            charging_rate_unit=v16.ChargingRateUnitType.watts,
            charging_schedule_period=[v16_types.ChargingSchedulePeriod(start_period=0, limit=watts)])))


def v201_profile(watts: float) -> v201_call.SetChargingProfile:
    return v201_call.SetChargingProfile(evse_id=1, charging_profile=v201_types.ChargingProfileType(
        id=1, stack_level=0, charging_profile_purpose=v201.ChargingProfilePurposeEnumType.tx_default_profile,
        charging_profile_kind=v201.ChargingProfileKindEnumType.absolute,
        charging_schedule=[v201_types.ChargingScheduleType(
            id=1, charging_rate_unit=v201.ChargingRateUnitEnumType.watts,
            charging_schedule_period=[v201_types.ChargingSchedulePeriodType(start_period=0, limit=watts)])]))


async def run_against_csms(version: str, scenario, **charger_options: Any) -> dict[str, Any]:
    """Serve a CSMS on a free port, run one simulated charger against it, play ``scenario``."""
    seen, points = Recorder(), asyncio.Queue[Any]()
    auth: dict[str, Any] = {}
    negotiated: dict[str, Any] = {}

    def admit(connection, request):
        auth["header"] = request.headers.get("Authorization")
        auth["path"] = request.path

    async def serve(connection) -> None:
        negotiated["subprotocol"] = connection.subprotocol
        csms = (Csms16 if connection.subprotocol == "ocpp1.6" else Csms201)("CP001", connection, seen)
        await points.put(csms)
        with contextlib.suppress(ConnectionClosed):  # the test closes it
            await csms.start()

    async with websockets.serve(serve, "127.0.0.1", 0, subprotocols=[Subprotocol("ocpp1.6"), Subprotocol("ocpp2.0.1")],
                                process_request=admit) as server:
        port = server.sockets[0].getsockname()[1]
        charger = SimulatedCharger(charger_asset(version), f"ws://127.0.0.1:{port}", meter_interval=0.2,
                                   **charger_options)
        task = asyncio.create_task(charger.run())
        try:
            boot = await seen.wait("BootNotification")
            csms = await asyncio.wait_for(points.get(), 5)
            await scenario(charger, csms, seen)
        finally:
            # Powered down as the simulator's process does (stop, then cancel): a bare cancel
            # during the websocket's closing handshake once left the test waiting for 40 s.
            await charger.stop()
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            assert done, "the simulated charger did not stop within 5 s"
    return {"auth": auth, "boot": boot, "subprotocol": negotiated["subprotocol"], "seen": seen}


@pytest.mark.timeout(10)
def test_ocpp16_charger_boots_takes_a_setpoint_and_charges():
    async def scenario(charger: SimulatedCharger, csms: Csms16, seen: Recorder) -> None:
        await seen.wait("StatusNotification", lambda p: p["status"] == "Available" and p["connector_id"] == 1)
        answer = await csms.call(v16_profile(11_000), suppress=False)
        assert answer.status == v16.ChargingProfileStatus.accepted
        charger.apply_control("plug_in")
        await seen.wait("StatusNotification", lambda p: p["status"] == "Preparing")
        start = await seen.wait("StartTransaction")
        assert start["id_tag"] == FREE_VEND_ID_TAG and start["connector_id"] == 1
        await seen.wait("StatusNotification", lambda p: p["status"] == "Charging")
        meter = await seen.wait("MeterValues", lambda p: power_of(p["meter_value"]))
        assert meter["transaction_id"] == V16_TRANSACTION_ID
        assert power_of(meter["meter_value"]) == pytest.approx(11_000)
        wrong = await csms.call(v16_call.RemoteStopTransaction(transaction_id=7), suppress=False)
        assert wrong.status == v16.RemoteStartStopStatus.rejected
        stop = await csms.call(v16_call.RemoteStopTransaction(transaction_id=V16_TRANSACTION_ID), suppress=False)
        assert stop.status == v16.RemoteStartStopStatus.accepted
        stopped = await seen.wait("StopTransaction")
        assert stopped["transaction_id"] == V16_TRANSACTION_ID and stopped["reason"] == "Remote"
        await seen.wait("StatusNotification", lambda p: p["status"] == "Finishing")
        charger.apply_control("reject", 1)
        refused = await csms.call(v16_profile(7_000), suppress=False)
        assert refused.status == v16.ChargingProfileStatus.rejected

    result = asyncio.run(run_against_csms("1.6", scenario))
    assert result["subprotocol"] == "ocpp1.6"
    assert result["auth"]["path"] == "/CP001"
    assert result["auth"]["header"] == "Basic " + base64.b64encode(f"CP001:{PASSWORD}".encode()).decode()
    assert result["boot"]["charge_point_vendor"]


@pytest.mark.timeout(10)
def test_ocpp201_charger_boots_takes_a_setpoint_and_charges():
    async def scenario(charger: SimulatedCharger, csms: Csms201, seen: Recorder) -> None:
        await seen.wait("StatusNotification", lambda p: p["connector_status"] == "Available"
                        and p["evse_id"] == 1 and p["connector_id"] == 1)
        answer = await csms.call(v201_profile(11_000), suppress=False)
        assert answer.status == v201.ChargingProfileStatusEnumType.accepted
        charger.apply_control("plug_in")
        await seen.wait("StatusNotification", lambda p: p["connector_status"] == "Occupied")
        started = await seen.wait("TransactionEvent", lambda p: p["event_type"] == "Started")
        assert started["transaction_info"]["charging_state"] == "Charging" and started["seq_no"] == 0
        transaction_id = started["transaction_info"]["transaction_id"]
        meter = await seen.wait("TransactionEvent", lambda p: p["event_type"] == "Updated"
                                and power_of(p.get("meter_value")))
        assert power_of(meter["meter_value"]) == pytest.approx(11_000)
        assert meter["transaction_info"]["transaction_id"] == transaction_id and meter["seq_no"] >= 1
        charger.apply_control("suspend")
        await seen.wait("TransactionEvent", lambda p: p["transaction_info"].get("charging_state") == "SuspendedEV")
        stop = await csms.call(v201_call.RequestStopTransaction(transaction_id=transaction_id), suppress=False)
        assert stop.status == v201.RequestStartStopStatusEnumType.accepted
        ended = await seen.wait("TransactionEvent", lambda p: p["event_type"] == "Ended")
        assert ended["transaction_info"]["stopped_reason"] == "Remote"
        charger.apply_control("unplug")
        await seen.wait("StatusNotification", lambda p: p["connector_status"] == "Available" and seen.messages.index(
            ("StatusNotification", p)) > seen.messages.index(("TransactionEvent", ended)))

    result = asyncio.run(run_against_csms("2.0.1", scenario))
    assert result["subprotocol"] == "ocpp2.0.1"
    assert result["boot"]["reason"] == "PowerUp"


@pytest.mark.timeout(10)
def test_refused_charger_logs_clearly_and_keeps_trying(caplog):
    async def refuse(connection, request):
        return connection.respond(401, "authentication required\n")

    async def never_reached(connection: ServerConnection) -> None:
        raise AssertionError("the handshake was refused")

    async def main() -> None:
        async with websockets.serve(never_reached, "127.0.0.1", 0, process_request=refuse) as server:
            port = server.sockets[0].getsockname()[1]
            charger = SimulatedCharger(charger_asset(), f"ws://127.0.0.1:{port}")
            task = asyncio.create_task(charger.run())
            await asyncio.sleep(0.5)
            assert not task.done()  # never gives up, never crashes
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert "CP001: refused by the CSMS: HTTP 401" in caplog.text
    assert PASSWORD not in caplog.text


# -- device-side evidence (--applied-log) and the mid-call hang-up ---------------------


def applied_lines(path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.timeout(40)
def test_applied_log_names_each_setpoint_and_a_hangup_applies_but_never_answers(tmp_path):
    log_path = tmp_path / "applied.jsonl"

    async def scenario(charger: SimulatedCharger, csms: Csms16, seen: Recorder) -> None:
        charger.applied_log = AppliedLog(log_path)
        assert (await csms.call(v16_profile(11_000), suppress=False)).status == v16.ChargingProfileStatus.accepted
        await csms.call(v16_profile(11_000), suppress=False)  # the same value again: a repeated write
        charger.apply_control("hangup", 0.1)
        with pytest.raises(asyncio.TimeoutError):  # decided and applied, but the answer never comes
            await asyncio.wait_for(csms.call(v16_profile(7_000), suppress=False), 2)
        await seen.wait("BootNotification", lambda p: sum(m[0] == "BootNotification" for m in seen.messages) >= 2)

    asyncio.run(run_against_csms("1.6", scenario))
    lines = applied_lines(log_path)
    assert [(x["asset_id"], x["power_kw"], x["changed"], x["command_type"]) for x in lines] == [
        ("ast_cp001", 11.0, True, "SET_CHARGE_RATE"),
        ("ast_cp001", 11.0, False, "SET_CHARGE_RATE"),
        ("ast_cp001", 7.0, True, "SET_CHARGE_RATE"),
    ]


def test_applied_log_appends_across_restarts_and_marks_each_boot(tmp_path):
    path = tmp_path / "applied.jsonl"
    first = AppliedLog(path)
    first.boot(["ast_a", "ast_b"])
    first.applied("ast_a", 3.5, True)
    # kill -9: no close; the line is already in the file
    assert applied_lines(path)[-1]["power_kw"] == 3.5
    second = AppliedLog(path)
    second.boot(["ast_a"])
    second.applied("ast_a", 3.5, True)
    lines = applied_lines(path)
    assert [("boot" in x, x["asset_id"]) for x in lines] == [
        (True, "ast_a"), (True, "ast_b"), (False, "ast_a"), (True, "ast_a"), (False, "ast_a")]
    first.close()
    second.close()


# -- leases: stacked profiles, validTo -------------------------------------------------


def test_a_setpoint_above_the_fallback_is_in_force_until_its_valid_to():
    model = ChargerModel()
    model.set_limit(3_700, "connector", stack_level=0, profile_id=1502)
    model.set_limit(11_000, "connector", stack_level=1, profile_id=1002, valid_to=100.0)
    assert model.connector_limit_w == 11_000 and model.next_expiry == 100.0
    model.expire(99.9)
    assert model.connector_limit_w == 11_000
    model.expire(100.0)
    assert model.connector_limit_w == 3_700 and model.next_expiry is None  # the fallback, by the charger alone


def test_a_renewal_replaces_the_profile_with_the_same_id():
    model = ChargerModel()
    model.set_limit(0, "connector", stack_level=0, profile_id=1502)
    model.set_limit(11_000, "connector", stack_level=1, profile_id=1002, valid_to=100.0)
    model.set_limit(11_000, "connector", stack_level=1, profile_id=1002, valid_to=200.0)
    model.expire(150.0)
    assert model.connector_limit_w == 11_000 and len(model.profiles["connector"]) == 2


def test_an_expiry_to_a_zero_fallback_suspends_the_session():
    model = ChargerModel()
    model.set_limit(0, "connector", stack_level=0, profile_id=1502)
    model.set_limit(11_000, "connector", stack_level=1, profile_id=1002, valid_to=100.0)
    model.plug_in()
    assert model.status is Status.charging
    assert statuses(model.expire(100.0)) == ["SuspendedEVSE"]
    assert model.power_w == 0.0


def test_without_a_fallback_an_expired_setpoint_leaves_no_limit():
    model = ChargerModel()
    model.set_limit(11_000, "connector", stack_level=1, valid_to=100.0)
    model.expire(100.0)
    assert model.connector_limit_w is None


# -- composite schedules, "accepted without applying", meter units -------------------


def v16_composite(connector_id: int = 1, unit=v16.ChargingRateUnitType.watts) -> v16_call.GetCompositeSchedule:
    return v16_call.GetCompositeSchedule(connector_id=connector_id, duration=60, charging_rate_unit=unit)


def v201_composite(evse_id: int = 1, unit=v201.ChargingRateUnitEnumType.watts) -> v201_call.GetCompositeSchedule:
    return v201_call.GetCompositeSchedule(duration=60, evse_id=evse_id, charging_rate_unit=unit)


def v16_station_max(watts: float) -> v16_call.SetChargingProfile:
    return v16_call.SetChargingProfile(connector_id=0, cs_charging_profiles=v16_types.ChargingProfile(
        charging_profile_id=2, stack_level=0,
        charging_profile_purpose=v16.ChargingProfilePurposeType.charge_point_max_profile,
        charging_profile_kind=v16.ChargingProfileKindType.absolute,
        charging_schedule=v16_types.ChargingSchedule(
            charging_rate_unit=v16.ChargingRateUnitType.watts,
            charging_schedule_period=[v16_types.ChargingSchedulePeriod(start_period=0, limit=watts)])))


def v16_limit(answer: Any) -> float:
    return float(answer.charging_schedule["charging_schedule_period"][0]["limit"])


def v201_limit(answer: Any) -> float:
    return float(answer.schedule["charging_schedule_period"][0]["limit"])


@pytest.mark.timeout(10)
def test_ocpp16_composite_schedule_shows_the_limit_in_force_and_a_lying_charger_is_caught():
    async def scenario(charger: SimulatedCharger, csms: Csms16, seen: Recorder) -> None:
        await seen.wait("StatusNotification")
        empty = await csms.call(v16_composite(), suppress=False)  # schema-checked by the package
        assert empty.status == v16.GetCompositeScheduleStatus.accepted and empty.charging_schedule is None
        await csms.call(v16_profile(11_000), suppress=False)
        assert v16_limit(await csms.call(v16_composite(), suppress=False)) == 11_000
        await csms.call(v16_station_max(7_000), suppress=False)
        shown = await csms.call(v16_composite(), suppress=False)
        assert v16_limit(shown) == 7_000 and shown.charging_schedule["charging_rate_unit"] == "W"
        in_amps = await csms.call(v16_composite(unit=v16.ChargingRateUnitType.amps), suppress=False)
        assert v16_limit(in_amps) == pytest.approx(7_000 / 690, abs=0.05)
        assert in_amps.charging_schedule["charging_rate_unit"] == "A"
        other = await csms.call(v16_composite(connector_id=2), suppress=False)
        assert other.status == v16.GetCompositeScheduleStatus.rejected
        charger.apply_control("ignore_profiles", 1)
        answer = await csms.call(v16_profile(3_000), suppress=False)
        assert answer.status == v16.ChargingProfileStatus.accepted  # says so ...
        assert v16_limit(await csms.call(v16_composite(), suppress=False)) == 7_000  # ... and does not
        assert charger.model.connector_limit_w == 11_000

    asyncio.run(run_against_csms("1.6", scenario))


@pytest.mark.timeout(10)
def test_ocpp201_composite_schedule_shows_the_limit_in_force_and_a_lying_charger_is_caught():
    async def scenario(charger: SimulatedCharger, csms: Csms201, seen: Recorder) -> None:
        await seen.wait("StatusNotification")
        empty = await csms.call(v201_composite(), suppress=False)
        assert empty.status == v201.GenericStatusEnumType.accepted and empty.schedule is None
        await csms.call(v201_profile(11_000), suppress=False)
        shown = await csms.call(v201_composite(), suppress=False)
        assert v201_limit(shown) == 11_000 and shown.schedule["evse_id"] == 1
        assert shown.schedule["charging_rate_unit"] == "W"
        other = await csms.call(v201_composite(evse_id=2), suppress=False)
        assert other.status == v201.GenericStatusEnumType.rejected
        charger.apply_control("ignore_profiles", 1)
        answer = await csms.call(v201_profile(3_000), suppress=False)
        assert answer.status == v201.ChargingProfileStatusEnumType.accepted
        assert v201_limit(await csms.call(v201_composite(), suppress=False)) == 11_000
        charger.apply_control("ignore_profiles", 0)
        await csms.call(v201_profile(3_000), suppress=False)
        assert v201_limit(await csms.call(v201_composite(), suppress=False)) == 3_000

    asyncio.run(run_against_csms("2.0.1", scenario))


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("version", "controls"), [
    ("1.6", [("meter_kw", 1)]),
    ("2.0.1", [("meter_kw", 1)]),
    ("2.0.1", [("meter_multiplier", 3)]),
    ("2.0.1", [("meter_kw", 1), ("meter_multiplier", -3)]),
])
def test_meter_units_the_simulator_sends_read_the_same_at_the_gateway(version, controls):
    from coordinator.protocols.ocpp.meter import power_kw

    async def scenario(charger: SimulatedCharger, csms: Any, seen: Recorder) -> None:
        for action, value in controls:
            charger.apply_control(action, value)
        await csms.call(v16_profile(11_000) if version == "1.6" else v201_profile(11_000), suppress=False)
        charger.apply_control("plug_in")
        action = "MeterValues" if version == "1.6" else "TransactionEvent"
        meter = await seen.wait(action, lambda p: power_kw(p.get("meter_value")))
        assert power_kw(meter["meter_value"]) == pytest.approx(11.0)
        power = next(s for s in meter["meter_value"][0]["sampled_value"] if s["measurand"] == "Power.Active.Import")
        measure = power.get("unit_of_measure") or {"unit": power.get("unit")}
        assert (measure["unit"], measure.get("multiplier", 0)) != ("W", 0)  # really another form on the wire

    asyncio.run(run_against_csms(version, scenario))


@pytest.mark.timeout(20)
@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_answers_without_validation_are_the_packages_own(version):
    """--no-validation answers through the simulator's lean path: the same JSON as the package's."""
    if version == "1.6":
        calls = [v16_profile(11_000), v16_call.GetCompositeSchedule(connector_id=1, duration=60),
                 v16_call.GetCompositeSchedule(connector_id=1, duration=60,
                                                charging_rate_unit=v16.ChargingRateUnitType.amps),
                 v16_call.ClearChargingProfile(connector_id=1),
                 v16_call.GetCompositeSchedule(connector_id=1, duration=60),
                 v16_call.RemoteStopTransaction(transaction_id=7)]
    else:
        calls = [v201_profile(11_000), v201_call.GetCompositeSchedule(duration=60, evse_id=1),
                 v201_call.ClearChargingProfile(charging_profile_criteria=v201_types.ClearChargingProfileType(
                     evse_id=1)),
                 v201_call.RequestStopTransaction(transaction_id="none")]

    def timeless(value: Any) -> Any:  # the answers' own clock readings differ from run to run
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items() if k not in ("schedule_start", "start_schedule")}
        return [timeless(v) for v in value] if isinstance(value, list) else value

    def answers(validate: bool) -> list[Any]:
        got: list[Any] = []

        async def scenario(charger: SimulatedCharger, csms: Any, seen: Recorder) -> None:
            await seen.wait("StatusNotification")
            for call in calls:
                got.append(timeless(asdict(await csms.call(call, suppress=False))))

        asyncio.run(run_against_csms(version, scenario, validate_calls=validate))
        return got

    assert answers(validate=False) == answers(validate=True)
