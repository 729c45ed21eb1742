import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import ocpp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema.validators import validator_for

from coordinator.adapters import OCPPAdapter, ProtocolAdapter, TranslationError
from coordinator.base import Command, CommandType
from coordinator.protocols.ocpp.payload import call_payload

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
SCHEMAS = Path(ocpp.__file__).parent
VERSIONS = ["1.6", "2.0.1"]


def schema_errors(version: str, action: str, payload: dict[str, Any]) -> list[str]:
    """Validate like the ocpp package does: 1.6 floats parsed as Decimal so multipleOf 0.1 is exact."""
    parse_float: type[Decimal] | type[float]
    if version == "1.6":
        path, parse_float = SCHEMAS / "v16" / "schemas" / f"{action}.json", Decimal
    else:
        path, parse_float = SCHEMAS / "v201" / "schemas" / f"{action}Request.json", float
    schema = json.loads(path.read_text(), parse_float=parse_float)
    instance = json.loads(json.dumps(payload), parse_float=parse_float)
    return [e.message for e in validator_for(schema)(schema).iter_errors(instance)]


def cmd(ctype: CommandType, at: datetime = T0, **params: Any) -> Command:
    return Command("ast_ev_001", ctype, params, at)


def translate(version: str, ctype: CommandType, connector_id: int = 1, **params: Any) -> dict[str, Any]:
    out = OCPPAdapter("ocpp_site_1", version, connector_id).translate(cmd(ctype, **params))
    assert out["ocpp_version"] == version
    assert schema_errors(version, out["action"], out["payload"]) == []
    return out


def test_is_a_protocol_adapter():
    adapter = OCPPAdapter("ocpp_site_1")
    assert isinstance(adapter, ProtocolAdapter)
    identity = (adapter.protocol, adapter.gateway_id, adapter.ocpp_version, adapter.connector_id)
    assert identity == ("ocpp", "ocpp_site_1", "1.6", 1)


ALL_SUPPORTED: list[tuple[CommandType, dict[str, Any], str, str]] = [
    (CommandType.SET_CHARGE_RATE, {"power_kw": 7.4}, "SetChargingProfile", "SetChargingProfile"),
    (CommandType.SET_POWER_LIMIT, {"power_kw": 50.0}, "SetChargingProfile", "SetChargingProfile"),
    (CommandType.START_CHARGING, {}, "RemoteStartTransaction", "RequestStartTransaction"),
    (CommandType.START_CHARGING, {"id_tag": "fleet-42"}, "RemoteStartTransaction", "RequestStartTransaction"),
    (CommandType.STOP_CHARGING, {"transaction_id": 17}, "RemoteStopTransaction", "RequestStopTransaction"),
    (CommandType.CHANGE_AVAILABILITY, {"available": True}, "ChangeAvailability", "ChangeAvailability"),
    (CommandType.CHANGE_AVAILABILITY, {"availability": "Inoperative"}, "ChangeAvailability", "ChangeAvailability"),
]


@pytest.mark.parametrize("connector_id", [0, 1, 2])
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("ctype", "params", "action_16", "action_201"), ALL_SUPPORTED)
def test_every_payload_validates_against_the_official_schema(
    version, connector_id, ctype, params, action_16, action_201
):
    out = translate(version, ctype, connector_id, **params)  # validates
    assert out["action"] == (action_16 if version == "1.6" else action_201)


def test_schema_check_is_not_vacuous():
    assert schema_errors("1.6", "SetChargingProfile", {"connectorId": 1}) != []
    assert schema_errors("2.0.1", "RequestStopTransaction", {"transactionId": 5}) != []


@pytest.mark.parametrize("version", VERSIONS)
def test_payload_is_plain_json(version):
    def walk(value: Any) -> None:
        assert not isinstance(value, Enum)
        assert type(value) in (dict, list, str, int, float)
        if isinstance(value, dict):
            assert all(type(k) is str for k in value)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for ctype, params, *_ in ALL_SUPPORTED:
        out = translate(version, ctype, **params)
        walk(out)
        assert json.loads(json.dumps(out)) == out


def test_charge_rate_v16_is_a_tx_default_profile_in_watts():
    out = translate("1.6", CommandType.SET_CHARGE_RATE, power_kw=7.4)
    assert out == {
        "action": "SetChargingProfile",
        "ocpp_version": "1.6",
        "payload": {
            "connectorId": 1,
            "csChargingProfiles": {
                "chargingProfileId": 1002,
                "stackLevel": 1,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {
                    "chargingRateUnit": "W",
                    "startSchedule": "2025-01-15T08:00:00Z",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7400.0}],
                },
            },
        },
    }


