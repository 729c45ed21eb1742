"""The one MQTT client every process uses (paho-mqtt 2.x), set up so nothing is lost quietly.

- MQTT 3.1.1 with ``clean_session=False`` and a stable client id: the broker keeps the
  session, so a restarted process receives what was queued for it while it was down
  (field notes: a v5 session did not survive a broker restart on Debian's Mosquitto).
- QoS 1 by default. An inbound message is acknowledged (``manual_ack``) once its handler
  returned and every QoS >= 1 message the handler published was confirmed by the broker,
  in arrival order (runtime/inbound_acks.py): a crash before then means redelivery, not
  loss of the message or of what it caused. Handlers must be idempotent by message id.
- Publishing never loses a QoS >= 1 message: paho gets at most ``WINDOW`` messages beyond
  the oldest unconfirmed one (it drops what does not fit, field notes), the rest waits in
  this client's memory, in order, and follows as PUBACKs come back
  (runtime/publish_window.py). ``unconfirmed`` and ``until_room`` let a sender with a
  durable outbox feed it at its own pace. What cannot be sent at all (over the size limit,
  QoS 0 while the link is down) goes to the ``on_failure`` hook, counted, never only logged.
- A service opens the client on its event loop (``open``): every handler, confirmation
  callback and the link hook run on that loop, one message at a time, in arrival order.
  *Urgent* subscriptions (the emergency stop) are handled the moment they reach the loop,
  ahead of any backlog.
- paho's network thread stays: it owns the socket, keep-alives and reconnects with backoff,
  which paho offers only on its own loop. It does nothing but hand each callback into the
  event loop (``call_soon_threadsafe``), so no code of ours runs on it.
- Short-lived tools (the ``qubit`` CLI, the demo) use ``start``/``stop`` without an event
  loop; their handlers then run on paho's thread and must only hand data on, and their
  messages are acknowledged once the handler returned.
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
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract import topics
from coordinator.contract.events import PublishFailureReason
from coordinator.contract.messages import message_limit
from coordinator.runtime.inbound_acks import AckQueue, Inbound
from coordinator.runtime.publish_window import PublishWindow
from coordinator.runtime.settings import Settings
from coordinator.runtime.settings import settings as process_settings

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]
"""handler(topic, payload); raise only for bugs: bad input is the handler's to refuse."""


CONNECT_REFUSED_CREDENTIALS = frozenset({4, 5, 134, 135})
"""CONNACK codes for "bad user name or password" and "not authorised": MQTT 3.1.1's 4 and 5,
as paho 2 reports them (its MQTT 5 equivalents 134 and 135), and the raw 3.1.1 values."""

EXIT_CREDENTIALS_REFUSED = 78
"""A service's exit status when the broker refused its credentials (sysexits' EX_CONFIG):
retrying cannot help, an operator must fix the identity or its password file."""


class CredentialsRefused(ConnectionError):
    """The broker refused this client's username or password (not: cannot reach the broker)."""


@dataclass(frozen=True)
class BrokerLogin:
    """Who a client is on the broker and how it trusts the broker: what every client needs,
    the services' ``MqttClient`` and the raw paho clients of tests, benches and tools alike.

        BrokerLogin("scada", password, ca_file=Path("ca.crt")).apply(client)
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line
    ca_file: Path | None = None
    """Set: TLS, the broker's certificate and host name verified against this CA."""

    @classmethod
    def from_settings(cls, s: Settings | None = None) -> BrokerLogin:
        """QUBIT_MQTT_USERNAME, QUBIT_MQTT_PASSWORD_FILE (or QUBIT_MQTT_PASSWORD), QUBIT_MQTT_CA_FILE."""
        s = s or process_settings()
        return cls(s.mqtt_username, s.mqtt_secret(), s.mqtt_ca_file)

    def apply(self, client: paho.Client) -> paho.Client:
        """Set the credentials (and TLS) on ``client`` before it connects; returns it."""
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.ca_file is not None:
            client.tls_set(ca_certs=str(self.ca_file))
        return client


