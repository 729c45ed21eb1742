"""The one MQTT client every process uses (paho-mqtt 2.x), set up so nothing is lost quietly.

- MQTT 3.1.1 with ``clean_session=False`` and a stable client id: the broker keeps the
  session, so a restarted process receives what was queued for it while it was down
  (field notes: a v5 session did not survive a broker restart on Debian's Mosquitto).
- QoS 1 by default; inbound messages are acknowledged only after their handler returned
  (``manual_ack``), so a crash mid-handling means redelivery, not loss. Handlers must be
  idempotent by message id.
- Handlers run one at a time, in arrival order, on a worker thread: never on paho's
  network thread, where a slow handler would stall keep-alives. *Urgent* subscriptions
  (the emergency stop) skip that queue: their handlers run on arrival and must be quick.
- A Last Will (the process's "offline" status) and a hook for link changes, so the process
  can keep its retained status (services/supervision.py) true.
- Automatic reconnect with backoff; subscriptions are renewed on every connect.

    >>> client = MqttClient("planner", BrokerSettings(port=1883))      # doctest: +SKIP
    >>> client.subscribe("qubit/results/+", on_results)                 # doctest: +SKIP
    >>> client.start()                                                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.runtime.settings import settings

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]
"""handler(topic, payload); raise only for bugs: bad input is the handler's to refuse."""


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line
    keepalive: int = 15

    @classmethod
    def from_env(cls) -> BrokerSettings:
        """QUBIT_MQTT_HOST, QUBIT_MQTT_PORT, QUBIT_MQTT_USERNAME, QUBIT_MQTT_PASSWORD (runtime/settings.py)."""
        s = settings()
        password = s.mqtt_password.get_secret_value() if s.mqtt_password is not None else None
        return cls(host=s.mqtt_host, port=s.mqtt_port, username=s.mqtt_username, password=password)


class MqttClient:
    """A persistent-session MQTT client with ordered, acknowledged-after-handling delivery."""

    def __init__(
        self,
        service: str,
        settings: BrokerSettings,
        *,
        client_id: str | None = None,
        persistent: bool = True,
        will: tuple[str, bytes] | None = None,
        on_link: Callable[[bool], None] | None = None,
    ) -> None:
        """``persistent``: keep the broker session across restarts (services, not CLI
        sessions); ``will``: (topic, payload) the broker publishes, retained, if this process
        vanishes; ``on_link(up)``: called on paho's thread whenever the broker link comes or goes."""
        self.service = service
        self.settings = settings
        self.client_id = client_id or f"qubit-{service}"
        self._subscriptions: list[tuple[str, int]] = []
        self._handlers: list[tuple[str, Handler]] = []
        self._urgent: list[tuple[str, Handler]] = []
        self._inbox: queue.Queue[paho.MQTTMessage | None] = queue.Queue()
        self.connected = threading.Event()
        self.reconnects = 0
        self._ever_connected = False
        self._worker: threading.Thread | None = None
        self._on_link = on_link

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=not persistent,
            protocol=paho.MQTTv311,
            manual_ack=True,
        )
        if settings.username:
            client.username_pw_set(settings.username, settings.password)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        # Unbounded outgoing queue: a QoS 1 message published while the broker is away waits, it is not dropped.
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    # -- set-up --------------------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1, *, urgent: bool = False) -> None:
        """Route messages matching ``topic_filter`` to ``handler``; call before or after start().

        ``urgent``: the handler runs as soon as the message arrives, ahead of any backlog, on
        paho's network thread: it must only hand work on (set a flag, schedule a task)."""
        self._subscriptions.append((topic_filter, qos))
        (self._urgent if urgent else self._handlers).append((topic_filter, handler))
        if self.connected.is_set():
            self._client.subscribe(topic_filter, qos)

    @property
    def backlog(self) -> int:
        """Messages received and not yet handled."""
        return self._inbox.qsize()

    def start(self, timeout: float = 10.0) -> None:
        """Connect (retrying in the background) and start delivering; wait up to ``timeout`` for the link."""
        self._worker = threading.Thread(target=self._deliver, name=f"{self.service}-handlers", daemon=True)
        self._worker.start()
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        self._client.loop_start()
        if not self.connected.wait(timeout):
            log.warning("%s: broker %s:%s not reachable yet; retrying in the background",
                        self.service, self.settings.host, self.settings.port)

    def stop(self, timeout: float = 5.0, farewell: tuple[str, bytes] | None = None) -> None:
        """Drain handlers, publish ``farewell`` (topic, payload; retained) and wait for the
        broker to confirm it, disconnect. A clean disconnect suppresses the Last Will."""
        if farewell is not None and self.connected.is_set():
            info = self._client.publish(farewell[0], farewell[1], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except RuntimeError as exc:  # raised when the link dropped meanwhile
                log.warning("%s: farewell not confirmed: %s", self.service, exc)
        self._inbox.put(None)
        if self._worker is not None:
            self._worker.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()

    # -- publishing ----------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        """Queue a message; with QoS >= 1 it survives a broker outage in this process's memory."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.error("%s: publish to %s refused by client: %s", self.service, topic, paho.error_string(info.rc))
        elif info.rc == paho.MQTT_ERR_NO_CONN and qos == 0:
            log.warning("%s: QoS 0 message to %s dropped while disconnected", self.service, topic)
        return info

    # -- paho callbacks (network thread: keep them short) --------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("%s: broker refused connection: %s", self.service, reason)
            return
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        for topic_filter, qos in self._subscriptions:
            client.subscribe(topic_filter, qos)
        self.connected.set()
        if self._on_link is not None:
            self._on_link(True)
        log.info("%s: connected to %s:%s (session present: %s)", self.service, self.settings.host,
                 self.settings.port, getattr(flags, "session_present", None))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        if reason.is_failure:
            log.warning("%s: lost broker connection (%s); reconnecting", self.service, reason)
            if self._on_link is not None:
                self._on_link(False)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        urgent = [h for f, h in self._urgent if paho.topic_matches_sub(f, message.topic)]
        if not urgent:
            self._inbox.put(message)
            return
        for handler in urgent:
            try:
                handler(message.topic, message.payload)
            except Exception:
                log.exception("%s: urgent handler for %s failed on a message", self.service, message.topic)
        if message.qos > 0:
            client.ack(message.mid, message.qos)

    # -- delivery worker -----------------------------------------------------------

    def _deliver(self) -> None:
        while (message := self._inbox.get()) is not None:
            for topic_filter, handler in self._handlers:
                if paho.topic_matches_sub(topic_filter, message.topic):
                    try:
                        handler(message.topic, message.payload)
                    except Exception:
                        # A handler bug must not kill the process or block the queue behind
                        # this message forever; it is logged with its traceback.
                        log.exception("%s: handler for %s failed on a message", self.service, message.topic)
            if message.qos > 0:
                self._client.ack(message.mid, message.qos)
