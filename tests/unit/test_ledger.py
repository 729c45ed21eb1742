"""The ledger's SQLite file on its own: exact round trips, units of work, the outbox."""

import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from coordinator.base import Command, CommandStatus, CommandType
from coordinator.ledger import Ledger, LedgerError, OutboxSender
from coordinator.ledger.plans import Cancellation, Plan, PlannedSlot
from coordinator.ledger.store import REPLAY_WINDOW

T0 = datetime(2025, 1, 15, 8, 0, 0, 123457, tzinfo=UTC)


def command(command_id="cmd_1", command_type=CommandType.SET_CHARGE_RATE, created_at=T0 - timedelta(microseconds=1),
            scheduled_at=T0):
    return Command("ast_1", command_type, {"power_kw": 7.25}, scheduled_at, command_id, schedule_id="sch_1",
                   created_at=created_at)


def test_a_command_comes_back_exactly_as_it_was_recorded(tmp_path):
    ledger = Ledger.open(tmp_path / "l.sqlite")
    cmd = command()
    with ledger.unit() as unit:
        unit.record(cmd, "COMMAND_CREATED", T0)
    cmd.status, cmd.attempts, cmd.dispatched_at = CommandStatus.DISPATCHED, 1, T0 + timedelta(microseconds=7)
    with ledger.unit() as unit:
        unit.record(cmd, "COMMAND_DISPATCHED", T0)
    ledger.close()
    (back,) = Ledger.open(tmp_path / "l.sqlite").open_commands()
    fields = ("command_id", "asset_id", "command_type", "parameters", "scheduled_at", "created_at", "status",
              "attempts", "dispatched_at", "schedule_id", "max_retries", "timeout_seconds", "priority")
    assert {f: getattr(back, f) for f in fields} == {f: getattr(cmd, f) for f in fields}


def test_what_a_failing_body_recorded_is_still_committed(tmp_path):
    ledger = Ledger.open(tmp_path / "l.sqlite")
    with pytest.raises(ZeroDivisionError), ledger.unit() as unit:
        unit.record(command(command_id="cmd_kept"), "COMMAND_CREATED", T0)
        raise ZeroDivisionError
    assert [c.command_id for c in ledger.open_commands()] == ["cmd_kept"]


def test_confirmed_messages_leave_the_outbox_with_the_next_commit(tmp_path):
    ledger = Ledger.open(tmp_path / "l.sqlite")
    sent = []
    OutboxSender(ledger, lambda topic, payload, qos=1, retain=False: sent.append(topic))
    with ledger.unit() as unit:
        unit.publish("qubit/events/A/site", b"a")
        unit.publish("qubit/commands/gw", b"c", urgent=True)
        assert sent == []
    assert sent == ["qubit/commands/gw", "qubit/events/A/site"]  # command batches first
    with ledger.unit():
        pass
    assert ledger.unsent() == []
    # kept a while after the broker's confirmation: a broker that crashes loses what it had not saved
    assert [m.topic for m in ledger.recently_sent()] == ["qubit/events/A/site", "qubit/commands/gw"]
    ledger.confirmed(99, at=datetime.now(UTC) + REPLAY_WINDOW + timedelta(seconds=1))
    with ledger.unit():
        pass
    assert ledger.recently_sent() == []


def test_a_ledger_from_another_schema_version_is_refused(tmp_path):
    path = tmp_path / "l.sqlite"
    Ledger.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError, match="schema version 99"):
        Ledger.open(path)


def test_an_unusable_path_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(LedgerError, match="cannot be opened"):
        Ledger.open(tmp_path / "file" / "l.sqlite")


def test_completed_setpoints_are_the_newest_per_asset_by_creation_then_slot(tmp_path):
    ledger = Ledger.open(tmp_path / "l.sqlite")
    older = command(command_id="cmd_old", created_at=T0, scheduled_at=T0 + timedelta(hours=1))
    newer = command(command_id="cmd_new", created_at=T0 + timedelta(seconds=1), scheduled_at=T0)
    limit = command(command_id="cmd_limit", command_type=CommandType.SET_POWER_LIMIT,
                    created_at=T0 + timedelta(hours=2))
    for cmd in (newer, older, limit):
        cmd.status = CommandStatus.COMPLETED
        with ledger.unit() as unit:
            unit.record(cmd, "COMMAND_CREATED", T0)
    found = ledger.completed_setpoints({CommandType.SET_CHARGE_RATE, CommandType.SET_DISCHARGE_RATE})
    assert {a: c.command_id for a, c in found.items()} == {"ast_1": "cmd_new"}


def test_a_version_1_ledger_is_taken_over_with_the_compact_tables(tmp_path):
    path = tmp_path / "l.sqlite"
    Ledger.open(path).close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE plans; DROP TABLE planned_slots; DROP TABLE cancellations;"
                     " UPDATE meta SET value = '1' WHERE key = 'schema_version';")
    db.commit()
    db.close()
    ledger = Ledger.open(path)
    assert ledger.due_slots(T0) == [] and ledger.planned_assets() == set()
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == ("2",)


def test_a_plan_is_pruned_once_every_slot_is_materialised_and_its_rules_with_it(tmp_path):
    ledger = Ledger.open(tmp_path / "l.sqlite")
    us = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    plan = Plan("sch_1", ("ast_1", "ast_2"), us, 1, 3, 30.0)
    slot = PlannedSlot("sch_1", us, bytes(range(12)), np.array([0, 1], dtype=np.int32),
                       np.array([0, 1], dtype=np.int8), np.array([7.0, 3.5]))
    with ledger.unit() as unit:
        unit.add_plan(plan, [slot])
        unit.cancel_planned([Cancellation("ast_2", us + 1, 0, us, "early departure", announce=True)])
    record = ledger.command_record(slot.command_id(1))
    assert record is not None and record["status"] == "CANCELLED"
    with ledger.unit():
        live, cancelled = ledger.materialise(T0)
    assert [c.asset_id for c in live] == ["ast_1"] and [c.asset_id for c, _ in cancelled] == ["ast_2"]
    record = ledger.command_record(slot.command_id(1))
    assert record is not None and record["transitions"][0]["reason"] == "early departure"
    ledger.prune(T0 - timedelta(days=1))
    assert ledger._db.execute("SELECT count(*) FROM plans").fetchone() == (0,)
    assert ledger._db.execute("SELECT count(*) FROM cancellations").fetchone() == (0,)
