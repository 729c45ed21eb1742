"""MqttClient publishing against a real broker: nothing dropped at paho's limit, failures
reported, inbound messages acknowledged only once their effects are confirmed. Each test
waits for what it checks, never for a time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.codec import decode_event
from coordinator.contract.events import PublishFailed, PublishFailureReason
from coordinator.events import EventBus, EventType
from coordinator.runtime.metrics import ServiceMetrics
from coordinator.runtime.mqtt import BrokerSettings, MqttClient, PublishFailure
from coordinator.runtime.service import PublishFailureReport, forward_events
from tools.broker import start_broker


@pytest.fixture
def broker(tmp_path):
    b = start_broker(tmp_path / "broker")
    yield b
    b.stop()


async def until(condition, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def plain(broker, client_id: str = "", clean: bool = True) -> paho.Client:
    client = broker.login().apply(paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                                              protocol=paho.MQTTv311))
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def test_70000_qos1_publishes_from_one_client_all_arrive_in_order(broker):
    count = 70_000
    base = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", "t/seq",
            "-c", "-i", "seq-subscriber"]
    # A persistent session, subscribed before anything is published: the broker queues for it.
    subprocess.run([*base, "-E"], check=True, timeout=10, env=os.environ | broker.mosquitto_tools_env())
    failures: list[PublishFailure] = []
    seen_overflow = []

    async def main() -> None:
        client = MqttClient("test", broker.settings(), client_id="qubit-test-70k",
                            on_failure=failures.append)
        assert await client.open(timeout=5)
        for n in range(count):
            client.publish("t/seq", str(n).encode(), qos=1)
        seen_overflow.append(client.overflow)
        await until(lambda: client.unconfirmed == 0, timeout=240)
        await client.close()

    asyncio.run(main())
    received = subprocess.run([*base, "-C", str(count)], check=True, timeout=240, capture_output=True, text=True,
                              env=os.environ | broker.mosquitto_tools_env())
    assert not failures
    assert seen_overflow[0] >= count - MqttClient.WINDOW  # paho was kept below its limit, the rest waited
    assert received.stdout.split() == [str(n) for n in range(count)]


def test_until_room_returns_once_the_broker_confirmed_enough(broker):
    async def main() -> None:
        client = MqttClient("test", broker.settings(), client_id="qubit-test-room")
        assert await client.open(timeout=5)
        for n in range(2000):
            client.publish("t/room", str(n).encode(), qos=1)
        assert client.unconfirmed == 2000  # nothing settled inside publish()
        await asyncio.wait_for(client.until_room(1), 30)
        assert client.unconfirmed == 0
        await client.close()

    asyncio.run(main())


def test_an_oversized_publish_is_a_publish_failed_event_on_the_bus_and_a_metric(broker):
    events = []
    done = threading.Event()

    def on_event(client, userdata, message):
        events.append(decode_event(message.payload))
        done.set()

    watcher = plain(broker)
    watcher.on_message = on_event
    subscribed = threading.Event()
    watcher.on_subscribe = lambda *args: subscribed.set()
    watcher.subscribe("qubit/events/#", qos=1)
    assert subscribed.wait(5)
    metrics = ServiceMetrics("test")
    bus = EventBus()

    async def main() -> None:
        client = MqttClient("test", broker.settings(), client_id="qubit-test-large",
                            on_failure=PublishFailureReport(bus, metrics), max_message_bytes=65536)
        forward_events(bus, client.publish)
        assert await client.open(timeout=5)
        fits = client.publish("t/large", b"x" * 65536)
        refused = client.publish("t/large", b"x" * 65537)
        assert refused.failure is not None and refused.failure.reason is PublishFailureReason.TOO_LARGE
        await until(done.is_set)
        await until(fits.is_published)
        await client.close()

    asyncio.run(main())
    watcher.loop_stop()
    [event] = events
    assert event.event_type is EventType.PUBLISH_FAILED
    assert isinstance(event.payload, PublishFailed)
    assert (event.payload.reason, event.payload.topic, event.payload.message_bytes, event.payload.limit_bytes) == (
        PublishFailureReason.TOO_LARGE, "t/large", 65537, 65536)
    assert b'qubit_publish_failures_total{reason="too_large",service="test"} 1.0' in metrics.render()


def test_qos0_dropped_during_an_outage_is_one_summary_once_the_link_is_back(broker):
    failures: list[PublishFailure] = []

    async def main() -> None:
        client = MqttClient("test", broker.settings(), client_id="qubit-test-qos0",
                            on_failure=failures.append)
        assert await client.open(timeout=5)
        broker.stop()
        await until(lambda: not client.connected.is_set())
        dropped = [client.publish("qubit/telemetry/gw/ast_1", b"reading", qos=0) for _ in range(5)]
        kept = client.publish("t/kept", b"command", qos=1)
        assert not failures  # not one report per message
        broker.start()
        await until(kept.is_published)
        assert all(p.failure is not None for p in dropped)
        await client.close()

    asyncio.run(main())
    [summary] = failures
    assert (summary.reason, summary.count, summary.message_bytes, summary.topic) == (
        PublishFailureReason.QOS0_OFFLINE, 5, 35, "qubit/telemetry/gw/ast_1")


# -- deferred inbound acks ----------------------------------------------------------------


class Proxy:
    """A TCP relay between the client and the broker whose broker-to-client direction can be
    held: the client's PUBACKs from the broker wait here while everything else flows."""

    def __init__(self, broker) -> None:
        self.broker = broker
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, client_reader, client_writer) -> None:
        broker_reader, broker_writer = await asyncio.open_connection(self.broker.host, self.broker.port)
        self._writers += [client_writer, broker_writer]

        async def pipe(reader, writer, gate) -> None:
            while data := await reader.read(65536):
                if gate is not None:
                    await gate.wait()
                writer.write(data)
                await writer.drain()

        await asyncio.gather(pipe(client_reader, broker_writer, None),
                             pipe(broker_reader, client_writer, self.flowing), return_exceptions=True)

    def cut(self) -> None:
        """Both connections closed at once, as a crash would leave them."""
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.transport.abort()


