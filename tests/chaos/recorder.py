"""A persistent subscriber that writes everything it sees on a topic filter to a JSON-lines file.

As a SCADA that must not miss an event would subscribe: MQTT 3.1.1 with clean_session False
and a fixed client id (the field notes: that session type survives a broker restart, the v5
one did not here), QoS 1, and a resubscription on every connect (a broker restarted from an
old snapshot may have forgotten the subscription). paho reconnects by itself; the file is
appended and flushed per message, so it outlives the recorder.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.codec import DecodeError, decode_event
from coordinator.contract.events import CommandPayload
from coordinator.contract.messages import ResultBatch, decode
from coordinator.runtime.mqtt import BrokerLogin

Decoder = Callable[[str, bytes], list[dict[str, Any]]]


def event_lines(topic: str, payload: bytes) -> list[dict[str, Any]]:
    """An event as the verdict reads it; undecodable ones are kept as such (never dropped)."""
    try:
        event = decode_event(payload)
    except DecodeError as exc:
        return [{"topic": topic, "undecodable": exc.reason}]
    line: dict[str, Any] = {"topic": topic, "event_type": event.event_type.value, "event_id": event.event_id,
                            "at": event.timestamp.isoformat()}
    p = event.payload
    if isinstance(p, CommandPayload):
        line |= {"command_id": p.command_id, "asset_id": p.asset_id, "status": p.status.value,
                 "power_kw": p.parameters.get("power_kw"), "attempts": p.attempts, "schedule_id": p.schedule_id,
                 "error": p.error}
    return [line]


def result_lines(topic: str, payload: bytes) -> list[dict[str, Any]]:
    """Gateway results, one line per command result (the fallback evidence, see evidence.py)."""
    try:
        batch = decode(ResultBatch, payload)
    except DecodeError as exc:
        return [{"topic": topic, "undecodable": exc.reason}]
    return [{"topic": topic, "command_id": r.command_id, "asset_id": r.asset_id, "outcome": r.outcome.value,
             "at": r.at.isoformat()} for r in batch.results]


class PersistentRecorder:
    """``start()`` returns once the first subscription is confirmed; ``stop()`` disconnects."""

    def __init__(self, host: str, port: int, topic: str, client_id: str, path: Path, decoder: Decoder,
                 login: BrokerLogin | None = None) -> None:
        self.topic, self.path, self.decoder = topic, path, decoder
        self.connects = 0
        self._subscribed: queue.Queue[int] = queue.Queue()
        self._lock = threading.Lock()
        self._file: IO[str] = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (lives with the recorder)
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                   protocol=paho.MQTTv311)
        (login or BrokerLogin()).apply(self._client)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda c, u, mid, codes, p: self._subscribed.put(mid)
        self._client.on_message = self._on_message
        self._host, self._port = host, port

    def start(self, timeout: float = 10.0) -> PersistentRecorder:
        self._client.connect(self._host, self._port, keepalive=5)
        self._client.loop_start()
        self._subscribed.get(timeout=timeout)
        return self

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        if not reason.is_failure:
            self.connects += 1
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        # Written before on_message returns, i.e. before paho acknowledges it to the broker.
        lines = self.decoder(message.topic, bytes(message.payload))
        with self._lock:
            for line in lines:
                self._file.write(json.dumps(line) + "\n")
            self._file.flush()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._file.close()


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
