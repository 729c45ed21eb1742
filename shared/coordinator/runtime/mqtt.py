"""The one MQTT client every process uses (paho-mqtt 2.x), set up so nothing is lost quietly.

- MQTT 3.1.1 with ``clean_session=False`` and a stable client id: the broker keeps the
  session, so a restarted process receives what was queued for it while it was down
  (field notes: a v5 session did not survive a broker restart on Debian's Mosquitto).
- QoS 1 by default; inbound messages are acknowledged only after their handler returned
  (``manual_ack``), so a crash mid-handling means redelivery, not loss. Handlers must be
  idempotent by message id.
- A service opens the client on its event loop (``open``): every handler and the link hook
  run on that loop, one message at a time, in arrival order. *Urgent* subscriptions (the
  emergency stop) are handled the moment they reach the loop, ahead of any backlog.
- paho's network thread stays: it owns the socket, keep-alives and reconnects with backoff,
  which paho offers only on its own loop. It does nothing but hand each callback into the
  event loop (``call_soon_threadsafe``), so no code of ours runs on it.
- Short-lived tools (the ``qubit`` CLI, the demo) use ``start``/``stop`` without an event
  loop; their handlers then run on paho's thread and must only hand data on.
- A Last Will (the process's "offline" status) and a hook for link changes, so the process
  can keep its retained status (runtime/supervision.py) true.
- Subscriptions are renewed on every connect; ``subscribed`` is set once the broker's
  SUBACKs are in, for whoever must not publish before it listens.

    >>> client = MqttClient("planner", BrokerSettings(port=1883))      # doctest: +SKIP
    >>> client.subscribe("qubit/results/+", on_results)                 # doctest: +SKIP
    >>> await client.open()                                             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
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


def _matching(routes: list[tuple[str, Handler]], topic: str) -> list[Handler]:
    return [handler for topic_filter, handler in routes if paho.topic_matches_sub(topic_filter, topic)]


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
        vanishes; ``on_link(up)``: called (on the event loop, once opened) whenever the
        broker link comes or goes."""
        self.service = service
        self.settings = settings
        self.client_id = client_id or f"qubit-{service}"
        self._subscriptions: list[tuple[str, int]] = []
        self._handlers: list[tuple[str, Handler]] = []
        self._urgent: list[tuple[str, Handler]] = []
        self._on_link = on_link
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: deque[paho.MQTTMessage] = deque()
        # Both set and waited for on the loop only:
        self._arrived = asyncio.Event()  # the inbox has messages
        self._idle = asyncio.Event()  # the inbox is empty and no handler is running
        self._link_up = asyncio.Event()  # the broker link is up
        self._delivery: asyncio.Task[None] | None = None
        self._confirmations: dict[int, asyncio.Future[None]] = {}
        self.connected = threading.Event()
        """Set while the broker link is up (paho's thread sets it; anyone may read it)."""
        self.subscribed = threading.Event()
        """Set once the broker granted every subscription of the current connection."""
        # paho's thread answers SUBACKs while the loop (or a tool's thread) subscribes: the
        # one piece of state both write, so it has a lock.
        self._suback_lock = threading.Lock()
        self._unacknowledged_subscriptions: set[int] = set()
        self.reconnects = 0
        self._ever_connected = False

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
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        self._client = client

    # -- set-up --------------------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1, *, urgent: bool = False) -> None:
        """Route messages matching ``topic_filter`` to ``handler``; call before or after opening.

        ``urgent``: the handler runs as soon as the message reaches the loop, ahead of any
        backlog of other messages."""
        self._subscriptions.append((topic_filter, qos))
        (self._urgent if urgent else self._handlers).append((topic_filter, handler))
        if self.connected.is_set():
            self._send_subscribe(self._client, topic_filter, qos)

    @property
    def backlog(self) -> int:
        """Messages received and not yet handled."""
        return len(self._inbox)

    # -- on an event loop (services) ------------------------------------------------

    async def open(self, timeout: float = 10.0) -> bool:
        """Connect (retrying in the background) and deliver on the running loop; wait up
        to ``timeout`` for the link. False when the broker was not reachable in that time."""
        self._loop = asyncio.get_running_loop()
        self._delivery = self._loop.create_task(self._deliver(), name=f"{self.service}-handlers")
        self._start_network()
        try:
            async with asyncio.timeout(timeout):
                await self.until_connected()
        except TimeoutError:
            self._warn_unreachable()
            return False
        return True

    async def until_connected(self) -> None:
        """Return once the broker link is up (on the loop of ``open``)."""
        await self._link_up.wait()

    async def close(self, timeout: float = 5.0, farewell: tuple[str, bytes] | None = None) -> None:
        """Handle what has arrived (for up to ``timeout`` seconds; the rest stays unacknowledged,
        so the broker delivers it again), publish ``farewell`` (topic, payload; retained) and
        wait up to ``timeout`` for the broker to confirm it, disconnect. A clean disconnect
        suppresses the Last Will. The messages published before the farewell went out before it."""
        if self._delivery is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("%s: %d messages left unhandled at shutdown; the broker delivers them again",
                            self.service, len(self._inbox))
            self._delivery.cancel()
            await asyncio.gather(self._delivery, return_exceptions=True)
        if farewell is not None and self.connected.is_set():
            try:
                await asyncio.wait_for(self.publish_confirmed(*farewell, retain=True), timeout)
            except (TimeoutError, ConnectionError) as exc:
                log.warning("%s: farewell not confirmed: %s", self.service, exc or "no PUBACK in time")
        self._stop_network()

    async def publish_confirmed(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish at QoS 1 and return once the broker acknowledged it (on the loop of ``open``)."""
        assert self._loop is not None, "open() the client on its loop first"
        confirmed = self._loop.create_future()
        info = self.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(paho.error_string(info.rc))
        # The PUBACK is handed into the loop after this line ran: nothing is missed.
        self._confirmations[info.mid] = confirmed
        try:
            await confirmed
        finally:
            self._confirmations.pop(info.mid, None)

    # -- without an event loop (short-lived tools) ------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Connect (retrying in the background); handlers run on paho's thread and must only
        hand data on. Wait up to ``timeout`` for the link."""
        self._start_network()
        if not self.connected.wait(timeout):
            self._warn_unreachable()

    def wait_subscribed(self, timeout: float = 5.0) -> bool:
        """Block until the broker granted every subscription; False if not within ``timeout``."""
        return self.subscribed.wait(timeout)

    def stop(self, timeout: float = 5.0, farewell: tuple[str, bytes] | None = None) -> None:
        """Publish ``farewell`` (topic, payload; retained), wait for the broker to confirm
        it, disconnect. A clean disconnect suppresses the Last Will."""
        if farewell is not None and self.connected.is_set():
            info = self._client.publish(farewell[0], farewell[1], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except RuntimeError as exc:  # raised when the link dropped meanwhile
                log.warning("%s: farewell not confirmed: %s", self.service, exc)
        self._stop_network()

    # -- publishing ----------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        """Queue a message; with QoS >= 1 it survives a broker outage in this process's memory."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.error("%s: publish to %s refused by client: %s", self.service, topic, paho.error_string(info.rc))
        elif info.rc == paho.MQTT_ERR_NO_CONN and qos == 0:
            log.warning("%s: QoS 0 message to %s dropped while disconnected", self.service, topic)
        return info

    # -- the network -----------------------------------------------------------------

    def _start_network(self) -> None:
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        self._client.loop_start()

    def _stop_network(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _warn_unreachable(self) -> None:
        log.warning("%s: broker %s:%s not reachable yet; retrying in the background",
                    self.service, self.settings.host, self.settings.port)

    def _send_subscribe(self, client: paho.Client, topic_filter: str, qos: int) -> None:
        with self._suback_lock:
            rc, mid = client.subscribe(topic_filter, qos)
            if rc == paho.MQTT_ERR_SUCCESS and mid is not None:
                self._unacknowledged_subscriptions.add(mid)
                self.subscribed.clear()
            else:
                log.error("%s: subscription to %s not sent: %s", self.service, topic_filter, paho.error_string(rc))

    def _in_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """From paho's thread: run ``callback`` on the event loop (at once, for tools)."""
        if self._loop is None:
            callback(*args)
            return
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed under a late callback while shutting down
            log.debug("%s: callback after the event loop closed: %s", self.service, callback)

    # -- paho callbacks (paho's thread: they only hand on) ----------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("%s: broker refused connection: %s", self.service, reason)
            return
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        with self._suback_lock:
            self._unacknowledged_subscriptions.clear()
        for topic_filter, qos in self._subscriptions:
            self._send_subscribe(client, topic_filter, qos)
        if not self._subscriptions:
            self.subscribed.set()
        self.connected.set()
        self._in_loop(self._linked, True, True)
        log.info("%s: connected to %s:%s (session present: %s)", self.service, self.settings.host,
                 self.settings.port, getattr(flags, "session_present", None))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if reason.is_failure:
            log.warning("%s: lost broker connection (%s); reconnecting", self.service, reason)
        self._in_loop(self._linked, False, reason.is_failure)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        for code in reason_codes:
            if code.is_failure:
                log.error("%s: broker refused a subscription: %s", self.service, code)
        with self._suback_lock:
            self._unacknowledged_subscriptions.discard(mid)
            done = not self._unacknowledged_subscriptions
        if done:
            self.subscribed.set()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if self._loop is not None:
            self._in_loop(self._confirmed, mid)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._in_loop(self._receive, message)

    # -- delivery (on the event loop) --------------------------------------------------

    def _linked(self, up: bool, tell: bool) -> None:
        (self._link_up.set if up else self._link_up.clear)()
        if tell and self._on_link is not None:
            self._on_link(up)

    def _confirmed(self, mid: int) -> None:
        future = self._confirmations.get(mid)
        if future is not None and not future.done():
            future.set_result(None)

    def _receive(self, message: paho.MQTTMessage) -> None:
        urgent = _matching(self._urgent, message.topic)
        if urgent or self._loop is None:
            self._handle(message, urgent + _matching(self._handlers, message.topic))
            return
        self._inbox.append(message)
        self._idle.clear()
        self._arrived.set()

    async def _deliver(self) -> None:
        while True:
            if not self._inbox:
                self._arrived.clear()
                self._idle.set()
                await self._arrived.wait()
                continue
            message = self._inbox.popleft()
            self._handle(message, _matching(self._handlers, message.topic))
            # Between two messages the loop runs whatever is ready: an urgent arrival, the
            # tick, device I/O. A backlog never starves them.
            await asyncio.sleep(0)

    def _handle(self, message: paho.MQTTMessage, handlers: list[Handler]) -> None:
        for handler in handlers:
            try:
                handler(message.topic, bytes(message.payload))
            except Exception:
                # A handler bug must not kill the process or block the queue behind this
                # message forever; it is logged with its traceback.
                log.exception("%s: handler for %s failed on a message", self.service, message.topic)
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)