async def handled_then_cut(broker, release_before_cut: bool) -> bytes:
    """A handler receives "m1" and publishes from it while the broker's PUBACKs are held;
    the link is cut (optionally after releasing them); then the session's next owner is told
    what comes first: "m1" again (never acknowledged) or "m2" (queued behind it)."""
    proxy = Proxy(broker)
    port = await proxy.start()
    handled = asyncio.Event()
    out_confirmed = asyncio.Event()
    client: MqttClient

    def handler(topic: str, data: bytes) -> None:
        proxy.flowing.clear()  # from now on, nothing the broker answers reaches the client
        client.publish("t/out", b"effect of " + data, qos=1, on_confirmed=out_confirmed.set)
        handled.set()

    client = MqttClient("test", BrokerSettings.at("127.0.0.1", port, broker.login()), client_id="qubit-test-acks")
    client.subscribe("t/in", handler)
    assert await client.open(timeout=5)
    await until(client.subscribed.is_set)
    loop = asyncio.get_running_loop()
    marker = asyncio.Event()
    observer = plain(broker)

    def on_marker(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        loop.call_soon_threadsafe(marker.set)

    observer.on_message = on_marker
    watching = threading.Event()
    observer.on_subscribe = lambda *args: watching.set()
    observer.subscribe("t/marker", qos=1)
    assert watching.wait(5)
    source = plain(broker)
    source.publish("t/in", b"m1", qos=1).wait_for_publish(5)
    await handled.wait()
    if release_before_cut:
        proxy.flowing.set()
        await out_confirmed.wait()
    # Everything the client sent up to now (a PUBACK for m1, if it sent one) reached the
    # broker once the broker forwards this later message of the same connection.
    client.publish("t/marker", b"", qos=0)
    await asyncio.wait_for(marker.wait(), 10)
    proxy.cut()
    await client.close(timeout=1)
    source.publish("t/in", b"m2", qos=1).wait_for_publish(5)
    first: asyncio.Future[bytes] = loop.create_future()

    def take_first(payload: bytes) -> None:
        if not first.done():
            first.set_result(payload)

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        loop.call_soon_threadsafe(take_first, bytes(m.payload))

    successor = broker.login().apply(paho.Client(CallbackAPIVersion.VERSION2, client_id="qubit-test-acks",
                                                 clean_session=False, protocol=paho.MQTTv311))
    successor.on_message = on_message
    successor.connect(broker.host, broker.port)
    successor.loop_start()
    try:
        return await asyncio.wait_for(first, 10)
    finally:
        for c in (successor, observer, source):
            c.loop_stop()


def test_an_inbound_message_is_not_acknowledged_before_what_its_handler_published_is_confirmed(broker):
    assert asyncio.run(handled_then_cut(broker, release_before_cut=False)) == b"m1"


def test_it_is_acknowledged_once_the_broker_confirmed_its_effects(broker):
    assert asyncio.run(handled_then_cut(broker, release_before_cut=True)) == b"m2"
