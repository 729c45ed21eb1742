import logging
import threading

from coordinator import Event, EventBus, EventType


def test_typed_delivery_and_subscribe_all():
    bus = EventBus()
    typed: list[Event] = []
    everything: list[Event] = []
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
    seen: list[Event] = []

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
    seen: list[Event] = []
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
    seen: list[Event] = []
    s1 = bus.subscribe(EventType.STATE_CHANGED, seen.append)
    bus.subscribe(EventType.STATE_CHANGED, seen.append)
    bus.emit(EventType.STATE_CHANGED)
    s1.cancel()
    bus.emit(EventType.STATE_CHANGED)
    assert len(seen) == 3


def test_subscribe_during_publish_from_other_thread_is_safe():
    bus = EventBus()
    count: list[Event] = []
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            bus.unsubscribe(bus.subscribe(EventType.STATE_CHANGED, lambda e: None))

    t = threading.Thread(target=churn)
    t.start()
    bus.subscribe(EventType.STATE_CHANGED, count.append)
    for _ in range(5000):
        bus.emit(EventType.STATE_CHANGED)
    stop.set()
    t.join()
    assert len(count) == 5000


def test_event_refuses_naive_timestamp():
    from datetime import datetime

    import pytest

    with pytest.raises(ValueError, match="timezone-aware"):
        Event(EventType.STATE_CHANGED, {}, datetime(2025, 1, 1))
