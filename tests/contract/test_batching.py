"""Batches cut under the message size limit: every part fits, in order, nothing lost."""

import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from coordinator.base import Command, CommandType
from coordinator.contract.batching import array_header_bytes, runs
from coordinator.contract.codec import MAX_SCHEDULE_BYTES
from coordinator.contract.messages import (
    MAX_ACCEPTED_SCHEDULE_BYTES,
    CommandBatch,
    CommandResult,
    Outcome,
    ResultBatch,
    command_to_wire,
    decode,
    message_limit,
)
from coordinator.contract.topics import SCHEDULES_ACCEPTED, SCHEDULES_IN, results_topic

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)


def commands(n: int) -> list[Command]:
    # Values of varied widths, so item sizes differ and boundaries fall anywhere.
    return [Command(f"ast_{i}", CommandType.SET_CHARGE_RATE, {"power_kw": 7.0 + i / 3}, T0 + timedelta(seconds=i))
            for i in range(n)]


@pytest.mark.parametrize("n, max_bytes", [(1, 4096), (15, 4096), (16, 4096), (17, 1 << 20), (3000, 65536),
                                          (5000, 1 << 20)])
def test_command_parts_fit_keep_order_and_lose_nothing(n, max_bytes):
    cmds = commands(n)
    parts = CommandBatch.split("gw", cmds, max_bytes)
    encoded = [p.encode() for p in parts]
    assert all(len(e) <= max_bytes for e in encoded)
    back = [item["command_id"] for e in encoded for item in decode(CommandBatch, e, max_bytes=max_bytes).commands]
    assert back == [c.command_id for c in cmds]
    assert {p.gateway_id for p in parts} == {"gw"}


def test_a_part_is_cut_only_when_the_next_item_would_not_fit():
    cmds = commands(400)
    parts = CommandBatch.split("gw", cmds, 20_000)
    assert len(parts) > 2
    for part, following in pairwise(parts):
        grown = CommandBatch(gateway_id="gw", commands=[*part.commands, following.commands[0]])
        assert len(grown.encode()) > 20_000


def test_the_predicted_size_is_the_encoded_size_across_array_header_widths():
    # 15 -> 16 items crosses fixarray -> array16: a limit set exactly at a part's size must hold.
    for n in (15, 16, 17):
        whole = CommandBatch.of("gw", commands(n))
        exact = len(whole.encode())
        assert [len(p.commands) for p in CommandBatch.split("gw", commands(n), exact)] == [n]
        assert len(CommandBatch.split("gw", commands(n), exact - 1)) == 2


def test_results_are_split_the_same_way():
    results = [CommandResult(command_id=f"cmd_{i}", asset_id=f"ast_{i}", outcome=Outcome.FAILED, at=T0,
                             error="x" * (i % 50)) for i in range(2000)]
    parts = ResultBatch.split("gw", results, 65536)
    assert len(parts) > 1
    assert all(len(p.encode()) <= 65536 for p in parts)
    assert [r for p in parts for r in decode(ResultBatch, p.encode()).results] == results


def test_nothing_to_send_is_no_batch():
    assert CommandBatch.split("gw", [], 4096) == []
    assert ResultBatch.split("gw", [], 4096) == []


def test_an_item_too_large_alone_is_a_caller_bug():
    big = Command("ast_1", CommandType.SET_CHARGE_RATE, {"note": "x" * 5000}, T0)
    with pytest.raises(ValueError, match="item 1 is"):
        CommandBatch.split("gw", [commands(1)[0], big], 4096)


def test_runs_respect_the_item_cap():
    assert runs([1] * 5, envelope=0, max_bytes=1000, max_items=2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert array_header_bytes(15) == 1 and array_header_bytes(16) == 3 and array_header_bytes(1 << 16) == 5


def test_split_is_fast_enough_for_a_large_tick():


    cmds = commands(5000)
    started = time.perf_counter()
    parts = CommandBatch.split("gw", cmds, 1 << 20)
    elapsed = time.perf_counter() - started
    assert len(parts) >= 2
    assert elapsed < 2.0, f"splitting 5,000 commands took {elapsed:.2f} s"


def test_schedules_have_their_own_limit_and_everything_else_the_setting():
    assert message_limit(SCHEDULES_IN, 1 << 20) == MAX_SCHEDULE_BYTES
    assert message_limit(SCHEDULES_ACCEPTED, 1 << 20) == MAX_ACCEPTED_SCHEDULE_BYTES
    assert message_limit(results_topic("gw"), 123_456) == 123_456


def test_wire_items_round_trip_unchanged():
    cmd = commands(1)[0]
    [part] = CommandBatch.split("gw", [cmd], 4096)
    assert part.commands == [command_to_wire(cmd)]
