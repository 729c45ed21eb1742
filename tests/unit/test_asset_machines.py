import pytest

from coordinator import (
    BatteryState,
    ChargerState,
    InvalidTransition,
    create_battery_state_machine,
    create_ev_charger_state_machine,
)
from coordinator.asset_machines import (
    BATTERY_TRANSITIONS,
    CHARGER_TRANSITIONS,
    BatteryTrigger,
    ChargerTrigger,
)


def run(sm, *triggers):
    return [sm.trigger(t) for t in triggers]


def test_charger_shape():
    sm = create_ev_charger_state_machine("c")
    assert sm.states == set(ChargerState) and len(sm.states) == 7
    used = {t for by in CHARGER_TRANSITIONS.values() for t in by}
    assert used == set(ChargerTrigger) and len(used) == 10
    assert sm.state == "AVAILABLE"


def test_charger_happy_path():
    assert run(create_ev_charger_state_machine("c"), "plug_in", "start_charge", "complete", "unplug") == [
        "PREPARING", "CHARGING", "FINISHING", "AVAILABLE"
    ]


def test_charger_suspend_resume():
    sm = create_ev_charger_state_machine("c")
    assert run(sm, "plug_in", "start_charge", "suspend", "resume") == ["PREPARING", "CHARGING", "SUSPENDED", "CHARGING"]


@pytest.mark.parametrize("path", [["plug_in"], ["plug_in", "start_charge"], ["plug_in", "start_charge", "suspend"]])
def test_charger_early_departure(path):
    sm = create_ev_charger_state_machine("c")
    run(sm, *path)
    assert sm.trigger("unplug") == "AVAILABLE"


@pytest.mark.parametrize("state", [s for s in ChargerState if s is not ChargerState.FAULTED])
def test_charger_fault_from_any_state_then_reset(state):
    sm = create_ev_charger_state_machine("c")
    sm._state = state  # reach the state directly; the paths are covered above
    assert sm.trigger("fault") == "FAULTED"
    assert sm.available_triggers() == ["reset"]
    assert sm.trigger("reset") == "AVAILABLE"


def test_charger_disable_enable_and_guards():
    sm = create_ev_charger_state_machine("c")
    assert run(sm, "disable", "enable") == ["UNAVAILABLE", "AVAILABLE"]
    sm.trigger("disable")
    with pytest.raises(InvalidTransition):
        sm.trigger("plug_in")
    with pytest.raises(InvalidTransition):
        create_ev_charger_state_machine("c").trigger("start_charge")


def test_battery_shape():
    sm = create_battery_state_machine("b")
    assert sm.states == set(BatteryState) and len(sm.states) == 5
    used = {t for by in BATTERY_TRANSITIONS.values() for t in by}
    assert used == set(BatteryTrigger) and len(used) == 7


def test_battery_direct_switch_both_ways():
    sm = create_battery_state_machine("b")
    assert run(sm, "charge", "discharge", "charge", "stop") == ["CHARGING", "DISCHARGING", "CHARGING", "IDLE"]


def test_battery_standby_and_fault():
    sm = create_battery_state_machine("b")
    assert run(sm, "standby", "activate", "discharge", "fault", "reset") == [
        "STANDBY", "IDLE", "DISCHARGING", "FAULTED", "IDLE"
    ]
    sm.trigger("standby")
    with pytest.raises(InvalidTransition):
        sm.trigger("charge")