def test_charge_rate_v201_is_a_tx_default_profile_in_watts():
    out = translate("2.0.1", CommandType.SET_CHARGE_RATE, connector_id=2, power_kw=11)
    assert out["payload"] == {
        "evseId": 2,
        "chargingProfile": {
            "id": 1003,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": [
                {
                    "id": 1003,
                    "chargingRateUnit": "W",
                    "startSchedule": "2025-01-15T08:00:00Z",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}],
                }
            ],
        },
    }


def profile(out: dict[str, Any]) -> dict[str, Any]:
    payload = out["payload"]
    return payload["csChargingProfiles"] if out["ocpp_version"] == "1.6" else payload["chargingProfile"]


def schedule(out: dict[str, Any]) -> dict[str, Any]:
    sched = profile(out)["chargingSchedule"]
    return sched if out["ocpp_version"] == "1.6" else sched[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_new_setpoint_replaces_the_previous_one(version):
    # Same chargingProfileId, stackLevel and purpose on the same connector: the charger replaces it.
    adapter = OCPPAdapter("ocpp_site_1", version, connector_id=1)
    first = adapter.translate(cmd(CommandType.SET_CHARGE_RATE, power_kw=22.0))
    second = adapter.translate(cmd(CommandType.SET_CHARGE_RATE, T0 + timedelta(minutes=15), power_kw=0.0))
    keys = ("chargingProfileId", "id")[version != "1.6"], "stackLevel", "chargingProfilePurpose"
    assert [profile(first)[k] for k in keys] == [profile(second)[k] for k in keys]
    assert schedule(second)["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 0.0}]
    assert schedule(second)["startSchedule"] == "2025-01-15T08:15:00Z"


@pytest.mark.parametrize("version", VERSIONS)
def test_profile_ids_never_collide_between_connectors_or_with_the_station_limit(version):
    id_key = "chargingProfileId" if version == "1.6" else "id"
    ids = [
        profile(OCPPAdapter("g", version, connector_id=c).translate(
            cmd(CommandType.SET_CHARGE_RATE, power_kw=1)))[id_key]
        for c in range(4)
    ]
    station = profile(OCPPAdapter("g", version, connector_id=1).translate(
        cmd(CommandType.SET_POWER_LIMIT, power_kw=1)))[id_key]
    assert len({*ids, station}) == 5


@pytest.mark.parametrize(
    ("version", "target_key", "purpose"),
    [("1.6", "connectorId", "ChargePointMaxProfile"), ("2.0.1", "evseId", "ChargingStationMaxProfile")],
)
def test_power_limit_is_the_charger_wide_max_profile(version, target_key, purpose):
    out = translate(version, CommandType.SET_POWER_LIMIT, connector_id=2, power_kw=43.5)
    assert out["payload"][target_key] == 0
    assert profile(out)["chargingProfilePurpose"] == purpose
    assert schedule(out)["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 43500.0}]


def test_start_schedule_is_the_slot_start_in_utc():
    paris = timezone(timedelta(hours=1))
    at = datetime(2025, 1, 15, 9, 0, 30, 999, tzinfo=paris)
    out = OCPPAdapter("g").translate(cmd(CommandType.SET_CHARGE_RATE, at, power_kw=1))
    assert schedule(out)["startSchedule"] == "2025-01-15T08:00:30Z"


@pytest.mark.parametrize(("power_kw", "limit"), [
    (7.4, 7400.0), (16.25, 16250.0), (0.01234, 12.3), (0.00004, 0.0), (350, 350000.0),
])
def test_limit_is_watts_with_at_most_one_decimal(power_kw, limit):
    out = translate("1.6", CommandType.SET_CHARGE_RATE, power_kw=power_kw)
    assert schedule(out)["chargingSchedulePeriod"][0]["limit"] == limit


@given(st.floats(min_value=0, max_value=2000, allow_nan=False))
def test_any_valid_power_passes_the_16_multiple_of_check(power_kw):
    out = OCPPAdapter("g").translate(cmd(CommandType.SET_CHARGE_RATE, power_kw=power_kw))
    assert schema_errors("1.6", "SetChargingProfile", out["payload"]) == []
    half_a_step = 0.05 + 1e-6  # of 0.1 W
    assert schedule(out)["chargingSchedulePeriod"][0]["limit"] == pytest.approx(power_kw * 1000, abs=half_a_step)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("ctype", [CommandType.SET_CHARGE_RATE, CommandType.SET_POWER_LIMIT])
@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "needs parameter power_kw"),
        ({"power_kw": None}, "needs parameter power_kw"),
        ({"power_kw": -1.0}, "finite and >= 0"),
        ({"power_kw": math.nan}, "finite and >= 0"),
        ({"power_kw": math.inf}, "finite and >= 0"),
        ({"power_kw": "7.4"}, "must be a number"),
        ({"power_kw": True}, "must be a number"),
    ],
)
def test_bad_power_is_refused(version, ctype, params, reason):
    with pytest.raises(TranslationError, match=reason):
        OCPPAdapter("g", version).translate(cmd(ctype, **params))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("ctype", [CommandType.SET_DISCHARGE_RATE, CommandType.SET_SOC_TARGET])
