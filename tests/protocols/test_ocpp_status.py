import pytest

from coordinator.asset_machines import ChargerState
from coordinator.protocols.ocpp.status import v16_state, v201_connector_state, v201_transaction_state


@pytest.mark.parametrize("status, state", [
    ("Available", ChargerState.AVAILABLE), ("Preparing", ChargerState.PREPARING),
    ("Charging", ChargerState.CHARGING), ("SuspendedEV", ChargerState.SUSPENDED),
    ("SuspendedEVSE", ChargerState.SUSPENDED), ("Finishing", ChargerState.FINISHING),
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
