import base64

import pytest

from coordinator.asset_machines import ChargerState
from coordinator.contract.messages import Outcome
from services.ocpp_gateway.central import CentralSystem, _power_w, basic_auth_ok
from coordinator.protocols.ocpp.status import outcome_of, v16_state, v201_connector_state, v201_transaction_state


@pytest.mark.parametrize("status, state", [
    ("Available", ChargerState.AVAILABLE), ("Preparing", ChargerState.PREPARING), ("Charging", ChargerState.CHARGING),
    ("SuspendedEV", ChargerState.SUSPENDED), ("SuspendedEVSE", ChargerState.SUSPENDED), ("Finishing", ChargerState.FINISHING),
    ("Faulted", ChargerState.FAULTED), ("Unavailable", ChargerState.UNAVAILABLE), ("Nonsense", None),
])
def test_v16_statuses(status, state):
    assert v16_state(status) == state


def test_v201_connector_and_transaction_words():
    assert v201_connector_state("Occupied") is ChargerState.PREPARING
    assert v201_connector_state("Faulted") is ChargerState.FAULTED
    assert v201_transaction_state("Updated", "SuspendedEVSE") is ChargerState.SUSPENDED
    assert v201_transaction_state("Started", "Charging") is ChargerState.CHARGING
    assert v201_transaction_state("Ended", None) is ChargerState.FINISHING
    assert v201_transaction_state("Ended", "EVConnected", "Remote", "RemoteStop") is ChargerState.FINISHING
    assert v201_transaction_state("Ended", None, "EVDisconnected", "EVCommunicationLost") is ChargerState.AVAILABLE
    assert v201_transaction_state("Ended", None, None, "EVDeparted") is ChargerState.AVAILABLE
    assert v201_transaction_state("Updated", None) is None


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


def test_basic_auth():
    header = "Basic " + base64.b64encode(b"CP001:correct horse battery").decode()
    assert basic_auth_ok(header, "CP001", "correct horse battery")
    assert not basic_auth_ok(header, "CP001", "wrong password here")
    assert not basic_auth_ok(header, "CP002", "correct horse battery")
    assert not basic_auth_ok(None, "CP001", "x")
    assert not basic_auth_ok("Basic !!!notbase64", "CP001", "x")
    assert not basic_auth_ok("Bearer abc", "CP001", "x")


def test_charge_point_id_from_path_and_power_samples():
    assert CentralSystem.charge_point_id("/ocpp/CP001") == "CP001"
    assert CentralSystem.charge_point_id("/CP001/?x=1") == "CP001"
    samples = [{"sampled_value": [{"value": "11", "measurand": "Power.Active.Import", "unit": "kW"},
                                  {"value": "5000", "measurand": "Energy.Active.Import.Register"}]}]
    assert _power_w(samples) == 11000.0
    assert _power_w([{"sampled_value": [{"value": "x", "measurand": "Power.Active.Import"}]}]) is None