def test_battery_commands_are_refused(version, ctype):
    with pytest.raises(TranslationError, match=f"{ctype} is not supported by OCPP chargers"):
        OCPPAdapter("g", version).translate(cmd(ctype, power_kw=5.0, soc_percent=80))


def test_remote_start_v16():
    assert translate("1.6", CommandType.START_CHARGING)["payload"] == {"idTag": "qubit", "connectorId": 1}
    assert translate("1.6", CommandType.START_CHARGING, connector_id=0, id_tag="abc")["payload"] == {"idTag": "abc"}
    adapter = OCPPAdapter("g", id_tag="depot")
    assert adapter.translate(cmd(CommandType.START_CHARGING))["payload"]["idTag"] == "depot"


def test_request_start_v201_carries_a_stable_remote_start_id():
    adapter = OCPPAdapter("g", "2.0.1", connector_id=3)
    one, other = cmd(CommandType.START_CHARGING), cmd(CommandType.START_CHARGING)
    payload = adapter.translate(one)["payload"]
    assert payload["idToken"] == {"idToken": "qubit", "type": "Central"}
    assert payload["evseId"] == 3
    assert adapter.translate(one)["payload"]["remoteStartId"] == payload["remoteStartId"]  # a retry: same id
    assert adapter.translate(other)["payload"]["remoteStartId"] != payload["remoteStartId"]
    assert "evseId" not in translate("2.0.1", CommandType.START_CHARGING, connector_id=0)["payload"]


@pytest.mark.parametrize(("version", "limit"), [("1.6", 20), ("2.0.1", 36)])
def test_id_tag_length_is_checked(version, limit):
    translate(version, CommandType.START_CHARGING, id_tag="x" * limit)
    for bad in ("x" * (limit + 1), "", 42):
        with pytest.raises(TranslationError, match="id_tag"):
            OCPPAdapter("g", version).translate(cmd(CommandType.START_CHARGING, id_tag=bad))


@pytest.mark.parametrize("version", VERSIONS)
def test_default_id_tag_is_checked_at_construction(version):
    with pytest.raises(ValueError, match=r"id_tag must be a string of 1\.\."):
        OCPPAdapter("g", version, id_tag="x" * 37)


@pytest.mark.parametrize(("version", "given_id", "sent"), [
    ("1.6", 17, 17), ("1.6", "17", 17), ("1.6", "-3", -3), ("2.0.1", "tx-9f2", "tx-9f2"), ("2.0.1", 17, "17"),
])
def test_stop_transaction(version, given_id, sent):
    assert translate(version, CommandType.STOP_CHARGING, transaction_id=given_id)["payload"] == {"transactionId": sent}


@pytest.mark.parametrize(("version", "params", "reason"), [
    ("1.6", {}, "needs parameter transaction_id"),
    ("2.0.1", {}, "needs parameter transaction_id"),
    ("1.6", {"transaction_id": None}, "needs parameter transaction_id"),
    ("1.6", {"transaction_id": True}, "integer or a string"),
    ("2.0.1", {"transaction_id": 1.5}, "integer or a string"),
    ("1.6", {"transaction_id": "tx-9f2"}, "must be an integer"),
    ("1.6", {"transaction_id": "--5"}, "must be an integer"),
    ("2.0.1", {"transaction_id": ""}, "1..36 characters"),
    ("2.0.1", {"transaction_id": "x" * 37}, "1..36 characters"),
])
def test_stop_transaction_refusals(version, params, reason):
    with pytest.raises(TranslationError, match=reason):
        OCPPAdapter("g", version).translate(cmd(CommandType.STOP_CHARGING, **params))


