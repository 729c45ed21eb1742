"""answer_payload: the package's snake_case spelling of an answer, key by key."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.charge_point import camel_to_snake_case

from coordinator.protocols.ocpp.payload import answer_payload

KEYS = st.one_of(
    st.sampled_from(["status", "statusInfo", "chargingSchedule", "chargingSchedulePeriod", "startPeriod",
                     "chargingRateUnit", "scheduleStart", "evseId", "ocppCSMSURL", "V2XChargingCtrlr",
                     "V2GCertificateInstallationEnabled", "transactionId", "idTagInfo", "SOCLimitReached"]),
    st.text(alphabet="aAbBzZ09_.-", max_size=12),
)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
                    max_leaves=20)


@settings(deadline=None)  # the first examples pay for the cold start on a loaded machine
@given(st.dictionaries(KEYS, JSON, max_size=5))
def test_same_keys_and_values_as_the_package(payload: dict[str, Any]) -> None:
    assert answer_payload(payload) == camel_to_snake_case(payload)


def test_a_composite_schedule_answer() -> None:
    wire = {"status": "Accepted", "connectorId": 1, "scheduleStart": "2026-01-01T00:00:00Z",
            "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                                     "limit": 7000.0}]}}
    assert answer_payload(wire) == {
        "status": "Accepted", "connector_id": 1, "schedule_start": "2026-01-01T00:00:00Z",
        "charging_schedule": {"charging_rate_unit": "W", "charging_schedule_period": [{"start_period": 0,
                                                                                      "limit": 7000.0}]}}
