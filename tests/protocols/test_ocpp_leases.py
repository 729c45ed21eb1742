"""Leased setpoint profiles and the fallback profile, both OCPP versions: what the gateway sends."""

from datetime import UTC, datetime, timedelta

import pytest

from coordinator.adapters import OCPPAdapter, TranslationError
from coordinator.base import Command, CommandType
from coordinator.protocols.ocpp.adapter import DEFAULT_STACK_LEVEL, FALLBACK_STACK_LEVEL
from coordinator.protocols.ocpp.payload import json_payload
from services.ocpp_gateway.leases import lease_end, renew_interval
from tests.protocols.test_adapters_ocpp import schema_errors

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
VERSIONS = ("1.6", "2.0.1")


def profile_of(version: str, payload: dict) -> dict:
    return payload["csChargingProfiles"] if version == "1.6" else payload["chargingProfile"]


def setpoint(ctype: CommandType = CommandType.SET_CHARGE_RATE) -> Command:
    return Command("ast_ev_1", ctype, {"power_kw": 11.0}, T0)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("ctype", [CommandType.SET_CHARGE_RATE, CommandType.SET_POWER_LIMIT])
def test_a_setpoint_profile_carries_its_lease_as_valid_to(version, ctype):
    until = lease_end(T0 + timedelta(seconds=0.25), 3.0)
    payload = json_payload(OCPPAdapter("g", version).build_call(setpoint(ctype), until))
    assert schema_errors(version, "SetChargingProfile", payload) == []
    assert profile_of(version, payload)["validTo"] == "2025-01-15T08:00:03.250Z"  # milliseconds, UTC


@pytest.mark.parametrize("version", VERSIONS)
def test_without_a_lease_a_profile_has_no_end(version):
    payload = json_payload(OCPPAdapter("g", version).build_call(setpoint()))
    assert "validTo" not in profile_of(version, payload)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_fallback_sits_below_the_setpoint_without_an_end(version):
    adapter = OCPPAdapter("g", version, connector_id=2)
    fallback = json_payload(adapter.fallback_call(3.7, T0))
    leased = json_payload(adapter.build_call(setpoint(), lease_end(T0, 300)))
    assert schema_errors(version, "SetChargingProfile", fallback) == []
    low, high = profile_of(version, fallback), profile_of(version, leased)
    assert low["stackLevel"] == FALLBACK_STACK_LEVEL < high["stackLevel"] == DEFAULT_STACK_LEVEL
    assert low["chargingProfilePurpose"] == high["chargingProfilePurpose"] == "TxDefaultProfile"
    assert "validTo" not in low
    assert (low["chargingProfileId"] if version == "1.6" else low["id"]) != (
        high["chargingProfileId"] if version == "1.6" else high["id"])  # a setpoint never replaces it
    periods = low["chargingSchedule"]["chargingSchedulePeriod"] if version == "1.6" else \
        low["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert periods == [{"startPeriod": 0, "limit": 3700.0}]


def test_a_fallback_must_be_a_power():
    with pytest.raises(TranslationError):
        OCPPAdapter("g").fallback_call(float("nan"), T0)
    with pytest.raises(ValueError):
        OCPPAdapter("g", stack_level=0).fallback_call(0.0, T0)  # a setpoint at its level would replace it


def test_renewal_at_half_the_lease():
    assert renew_interval(300) == 150
    assert lease_end(T0, 3) == T0 + timedelta(seconds=3)
    with pytest.raises(ValueError):
        renew_interval(0)
