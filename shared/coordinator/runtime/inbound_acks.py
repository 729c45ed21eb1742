"""When an inbound QoS >= 1 message may be acknowledged to the broker.

Once its handler returned and every QoS >= 1 message the handler published was confirmed by
the broker: a process that dies before then gets the message again, and its effects (the
messages it caused) are never lost with it. Acknowledgements leave in the order the messages
arrived (MQTT 3.1.1 section 4.6), so a message also waits for every one before it.

Pure bookkeeping, no I/O: ``MqttClient`` sends what ``ready`` returns (runtime/mqtt.py).

    >>> acks = AckQueue()
    >>> first, second = acks.arrived(mid=1, qos=1), acks.arrived(mid=2, qos=1)
    >>> first.publishing(); acks.handled(second), acks.handled(first)
    ([], [])
    >>> acks.settled(first)
    [(1, 1), (2, 1)]
"""

from __future__ import annotations

from collections import deque


class Inbound:
    """One inbound message awaiting its acknowledgement."""

    __slots__ = ("done", "mid", "qos", "unconfirmed")

    def __init__(self, mid: int, qos: int) -> None:
        self.mid, self.qos = mid, qos
        self.done = False  # the handler returned
        self.unconfirmed = 0  # messages it published, not yet confirmed

    def publishing(self) -> None:
        """The handler published one more QoS >= 1 message."""
        self.unconfirmed += 1

    @property
    def safe(self) -> bool:
        return self.done and not self.unconfirmed


class AckQueue:
    """Inbound messages in arrival order, released from the front as they become safe."""

    def __init__(self) -> None:
        self._queue: deque[Inbound] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def arrived(self, mid: int, qos: int) -> Inbound:
        """A message arrived (call in arrival order)."""
        entry = Inbound(mid, qos)
        self._queue.append(entry)
        return entry

    def handled(self, entry: Inbound) -> list[tuple[int, int]]:
        """Its handler returned: the (mid, qos) pairs to acknowledge now, in order."""
        entry.done = True
        return self._release()

    def settled(self, entry: Inbound) -> list[tuple[int, int]]:
        """One of its published messages was confirmed (or failed for good): the (mid, qos)
        pairs to acknowledge now."""
        entry.unconfirmed -= 1
        return self._release()

    def _release(self) -> list[tuple[int, int]]:
        out = []
        while self._queue and self._queue[0].safe:
            entry = self._queue.popleft()
            out.append((entry.mid, entry.qos))
        return out