def refused_credentials(reason: Any) -> bool:
    """True when a CONNACK reason says the broker refused our credentials."""
    value = getattr(reason, "value", reason)
    return isinstance(value, int) and value in CONNECT_REFUSED_CREDENTIALS


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line
    keepalive: int = 15
    ca_file: Path | None = None
    """Set: TLS to the broker, verified against this CA."""

    @classmethod
    def from_env(cls) -> BrokerSettings:
        """QUBIT_MQTT_HOST, QUBIT_MQTT_PORT, QUBIT_MQTT_USERNAME, QUBIT_MQTT_PASSWORD_FILE or
        QUBIT_MQTT_PASSWORD, QUBIT_MQTT_CA_FILE (runtime/settings.py)."""
        s = process_settings()
        return cls(host=s.mqtt_host, port=s.mqtt_port, username=s.mqtt_username, password=s.mqtt_secret(),
                   ca_file=s.mqtt_ca_file)

    @classmethod
    def at(cls, host: str, port: int, login: BrokerLogin | None = None) -> BrokerSettings:
        """The broker at host:port, logged in as ``login`` (a test broker's ``login(identity)``)."""
        login = login or BrokerLogin()
        return cls(host=host, port=port, username=login.username, password=login.password, ca_file=login.ca_file)

    @property
    def login(self) -> BrokerLogin:
        return BrokerLogin(self.username, self.password, self.ca_file)


@dataclass(frozen=True)
class PublishFailure:
    """Messages that could not be sent (one, or for ``qos0_offline`` every one of an outage);
    the fields of the PUBLISH_FAILED event (contract/events.py PublishFailed)."""

    topic: str
    """The message's topic; for a summary, the first one dropped."""
    reason: PublishFailureReason
    message_bytes: int
    """Payload size; for a summary, all of them together."""
    count: int = 1
    limit_bytes: int | None = None
    detail: str = ""


class PublishRefused(ConnectionError):
    """``publish_confirmed``: the message can never be sent (``failure`` says why)."""

    def __init__(self, failure: PublishFailure) -> None:
        super().__init__(f"{failure.reason.value}: {failure.detail}")
        self.failure = failure


class PublishState(Enum):
    WAITING = "waiting"
    """In this client's overflow, not yet handed to paho."""
    SENT = "sent"
    """Handed to paho; a QoS >= 1 message awaits the broker's PUBACK."""
    CONFIRMED = "confirmed"
    """QoS >= 1: acknowledged by the broker; QoS 0: handed to the socket layer."""
    FAILED = "failed"
    """Never sent (``failure`` says why)."""


class Publication:
    """One message given to ``MqttClient.publish``; what it returns."""

    __slots__ = ("_client", "failure", "on_confirmed", "owner", "payload", "qos", "retain", "state", "topic")

    def __init__(self, client: MqttClient, topic: str, payload: bytes, qos: int, retain: bool,
                 on_confirmed: Callable[[], None] | None, owner: Inbound | None) -> None:
        self.topic, self.payload, self.qos, self.retain = topic, payload, qos, retain
        self.on_confirmed, self.owner = on_confirmed, owner
        self.state = PublishState.WAITING
        self.failure: PublishFailure | None = None
        self._client = client

    def is_published(self) -> bool:
        """True once confirmed (QoS >= 1: by the broker)."""
        return self.state is PublishState.CONFIRMED

    def wait_for_publish(self, timeout: float | None = None) -> bool:
        """Block until confirmed or failed, at most ``timeout`` seconds; True if confirmed.
        For tools' threads only: never on the event loop or in a handler on paho's thread."""
        with self._client._settled:
            self._client._settled.wait_for(
                lambda: self.state in (PublishState.CONFIRMED, PublishState.FAILED), timeout)
        return self.is_published()


