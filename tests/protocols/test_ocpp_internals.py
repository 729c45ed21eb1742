"""The ocpp package's private members and globals we rely on (coordinator.protocols.ocpp.internals).

Each test fails as soon as the package changes one of them: a rename, another kind of object,
another signature, or a global the package no longer reads. Then re-read ocpp/charge_point.py
and ocpp/messages.py, adapt internals.py, and move the pin in pyproject.toml.
"""

import asyncio
import inspect
import json
from importlib.metadata import version

import ocpp.messages
import pytest
from ocpp.charge_point import ChargePoint, camel_to_snake_case, snake_to_camel_case
from ocpp.messages import Call, CallError, CallResult, MessageType
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as V16ChargePoint
from ocpp.v16 import call as v16_call
from ocpp.v16 import call_result as v16_result
from ocpp.v16 import enums as v16

from coordinator.protocols.ocpp import internals
from coordinator.protocols.ocpp.payload import call_payload


class Link:
    """An in-memory websocket: what the point sends, and what the charger says back."""

    def __init__(self) -> None:
        self.sent: asyncio.Queue[str] = asyncio.Queue()
        self.inbound: asyncio.Queue[str] = asyncio.Queue()

    async def send(self, message: str) -> None:
        await self.sent.put(message)

    async def recv(self) -> str:
        return await self.inbound.get()


def test_the_installed_version_is_the_one_checked():
    assert version("ocpp").startswith(internals.CHECKED_AGAINST + "."), (
        "ocpp changed version: re-check internals.py against it, then update CHECKED_AGAINST and the pin")


def test_private_members_exist_with_the_expected_kind():
    asyncio.run(_test_private_members_exist_with_the_expected_kind())


async def _test_private_members_exist_with_the_expected_kind():
    point = V16ChargePoint("CP001", Link())
    assert isinstance(point._call_lock, asyncio.Lock)
    assert isinstance(point._response_queue, asyncio.Queue)
    assert inspect.iscoroutinefunction(ChargePoint._send)
    assert list(inspect.signature(ChargePoint._send).parameters) == ["self", "message"]
    assert set(internals.PRIVATE_MEMBERS) <= set(vars(point)) | set(vars(ChargePoint)) | set(vars(V16ChargePoint))
    assert inspect.iscoroutinefunction(ChargePoint._handle_call)
    assert list(inspect.signature(ChargePoint._handle_call).parameters) == ["self", "msg"]


def test_exchange_sends_the_call_and_returns_its_answer_skipping_strays():
    asyncio.run(_test_exchange_sends_the_call_and_returns_its_answer_skipping_strays())


async def _test_exchange_sends_the_call_and_returns_its_answer_skipping_strays():
    link = Link()
    point = V16ChargePoint("CP001", link)
    reading = asyncio.create_task(point.start())  # the package's reader feeds the response queue
    call = v16_call.RemoteStopTransaction(transaction_id=7)
    message = Call(unique_id="u-1", action="RemoteStopTransaction", payload=call_payload(call))
    strays: list[CallResult | CallError] = []
    exchanging = asyncio.create_task(internals.exchange(point, message, on_stray=strays.append))
    sent = json.loads(await link.sent.get())
    assert sent == [MessageType.Call, "u-1", "RemoteStopTransaction", {"transactionId": 7}]
    await link.inbound.put(json.dumps([MessageType.CallResult, "u-0", {"status": "Rejected"}]))
    await link.inbound.put(json.dumps([MessageType.CallResult, "u-1", {"status": "Accepted"}]))
    answer = await asyncio.wait_for(exchanging, 5)
    assert isinstance(answer, CallResult) and answer.payload == {"status": "Accepted"}
    assert [s.unique_id for s in strays] == ["u-0"]

    # A CallError comes back as one, for the caller to raise (to_exception is public API).
    second = asyncio.create_task(internals.exchange(point, Call("u-2", "RemoteStopTransaction", {"transactionId": 7})))
    await link.sent.get()
    await link.inbound.put(json.dumps([MessageType.CallError, "u-2", "NotSupported", "no", {}]))
    error = await asyncio.wait_for(second, 5)
    assert isinstance(error, CallError) and error.message_type_id == MessageType.CallError
    with pytest.raises(ocpp.exceptions.OCPPError):
        raise error.to_exception()
    reading.cancel()


def test_exchange_holds_the_packages_one_call_at_a_time_lock():
    asyncio.run(_test_exchange_holds_the_packages_one_call_at_a_time_lock())


async def _test_exchange_holds_the_packages_one_call_at_a_time_lock():
    link = Link()
    point = V16ChargePoint("CP001", link)
    async with point._call_lock:
        task = asyncio.create_task(internals.exchange(point, Call("u-1", "RemoteStopTransaction", {})))
        await asyncio.sleep(0)  # let it reach the lock
        assert link.sent.empty(), "exchange sent while another call held the package's lock"
    task.cancel()


def test_receive_reads_the_points_connection():
    asyncio.run(_test_receive_reads_the_points_connection())


