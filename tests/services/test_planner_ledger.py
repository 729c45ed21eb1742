"""The planner on its durable ledger: a restarted planner resumes exactly; the ledger answers
`qubit status`; an emergency-stop reset restores the newest setpoint only; old history is pruned."""

import asyncio
from datetime import timedelta
from typing import ClassVar

import pytest

from coordinator.base import CommandStatus
from coordinator.contract.messages import EmergencyStop, Outcome, Query, QueryKind, QueryReply, decode
from coordinator.events import EventType
from coordinator.ledger import Ledger
from services.planner import LEDGER_FILE, Planner
from tests.services.test_planner import SLOT, T0, accepted, results, sent_commands


class Clock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


def restarted(site, recorder, data_dir, clock):
    """A new planner process on the same ledger file (the old one gone without closing it)."""
    return Planner(site, recorder, clock=clock, ledger=Ledger.open(data_dir / LEDGER_FILE))


def test_restart_resumes_pending_and_resends_in_flight_as_they_were(site, recorder, data_dir):
    clock = Clock()
    first = Planner(site, recorder, clock=clock)
    first.on_schedule("t", accepted({"ev_001_kw": [7.0, 11.0], "battery_charge_kw": [5.0, 5.0]}, "sch_a", 1))
    first.tick(T0)
    batt, bay = sorted(sent_commands(recorder), key=lambda c: c.asset_id)
    first.on_results("qubit/results/loopback", results((batt, Outcome.COMPLETED, None)))
    recorder.clear()

    second = restarted(site, recorder, data_dir, clock)  # kill -9: `first` never closed its ledger
    assert second.engine.get_command(bay.command_id).status is CommandStatus.DISPATCHED
    assert second.engine.get_command(batt.command_id) is None  # finished: in the ledger only
    assert second.ledger.command_record(batt.command_id)["status"] == "COMPLETED"
    clock.now = T0 + timedelta(seconds=5)
    second.tick(clock.now)
    (again,) = sent_commands(recorder)  # the one in flight, once, as it was
    assert (again.command_id, again.attempts) == (bay.command_id, bay.attempts)
    second.on_results("qubit/results/loopback", results((bay, Outcome.COMPLETED, None)))
    assert [e.payload["command_id"] for e in recorder.events(EventType.COMMAND_COMPLETED)] == [bay.command_id]
    recorder.clear()
    second.tick(T0 + SLOT)  # slot 2: only the charger changes (11 kW); nothing is sent twice
    (slot2,) = sent_commands(recorder)
    assert slot2.parameters["power_kw"] == 11.0 and slot2.attempts == 1


def test_nothing_leaves_before_its_unit_is_committed(site, recorder):
    planner = Planner(site, recorder)
    with planner.ledger.unit():
        planner.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_a", 1))
        planner.tick(T0)  # nested units commit with the outermost
        assert recorder.sent == []
    assert len(sent_commands(recorder)) == 1


def test_a_unit_that_cannot_be_recorded_stops_the_planner_and_sends_nothing(site, recorder):
    planner = Planner(site, recorder)
    planner.ledger._db.close()  # the disk is gone: every write fails
    with pytest.raises(SystemExit):
        planner.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_a", 1))
    assert recorder.sent == []


def test_messages_committed_but_not_confirmed_are_sent_again_after_a_restart(site, recorder, data_dir):
    class NeverConfirms:
        unconfirmed = 0
        sent: ClassVar[list[str]] = []

        def publish(self, topic, payload, qos=1, retain=False, *, on_confirmed=None):
            self.sent.append(topic)

    planner = Planner(site, recorder)
    planner.outbox.transport = NeverConfirms()
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_a", 1))
    planner.tick(T0)
    assert "qubit/commands/loopback" in NeverConfirms.sent
    second = restarted(site, recorder, data_dir, Clock())
    asyncio.run(second.open())
    assert [t for t, _ in recorder.on("qubit/commands/")] == ["qubit/commands/loopback"]
    assert {e.event_type for e in recorder.events()} >= {EventType.SCHEDULE_PLANNED, EventType.COMMAND_DISPATCHED}


