"""A bare paho subscriber that keeps what it receives, with when: the fleet check's eyes on
the central broker (SCADA's persistent session) and on each site broker."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.runtime.mqtt import BrokerLogin


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool
    at: float
    """time.monotonic() on arrival."""


class Observer:
    """Subscribed to ``topics`` (QoS 1) once the constructor returns (the broker's SUBACKs).

    ``session``: a client id with a persistent session (clean_session false), which the broker
    keeps across this client's own disconnects; None for a throwaway one."""

    def __init__(self, host: str, port: int, login: BrokerLogin, *topics: str, session: str | None = None) -> None:
        self.seen: list[Seen] = []
        self._lock = threading.RLock()  # the predicates of wait_for may take a snapshot
        self._arrived = threading.Condition(self._lock)
        self.client = login.apply(paho.Client(CallbackAPIVersion.VERSION2, client_id=session or "",
                                              clean_session=session is None, protocol=paho.MQTTv311))
        self.client.max_queued_messages_set(0)
        self.client.on_message = self._on_message
        granted: queue.Queue[int] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, p: granted.put(mid)
        self.client.connect(host, port)
        self.client.loop_start()
        waiting = {self.client.subscribe(topic, qos=1)[1] for topic in topics}
        while waiting:
            waiting.discard(granted.get(timeout=10))

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._arrived:
            self.seen.append(Seen(message.topic, bytes(message.payload), bool(message.retain), time.monotonic()))
            self._arrived.notify_all()

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def wait_for(self, done: Callable[[list[Seen]], bool], timeout: float) -> bool:
        """Until ``done(everything seen)`` holds (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not done(self.seen):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(min(left, 0.5))
            return True

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        # disconnect first: it wakes paho's network thread, which then ends at once
        self.client.disconnect()
        self.client.loop_stop()
