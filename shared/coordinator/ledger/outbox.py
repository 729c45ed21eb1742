"""Committed messages -> the MQTT client, at the pace the broker confirms them.

The outbox table holds every message the planner published until the broker confirmed it, so
a crash between a commit and its PUBACK sends the message again after the restart (receivers
are idempotent: QoS 1 is at-least-once anyway). The sender keeps at most ``WINDOW`` messages
unconfirmed in the client: a 5,000-asset schedule's hundreds of thousands of events wait on
disk, not in paho's 65,535 message ids (field notes). Command batches go ahead of events.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from coordinator.ledger.store import Ledger, OutgoingMessage

log = logging.getLogger(__name__)

WINDOW = 20_000
"""Messages handed to the client and not yet confirmed, at most."""


class Transport(Protocol):
    """What the sender needs of an MQTT client (runtime.mqtt.MqttClient)."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, *,
                on_confirmed: Callable[[], None] | None = None) -> object: ...

    @property
    def unconfirmed(self) -> int: ...


class OutboxSender:
    """Sends what the ledger committed, in order (urgent first), and tells the ledger what
    the broker confirmed. Without a transport (a planner driven by tests) each message goes
    to ``publish`` and counts as confirmed at once."""

    def __init__(self, ledger: Ledger, publish: Callable[..., object], transport: Transport | None = None) -> None:
        self.ledger = ledger
        self.publish = publish
        self.transport = transport
        self._urgent: deque[OutgoingMessage] = deque()
        self._events: deque[OutgoingMessage] = deque()
        ledger.on_committed(self.enqueue)

    @property
    def waiting(self) -> int:
        """Committed messages not yet handed to the client."""
        return len(self._urgent) + len(self._events)

    def enqueue(self, messages: Iterable[OutgoingMessage]) -> None:
        for message in messages:
            (self._urgent if message.urgent else self._events).append(message)
        self.pump()

    def replay(self) -> int:
        """The broker lost its state (a kill -9 before it saved): send again everything still in
        the outbox that is not waiting here anyway. Returns how many."""
        waiting = {m.id for m in self._urgent} | {m.id for m in self._events}
        again = [m for m in self.ledger.recently_sent() if m.id not in waiting]
        self.enqueue(again)
        return len(again)

    def pump(self) -> None:
        """Hand messages to the client while the window has room."""
        transport = self.transport
        while self._urgent or self._events:
            if transport is not None and transport.unconfirmed >= WINDOW:
                return
            message = (self._urgent or self._events).popleft()
            if transport is None:
                self.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
                self.ledger.confirmed(message.id)
            elif message.qos == 0:
                transport.publish(message.topic, message.payload, qos=0, retain=message.retain)
                self.ledger.confirmed(message.id)  # QoS 0 is never confirmed; it was sent as well as it can be
            else:
                transport.publish(message.topic, message.payload, qos=message.qos, retain=message.retain,
                                  on_confirmed=self._confirmation(message.id))

    def _confirmation(self, message_id: int) -> Callable[[], None]:
        def confirmed() -> None:
            self.ledger.confirmed(message_id)
            self.pump()

        return confirmed