@pytest.mark.parametrize(("params", "word"), [
    ({"available": True}, "Operative"),
    ({"available": False}, "Inoperative"),
    ({"availability": "Operative"}, "Operative"),
    ({"availability": "inoperative"}, "Inoperative"),
])
def test_change_availability(params, word):
    assert translate("1.6", CommandType.CHANGE_AVAILABILITY, connector_id=2, **params)["payload"] == {
        "connectorId": 2, "type": word
    }
    assert translate("2.0.1", CommandType.CHANGE_AVAILABILITY, connector_id=2, **params)["payload"] == {
        "operationalStatus": word, "evse": {"id": 2}
    }


def test_change_availability_of_the_whole_station():
    out = translate("1.6", CommandType.CHANGE_AVAILABILITY, connector_id=0, available=False)
    assert out["payload"]["connectorId"] == 0
    assert translate("2.0.1", CommandType.CHANGE_AVAILABILITY, connector_id=0, available=False)["payload"] == {
        "operationalStatus": "Inoperative"
    }


@pytest.mark.parametrize(("params", "reason"), [
    ({}, "exactly one of"),
    ({"available": True, "availability": "Operative"}, "exactly one of"),
    ({"available": "yes"}, "available must be a boolean"),
    ({"available": 1}, "available must be a boolean"),
    ({"availability": "Faulted"}, "'Operative' or 'Inoperative'"),
    ({"availability": None}, "'Operative' or 'Inoperative'"),
])
def test_change_availability_refusals(params, reason):
    with pytest.raises(TranslationError, match=reason):
        OCPPAdapter("g").translate(cmd(CommandType.CHANGE_AVAILABILITY, **params))


@pytest.mark.parametrize("version", ["2.0", "1.5", "2.1", "", None])
def test_unknown_version_is_refused_at_construction(version):
    with pytest.raises(ValueError, match="unsupported OCPP version"):
        OCPPAdapter("g", version)


@pytest.mark.parametrize("kwargs", [
    {"connector_id": -1}, {"connector_id": True}, {"stack_level": -1}, {"profile_id_base": 1.5},
])
def test_bad_ids_are_refused_at_construction(kwargs):
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        OCPPAdapter("g", **kwargs)


def test_custom_stack_level_and_profile_ids():
    adapter = OCPPAdapter("g", "2.0.1", connector_id=2, stack_level=5, profile_id_base=500)
    out = adapter.translate(cmd(CommandType.SET_CHARGE_RATE, power_kw=3))
    assert (profile(out)["id"], profile(out)["stackLevel"]) == (503, 5) == (adapter.tx_default_profile_id, 5)
    assert adapter.station_max_profile_id == 500


def _ocpp_package_payload(call: Any) -> dict[str, Any]:
    """What ocpp.ChargePoint.call sends for ``call`` (its own three steps)."""
    from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
    payload = remove_nones(snake_to_camel_case(serialize_as_dict(call)))
    assert isinstance(payload, dict)
    return payload


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("ctype", "params", "action_16", "action_201"), ALL_SUPPORTED)
def test_call_payload_is_what_the_ocpp_package_sends(version, ctype, params, action_16, action_201):
    call = OCPPAdapter("ocpp_site_1", version).build_call(cmd(ctype, **params))
    assert call_payload(call) == _ocpp_package_payload(call)


def test_call_payload_keeps_the_packages_key_spelling_and_drops_nones():
    from ocpp.v201 import call as v201_call
    from ocpp.v201 import datatypes as v201_types
    from ocpp.v201.enums import EnergyTransferModeEnumType
    call = v201_call.SetVariables(set_variable_data=[v201_types.SetVariableDataType(
        attribute_value="1", component=v201_types.ComponentType(name="OCPPCommCtrlr", evse=None),
        variable=v201_types.VariableType(name="HeartbeatInterval"))], custom_data={"vendor_id": "q", "x": None})
    assert call_payload(call) == _ocpp_package_payload(call)
    soc = v201_call.NotifyEVChargingNeeds(evse_id=1, charging_needs=v201_types.ChargingNeedsType(
        requested_energy_transfer=EnergyTransferModeEnumType.dc,
        dc_charging_parameters=v201_types.DCChargingParametersType(
            ev_max_current=100, ev_max_voltage=800, state_of_charge=50, full_soc=90)))
    assert call_payload(soc) == _ocpp_package_payload(soc)
    assert "fullSoC" in call_payload(soc)["chargingNeeds"]["dcChargingParameters"]
