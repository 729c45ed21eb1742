"""The process shell on one event loop: MQTT delivery against a real broker, the loop's
timers, and a gateway's drain. No sleeps to synchronise: each test waits for what it checks."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.base import Command, CommandType
from coordinator.contract.messages import CommandBatch, Outcome, ResultBatch, command_to_wire, decode
from coordinator.contract.topics import results_topic
from coordinator.runtime.command_intake import result
from coordinator.runtime.device_gateway import DeviceGateway
from coordinator.runtime.mqtt import MqttClient
from coordinator.runtime.service import Every, receives
from coordinator.site import Protocol
from tools.broker import start_broker


@pytest.fixture
def broker(tmp_path):
    b = start_broker(tmp_path / "broker")
    yield b
    b.stop()


def publisher(broker) -> paho.Client:
    client = broker.login().apply(paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311))
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


async def until(condition, timeout: float = 10.0) -> None:
    """Let the loop run until ``condition()`` holds (each turn of the loop gives it a chance)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_handlers_run_on_the_loop_in_arrival_order_and_one_that_raises_stops_nothing(broker, caplog):
    seen: list[tuple[int, bytes]] = []

    def handler(topic: str, data: bytes) -> None:
        if data == b"5":
            raise RuntimeError("a handler bug")
        seen.append((threading.get_ident(), data))

    async def main() -> int:
        client = MqttClient("test", broker.settings(), client_id="qubit-test-order")
        client.subscribe("t/order", handler)
        assert await client.open(timeout=5)
        await until(client.subscribed.is_set)
        source = publisher(broker)
        for n in range(50):
            source.publish("t/order", str(n).encode(), qos=1)
        await until(lambda: len(seen) == 49)
        source.loop_stop()
        await client.close()
        return threading.get_ident()

    with caplog.at_level(logging.ERROR, logger="coordinator.runtime.mqtt"):
        loop_thread = asyncio.run(main())
    assert [data for _, data in seen] == [str(n).encode() for n in range(50) if n != 5]
    assert {thread for thread, _ in seen} == {loop_thread}
    (failure,) = [r for r in caplog.records if "handler for t/order failed" in r.getMessage()]
    assert failure.exc_info is not None  # with its traceback


def test_an_urgent_message_is_handled_ahead_of_the_backlog(broker):
    handled: list[str] = []

    def slow(topic: str, data: bytes) -> None:
        time.sleep(0.005)  # the work of a heavy message: 200 of them make a backlog of a second
        handled.append("normal")

    async def main() -> None:
        client = MqttClient("test", broker.settings(), client_id="qubit-test-urgent")
        client.subscribe("t/normal", slow)
        client.subscribe("t/stop", lambda topic, data: handled.append("urgent"), urgent=True)
        assert await client.open(timeout=5)
        await until(client.subscribed.is_set)
        source = publisher(broker)
        for _ in range(200):
            source.publish("t/normal", b"x", qos=1)
        source.publish("t/stop", b"now", qos=1)
        await until(lambda: len(handled) == 201)
        source.loop_stop()
        await client.close()

    asyncio.run(main())
    assert handled.index("urgent") < 150, "the urgent message waited behind the backlog"


def test_close_handles_what_has_arrived_first(broker):
    handled: list[bytes] = []

    def slow(topic: str, data: bytes) -> None:
        time.sleep(0.005)
        handled.append(data)

    async def main() -> None:
        client = MqttClient("test", broker.settings(), client_id="qubit-test-close")
        client.subscribe("t/close", slow)
        assert await client.open(timeout=5)
        await until(client.subscribed.is_set)
        source = publisher(broker)
        for n in range(50):
            source.publish("t/close", str(n).encode(), qos=1)
        await until(lambda: len(handled) + client.backlog == 50 and client.backlog > 10)
        source.loop_stop()
        await client.close()

    asyncio.run(main())
    assert handled == [str(n).encode() for n in range(50)]


