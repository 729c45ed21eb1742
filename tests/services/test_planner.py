from datetime import UTC, datetime, timedelta

import pandas as pd

from coordinator.base import CommandStatus
from coordinator.contract.codec import command_from_wire, encode_schedule
from coordinator.contract.events import MessageRefused, RefusalReason
from coordinator.contract.messages import (
    AcceptedSchedule,
    AssetStateMessage,
    CommandBatch,
    CommandResult,
    Outcome,
    ReceivedResultBatch,
    ResultBatch,
    decode,
)
from coordinator.events import EventType
from services.planner import Planner

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
SLOT = timedelta(minutes=15)


def accepted(columns, schedule_id, version, start=T0, asset_map=None):
    idx = pd.date_range(start, periods=len(next(iter(columns.values()))), freq=SLOT)
    asset_map = asset_map or {"ev_001": "ast_bay_1", "battery": "ast_batt_001"}
    data = encode_schedule(pd.DataFrame(columns, index=idx), asset_map=asset_map, site_id="sit_demo_depot",
                           schedule_id=schedule_id)
    return AcceptedSchedule(schedule_id=schedule_id, version=version, received_at=T0, command_count=0,
                            schedule=data).encode()


def sent_commands(recorder):
    return [command_from_wire(c) for _, p in recorder.on("qubit/commands/") for c in decode(CommandBatch, p).commands]


def status_of(planner: Planner, command_id: str) -> CommandStatus:
    command = planner.engine.get_command(command_id)
    assert command is not None, f"no command {command_id} in the engine"
    return command.status


def results(*triples):
    return ResultBatch(gateway_id="loopback", results=[
        CommandResult(command_id=c.command_id, asset_id=c.asset_id, outcome=o, at=T0, error=e) for c, o, e in triples
    ]).encode()


def test_due_commands_go_out_as_one_batch_per_gateway(site, recorder):
    planner = Planner(site, recorder)
    planner.on_schedule("qubit/schedules/accepted",
                        accepted({"ev_001_kw": [7.0, 11.0], "battery_charge_kw": [5.0, 5.0]}, "sch_a", 1))
    planner.tick(T0 - timedelta(seconds=1))
    assert recorder.on("qubit/commands/") == []
    planner.tick(T0)
    batches = recorder.on("qubit/commands/")
    assert [t for t, _ in batches] == ["qubit/commands/loopback"]
    cmds = sent_commands(recorder)
    assert sorted((c.asset_id, c.parameters["power_kw"]) for c in cmds) == [("ast_batt_001", 5.0), ("ast_bay_1", 7.0)]
    assert all(c.status is CommandStatus.DISPATCHED and c.schedule_id == "sch_a" for c in cmds)
    assert len(recorder.events(EventType.COMMAND_DISPATCHED)) == 2
    assert recorder.events(EventType.SCHEDULE_RECEIVED) == []  # the ingester's to announce


def test_results_complete_retry_and_refuse(site, recorder):
    planner = Planner(site, recorder, clock=lambda: T0)
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0], "battery_charge_kw": [5.0]}, "sch_a", 1))
    planner.tick(T0)
    bay, batt = sorted(sent_commands(recorder), key=lambda c: c.asset_id)
    planner.on_results("qubit/results/loopback",
                       results((bay, Outcome.ACKNOWLEDGED, None), (bay, Outcome.COMPLETED, None),
                               (batt, Outcome.FAILED, "busy")))
    assert status_of(planner, bay.command_id) is CommandStatus.COMPLETED
    assert status_of(planner, batt.command_id) is CommandStatus.PENDING  # retry after backoff
    recorder.clear()
    planner.tick(T0 + timedelta(seconds=1))
    (again,) = sent_commands(recorder)
    assert again.command_id == batt.command_id and again.attempts == 2
    planner.on_results("qubit/results/loopback", results((batt, Outcome.REFUSED, "register out of range")))
    assert status_of(planner, batt.command_id) is CommandStatus.FAILED
    (failed,) = recorder.events(EventType.COMMAND_FAILED)
    assert failed.payload["error"] == "register out of range"


def refusals_of(service) -> list[MessageRefused]:
    """The MESSAGE_REFUSED payloads ``service`` reports from now on."""
    seen: list[MessageRefused] = []
    service.refusals.bus.subscribe(EventType.MESSAGE_REFUSED, lambda e: seen.append(e.payload))
    return seen


