"""Which outgoing messages may be handed to paho now, so that none is ever dropped by it.

paho numbers every publish (QoS 0 too) from one 16-bit counter and refuses, dropping it, a
QoS >= 1 message whose number is still in use by an unconfirmed one (MQTT_ERR_QUEUE_SIZE, at
65,535 unconfirmed at the latest; field notes). The window keeps every message handed over
since the oldest unconfirmed one within ``span`` numbers, well below 65,535, so a number is
never still in use when paho hands it out again. What does not fit waits here, in order:
nothing overtakes a message published before it.

Pure bookkeeping, no I/O, no threads: ``MqttClient`` drives it (runtime/mqtt.py).

    >>> window = PublishWindow[str](span=2)
    >>> for name in "abc":
    ...     window.push(name, confirmable=True)
    >>> window.head(), window.sent(mid=7), window.head(), window.sent(mid=8), window.head()
    ('a', 'a', 'b', 'b', None)
    >>> window.confirm(7), window.head(), window.unconfirmed
    ('a', 'c', 2)
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class PublishWindow(Generic[T]):
    """A FIFO of messages not yet handed to paho, and the numbers of those handed over and
    not yet confirmed. ``T`` is the caller's message record."""

    def __init__(self, span: int) -> None:
        if span < 1:
            raise ValueError(f"span must be at least 1, not {span}")
        self.span = span
        self._waiting: deque[tuple[T, bool]] = deque()  # (message, confirmable), oldest first
        self._waiting_confirmable = 0
        self._sent = 0  # messages handed over, ever: each took one paho number
        self._open: dict[int, tuple[int, T]] = {}  # mid -> (sequence number, message)
        self._order: deque[int] = deque()  # sequence numbers of unconfirmed messages, oldest first
        self._closed: set[int] = set()  # confirmed sequence numbers still in _order (out of order)
        self._stalled = False

    @property
    def unconfirmed(self) -> int:
        """Confirmable messages not yet confirmed: handed over, or still waiting here."""
        return len(self._open) + self._waiting_confirmable

    @property
    def in_flight(self) -> int:
        """Messages handed over and awaiting their confirmation."""
        return len(self._open)

    @property
    def waiting(self) -> int:
        """Messages not handed over yet (every QoS)."""
        return len(self._waiting)

    def push(self, message: T, *, confirmable: bool) -> None:
        """Queue ``message`` behind every one pushed before it; ``confirmable``: QoS >= 1."""
        self._waiting.append((message, confirmable))
        self._waiting_confirmable += confirmable

    def head(self) -> T | None:
        """The next message, if it may be handed over now; None when none waits or there is no room."""
        if not self._waiting or self._stalled:
            return None
        if self._order and self._sent - self._order[0] >= self.span:
            return None
        return self._waiting[0][0]

    def sent(self, mid: int | None) -> T:
        """The head was handed to paho (it took a number); ``mid`` when it awaits a confirmation."""
        message, confirmable = self._waiting.popleft()
        self._waiting_confirmable -= confirmable
        if mid is not None:
            if mid in self._open:
                raise RuntimeError(f"message id {mid} handed out twice while unconfirmed")
            self._open[mid] = (self._sent, message)
            self._order.append(self._sent)
        self._sent += 1
        return message

    def discard(self) -> T:
        """The head leaves without being handed over (dropped: QoS 0 while offline, refused)."""
        message, confirmable = self._waiting.popleft()
        self._waiting_confirmable -= confirmable
        return message

    def stall(self) -> None:
        """paho had no room for the head after all: keep it, hand nothing over until the next
        confirmation frees a number."""
        self._stalled = True

    def confirm(self, mid: int) -> T | None:
        """The broker confirmed ``mid``: its message, or None for a number not awaited."""
        entry = self._open.pop(mid, None)
        if entry is None:
            return None
        self._stalled = False
        sequence, message = entry
        self._closed.add(sequence)
        while self._order and self._order[0] in self._closed:
            self._closed.discard(self._order.popleft())
        return message
