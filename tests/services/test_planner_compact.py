"""A schedule's commands beyond the planner's look-ahead stay compact in the ledger: they are
answered by `qubit status`, superseded and cancelled there, survive a restart, and become
commands of the engine (sent when due) as the clock brings them within the look-ahead."""

from datetime import timedelta

from coordinator.base import CommandStatus
from coordinator.contract.events import RefusalReason
from coordinator.contract.messages import Outcome
from coordinator.events import EventType
from coordinator.ledger import Ledger
from services.planner import LEDGER_FILE, Planner
from tests.services.test_planner import SLOT, T0, accepted, refusals_of, results, sent_commands, state


class Clock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


def record_of(planner, command_id):
    found = planner.ledger.command_record(command_id)
    assert found is not None, f"no record of {command_id}"
    return found


def statuses(planner, schedule_id):
    found = planner.ledger.schedule_record(schedule_id)
    assert found is not None, f"no record of {schedule_id}"
    return found["command_statuses"]


def engine_status(planner, command_id):
    cmd = planner.engine.get_command(command_id)
    assert cmd is not None, f"{command_id} is not in the engine"
    return cmd.status


def compact_ids(planner, asset_id="ast_bay_1"):
    """The ids of ``asset_id``'s compact commands, in slot order."""
    ids = []
    for plan, slot in planner.ledger.due_slots(T0 + timedelta(days=1)):
        ids += [slot.command_id(i) for i, a in enumerate(slot.assets.tolist()) if plan.asset_ids[a] == asset_id]
    return ids


def test_commands_beyond_the_look_ahead_wait_in_the_ledger_and_go_out_when_due(site, recorder):
    clock = Clock()
    planner = Planner(site, recorder, clock=clock)
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0, 11.0, 3.0]}, "sch_a", 1))
    assert [c.parameters["power_kw"] for c in planner.engine.get_commands_for_asset("ast_bay_1")] == [7.0]
    second, third = compact_ids(planner)
    record = record_of(planner, second)
    assert (record["status"], record["parameters"], record["scheduled_at"]) == (
        "PENDING", {"power_kw": 11.0}, T0 + SLOT)
    assert statuses(planner, "sch_a") == {"PENDING": 3}
    planner.tick(T0)
    (first,) = sent_commands(recorder)
    planner.on_results("qubit/results/loopback", results((first, Outcome.COMPLETED, None)))
    recorder.clear()
    clock.now = T0 + SLOT
    planner.tick(clock.now)
    (sent,) = sent_commands(recorder)
    assert (sent.command_id, sent.parameters["power_kw"]) == (second, 11.0)
    assert compact_ids(planner) == [third]
    assert statuses(planner, "sch_a") == {
        "COMPLETED": 1, "DISPATCHED": 1, "PENDING": 1}


def test_a_newer_schedule_supersedes_compact_commands_which_are_never_sent(site, recorder):
    clock = Clock()
    planner = Planner(site, recorder, clock=clock)
    planner.on_schedule("t", accepted({"ev_001_kw": [1.0, 2.0, 3.0, 4.0]}, "sch_old", 1))
    old = compact_ids(planner)
    planner.on_schedule("t", accepted({"ev_001_kw": [9.0, 8.0]}, "sch_new", 2, start=T0 + 2 * SLOT))
    _, new = recorder.events(EventType.SCHEDULE_PLANNED)
    assert (new.payload["command_count"], new.payload["superseded"]) == (2, 2)
    assert recorder.events(EventType.COMMAND_CANCELLED) == []  # announced by SCHEDULE_PLANNED
    record = record_of(planner, old[2])
    assert (record["status"], record["error"]) == ("CANCELLED", "superseded by schedule sch_new")
    assert statuses(planner, "sch_old") == {"PENDING": 2, "CANCELLED": 2}
    powers = []
    for slot in range(4):
        clock.now = T0 + slot * SLOT
        planner.tick(clock.now)
        for cmd in sent_commands(recorder):
            powers.append(cmd.parameters["power_kw"])
            planner.on_results("qubit/results/loopback", results((cmd, Outcome.COMPLETED, None)))
        recorder.clear()
    assert powers == [1.0, 2.0, 9.0, 8.0]
    record = record_of(planner, old[1])
    assert record["status"] == "CANCELLED" and [t["event"] for t in record["transitions"]] == ["COMMAND_CANCELLED"]


def test_early_departure_cancels_compact_commands_at_once(site, recorder):
    clock = Clock()
    planner = Planner(site, recorder, clock=clock)
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0, 11.0, 0.0]}, "sch_a", 1))
    later = compact_ids(planner)
    clock.now = T0 + timedelta(minutes=1)
    planner.on_asset_state("qubit/state/ast_bay_1",
                           state("ast_bay_1", "AVAILABLE", "CHARGING", "unplug", since=clock.now))
    cancelled = {e.payload["command_id"] for e in recorder.events(EventType.COMMAND_CANCELLED)}
    assert set(later) <= cancelled and len(cancelled) == 3
    planner.on_schedule("t", accepted({"ev_001_kw": [5.0]}, "sch_b", 2, start=T0 + 2 * SLOT))
    recorder.clear()
    clock.now = T0 + 2 * SLOT
    planner.tick(clock.now)
    assert [c.parameters["power_kw"] for c in sent_commands(recorder)] == [5.0]  # the new schedule's only
    assert record_of(planner, later[1])["status"] == "CANCELLED"


def test_compact_commands_survive_a_restart_and_are_sent_once(site, recorder, data_dir):
    clock = Clock()
    first = Planner(site, recorder, clock=clock)
    first.on_schedule("t", accepted({"ev_001_kw": [7.0, 11.0]}, "sch_a", 1))
    (later,) = compact_ids(first)
    second = Planner(site, recorder, clock=clock, ledger=Ledger.open(data_dir / LEDGER_FILE))  # kill -9 of first
    assert second.engine.get_command(later) is None
    recorder.clear()
    clock.now = T0 + SLOT
    second.tick(clock.now)
    sent = {c.command_id: c.parameters["power_kw"] for c in sent_commands(recorder)}
    assert sent[later] == 11.0 and engine_status(second, later) is CommandStatus.DISPATCHED
    third = Planner(site, recorder, clock=clock, ledger=Ledger.open(data_dir / LEDGER_FILE))
    assert compact_ids(third) == [] and engine_status(third, later) is CommandStatus.DISPATCHED


def test_a_result_for_a_compact_command_is_refused_as_never_dispatched(site, recorder):
    planner = Planner(site, recorder, clock=lambda: T0)
    refused = refusals_of(planner)
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0, 11.0]}, "sch_a", 1))
    planner.tick(T0)
    (due,) = sent_commands(recorder)
    (later,) = compact_ids(planner)
    due.command_id = later  # an answer for the next slot's command, which was never sent
    planner.on_results("qubit/results/loopback", results((due, Outcome.COMPLETED, None)))
    assert [r.reason for r in refused] == [RefusalReason.NOT_DISPATCHED]
