from datetime import UTC, datetime

from coordinator.base import Command, CommandType
from coordinator.contract.messages import (
    CommandBatch,
    Outcome,
    ResultBatch,
    StatusReport,
    command_to_wire,
    decode,
)
from services.loopback_gateway import LoopbackGateway

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)


def batch(*items):
    return CommandBatch(gateway_id="loopback", commands=list(items)).encode()


def outcomes(recorder):
    return [(r.command_id, r.outcome) for _, p in recorder.on("qubit/results/") for r in decode(ResultBatch, p).results]


def cmd(asset, ctype=CommandType.SET_CHARGE_RATE, kw=7.0):
    return Command(asset, ctype, {"power_kw": kw}, T0)


def test_answers_and_reports_state_changes(site, recorder):
    gw = LoopbackGateway(site, recorder)
    c1, c2 = cmd("ast_bay_1"), cmd("ast_batt_001", CommandType.SET_DISCHARGE_RATE, 30.0)
    gw.on_commands("qubit/commands/loopback", batch(command_to_wire(c1), command_to_wire(c2)))
    assert outcomes(recorder) == [(c1.command_id, Outcome.ACKNOWLEDGED), (c1.command_id, Outcome.COMPLETED),
                                  (c2.command_id, Outcome.ACKNOWLEDGED), (c2.command_id, Outcome.COMPLETED)]
    reports = {t: decode(StatusReport, p).state for t, p in recorder.on("qubit/status/")}
    assert reports == {"qubit/status/loopback/ast_bay_1": "CHARGING",
                       "qubit/status/loopback/ast_batt_001": "DISCHARGING"}


def test_redelivered_command_is_answered_not_applied_twice(site, recorder):
    gw = LoopbackGateway(site, recorder)
    c1 = cmd("ast_bay_1")
    gw.on_commands("t", batch(command_to_wire(c1)))
    gw.on_commands("t", batch(command_to_wire(c1)))
    assert len(outcomes(recorder)) == 4 and len(recorder.on("qubit/status/")) == 1


def test_malformed_and_foreign_commands_refused(site, recorder, caplog):
    gw = LoopbackGateway(site, recorder)
    bad = command_to_wire(cmd("ast_bay_1")) | {"scheduled_at": "yesterday"}
    foreign = cmd("ast_other_site")
    gw.on_commands("t", batch(bad, command_to_wire(foreign), {"no": "ids"}))
    gw.on_commands("t", b"\x93")
    assert [o for _, o in outcomes(recorder)] == [Outcome.REFUSED, Outcome.REFUSED]
    assert "unanswerable malformed command" in caplog.text and "unreadable command batch" in caplog.text


def test_failing_and_silent_assets(site, recorder):
    gw = LoopbackGateway(site, recorder, fail=frozenset({"ast_bay_1"}), silent=frozenset({"ast_bay_2"}))
    c1, c2 = cmd("ast_bay_1"), cmd("ast_bay_2")
    gw.on_commands("t", batch(command_to_wire(c1), command_to_wire(c2)))
    assert outcomes(recorder) == [(c1.command_id, Outcome.FAILED)]


def test_simulated_fault_fails_commands(site, recorder):
    gw = LoopbackGateway(site, recorder)
    gw.on_simulate("qubit/sim/loopback", StatusReport(asset_id="ast_bay_1", state="FAULTED", at=T0).encode())
    c1 = cmd("ast_bay_1")
    gw.on_commands("t", batch(command_to_wire(c1)))
    assert outcomes(recorder) == [(c1.command_id, Outcome.FAILED)]


def test_a_retry_is_new_work_not_a_redelivery(site, recorder):
    gw = LoopbackGateway(site, recorder, fail=frozenset({"ast_bay_1"}))
    c1 = cmd("ast_bay_1")
    c1.attempts = 1
    gw.on_commands("t", batch(command_to_wire(c1)))
    gw.fail = frozenset()
    c1.attempts = 2
    gw.on_commands("t", batch(command_to_wire(c1)))
    assert [o for _, o in outcomes(recorder)] == [Outcome.FAILED, Outcome.ACKNOWLEDGED, Outcome.COMPLETED]
