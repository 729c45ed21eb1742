"""Commands in a batch are read by the same strict rules as a command message."""

from datetime import UTC, datetime

import pytest

from coordinator.base import Command, CommandType
from coordinator.contract.codec import DecodeError, command_from_wire
from coordinator.contract.messages import CommandBatch, Outcome, ResultBatch, command_to_wire, decode
from coordinator.runtime.command_intake import CommandIntake
from coordinator.runtime.gateway_record import GatewayRecord

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)


def on_the_wire(*items) -> list[dict]:
    """Items as a gateway receives them: through msgpack, inside a batch."""
    return decode(CommandBatch, CommandBatch(gateway_id="gw", commands=list(items)).encode()).commands


def item(**changes) -> dict:
    return command_to_wire(Command("ast_1", CommandType.SET_CHARGE_RATE, {"power_kw": 7.0}, T0)) | changes


def test_a_well_formed_item_reads_back_as_the_command():
    cmd = Command("ast_1", CommandType.SET_CHARGE_RATE, {"power_kw": 7.0}, T0, attempts=2)
    back = command_from_wire(on_the_wire(command_to_wire(cmd))[0])
    assert (back.command_id, back.attempts, back.scheduled_at, back.command_type) == (
        cmd.command_id, 2, T0, CommandType.SET_CHARGE_RATE)


@pytest.mark.parametrize("wire, reason", [
    ({k: v for k, v in item().items() if k != "command_id"}, "missing field(s): command_id"),
    ({k: v for k, v in item().items() if k != "scheduled_at"}, "missing field(s): scheduled_at"),
    (item(scheduled_at="2025-01-15T08:00:00Z"), "field scheduled_at: expected a timestamp, got str"),
    (item(scheduled_at=1736928000), "field scheduled_at: expected a timestamp, got int"),
    (item(attempts=True), "field attempts: expected a number, got bool"),
    (item(priority=False), "field priority: expected a number, got bool"),
    (item(extra=1), "unknown field(s): 'extra'"),
    (item(command_type="FLY"), "field command_type: Input should be"),
    ([1, 2], "top level must be a map, got array"),
])
def test_what_the_lax_reader_used_to_accept_is_refused(wire, reason):
    with pytest.raises(DecodeError) as info:
        command_from_wire(on_the_wire(wire)[0] if isinstance(wire, dict) else wire)
    assert info.value.reason.startswith(reason)


def test_a_malformed_item_is_refused_alone_and_the_valid_ones_go_on(tmp_path):
    sent = []
    intake = CommandIntake("gw", lambda topic, payload, qos=1, retain=False: sent.append(payload),
                           GatewayRecord(tmp_path / "gateway-gw.sqlite"))
    good = item()
    no_time = {k: v for k, v in item().items() if k != "scheduled_at"}
    batch = CommandBatch(gateway_id="gw", commands=[no_time, good, {"no": "ids"}])
    fresh = intake.accept(decode(CommandBatch, batch.encode()))
    assert [c.command_id for c in fresh] == [good["command_id"]]
    results = [r for payload in sent for r in decode(ResultBatch, payload).results]
    assert [(r.command_id, r.outcome) for r in results] == [(no_time["command_id"], Outcome.REFUSED)]
    assert results[0].error == "malformed command: missing field(s): scheduled_at"