def test_unknown_and_malformed_results_change_nothing(site, recorder):
    planner = Planner(site, recorder)
    refused = refusals_of(planner)
    planner.on_results("qubit/results/loopback", b"\x00junk")
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_a", 1))
    planner.tick(T0)
    (cmd,) = sent_commands(recorder)
    impostor = cmd.__class__(asset_id="ast_bay_2", command_type=cmd.command_type, scheduled_at=T0,
                             command_id=cmd.command_id)
    stranger = cmd.__class__(asset_id="ast_bay_1", command_type=cmd.command_type, scheduled_at=T0)
    planner.on_results("qubit/results/loopback", results((impostor, Outcome.COMPLETED, None),
                                                         (stranger, Outcome.COMPLETED, None)))
    assert status_of(planner, cmd.command_id) is CommandStatus.DISPATCHED
    assert [r.reason for r in refused] == [RefusalReason.UNREADABLE, RefusalReason.NOT_YOURS,
                                           RefusalReason.UNKNOWN_COMMAND]


def test_a_result_from_another_gateway_or_for_a_command_not_in_flight_is_refused(site, recorder):
    planner = Planner(site, recorder, clock=lambda: T0, look_ahead=timedelta(days=1))  # every command in the engine
    refused = refusals_of(planner)
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0, 11.0]}, "sch_a", 1))
    planner.tick(T0)
    (due,) = sent_commands(recorder)
    (later,) = [c for c in planner.engine.get_commands_for_asset("ast_bay_1") if c.command_id != due.command_id]
    forged = ResultBatch(gateway_id="ocpp", results=[
        CommandResult(command_id=due.command_id, asset_id=due.asset_id, outcome=Outcome.COMPLETED, at=T0)]).encode()
    planner.on_results("qubit/results/ocpp", forged)  # another gateway's identity
    planner.on_results("qubit/results/ocpp", results((due, Outcome.COMPLETED, None)))  # the envelope lies
    planner.on_results("qubit/results/loopback", results((later, Outcome.COMPLETED, None)))  # never dispatched
    assert status_of(planner, due.command_id) is CommandStatus.DISPATCHED
    assert status_of(planner, later.command_id) is CommandStatus.PENDING
    assert [r.reason for r in refused] == [RefusalReason.NOT_YOURS, RefusalReason.NOT_YOURS,
                                           RefusalReason.NOT_DISPATCHED]


def test_a_malformed_result_is_refused_alone(site, recorder):
    planner = Planner(site, recorder, clock=lambda: T0)
    refused = refusals_of(planner)
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_a", 1))
    planner.tick(T0)
    (cmd,) = sent_commands(recorder)
    good = CommandResult(command_id=cmd.command_id, asset_id=cmd.asset_id, outcome=Outcome.COMPLETED, at=T0)
    bad = [good.model_dump() | {"command_id": "cmd_a/b"}, good.model_dump() | {"outcome": "exploded"}, "junk"]
    planner.on_results("qubit/results/loopback",
                       ReceivedResultBatch(gateway_id="loopback", results=[*bad, good.model_dump()]).encode())
    assert status_of(planner, cmd.command_id) is CommandStatus.COMPLETED
    assert [r.reason for r in refused] == [RefusalReason.MALFORMED_ITEM] * 3


def forged_schedule(columns, schedule_id, version, site_id="sit_demo_depot"):
    idx = pd.date_range(T0, periods=len(next(iter(columns.values()))), freq=SLOT)
    data = encode_schedule(pd.DataFrame(columns, index=idx), asset_map={"ev_001": "ast_bay_1"}, site_id=site_id,
                           schedule_id=schedule_id)
    return AcceptedSchedule(schedule_id=schedule_id, version=version, received_at=T0, command_count=0,
                            schedule=data).encode()


def test_an_accepted_schedule_is_checked_again_against_the_site(site, recorder):
    planner = Planner(site, recorder, clock=lambda: T0)
    refused = refusals_of(planner)
    planner.on_schedule("qubit/schedules/accepted", forged_schedule({"ev_001_kw": [7.0]}, "sch_x", 1, "sit_other"))
    planner.on_schedule("qubit/schedules/accepted", forged_schedule({"ev_001_kw": [9999.0]}, "sch_y", 2))
    planner.on_schedule("qubit/schedules/accepted", forged_schedule({"ev_001_kw": [7.0]}, "sch_z", 2 ** 62))
    assert planner.engine.get_commands_for_asset("ast_bay_1") == []
    assert [r.reason for r in refused] == [RefusalReason.WRONG_SITE, RefusalReason.OUT_OF_RANGE,
                                           RefusalReason.FUTURE_VERSION]
    assert [e.payload.reason for e in recorder.events(EventType.SCHEDULE_REJECTED)] == [
        "wrong_site", "above_limit", "future_version"]
    assert [planner.ledger.schedule_status(s) for s in ("sch_x", "sch_y", "sch_z")] == ["rejected"] * 3
    # a legitimate schedule still plans, even one reusing the id a forgery was refused under
    planner.on_schedule("qubit/schedules/accepted", forged_schedule({"ev_001_kw": [7.0]}, "sch_x", 3))
    assert [c.schedule_id for c in planner.engine.get_commands_for_asset("ast_bay_1")] == ["sch_x"]