def test_status_queries_are_answered_from_the_ledger_across_restarts(site, recorder, data_dir):
    clock = Clock()
    first = Planner(site, recorder, clock=clock)
    first.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_a", 1))
    first.tick(T0)
    (cmd,) = sent_commands(recorder)
    first.on_results("qubit/results/loopback", results((cmd, Outcome.FAILED, "busy")))
    first.tick(T0 + timedelta(seconds=10))
    first.on_results("qubit/results/loopback",
                     results((cmd, Outcome.ACKNOWLEDGED, None), (cmd, Outcome.COMPLETED, None)))
    recorder.clear()
    second = restarted(site, recorder, data_dir, clock)

    def ask(kind, id_):
        second.on_query("q", Query(query_id="q1", reply_to="qubit/query/replies/me", kind=kind, id=id_).encode())
        ((_, payload),) = recorder.on("qubit/query/replies/")
        recorder.clear()
        return decode(QueryReply, payload)

    record = ask(QueryKind.COMMAND, cmd.command_id).result
    assert record["status"] == "COMPLETED" and record["attempts"] == 2
    assert [t["event"] for t in record["transitions"]] == [
        "COMMAND_DISPATCHED", "COMMAND_RETRY_SCHEDULED", "COMMAND_DISPATCHED", "COMMAND_ACKNOWLEDGED",
        "COMMAND_COMPLETED"]
    assert record["transitions"][1]["reason"] == "busy"
    schedule = ask(QueryKind.SCHEDULE, "sch_a").result
    assert schedule["status"] == "planned" and schedule["command_statuses"] == {"COMPLETED": 1}
    missing = ask(QueryKind.COMMAND, "cmd_404")
    assert not missing.ok and missing.error == "no command cmd_404 known"
    second.on_query("q", Query(query_id="q2", reply_to="qubit/query/replies/me", kind=QueryKind.ASSET_STATES).encode())
    assert recorder.on("qubit/query/replies/") == []  # the tracker's to answer


def test_redelivered_and_stale_schedules_are_refused_across_restarts(site, recorder, data_dir):
    first = Planner(site, recorder)
    first.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_new", 5))
    second = restarted(site, recorder, data_dir, Clock())
    recorder.clear()
    second.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_new", 5))
    assert recorder.sent == [] and len(second.engine.commands) == 1
    second.on_schedule("t", accepted({"ev_001_kw": [2.0]}, "sch_old", 4))
    (rejected,) = recorder.events(EventType.SCHEDULE_REJECTED)
    assert rejected.payload["reason"] == "stale_version"
    assert second.ledger.schedule_record("sch_old")["status"] == "rejected"


def test_created_at_increases_from_schedule_to_schedule_even_if_the_clock_steps_back(site, recorder):
    clock = Clock()
    planner = Planner(site, recorder, clock=clock, look_ahead=timedelta(days=1))  # every command in the engine
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_a", 1))
    clock.now = T0 - timedelta(hours=1)
    planner.on_schedule("t", accepted({"ev_001_kw": [8.0]}, "sch_b", 2, start=T0 + SLOT))
    a, b = planner.engine.get_commands_for_asset("ast_bay_1")
    assert b.created_at > a.created_at


def stop(active):
    return EmergencyStop(active=active, reason="drill", issued_by="op", at=T0)


def test_reset_issues_the_setpoint_in_force_again_once(site, recorder):
    clock = Clock()
    planner = Planner(site, recorder, clock=clock)
    planner.on_schedule("t", accepted({"ev_001_kw": [9.0]}, "sch_a", 1))
    planner.tick(T0)
    (nine,) = sent_commands(recorder)
    planner.on_results("qubit/results/loopback", results((nine, Outcome.COMPLETED, None)))
    planner.emergency_stop(stop(True))
    recorder.clear()
    clock.now = T0 + timedelta(seconds=30)
    planner.emergency_reset(stop(False))
    planner.tick(clock.now)
    (again,) = sent_commands(recorder)
    assert again.command_id != nine.command_id and again.parameters == {"power_kw": 9.0}
    assert again.created_at > nine.created_at  # newer than anything a gateway applied before


def test_reset_sends_only_the_newer_setpoint_held_during_the_stop(site, recorder):
    clock = Clock()
    planner = Planner(site, recorder, clock=clock)
    planner.on_schedule("t", accepted({"ev_001_kw": [9.0, 0.0]}, "sch_a", 1))
    planner.tick(T0)
    (nine,) = sent_commands(recorder)
    planner.on_results("qubit/results/loopback", results((nine, Outcome.COMPLETED, None)))
    planner.emergency_stop(stop(True))
    clock.now = T0 + SLOT
    planner.tick(clock.now)  # slot 2 falls due during the stop: held
    recorder.clear()
    planner.emergency_reset(stop(False))
    planner.tick(clock.now + timedelta(seconds=1))
    (zero,) = sent_commands(recorder)  # 0 kW, never 9 kW again first
    assert zero.parameters == {"power_kw": 0.0} and zero.scheduled_at == T0 + SLOT


def test_finished_history_is_pruned_after_the_retention(site, recorder):
    clock = Clock()
    planner = Planner(site, recorder, clock=clock, retention=timedelta(days=7))
    planner.on_schedule("t", accepted({"ev_001_kw": [7.0]}, "sch_a", 1))
    planner.tick(T0)
    (cmd,) = sent_commands(recorder)
    planner.on_results("qubit/results/loopback", results((cmd, Outcome.COMPLETED, None)))
    planner.tick(T0 + timedelta(days=6))
    assert planner.ledger.command_record(cmd.command_id) is not None
    planner.tick(T0 + timedelta(days=7, hours=2))
    assert planner.ledger.command_record(cmd.command_id) is None
    assert planner.ledger.schedule_record("sch_a") is None
