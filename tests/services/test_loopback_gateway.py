import asyncio
import json
from datetime import UTC, datetime, timedelta

import msgpack

from coordinator.base import Command, CommandType
from coordinator.contract.events import MessageRefused, RefusalReason
from coordinator.contract.messages import (
    CommandBatch,
    EmergencyStop,
    Outcome,
    ResultBatch,
    SimulatorRequest,
    StatusReport,
    command_to_wire,
    decode,
)
from coordinator.events import EventType
from services.loopback_gateway import LoopbackGateway

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


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


def refusals_of(service) -> list[MessageRefused]:
    """The MESSAGE_REFUSED payloads ``service`` reports from now on."""
    seen: list[MessageRefused] = []
    service.refusals.bus.subscribe(EventType.MESSAGE_REFUSED, lambda e: seen.append(e.payload))
    return seen


def test_malformed_and_foreign_commands_refused(site, recorder):
    gw = LoopbackGateway(site, recorder)
    refused = refusals_of(gw)
    bad = command_to_wire(cmd("ast_bay_1")) | {"scheduled_at": "yesterday"}
    foreign = cmd("ast_other_site")
    gw.on_commands("t", batch(bad, command_to_wire(foreign), {"no": "ids"}))
    gw.on_commands("t", b"\x93")
    assert [o for _, o in outcomes(recorder)] == [Outcome.REFUSED, Outcome.REFUSED]
    assert [(r.reason, r.message_id) for r in refused] == [
        (RefusalReason.MALFORMED_ITEM, bad["command_id"]), (RefusalReason.NOT_YOURS, foreign.command_id),
        (RefusalReason.MALFORMED_ITEM, None), (RefusalReason.UNREADABLE, None)]


def test_out_of_range_commands_are_refused_and_change_nothing(site, recorder, tmp_path):
    log = tmp_path / "devices.jsonl"
    gw = LoopbackGateway(site, recorder, device_log=log)
    refused = refusals_of(gw)
    forged = [cmd("ast_bay_1", kw=1_000_000.0), cmd("ast_bay_1", kw=float("nan")), cmd("ast_bay_1", kw=float("inf")),
              cmd("ast_bay_1", kw=-7.0), cmd("ast_bay_2", CommandType.SET_DISCHARGE_RATE, 7.0)]
    good = cmd("ast_batt_001", kw=100.0)
    gw.on_commands("qubit/commands/loopback", batch(*map(command_to_wire, [*forged, good])))
    assert outcomes(recorder) == [(c.command_id, Outcome.REFUSED) for c in forged] + [
        (good.command_id, Outcome.ACKNOWLEDGED), (good.command_id, Outcome.COMPLETED)]
    assert [r.reason for r in refused] == [RefusalReason.OUT_OF_RANGE] * len(forged)
    assert [json.loads(line)["command_id"] for line in log.read_text().splitlines()] == [good.command_id]


def test_an_item_with_an_id_no_result_can_carry_is_refused_alone(site, recorder):
    gw = LoopbackGateway(site, recorder)
    refused = refusals_of(gw)
    good = cmd("ast_bay_1")
    bad_ids = [command_to_wire(cmd("ast_bay_2")) | {"command_id": cid}
               for cid in ("cmd_a/b", "cmd_\x00", "cmd_" + "x" * 200)]
    gw.on_commands("qubit/commands/loopback", batch(*bad_ids, command_to_wire(good), [1, 2]))
    assert outcomes(recorder) == [(good.command_id, Outcome.ACKNOWLEDGED), (good.command_id, Outcome.COMPLETED)]
    assert [r.reason for r in refused] == [RefusalReason.MALFORMED_ITEM] * 4


def test_a_batch_for_another_gateway_is_refused_whole(site, recorder):
    gw = LoopbackGateway(site, recorder)
    refused = refusals_of(gw)
    other = CommandBatch(gateway_id="ocpp", commands=[command_to_wire(cmd("ast_bay_1"))]).encode()
    gw.on_commands("qubit/commands/loopback", other)
    assert outcomes(recorder) == [] and [r.reason for r in refused] == [RefusalReason.NOT_YOURS]


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


# -- the durable record and the device log ---------------------------------------------

def setpoint(asset, kw, created, attempts=1):
    return Command(asset, CommandType.SET_CHARGE_RATE, {"power_kw": kw}, T0, created_at=created, attempts=attempts)


def log_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_older_setpoint_after_a_newer_one_is_superseded_and_not_applied(site, recorder, tmp_path):
    gw = LoopbackGateway(site, recorder, device_log=tmp_path / "devices.jsonl")
    newer, older = setpoint("ast_bay_1", 11.0, T0 + MINUTE), setpoint("ast_bay_1", 22.0, T0)
    gw.on_commands("t", batch(command_to_wire(newer)))
    gw.on_commands("t", batch(command_to_wire(older)))
    assert outcomes(recorder)[-1] == (older.command_id, Outcome.SUPERSEDED)
    (superseded,) = [r for _, p in recorder.on("qubit/results/") for r in decode(ResultBatch, p).results
                     if r.outcome is Outcome.SUPERSEDED]
    assert newer.command_id in (superseded.error or "")
    assert [line["command_id"] for line in log_lines(tmp_path / "devices.jsonl")] == [newer.command_id]
    assert gw.in_force[("ast_bay_1", "power")] == 11.0


