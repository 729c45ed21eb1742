import pytest

from coordinator import Event, EventBus, EventType, InvalidTransition, StateMachine


def make(bus=None):
    return StateMachine(
        asset_id="ast_x",
        states={"OFF", "STARTING", "RUNNING", "STOPPING"},
        initial_state="OFF",
        transitions={
            "OFF": {"start": "STARTING"},
            "STARTING": {"ready": "RUNNING", "fail": "OFF"},
            "RUNNING": {"stop": "STOPPING"},
            "STOPPING": {"stopped": "OFF"},
        },
        event_bus=bus,
    )


def test_trigger_moves_and_returns_new_state():
    sm = make()
    assert sm.trigger("start") == "STARTING"
    assert sm.state == "STARTING"
    assert sm.available_triggers() == ["ready", "fail"]
    assert sm.can_trigger("ready") and not sm.can_trigger("stop")


def test_invalid_trigger_leaves_state_and_explains():
    sm = make()
    sm.trigger("start")
    with pytest.raises(InvalidTransition) as info:
        sm.trigger("stop")
    refused = info.value
    assert (refused.current_state, refused.trigger, refused.valid_triggers) == ("STARTING", "stop", ["ready", "fail"])
    assert "ready, fail" in str(info.value)
    assert sm.state == "STARTING"
    assert len(sm.history) == 1


def test_unknown_trigger_is_invalid():
    with pytest.raises(InvalidTransition):
        make().trigger("explode")


def test_history_records_transitions_in_utc():
    sm = make()
    sm.trigger("start")
    sm.trigger("ready")
    assert [(h["from_state"], h["to_state"], h["trigger"]) for h in sm.history] == [
        ("OFF", "STARTING", "start"),
        ("STARTING", "RUNNING", "ready"),
    ]
    assert all(h["timestamp"].utcoffset().total_seconds() == 0 for h in sm.history)


def test_history_is_bounded():
    sm = StateMachine("a", {"A", "B"}, "A", {"A": {"go": "B"}, "B": {"back": "A"}}, history_limit=3)
    for _ in range(5):
        sm.trigger("go")
        sm.trigger("back")
    assert len(sm.history) == 3
    assert sm.history[-1]["to_state"] == "A"


def test_state_changed_published_with_payload():
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(EventType.STATE_CHANGED, seen.append)
    make(bus).trigger("start")
    assert seen[0].payload == {"asset_id": "ast_x", "from_state": "OFF", "to_state": "STARTING", "trigger": "start"}


@pytest.mark.parametrize(
    "states, initial, transitions",
    [
        ({"A"}, "B", {}),
        ({"A"}, "A", {"A": {"go": "Z"}}),
        ({"A"}, "A", {"Q": {"go": "A"}}),
    ],
)
def test_bad_configuration_refused(states, initial, transitions):
    with pytest.raises(ValueError):
        StateMachine("a", states, initial, transitions)


def test_triggers_to_finds_shortest_path():
    from coordinator import create_ev_charger_state_machine

    sm = create_ev_charger_state_machine("c")
    assert sm.triggers_to("AVAILABLE") == []
    assert sm.triggers_to("CHARGING") == ["plug_in", "start_charge"]
    sm.trigger("fault")
    assert sm.triggers_to("CHARGING") == ["reset", "plug_in", "start_charge"]
    assert make().triggers_to("NOWHERE") is None
