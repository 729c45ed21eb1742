import pytest
from ocpp.v16 import enums as v16
from ocpp.v201 import enums as v201

from coordinator.contract.messages import Outcome
from coordinator.protocols.ocpp.answers import COMPLETES, NEVER_SUCCEEDS, outcome_of


@pytest.mark.parametrize("status, outcome", [
    ("Accepted", Outcome.COMPLETED), ("Scheduled", Outcome.COMPLETED), ("Rejected", Outcome.FAILED),
    ("NotSupported", Outcome.REFUSED),
])
def test_answers_to_outcomes(status, outcome):
    got, reason = outcome_of({"status": status})
    assert got is outcome
    assert (reason is None) == (outcome is Outcome.COMPLETED)


def test_malformed_answers_fail_with_what_was_said():
    assert outcome_of({}) == (Outcome.FAILED, "charger answered without a status: {}")
    assert outcome_of({"status": 7})[0] is Outcome.FAILED
    assert outcome_of({"status": "Rejected", "status_info": {"reason_code": "TxNotFound"}}) == (
        Outcome.FAILED, "charger answered Rejected (TxNotFound)")


def test_the_words_are_the_same_in_2_0_1():
    assert v201.ChargingProfileStatusEnumType.accepted in COMPLETES
    assert v201.ChangeAvailabilityStatusEnumType.scheduled in COMPLETES
    assert v201.ChargingProfileStatusEnumType.rejected not in COMPLETES | NEVER_SUCCEEDS
    assert {"NotSupported", "NotImplemented", "Unknown"} == NEVER_SUCCEEDS
    assert v16.RemoteStartStopStatus.rejected not in COMPLETES
