"""Every example of seed 000 (State Machines), as written there."""

import pytest


def test_generic_state_machine():
    from coordinator import EventBus, StateMachine

    sm = StateMachine(
        asset_id="ast_custom_001",
        states={"OFF", "STARTING", "RUNNING", "STOPPING"},
        initial_state="OFF",
        transitions={
            "OFF": {"start": "STARTING"},
            "STARTING": {"ready": "RUNNING", "fail": "OFF"},
            "RUNNING": {"stop": "STOPPING"},
            "STOPPING": {"stopped": "OFF"},
        },
        event_bus=EventBus(),  # Optional
    )

    assert sm.trigger("start") == "STARTING"
    assert sm.can_trigger("ready") is True
    assert sm.available_triggers() == ["ready", "fail"]

    from coordinator import InvalidTransition

    try:
        sm.trigger("stop")  # Not valid from STARTING
    except InvalidTransition as e:
        assert e.current_state == "STARTING"
        assert e.trigger == "stop"
        assert e.valid_triggers == ["ready", "fail"]
    else:
        pytest.fail("stop from STARTING must raise")


def test_history_tracking(capsys):
    from coordinator import StateMachine

    sm = StateMachine(
        asset_id="ast_custom_001",
        states={"OFF", "STARTING", "RUNNING", "STOPPING"},
        initial_state="OFF",
        transitions={"OFF": {"start": "STARTING"}, "STARTING": {"ready": "RUNNING", "fail": "OFF"}},
    )
    sm.trigger("start")
    sm.trigger("ready")
    print(sm.history)
    out = capsys.readouterr().out
    assert "'from_state': 'OFF', 'to_state': 'STARTING', 'trigger': 'start', 'timestamp'" in out
    assert [(h["from_state"], h["to_state"]) for h in sm.history] == [("OFF", "STARTING"), ("STARTING", "RUNNING")]


def test_ev_charger():
    from coordinator import create_ev_charger_state_machine

    charger = create_ev_charger_state_machine("ast_charger_001")
    assert charger.trigger("plug_in") == "PREPARING"
    assert charger.trigger("start_charge") == "CHARGING"
    assert charger.trigger("complete") == "FINISHING"
    assert charger.trigger("unplug") == "AVAILABLE"


def test_battery():
    from coordinator import create_battery_state_machine

    battery = create_battery_state_machine("ast_batt_001")
    assert battery.trigger("charge") == "CHARGING"
    assert battery.trigger("discharge") == "DISCHARGING"  # direct switch
    assert battery.trigger("stop") == "IDLE"


def test_event_bus_integration(capsys):
    from coordinator import EventBus, EventType, create_battery_state_machine

    bus = EventBus()
    bus.subscribe(EventType.STATE_CHANGED, lambda e: print(
        f"{e.payload['asset_id']}: {e.payload['from_state']} → {e.payload['to_state']}"
    ))

    battery = create_battery_state_machine("ast_batt_001", event_bus=bus)
    battery.trigger("charge")
    assert capsys.readouterr().out == "ast_batt_001: IDLE → CHARGING\n"