def _matching(routes: list[tuple[str, Handler]], topic: str) -> list[Handler]:
    return [handler for topic_filter, handler in routes if topic_matches(topic_filter, topic)]


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT's filter rule, as paho's ``topic_matches_sub`` (which builds a matcher tree per
    call: about 20 us, paid per message and subscription, 0.25 s for a site's 5,000 retained
    states): ``+`` one level, ``#`` the rest (and the parent level), neither at the first
    level of a ``$`` topic."""
    levels, wanted = topic.split("/"), topic_filter.split("/")
    if topic.startswith("$") and wanted[0] in ("+", "#"):
        return False
    for i, want in enumerate(wanted):
        if want == "#":
            return True
        if i == len(levels) or (want != "+" and want != levels[i]):
            return False
    return len(wanted) == len(levels)


def _check_topic(topic: str, qos: int) -> None:
    """What paho.publish would raise for, raised at the caller rather than later, wherever
    the message is finally handed over."""
    if not topic or "+" in topic or "#" in topic or len(topic.encode()) > 65535:
        raise ValueError(f"invalid publish topic {topic!r}")
    if qos not in (0, 1, 2):
        raise ValueError(f"invalid QoS {qos}")


class MqttClient:
    """A persistent-session MQTT client with ordered, acknowledged-after-handling delivery
    and publishing that never drops a QoS >= 1 message."""

    WINDOW = 50_000
    """Most messages handed to paho since its oldest unconfirmed one; paho's message ids end at 65,535."""

    def __init__(
        self,
        service: str,
        settings: BrokerSettings,
        *,
        client_id: str | None = None,
        persistent: bool = True,
        will: tuple[str, bytes] | None = None,
        on_link: Callable[[bool], None] | None = None,
        on_failure: Callable[[PublishFailure], None] | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        """``persistent``: keep the broker session across restarts (services, not CLI
        sessions); ``will``: (topic, payload) the broker publishes, retained, if this process
        vanishes; ``on_link(up)``: called (on the event loop, once opened) whenever the
        broker link comes or goes; ``on_failure``: told every message that could not be
        sent (on the loop, or the publishing thread); ``max_message_bytes``: the size limit
        (default: the setting; schedule topics have their own, contract/messages.py)."""
        self.service = service
        self.settings = settings
        self.client_id = client_id or topics.client_id(service)
        self.on_failure = on_failure
        self.max_message_bytes = max_message_bytes or process_settings().max_message_bytes
        self._subscriptions: list[tuple[str, int]] = []
        self._handlers: list[tuple[str, Handler]] = []
        self._urgent: list[tuple[str, Handler]] = []
        self._on_link = on_link
        self.on_session_lost: Callable[[], None] | None = None
        """Called (on the event loop) when a connect finds no session of ours at the broker: a
        first connect, or a broker that lost its state (killed before it saved it) together
        with what it had confirmed since its last save."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._inbox: deque[tuple[paho.MQTTMessage, Inbound | None]] = deque()
        # Both set and waited for on the loop only:
        self._arrived = asyncio.Event()  # the inbox has messages
        self._idle = asyncio.Event()  # the inbox is empty and no handler is running
        self._link_up = asyncio.Event()  # the broker link is up
        self._delivery: asyncio.Task[None] | None = None
        self._acks = AckQueue()  # on the loop only
        self._handling: Inbound | None = None  # the message whose handler runs now (on the loop)
        self._room: list[tuple[int, asyncio.Future[None]]] = []  # until_room's waiters (on the loop)
        # Outgoing: the window and the offline count are shared by whoever publishes and
        # whoever settles confirmations (paho's thread, for tools), hence the lock. It is
        # never held across a call into paho: paho calls on_publish holding its own lock.
        self._lock = threading.Lock()
        self._window: PublishWindow[Publication] = PublishWindow(self.WINDOW)
        self._pumping = False  # one thread at a time hands messages over, so order holds
        self._confirms: deque[int] = deque()  # mids paho reported confirmed, not yet settled
        self._settle_scheduled = False
        self._settled = threading.Condition()  # wait_for_publish's waiters
        self._offline: list[Any] | None = None  # [count, bytes, first topic, since] of dropped QoS 0
        self.connected = threading.Event()
        """Set while the broker link is up (paho's thread sets it; anyone may read it)."""
        self.refused = threading.Event()
        """Set when the broker refused our credentials on the latest attempt (cleared on a
        successful connect): an operator must fix the identity, retrying cannot."""
        self._answered = threading.Event()  # a CONNACK came: success or refusal
        self._refused_on_loop = asyncio.Event()
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
        settings.login.apply(client)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        # paho's own queue unbounded: the window, not paho, decides how much it holds.
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

    @property
    def unconfirmed(self) -> int:
        """QoS >= 1 messages published and not yet confirmed by the broker (overflow included)."""
        return self._window.unconfirmed

    @property
    def overflow(self) -> int:
        """Messages published and not yet handed to paho (waiting for room in its window)."""
        return self._window.waiting

    # -- on an event loop (services) ------------------------------------------------

    async def open(self, timeout: float = 10.0) -> bool:
        """Connect (retrying in the background) and deliver on the running loop; wait up
        to ``timeout`` for the link. False when the broker was not reachable in that time;
        CredentialsRefused when it answered and refused our username or password."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._delivery = self._loop.create_task(self._deliver(), name=f"{self.service}-handlers")
        self._start_network()
        linked = asyncio.ensure_future(self.until_connected())
        refused = asyncio.ensure_future(self._refused_on_loop.wait())
        done, _ = await asyncio.wait((linked, refused), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        linked.cancel()
        refused.cancel()
        if self.refused.is_set() and not self._link_up.is_set():
            raise CredentialsRefused(self._refusal_text())
        if not done:
            self._warn_unreachable()
            return False
        return True

    async def until_connected(self) -> None:
        """Return once the broker link is up (on the loop of ``open``)."""
        await self._link_up.wait()

    async def until_room(self, below: int) -> None:
        """Return once ``unconfirmed < below`` (on the loop of ``open``): a sender that keeps
        its own durable outbox publishes at the pace the broker confirms."""
        if self.unconfirmed < below:
            return
        assert self._loop is not None, "open() the client on its loop first"
        room = self._loop.create_future()
        self._room.append((below, room))
        await room

    async def close(self, timeout: float = 5.0, farewell: tuple[str, bytes] | None = None) -> None:
        """Handle what has arrived (for up to ``timeout`` seconds; the rest stays unacknowledged,
        so the broker delivers it again), publish ``farewell`` (topic, payload; retained) and
        wait up to ``timeout`` for the broker to confirm it, disconnect. A clean disconnect
        suppresses the Last Will. The messages published before the farewell went out before
        it, and the inbound messages whose effects the broker confirmed by then are acknowledged."""
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
        if self.unconfirmed or self._acks:
            log.warning("%s: %d published messages unconfirmed and %d received unacknowledged at shutdown; "
                        "the received ones are delivered again", self.service, self.unconfirmed, len(self._acks))
        self._stop_network()

    async def publish_confirmed(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish at QoS 1 and return once the broker acknowledged it (on the loop of ``open``).
        PublishRefused (a ConnectionError) when it can never be sent."""
        assert self._loop is not None, "open() the client on its loop first"
        confirmed = self._loop.create_future()

        def done() -> None:
            if not confirmed.done():
                confirmed.set_result(None)

        publication = self.publish(topic, payload, qos=1, retain=retain, on_confirmed=done)
        if publication.failure is not None:
            raise PublishRefused(publication.failure)
        await confirmed

    # -- without an event loop (short-lived tools) ------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Connect (retrying in the background); handlers run on paho's thread and must only
        hand data on. Wait up to ``timeout`` for the link; ``refused`` is set when the broker
        refused our credentials."""
        self._start_network()
        self._answered.wait(timeout)
        if self.refused.is_set():
            return  # logged as a refusal; the caller reads ``refused``
        if not self.connected.is_set():
            self._warn_unreachable()

    def wait_subscribed(self, timeout: float = 5.0) -> bool:
        """Block until the broker granted every subscription; False if not within ``timeout``."""
        return self.subscribed.wait(timeout)

    def stop(self, timeout: float = 5.0, farewell: tuple[str, bytes] | None = None) -> None:
        """Publish ``farewell`` (topic, payload; retained), wait for the broker to confirm
        it, disconnect. A clean disconnect suppresses the Last Will."""
        if (farewell is not None and self.connected.is_set()
                and not self.publish(farewell[0], farewell[1], qos=1, retain=True).wait_for_publish(timeout)):
            log.warning("%s: farewell not confirmed within %s s", self.service, timeout)
        self._stop_network()

    # -- publishing ----------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, *,
                on_confirmed: Callable[[], None] | None = None) -> Publication:
        """Send a message after every one published before it; a QoS >= 1 message is kept in
        this process's memory until the broker confirmed it, across broker outages.

        ``on_confirmed()`` runs once the broker acknowledged the message; for QoS 0 once it
        was handed to the socket layer, never if it was dropped. On a client opened on an
        event loop it runs on that loop, never inside this call; on a tool's client, on
        paho's thread or the publishing one. A message over the topic's size limit is
        never sent, nor a QoS 0 one while the link is down: ``on_failure`` is told (QoS 0
        while offline: once per outage, when the link is back). ValueError for an invalid
        topic or QoS, as paho raises."""
        _check_topic(topic, qos)
        data = bytes(payload)
        limit = message_limit(topic, self.max_message_bytes)
        if len(data) > limit:
            refused = Publication(self, topic, data, qos, retain, on_confirmed, None)
            self._fail(refused, PublishFailure(topic, PublishFailureReason.TOO_LARGE, len(data), limit_bytes=limit,
                                               detail=f"{len(data)} bytes, the limit on this topic is {limit}"))
            return refused
        # A QoS >= 1 message published by a handler holds back the acknowledgement of the
        # message being handled until the broker confirmed it.
        owner = self._handling if qos and self._handling is not None and self._on_loop_thread() else None
        if owner is not None:
            owner.publishing()
        publication = Publication(self, topic, data, qos, retain, on_confirmed, owner)
        with self._lock:
            self._window.push(publication, confirmable=qos > 0)
        # On a loop, confirmations are settled only by their own loop callback: never inside
        # a caller's publish(), so callbacks do not run in the middle of the caller's code.
        self._pump(settle=self._loop is None)
        return publication

    def _on_loop_thread(self) -> bool:
        return self._loop_thread == threading.get_ident()

    def _pump(self, *, settle: bool) -> None:
        """Settle confirmations (if ``settle``) and hand over what fits, until nothing is left
        to do. One thread at a time: another that finds work being done leaves it to it."""
        with self._lock:
            if self._pumping:
                return
            self._pumping = True
        try:
            while True:
                with self._lock:
                    confirmed = self._settle_confirms() if settle else []
                    publication = self._window.head()
                    if publication is None and not confirmed:
                        if not (settle and self._confirms):
                            self._pumping = False
                            return
                        continue
                if confirmed:
                    self._after_confirmed(confirmed)
                if publication is not None:
                    self._hand_over(publication)
        except BaseException:
            with self._lock:
                self._pumping = False
            raise

    def _settle_confirms(self) -> list[Publication]:
        """Under the lock: the publications the broker confirmed since the last call."""
        confirmed = []
        while self._confirms:
            publication = self._window.confirm(self._confirms.popleft())
            if publication is not None:  # a QoS 0 message's "sent" report carries its mid too
                publication.state = PublishState.CONFIRMED
                confirmed.append(publication)
        return confirmed

    def _hand_over(self, publication: Publication) -> None:
        """Give the window's head to paho (outside the lock: paho takes its own)."""
        if publication.qos == 0 and not self.connected.is_set():
            with self._lock:
                self._window.discard()
            self._dropped_offline(publication)
            return
        try:
            info = self._client.publish(publication.topic, publication.payload, qos=publication.qos,
                                        retain=publication.retain)
        except ValueError as exc:  # checked in publish(); paho's other refusals
            with self._lock:
                self._window.discard()
            self._refused(publication, str(exc))
            return
        if publication.qos == 0:
            with self._lock:
                self._window.sent(None)
            if info.rc == paho.MQTT_ERR_SUCCESS:
                publication.state = PublishState.CONFIRMED
                self._after_confirmed([publication])
            elif info.rc == paho.MQTT_ERR_NO_CONN:  # the link went down since the check above
                self._dropped_offline(publication)
            else:
                self._refused(publication, paho.error_string(info.rc))
            return
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            # paho's ids ran out after all (ids taken by subscriptions): keep the message and
            # try again once a confirmation frees one. With none outstanding, none will.
            with self._lock:
                stalled = self._window.in_flight > 0
                if stalled:
                    self._window.stall()
                else:
                    self._window.discard()
            if not stalled:
                self._refused(publication, paho.error_string(info.rc))
            return
        # SUCCESS, or NO_CONN: paho keeps a QoS >= 1 message and sends it on reconnecting.
        publication.state = PublishState.SENT
        with self._lock:
            self._window.sent(info.mid)

    def _after_confirmed(self, confirmed: list[Publication]) -> None:
        """Run what waits for these confirmations (on the loop, for a client opened on one)."""
        if self._loop is not None and not self._on_loop_thread():
            self._loop.call_soon_threadsafe(self._after_confirmed, confirmed)
            return
        for publication in confirmed:
            if publication.on_confirmed is not None:
                if self._loop is not None and publication.qos == 0:
                    self._loop.call_soon(self._confirm_callback, publication.on_confirmed)
                else:
                    self._confirm_callback(publication.on_confirmed)
            if publication.owner is not None:
                self._send_acks(self._acks.settled(publication.owner))
        self._wake_waiters()

    def _confirm_callback(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("%s: an on_confirmed callback failed", self.service)

    def _wake_room(self) -> None:
        waiting = []
        for below, room in self._room:
            if room.done():
                continue
            if self.unconfirmed < below:
                room.set_result(None)
            else:
                waiting.append((below, room))
        self._room = waiting

    def _fail(self, publication: Publication, failure: PublishFailure) -> None:
        publication.state, publication.failure = PublishState.FAILED, failure
        log.error("%s: message to %s not sent (%s): %s", self.service, publication.topic,
                  failure.reason.value, failure.detail)
        if publication.owner is not None:  # never confirmed: its trigger is acknowledged regardless
            self._send_acks(self._acks.settled(publication.owner))
        self._wake_waiters()
        self._report(failure)

    def _wake_waiters(self) -> None:
        with self._settled:
            self._settled.notify_all()
        if self._room and self._loop is not None and self._on_loop_thread():
            self._wake_room()

    def _refused(self, publication: Publication, detail: str) -> None:
        self._fail(publication, PublishFailure(publication.topic, PublishFailureReason.REFUSED,
                                               len(publication.payload), detail=f"refused by paho: {detail}"))

    def _dropped_offline(self, publication: Publication) -> None:
        publication.state = PublishState.FAILED
        publication.failure = PublishFailure(publication.topic, PublishFailureReason.QOS0_OFFLINE,
                                             len(publication.payload), detail="broker link down")
        with self._settled:
            self._settled.notify_all()
        with self._lock:
            if self._offline is None:
                self._offline = [0, 0, publication.topic, time.monotonic()]
                first = True
            else:
                first = False
            self._offline[0] += 1
            self._offline[1] += len(publication.payload)
        if first:
            log.warning("%s: QoS 0 messages dropped while the broker link is down (first: %s); "
                        "counted, reported once the link is back", self.service, publication.topic)

    def _report_offline_drops(self) -> None:
        with self._lock:
            dropped, self._offline = self._offline, None
        if dropped is None:
            return
        count, size, topic, since = dropped
        log.warning("%s: %d QoS 0 messages (%d bytes) were dropped while the broker link was down",
                    self.service, count, size)
        self._report(PublishFailure(topic, PublishFailureReason.QOS0_OFFLINE, size, count=count,
                                    detail=f"{count} QoS 0 messages dropped while the broker link was down "
                                           f"({time.monotonic() - since:.1f} s since the first)"))

    def _report(self, failure: PublishFailure) -> None:
        if self.on_failure is None:
            return
        try:
            self.on_failure(failure)
        except Exception:
            log.exception("%s: the publish failure hook failed", self.service)

    # -- the network -----------------------------------------------------------------

    def _start_network(self) -> None:
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        self._client.loop_start()

    def _stop_network(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _refusal_text(self, reason: Any = None) -> str:
        why = f" ({reason})" if reason is not None else ""
        return (f"the broker {self.settings.host}:{self.settings.port} refused our credentials{why} "
                f"as user {self.settings.username or '(none)'}: check QUBIT_MQTT_USERNAME and "
                "QUBIT_MQTT_PASSWORD_FILE")

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
            if refused_credentials(reason):
                if not self.refused.is_set():  # once per streak: paho retries every few seconds
                    log.error("%s: %s", self.service, self._refusal_text(reason))
                self.refused.set()
                self._in_loop(self._refused_on_loop.set)
            else:
                log.error("%s: broker refused connection: %s", self.service, reason)
            self._answered.set()
            return
        self.refused.clear()
        self._answered.set()
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
        session_present = getattr(flags, "session_present", None)
        log.info("%s: connected to %s:%s (session present: %s)", self.service, self.settings.host,
                 self.settings.port, session_present)
        if session_present is False and self.on_session_lost is not None:
            self._in_loop(self.on_session_lost)

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
        self._confirms.append(mid)
        if self._loop is None:
            self._pump(settle=True)
        elif not self._settle_scheduled:
            # One loop callback settles every confirmation that came in before it runs.
            self._settle_scheduled = True
            self._in_loop(self._settle_on_loop)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._in_loop(self._receive, message)

    # -- delivery (on the event loop) --------------------------------------------------

    def _settle_on_loop(self) -> None:
        self._settle_scheduled = False  # before settling: a confirmation from now on schedules again
        self._pump(settle=True)

    def _linked(self, up: bool, tell: bool) -> None:
        (self._link_up.set if up else self._link_up.clear)()
        if up:
            self._report_offline_drops()
        if tell and self._on_link is not None:
            self._on_link(up)

    def _receive(self, message: paho.MQTTMessage) -> None:
        if self._loop is None:  # a tool: acknowledged once handled
            self._handle(message, _matching(self._urgent, message.topic) + _matching(self._handlers, message.topic))
            if message.qos > 0:
                self._client.ack(message.mid, message.qos)
            return
        # Acknowledgements leave in arrival order: the place in that order is taken now.
        entry = self._acks.arrived(message.mid, message.qos) if message.qos > 0 else None
        urgent = _matching(self._urgent, message.topic)
        if urgent:
            self._handle_on_loop(message, entry, urgent + _matching(self._handlers, message.topic))
            return
        self._inbox.append((message, entry))
        self._idle.clear()
        self._arrived.set()

    async def _deliver(self) -> None:
        while True:
            if not self._inbox:
                self._arrived.clear()
                self._idle.set()
                await self._arrived.wait()
                continue
            message, entry = self._inbox.popleft()
            self._handle_on_loop(message, entry, _matching(self._handlers, message.topic))
            # Between two messages the loop runs whatever is ready: an urgent arrival, the
            # tick, device I/O. A backlog never starves them.
            await asyncio.sleep(0)

    def _handle_on_loop(self, message: paho.MQTTMessage, entry: Inbound | None, handlers: list[Handler]) -> None:
        self._handling = entry
        try:
            self._handle(message, handlers)
        finally:
            self._handling = None
        if entry is not None:
            self._send_acks(self._acks.handled(entry))

    def _send_acks(self, acks: list[tuple[int, int]]) -> None:
        for mid, qos in acks:
            self._client.ack(mid, qos)

    def _handle(self, message: paho.MQTTMessage, handlers: list[Handler]) -> None:
        for handler in handlers:
            try:
                handler(message.topic, bytes(message.payload))
            except Exception:
                # A handler bug must not kill the process or block the queue behind this
                # message forever; it is logged with its traceback.
                log.exception("%s: handler for %s failed on a message", self.service, message.topic)