def test_the_farewell_is_confirmed_by_the_broker_before_close_returns(broker):
    async def main() -> None:
        client = MqttClient("test", broker.settings(), client_id="qubit-test-farewell")
        assert await client.open(timeout=5)
        await client.close(farewell=("t/farewell", b"bye"))

    asyncio.run(main())
    got: list[bytes] = []
    subscribed = threading.Event()
    late = broker.login().apply(paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311))
    late.on_message = lambda c, u, m: got.append(bytes(m.payload))
    late.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
    late.connect(broker.host, broker.port)
    late.loop_start()
    late.subscribe("t/farewell", qos=1)
    assert subscribed.wait(5)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:  # the retained message follows the SUBACK
        time.sleep(0.01)
    late.loop_stop()
    assert got == [b"bye"]


def test_every_calls_at_a_fixed_rate_and_goes_on_after_a_failure(caplog):
    calls: list[float] = []

    def action() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 2:
            raise ValueError("one bad tick")

    async def main() -> None:
        timer = Every(0.02, action, "test tick")
        timer.start()
        await until(lambda: len(calls) >= 5)
        timer.cancel()
        count = len(calls)
        await asyncio.sleep(0.05)  # a cancelled timer stays quiet: nothing to wait for but time
        assert len(calls) == count

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert calls[0] == pytest.approx(calls[1] - 0.02, abs=0.015)
    assert any("test tick failed" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError):
        Every(0, action, "never")


class FakeGateway(DeviceGateway):
    """A gateway whose device answers when the test says so."""

    protocol = Protocol.LOOPBACK

    def __init__(self, site, publish) -> None:
        super().__init__(site, publish, "loopback")
        self.received: list[Command] = []

    @receives(CommandBatch, "command batch")
    def on_commands(self, topic: str, batch: CommandBatch) -> None:
        self.received += self.accept(batch)


def batch_of(*commands: Command) -> bytes:
    return CommandBatch(gateway_id="loopback", commands=[command_to_wire(c) for c in commands]).encode()


def results_sent(recorder) -> list[tuple[str, Outcome]]:
    return [(r.command_id, r.outcome) for _, payload in recorder.on(results_topic("loopback"))
            for r in decode(ResultBatch, payload).results]


def test_drain_returns_as_soon_as_nothing_is_in_flight_and_flushes_the_results(site, recorder):
    cmd = Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": 7.0}, attempts=1)

    async def main() -> float:
        gateway = FakeGateway(site, recorder)
        gateway.on_commands("t", batch_of(cmd))
        drained = asyncio.get_running_loop().create_task(gateway.drain(8.0))
        await asyncio.sleep(0)  # drain is waiting now
        began = time.monotonic()
        gateway.send_results([result(cmd.command_id, cmd.asset_id, Outcome.COMPLETED)])
        await drained
        return time.monotonic() - began

    assert asyncio.run(main()) < 1.0
    assert results_sent(recorder) == [(cmd.command_id, Outcome.COMPLETED)]  # flushed, not left in the batch window


def test_drain_hands_back_what_did_not_finish_once_and_refuses_what_comes_after(site, recorder):
    stuck = Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": 7.0}, attempts=1)
    refused = Command("ast_bay_2", CommandType.SET_CHARGE_RATE, {"power_kw": 7.0}, attempts=1)
    late = Command("ast_batt_001", CommandType.SET_CHARGE_RATE, {"power_kw": 7.0}, attempts=1)

    async def main() -> None:
        gateway = FakeGateway(site, recorder)
        gateway.on_commands("t", batch_of(stuck, refused))
        gateway.send_results([result(refused.command_id, refused.asset_id, Outcome.REFUSED, "not here")])
        await gateway.drain(0.2)
        gateway.on_commands("t", batch_of(late))
        await until(lambda: len(results_sent(recorder)) == 3)
        assert gateway.in_flight == {}

    asyncio.run(main())
    assert results_sent(recorder) == [(refused.command_id, Outcome.REFUSED), (stuck.command_id, Outcome.FAILED),
                                      (late.command_id, Outcome.FAILED)]
