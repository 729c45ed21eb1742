"""What a composite schedule says is in force, and when it proves a setpoint (pure)."""

import json
from decimal import Decimal
from pathlib import Path

import ocpp
import pytest
from jsonschema.validators import validator_for

from coordinator.protocols.ocpp.adapter import OCPPAdapter
from coordinator.protocols.ocpp.calls import action_of
from coordinator.protocols.ocpp.composite import COMPOSITE_SECONDS, Unreadable, limit_in_force_w, unproven
from coordinator.protocols.ocpp.payload import json_payload
from coordinator.protocols.ocpp.version import OCPPVersion

START = "2025-01-15T08:00:30Z"


def schema_errors(version: str, action: str, payload: dict) -> list[str]:
    folder, name = ("v16", f"{action}.json") if version == "1.6" else ("v201", f"{action}Request.json")
    schema = json.loads((Path(ocpp.__file__).parent / folder / "schemas" / name).read_text(), parse_float=Decimal)
    return [e.message for e in validator_for(schema)(schema).iter_errors(payload)]


def v16_answer(*periods, unit="W", start_schedule=None, schedule_start=START):
    schedule = {"charging_rate_unit": unit, "charging_schedule_period": list(periods)}
    if start_schedule is not None:
        schedule["start_schedule"] = start_schedule
    return {"status": "Accepted", "connector_id": 1, "schedule_start": schedule_start, "charging_schedule": schedule}


def v201_answer(*periods, unit="W"):
    return {"status": "Accepted", "schedule": {"evse_id": 1, "duration": 60, "schedule_start": START,
                                               "charging_rate_unit": unit, "charging_schedule_period": list(periods)}}


def period(start, limit, **more):
    return {"start_period": start, "limit": limit, **more}


@pytest.mark.parametrize("version, key, target", [("1.6", "connectorId", 2), ("2.0.1", "evseId", 2)])
def test_the_request_asks_for_the_connector_in_watts_and_validates(version, key, target):
    call = OCPPAdapter("ocpp", version, target).composite_schedule_call()
    action, payload = action_of(call, OCPPVersion(version)), json_payload(call)
    assert action == "GetCompositeSchedule"
    assert payload == {key: target, "duration": COMPOSITE_SECONDS, "chargingRateUnit": "W"}
    assert schema_errors(version, action, payload) == []


@pytest.mark.parametrize("answer", [v16_answer(period(0, 7400.0)), v201_answer(period(0, 7400))])
def test_the_limit_at_the_start_of_the_composite(answer):
    assert limit_in_force_w(answer) == 7400.0


def test_1_6_periods_count_from_start_schedule():
    # periods from 08:00:00; the composite starts at 08:00:30: the second period is in force
    answer = v16_answer(period(0, 11000.0), period(20, 7000.0), period(40, 3000.0),
                        start_schedule="2025-01-15T08:00:00Z")
    assert limit_in_force_w(answer) == 7000.0
    # without a startSchedule the periods count from the composite's start
    assert limit_in_force_w(v16_answer(period(0, 11000.0), period(20, 7000.0))) == 11000.0


def test_amps_are_read_at_230_v_per_phase():
    assert limit_in_force_w(v201_answer(period(0, 16.0), unit="A")) == pytest.approx(16 * 230 * 3)
    assert limit_in_force_w(v201_answer(period(0, 16.0, number_phases=1), unit="A")) == pytest.approx(16 * 230)


@pytest.mark.parametrize("answer", [
    {"status": "Accepted"},  # nothing to enforce
    {"status": "Accepted", "connector_id": 1, "schedule_start": START},
    v201_answer(),
    v201_answer(period(10, 7000.0)),  # starts later
])
def test_no_limit_in_force(answer):
    assert limit_in_force_w(answer) is None


@pytest.mark.parametrize("answer, said", [
    ({"status": "Rejected"}, "with 'Rejected'"),
    ({}, "with None"),
    (v201_answer(period(0, 7000.0), unit="kW"), "unknown unit 'kW'"),
    (v201_answer({"limit": 7000.0}), "unreadable charging schedule period"),
    (v201_answer(period(0, "lots")), "unreadable charging schedule period"),
    ({"status": "Accepted", "schedule": [1]}, "not an object"),
    ({"status": "Accepted", "schedule": {"charging_schedule_period": 3}}, "not a list"),
])
def test_an_answer_that_does_not_say_is_unreadable(answer, said):
    with pytest.raises(Unreadable, match=said):
        limit_in_force_w(answer)


def test_a_setpoint_is_proven_by_its_own_limit_within_the_tolerance():
    assert unproven(11.0, 11_000.0, 0.7, cap=False) is None
    assert unproven(11.0, 10_350.0, 0.7, cap=False) is None  # rounded down to whole amps
    assert unproven(11.0, 7_000.0, 0.7, cap=False) == "not applied: composite schedule shows 7 kW (wanted 11 kW)"
    assert unproven(11.0, 22_000.0, 0.7, cap=False) == "not applied: composite schedule shows 22 kW (wanted 11 kW)"
    assert unproven(11.0, None, 0.7, cap=False) == "not applied: composite schedule shows no limit (wanted 11 kW)"
    assert unproven(0.0, 0.0, 0.0, cap=False) is None


def test_a_setpoint_held_lower_by_a_known_cap_is_proven():
    assert unproven(11.0, 7_000.0, 0.7, cap=False, caps_kw=[22.0, 7.0]) is None
    assert unproven(11.0, 5_000.0, 0.7, cap=False, caps_kw=[22.0, 7.0]) is not None
    assert unproven(11.0, 22_000.0, 0.7, cap=False, caps_kw=[22.0]) is not None  # a cap never raises it


def test_a_cap_is_proven_when_nothing_above_it_is_in_force():
    assert unproven(22.0, 11_000.0, 0.7, cap=True) is None
    assert unproven(22.0, 22_500.0, 0.7, cap=True) is None
    assert unproven(11.0, 22_000.0, 0.7, cap=True) == (
        "not applied: composite schedule shows 22 kW (wanted at most 11 kW)")
    assert unproven(11.0, None, 0.7, cap=True) is not None
