import logging
from datetime import UTC, datetime

import pydantic
import pytest

from coordinator import Command, CommandType, Event, EventBus, EventType
from coordinator.contract.events import (
    PAYLOAD_MODELS,
    CommandCompleted,
    CommandFailed,
    EventPayload,
    StateChanged,
)

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
MOVED = StateChanged(asset_id="ast_1", from_state="AVAILABLE", to_state="PREPARING", trigger="plug_in")


def failed(error: str) -> CommandFailed:
    cmd = Command("ast_1", CommandType.STOP_CHARGING, scheduled_at=T0)
    cmd.error = error
    return CommandFailed.of(cmd)


def test_typed_delivery_and_subscribe_all():
    bus = EventBus()
    typed: list[Event] = []
    everything: list[Event] = []
    bus.subscribe(EventType.COMMAND_FAILED, typed.append)
    bus.subscribe_all(everything.append)
    one = failed("one")
    bus.emit(EventType.COMMAND_FAILED, one)
    bus.emit(EventType.COMMAND_COMPLETED, CommandCompleted.of(Command("ast_1", CommandType.STOP_CHARGING)))
    assert [e.payload for e in typed] == [one]
    assert [e.event_type for e in everything] == [EventType.COMMAND_FAILED, EventType.COMMAND_COMPLETED]


def test_event_fields():
    e = EventBus().emit(EventType.STATE_CHANGED, MOVED)
    assert e.event_id.startswith("evt_") and len(e.event_id) == 16
    assert e.timestamp.tzinfo is not None
    assert e.payload is MOVED
    assert e.asset_id == "ast_1"


def test_a_mapping_is_validated_into_the_types_model():
    e = EventBus().emit(EventType.STATE_CHANGED, dict(MOVED))
    assert e.payload == MOVED


@pytest.mark.parametrize("payload", [
    {"asset_id": "ast_1"},  # fields missing
    dict(MOVED) | {"extra": 1},  # a field no reader knows
    dict(MOVED) | {"trigger": 7},  # a number where text belongs
])
def test_a_payload_that_does_not_fit_its_type_raises_at_the_emitter(payload):
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe_all(seen.append)
    with pytest.raises(pydantic.ValidationError):
        bus.emit(EventType.STATE_CHANGED, payload)
    assert seen == []


def test_another_types_model_is_refused():
    with pytest.raises(TypeError, match="STATE_CHANGED carries StateChanged, not CommandFailed"):
        Event(EventType.STATE_CHANGED, failed("x"))


def test_payloads_read_like_mappings_for_dict_era_code():
    assert MOVED["to_state"] == "PREPARING"
    assert "trigger" in MOVED and "nope" not in MOVED
    assert MOVED.get("trigger") == "plug_in" and MOVED.get("nope", 0) == 0
    assert dict(MOVED) == {"asset_id": "ast_1", "from_state": "AVAILABLE", "to_state": "PREPARING",
                           "trigger": "plug_in"}
    with pytest.raises(KeyError):
        MOVED["nope"]


def test_payloads_are_immutable():
    with pytest.raises(pydantic.ValidationError):
        MOVED.to_state = "CHARGING"  # type: ignore[misc]


def test_every_event_type_has_its_own_model():
    assert set(PAYLOAD_MODELS) == set(EventType)
    assert len(set(PAYLOAD_MODELS.values())) == len(EventType)
    assert all(issubclass(m, EventPayload) for m in PAYLOAD_MODELS.values())


def test_failing_subscriber_does_not_break_others(caplog):
    bus = EventBus()
    seen: list[Event] = []

    def broken(event):
        raise RuntimeError("boom")

    bus.subscribe(EventType.STATE_CHANGED, broken)
    bus.subscribe(EventType.STATE_CHANGED, seen.append)
    with caplog.at_level(logging.ERROR):
        bus.emit(EventType.STATE_CHANGED, MOVED)
    assert len(seen) == 1
    assert bus.handler_errors == 1
    assert "boom" in caplog.text  # logged with its traceback, not swallowed


def test_unsubscribe():
    bus = EventBus()
    seen: list[Event] = []
    sub = bus.subscribe(EventType.STATE_CHANGED, seen.append)
    all_sub = bus.subscribe_all(seen.append)
    bus.unsubscribe(sub)
    all_sub.cancel()
    bus.unsubscribe(sub)  # twice is harmless
    bus.emit(EventType.STATE_CHANGED, MOVED)
    assert seen == []
    assert not bus.has_subscribers(EventType.STATE_CHANGED)


def test_same_handler_twice_gets_two_calls_until_one_unsubscribed():
    bus = EventBus()
    seen: list[Event] = []
    s1 = bus.subscribe(EventType.STATE_CHANGED, seen.append)
    bus.subscribe(EventType.STATE_CHANGED, seen.append)
    bus.emit(EventType.STATE_CHANGED, MOVED)
    s1.cancel()
    bus.emit(EventType.STATE_CHANGED, MOVED)
    assert len(seen) == 3


def test_a_handler_that_subscribes_during_a_publish_changes_the_next_publish_not_this_one():
    bus = EventBus()
    late: list[Event] = []

    def subscribe_another(event: Event) -> None:
        bus.subscribe(EventType.STATE_CHANGED, late.append)

    first = bus.subscribe(EventType.STATE_CHANGED, subscribe_another)
    bus.emit(EventType.STATE_CHANGED, MOVED)
    assert late == []
    first.cancel()
    bus.emit(EventType.STATE_CHANGED, MOVED)
    assert len(late) == 1


def test_event_refuses_naive_timestamp():
    with pytest.raises(ValueError, match="timezone-aware"):
        Event(EventType.STATE_CHANGED, MOVED, datetime(2025, 1, 1))


def test_free_text_quoting_untrusted_input_never_fails_the_emitter():
    from coordinator.contract.events import ScheduleRejected

    columns = [f"ev_{n}_kw" for n in range(2000)]
    rejected = ScheduleRejected(schedule_id="sch_1", reason="above_limit", site_id="sit_1", columns=columns,
                                message="setpoints above the asset's max_power_kw: " + ", ".join(columns))
    payload = EventBus().emit(EventType.SCHEDULE_REJECTED, rejected).payload
    assert isinstance(payload, ScheduleRejected) and payload.columns == columns