def test_a_new_attempt_of_an_applied_command_is_completed_without_the_device(site, recorder, tmp_path):
    gw = LoopbackGateway(site, recorder, device_log=tmp_path / "devices.jsonl")
    c1 = setpoint("ast_bay_1", 11.0, T0)
    gw.on_commands("t", batch(command_to_wire(c1)))
    c1.attempts = 2  # the planner timed out attempt 1 meanwhile, say
    gw.on_commands("t", batch(command_to_wire(c1)))
    (last,) = decode(ResultBatch, recorder.on("qubit/results/")[-1][1]).results
    assert (last.outcome, last.error) == (Outcome.COMPLETED, "already applied by attempt 1")
    assert len(log_lines(tmp_path / "devices.jsonl")) == 1


def test_a_restarted_gateway_answers_a_repeat_from_its_record(site, recorder, tmp_path):
    c1 = setpoint("ast_batt_001", 30.0, T0)
    LoopbackGateway(site, recorder, device_log=tmp_path / "devices.jsonl").on_commands(
        "t", batch(command_to_wire(c1)))
    first = outcomes(recorder)
    recorder.clear()
    again = LoopbackGateway(site, recorder, device_log=tmp_path / "devices.jsonl")  # same data dir, same log
    assert again.states["ast_batt_001"] == "CHARGING"  # the device kept its setpoint meanwhile
    again.on_commands("t", batch(command_to_wire(c1)))
    assert outcomes(recorder) == first and recorder.on("qubit/status/") == []
    assert len(log_lines(tmp_path / "devices.jsonl")) == 1


def test_a_crash_between_applying_and_applied_is_reconciled_from_the_device_log(site, recorder, tmp_path):
    devices = tmp_path / "devices.jsonl"
    crashed = LoopbackGateway(site, recorder, device_log=devices)
    applied_then_crash, never_reached, not_started = (setpoint("ast_bay_1", 7.0, T0), setpoint("ast_bay_2", 7.0, T0),
                                                      setpoint("ast_batt_001", 9.0, T0))
    crashed.intake.accept(CommandBatch.of("loopback", [applied_then_crash, never_reached, not_started]))
    crashed.intake.applying(applied_then_crash)
    crashed._device_applies(applied_then_crash, applied_then_crash, T0)  # the device took it; the gateway died
    crashed.intake.applying(never_reached)  # died before the device saw this one
    recorder.clear()

    restarted = LoopbackGateway(site, recorder, device_log=devices)
    asyncio.run(restarted.open())
    assert sorted(outcomes(recorder)) == sorted(
        (c.command_id, o) for c in (applied_then_crash, never_reached, not_started)
        for o in (Outcome.ACKNOWLEDGED, Outcome.COMPLETED))
    assert [line["command_id"] for line in log_lines(devices)] == [
        applied_then_crash.command_id, never_reached.command_id, not_started.command_id]  # each once


def test_device_log_lines_and_the_emergency_stop(site, recorder, tmp_path):
    devices = tmp_path / "devices.jsonl"
    gw = LoopbackGateway(site, recorder, device_log=devices)
    c1 = setpoint("ast_bay_1", 7.0, T0)
    gw.on_commands("t", batch(command_to_wire(c1)))
    gw.on_commands("t", batch(command_to_wire(setpoint("ast_bay_1", 7.0, T0 + MINUTE))))
    gw.emergency_stop(EmergencyStop(active=True, reason="test", issued_by="t", at=T0))
    lines = log_lines(devices)
    assert {k: v for k, v in lines[0].items() if k != "at"} == {
        "asset_id": "ast_bay_1", "command_id": c1.command_id, "attempt": 1, "command_type": "SET_CHARGE_RATE",
        "power_kw": 7.0, "changed": True}
    assert lines[1]["changed"] is False  # the same value again
    stops = [line for line in lines if line["command_type"] == "EMERGENCY_STOP"]
    assert len(stops) == 3 and all(s["command_id"] is None and s["power_kw"] == 0.0 for s in stops)
    assert [s["changed"] for s in stops if s["asset_id"] == "ast_bay_1"] == [True]
    assert LoopbackGateway(site, recorder, device_log=devices).in_force[("ast_bay_1", "power")] == 0.0


def test_a_device_can_be_made_silent_and_answer_again(site, recorder):
    gw = LoopbackGateway(site, recorder)
    sim = "qubit/sim/loopback"
    gw.on_simulate(sim, SimulatorRequest(asset_id="ast_bay_1", silent=True).encode())
    c1, c2 = cmd("ast_bay_1"), cmd("ast_bay_1", kw=9.0)
    gw.on_commands("t", batch(command_to_wire(c1)))
    assert outcomes(recorder) == []
    gw.on_simulate(sim, SimulatorRequest(asset_id="ast_bay_1", silent=False).encode())
    gw.on_commands("t", batch(command_to_wire(c1), command_to_wire(c2)))
    # c1's delivery was taken (and never answered) while silent: a repeat is not applied later
    assert outcomes(recorder) == [(c2.command_id, Outcome.ACKNOWLEDGED), (c2.command_id, Outcome.COMPLETED)]


def test_unreadable_simulator_request_is_refused_with_a_reason(site, recorder, caplog):
    gw = LoopbackGateway(site, recorder)
    refused = refusals_of(gw)
    gw.on_simulate("qubit/sim/loopback", msgpack.packb({"asset_id": "ast_bay_1", "silent": "yes"}))
    assert "simulator request" in caplog.text and gw.silent == set()
    assert [r.reason for r in refused] == [RefusalReason.UNREADABLE]


def test_every_result_names_the_attempt_it_answers(site, recorder):
    gw = LoopbackGateway(site, recorder)
    c1 = Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": 7.0}, T0, attempts=2)
    gw.on_commands("qubit/commands/loopback", batch(command_to_wire(c1)))
    assert [r.attempt for _, p in recorder.on("qubit/results/") for r in decode(ResultBatch, p).results] == [2, 2]
