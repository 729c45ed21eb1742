import logging

from coordinator import Event, EventBus, EventType


def test_typed_delivery_and_subscribe_all():
    bus = EventBus()
    typed, everything = [], []
    bus.subscribe(EventType.COMMAND_FAILED, typed.append)
    bus.subscribe_all(everything.append)
    bus.emit(EventType.COMMAND_FAILED, {"x": 1})
    bus.emit(EventType.COMMAND_COMPLETED, {"x": 2})
    assert [e.payload["x"] for e in typed] == [1]
    assert [e.event_type for e in everything] == [EventType.COMMAND_FAILED, EventType.COMMAND_COMPLETED]


def test_event_fields():
    e = EventBus().emit(EventType.SCHEDULE_RECEIVED, {"n": 3})
    assert e.event_id.startswith("evt_") and len(e.event_id) == 16
    assert e.timestamp.tzinfo is not None
    assert e.payload == {"n": 3}


def test_failing_subscriber_does_not_break_others(caplog):
    bus = EventBus()
    seen = []

    def broken(event):
        raise RuntimeError("boom")

    bus.subscribe(EventType.STATE_CHANGED, broken)
    bus.subscribe(EventType.STATE_CHANGED, seen.append)
    with caplog.at_level(logging.ERROR):
        bus.emit(EventType.STATE_CHANGED)
    assert len(seen) == 1
    assert bus.handler_errors == 1
    assert "boom" in caplog.text  # logged with its traceback, not swallowed


def test_unsubscribe():
    bus = EventBus()
    seen = []
    sub = bus.subscribe(EventType.STATE_CHANGED, seen.append)
    all_sub = bus.subscribe_all(seen.append)
    bus.unsubscribe(sub)
    all_sub.cancel()
    bus.unsubscribe(sub)  # twice is harmless
    bus.emit(EventType.STATE_CHANGED)
    assert seen == []
    assert not bus.has_subscribers(EventType.STATE_CHANGED)


def test_same_handler_twice_gets_two_calls_until_one_unsubscribed():
    bus = EventBus()
    seen = []
    s1 = bus.subscribe(EventType.STATE_CHANGED, seen.append)
    bus.subscribe(EventType.STATE_CHANGED, seen.append)
    bus.emit(EventType.STATE_CHANGED)
    s1.cancel()
    bus.emit(EventType.STATE_CHANGED)
    assert len(seen) == 3


def test_a_handler_that_subscribes_during_a_publish_changes_the_next_publish_not_this_one():
    bus = EventBus()
    late = []

    def subscribe_another(event):
        bus.subscribe(EventType.STATE_CHANGED, late.append)

    first = bus.subscribe(EventType.STATE_CHANGED, subscribe_another)
    bus.emit(EventType.STATE_CHANGED)
    assert late == []
    first.cancel()
    bus.emit(EventType.STATE_CHANGED)
    assert len(late) == 1


def test_event_refuses_naive_timestamp():
    from datetime import datetime

    import pytest

    with pytest.raises(ValueError, match="timezone-aware"):
        Event(EventType.STATE_CHANGED, {}, datetime(2025, 1, 1))
