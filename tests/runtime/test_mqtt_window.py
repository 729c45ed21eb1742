"""The publish window and the inbound ack order, as pure bookkeeping (no broker)."""

import pytest

from coordinator.runtime.inbound_acks import AckQueue
from coordinator.runtime.publish_window import PublishWindow


def drain(window: PublishWindow[int], mids: dict[int, int], qos0: frozenset[int] = frozenset()) -> list[int]:
    """Hand over what fits, as MqttClient does; paho's ids are the message numbers + 1."""
    handed = []
    while (head := window.head()) is not None:
        window.sent(None if head in qos0 else head + 1)
        if head not in qos0:
            mids[head + 1] = head
        handed.append(head)
    return handed


def test_only_span_messages_are_handed_over_the_rest_waits_in_order():
    window = PublishWindow[int](span=3)
    for n in range(7):
        window.push(n, confirmable=True)
    mids: dict[int, int] = {}
    assert drain(window, mids) == [0, 1, 2]
    assert (window.unconfirmed, window.waiting, window.in_flight) == (7, 4, 3)
    assert window.confirm(1) == 0
    assert drain(window, mids) == [3]
    assert window.confirm(2) == 1 and window.confirm(3) == 2
    assert drain(window, mids) == [4, 5]
    for mid in (4, 5, 6):
        window.confirm(mid)
    assert drain(window, mids) == [6]
    window.confirm(7)
    assert (window.unconfirmed, window.waiting, window.in_flight) == (0, 0, 0)


def test_a_late_confirmation_of_the_oldest_holds_the_window_however_many_newer_ones_came():
    # paho's ids are unique only within 65,535: the span counts from the oldest unconfirmed.
    window = PublishWindow[int](span=3)
    for n in range(5):
        window.push(n, confirmable=True)
    drain(window, {})
    window.confirm(2)
    window.confirm(3)
    assert window.head() is None
    window.confirm(1)
    assert drain(window, {}) == [3, 4]


def test_qos0_messages_take_a_number_and_keep_their_place_but_need_no_confirmation():
    window = PublishWindow[int](span=3)
    for n in range(5):
        window.push(n, confirmable=n != 1)
    assert window.unconfirmed == 4
    assert drain(window, {}, qos0=frozenset({1})) == [0, 1, 2]
    assert window.confirm(2) is None  # the QoS 0 message's "sent" report carries its id too
    window.confirm(1)
    assert drain(window, {}) == [3, 4]  # from message 2 on, three numbers: 2, 3, 4


def test_a_stall_waits_for_the_next_confirmation_and_keeps_the_head():
    window = PublishWindow[int](span=10)
    for n in range(3):
        window.push(n, confirmable=True)
    window.sent(1)
    window.stall()
    assert window.head() is None
    window.confirm(1)
    assert window.head() == 1


def test_discard_removes_the_head_without_a_number():
    window = PublishWindow[int](span=1)
    window.push(0, confirmable=False)
    window.push(1, confirmable=True)
    assert window.discard() == 0
    assert window.head() == 1 and window.unconfirmed == 1


def test_a_number_in_use_twice_is_a_bug_not_a_silent_overwrite():
    window = PublishWindow[int](span=10)
    window.push(0, confirmable=True)
    window.push(1, confirmable=True)
    window.sent(5)
    with pytest.raises(RuntimeError):
        window.sent(5)


def test_acks_leave_in_arrival_order_once_handled_and_confirmed():
    acks = AckQueue()
    a, b, c = (acks.arrived(mid, 1) for mid in (10, 11, 12))
    a.publishing()
    a.publishing()
    assert acks.handled(a) == []
    assert acks.handled(b) == []  # b is safe, but waits for a
    assert acks.settled(a) == []
    assert acks.settled(a) == [(10, 1), (11, 1)]
    assert acks.handled(c) == [(12, 1)]
    assert len(acks) == 0


def test_a_message_that_publishes_nothing_is_acked_when_its_handler_returns():
    acks = AckQueue()
    assert acks.handled(acks.arrived(1, 1)) == [(1, 1)]