async def _test_receive_reads_the_points_connection():
    link = Link()
    point = V16ChargePoint("CP001", link)
    await link.inbound.put('[2, "u-1", "Reset", {"type": "Soft"}]')
    assert await asyncio.wait_for(internals.receive(point), 5) == '[2, "u-1", "Reset", {"type": "Soft"}]'


@pytest.mark.parametrize("async_validation, threads", [(True, 1), (False, 0)])
def test_the_validation_global_is_read_by_validate_payload(monkeypatch, async_validation, threads):
    asyncio.run(_test_the_validation_global_is_read_by_validate_payload(monkeypatch, async_validation, threads))


async def _test_the_validation_global_is_read_by_validate_payload(monkeypatch, async_validation, threads):
    assert isinstance(getattr(ocpp.messages, internals.VALIDATION_GLOBAL), bool)
    monkeypatch.setattr(ocpp.messages, internals.VALIDATION_GLOBAL, async_validation)
    loop = asyncio.get_running_loop()
    handed_off = []
    original = loop.run_in_executor

    def recording(executor, func, *args):
        handed_off.append(func)
        return original(executor, func, *args)

    monkeypatch.setattr(loop, "run_in_executor", recording)
    await ocpp.messages.validate_payload(Call("u-1", "Heartbeat", {}), "1.6")
    assert len(handed_off) == threads


def test_inline_validation_sets_the_global(monkeypatch):
    monkeypatch.setattr(ocpp.messages, internals.VALIDATION_GLOBAL, True)
    internals.inline_validation()
    assert getattr(ocpp.messages, internals.VALIDATION_GLOBAL) is False


def test_inline_validation_refuses_to_set_a_global_that_is_gone(monkeypatch):
    monkeypatch.delattr(ocpp.messages, internals.VALIDATION_GLOBAL)
    with pytest.raises(RuntimeError, match="ASYNC_VALIDATION is gone"):
        internals.inline_validation()


def test_case_conversion_helpers_the_gateway_uses():
    # Public names of ocpp.charge_point without documentation: checked like the private ones.
    assert camel_to_snake_case({"transactionId": 1, "statusInfo": {"reasonCode": "x"}}) == {
        "transaction_id": 1, "status_info": {"reason_code": "x"}}
    assert snake_to_camel_case({"evse_id": 1, "soc": 2}) == {"evseId": 1, "SoC": 2}  # its special cases included


def test_what_the_charge_point_simulator_relies_on():
    # simulators/chargepoint reads the connection (through receive) and sets the package's per-handler switch.
    point = V16ChargePoint("CP001", link := object())
    assert point._connection is link
    handlers = next(iter(point.route_map.values()), None)
    assert handlers is None or isinstance(handlers, dict)
    source = inspect.getsource(ChargePoint._handle_call)
    assert 'handlers.get("_skip_schema_validation", False)' in source


class Csms(V16ChargePoint):
    """Handlers of every kind handle_call meets: validated, with the unique id, raising, with an after hook."""

    def __init__(self, link: Link, lean: bool) -> None:
        super().__init__("CP001", link)
        self.lean, self.after_seen = lean, list[str]()

    async def _handle_call(self, msg):
        await (internals.handle_call(self, msg) if self.lean else super()._handle_call(msg))

    @on(v16.Action.boot_notification)
    def on_boot(self, charge_point_vendor, charge_point_model, **_):
        return v16_result.BootNotification(current_time="2025-01-01T00:00:00Z", interval=60,
                                           status=v16.RegistrationStatus.accepted)

    @after(v16.Action.boot_notification)
    async def after_boot(self, call_unique_id, **_):
        self.after_seen.append(call_unique_id)

    @on(v16.Action.status_notification)
    def on_status(self, connector_id, call_unique_id, **_):
        return v16_result.StatusNotification()

    @on(v16.Action.heartbeat)
    def on_heartbeat(self):
        raise ValueError("broken handler")


CALLS = [
    [2, "b-1", "BootNotification", {"chargePointVendor": "Q", "chargePointModel": "S"}],
    [2, "s-1", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}],
    [2, "s-2", "StatusNotification", {"connectorId": "one", "errorCode": "NoError", "status": "Available"}],
    [2, "h-1", "Heartbeat", {}],
    [2, "a-1", "Authorize", {"idTag": "x"}],
    [2, "x-1", "NoSuchAction", {}],
]


def test_handle_call_answers_as_the_package_does():
    async def answers(lean: bool) -> tuple[list[list[object]], list[str]]:
        link = Link()
        point = Csms(link, lean)
        reading = asyncio.create_task(point.start())
        got = []
        for call in CALLS:
            await link.inbound.put(json.dumps(call))
            got.append(json.loads(await asyncio.wait_for(link.sent.get(), 5)))
        await asyncio.sleep(0)  # the after hook's task
        reading.cancel()
        return got, point.after_seen

    lean, package = asyncio.run(answers(True)), asyncio.run(answers(False))
    assert lean == package
    assert [a[0] for a in lean[0]] == [3, 3, 4, 4, 4, 4] and lean[1] == ["b-1"]