def test_newer_schedule_supersedes_and_duplicate_is_ignored(site, recorder):
    planner = Planner(site, recorder)
    planner.on_schedule("t", accepted({"ev_001_kw": [1.0, 2.0, 3.0, 4.0]}, "sch_old", 1))
    planner.on_schedule("t", accepted({"ev_001_kw": [9.0, 8.0]}, "sch_new", 2, start=T0 + 2 * SLOT))
    planner.on_schedule("t", accepted({"ev_001_kw": [9.0, 8.0]}, "sch_new", 2, start=T0 + 2 * SLOT))
    cmds = planner.engine.get_commands_for_asset("ast_bay_1")
    assert [(c.schedule_id, c.parameters["power_kw"], c.status.value) for c in cmds] == [
        ("sch_old", 1.0, "PENDING"), ("sch_old", 2.0, "PENDING"),
        ("sch_old", 3.0, "CANCELLED"), ("sch_old", 4.0, "CANCELLED"),
        ("sch_new", 9.0, "PENDING"), ("sch_new", 8.0, "PENDING"),
    ]
    # not yet due: recorded one by one, announced together
    assert recorder.events(EventType.COMMAND_CANCELLED) == []
    old, new = recorder.events(EventType.SCHEDULE_PLANNED)
    assert (old.payload["command_count"], old.payload["superseded"]) == (4, 0)
    assert (new.payload["schedule_id"], new.payload["command_count"], new.payload["superseded"]) == ("sch_new", 2, 2)
    record = planner.ledger.command_record(cmds[2].command_id)
    assert record is not None and record["error"] == "superseded by schedule sch_new"


def test_older_version_arriving_late_is_rejected(site, recorder):
    planner = Planner(site, recorder)
    planner.on_schedule("t", accepted({"ev_001_kw": [1.0]}, "sch_new", 5))
    planner.on_schedule("t", accepted({"ev_001_kw": [2.0]}, "sch_old", 4))
    (rejected,) = recorder.events(EventType.SCHEDULE_REJECTED)
    assert rejected.payload["reason"] == "stale_version" and rejected.payload["schedule_id"] == "sch_old"


def state(asset_id, state_, previous=None, trigger=None, since=T0):
    return AssetStateMessage(asset_id=asset_id, kind="ev_charger", state=state_, previous_state=previous,
                             trigger=trigger, since=since).encode()


def test_faulted_asset_is_held_until_it_recovers(site, recorder):
    planner = Planner(site, recorder)
    planner.on_asset_state("qubit/state/ast_bay_1", state("ast_bay_1", "FAULTED", "CHARGING", "fault"))
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_a", 1))
    planner.tick(T0)
    assert sent_commands(recorder) == []
    assert len(recorder.events(EventType.COMMAND_HELD)) == 1
    planner.on_asset_state("qubit/state/ast_bay_1", state("ast_bay_1", "AVAILABLE", "FAULTED", "reset"))
    planner.tick(T0 + timedelta(seconds=1))
    assert len(sent_commands(recorder)) == 1


def test_early_departure_cancels_only_commands_that_existed_then(site, recorder):
    planner = Planner(site, recorder)
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0, 11.0, 0.0]}, "sch_a", 1))
    departed_at = datetime.now(UTC)
    planner.on_asset_state("qubit/state/ast_bay_1",
                           state("ast_bay_1", "AVAILABLE", "CHARGING", "unplug", since=departed_at))
    assert [c.status.value for c in planner.engine.get_commands_for_asset("ast_bay_1")] == ["CANCELLED"] * 3
    # the same retained message replayed later does not touch a newer schedule
    planner.on_schedule("t", accepted({"ev_001_kw": [5.0]}, "sch_b", 2, start=T0 + 4 * SLOT))
    planner.on_asset_state("qubit/state/ast_bay_1",
                           state("ast_bay_1", "AVAILABLE", "CHARGING", "unplug", since=departed_at))
    assert planner.engine.get_commands_for_asset("ast_bay_1")[-1].status is CommandStatus.PENDING


def test_a_result_for_another_attempt_is_refused(site, recorder):
    planner = Planner(site, recorder, clock=lambda: T0)
    refused = refusals_of(planner)
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_a", 1))
    planner.tick(T0)
    (cmd,) = sent_commands(recorder)
    assert cmd.attempts == 1

    def answer(attempt):
        return ResultBatch(gateway_id="loopback", results=[CommandResult(
            command_id=cmd.command_id, asset_id=cmd.asset_id, outcome=Outcome.COMPLETED, at=T0,
            attempt=attempt)]).encode()

    planner.on_results("qubit/results/loopback", answer(7))
    assert status_of(planner, cmd.command_id) is CommandStatus.DISPATCHED
    assert [r.reason for r in refused] == [RefusalReason.REPLAYED]
    planner.on_results("qubit/results/loopback", answer(1))
    assert status_of(planner, cmd.command_id) is CommandStatus.COMPLETED
