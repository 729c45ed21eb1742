"""The loopback gateway's durable record end to end: a real broker, the gateway as a real
process (killed with -9 and started again on the same data dir and device log)."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from coordinator.base import Command, CommandType
from coordinator.contract.messages import CommandBatch, Outcome, ResultBatch, decode
from coordinator.contract.topics import commands_topic, results_topic

pytestmark = pytest.mark.timeout(120)

T0 = datetime.now(UTC).replace(microsecond=0)


def setpoint(kw: float, created: datetime, attempts: int = 1) -> Command:
    return Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": kw}, T0, created_at=created,
                   attempts=attempts)


def answers(results, count: int, timeout: float = 10.0):
    """The next ``count`` results on the results topic, as (command_id, outcome, error)."""
    got: list[tuple[str, Outcome, str | None]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        for m in results.drain(0.1):
            got += [(r.command_id, r.outcome, r.error) for r in decode(ResultBatch, m.payload).results]
    assert len(got) >= count, f"only {got} within {timeout} s"
    return got


def applications(path):
    return [json.loads(line)["command_id"] for line in path.read_text().splitlines()] if path.exists() else []


def test_repeats_and_older_setpoints_are_never_applied_across_a_kill_9(broker, stack, plain, tmp_path):
    devices = tmp_path / "devices.jsonl"
    stack.start_all(("gateway-loopback",), args={"gateway-loopback": ("--device-log", str(devices))})
    results = plain(results_topic("loopback"))
    planner = plain()
    newer, older = setpoint(11.0, T0 + timedelta(minutes=1)), setpoint(22.0, T0)

    planner.publish(commands_topic("loopback"), CommandBatch.of("loopback", [newer]).encode())
    first = answers(results, 2)
    assert [o for _, o, _ in first] == [Outcome.ACKNOWLEDGED, Outcome.COMPLETED]

    # the broker's redelivery of the batch, with an older setpoint behind it
    planner.publish(commands_topic("loopback"), CommandBatch.of("loopback", [newer, older]).encode())
    again = answers(results, 3)
    assert again[:2] == first  # answered from the record
    assert again[2][:2] == (older.command_id, Outcome.SUPERSEDED) and newer.command_id in (again[2][2] or "")
    assert applications(devices) == [newer.command_id]

    stack.kill("gateway-loopback", signal.SIGKILL)
    stack.start_all(("gateway-loopback",), args={"gateway-loopback": ("--device-log", str(devices))})
    planner.publish(commands_topic("loopback"), CommandBatch.of("loopback", [newer, older]).encode())
    after = answers(results, 3)
    assert after == again  # a new process, the same answers: from the durable record
    retry = setpoint(11.0, newer.created_at, attempts=2)
    retry.command_id = newer.command_id
    planner.publish(commands_topic("loopback"), CommandBatch.of("loopback", [retry]).encode())
    assert answers(results, 1) == [(newer.command_id, Outcome.COMPLETED, "already applied by attempt 1")]
    assert applications(devices) == [newer.command_id]  # the device saw it once
    assert "answered from the record" in stack.log("gateway-loopback")
