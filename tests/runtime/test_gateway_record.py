"""The gateway's durable record on a real SQLite file: what survives closing and reopening."""

import sqlite3
import time
from datetime import UTC, datetime, timedelta

from coordinator.base import Command, CommandType
from coordinator.contract.messages import Outcome
from coordinator.runtime.command_intake import result
from coordinator.runtime.gateway_record import GatewayRecord, Progress, record_path

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)


def cmd(kw=7.0, created=T0, attempts=1, ctype=CommandType.SET_CHARGE_RATE):
    return Command("ast_1", ctype, {"power_kw": kw}, T0, created_at=created, attempts=attempts)


def test_the_path_comes_from_the_data_dir(data_dir):
    assert record_path("ocpp") == data_dir / "gateway-ocpp.sqlite"


def test_deliveries_results_and_what_is_in_force_survive_reopening(tmp_path):
    path = tmp_path / "sub" / "gateway-gw.sqlite"  # the directory is made when missing
    c = cmd()
    record = GatewayRecord(path)
    record.accept([c])
    record.applying(c)
    record.applied(c)
    done = [result(c.command_id, c.asset_id, Outcome.ACKNOWLEDGED), result(c.command_id, c.asset_id, Outcome.COMPLETED)]
    record.results([(c.command_id, 1, done, True)])
    record.close()

    again = GatewayRecord(path)
    seen = again.delivery(c.command_id, 1)
    assert seen is not None and seen.progress is Progress.FINISHED and seen.applied
    assert [r.outcome for r in seen.results] == [Outcome.ACKNOWLEDGED, Outcome.COMPLETED]
    assert again.applied_attempt(c.command_id) == 1 and again.delivery(c.command_id, 2) is None
    applied = again.in_force("ast_1", CommandType.SET_DISCHARGE_RATE)  # the same channel
    assert applied is not None and (applied.command_id, applied.parameters, applied.created_at) == (
        c.command_id, {"power_kw": 7.0}, T0)
    assert again.unfinished() == []
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_crash_leaves_accepted_and_applying_deliveries_to_resume_in_order(tmp_path):
    path = tmp_path / "gateway-gw.sqlite"
    first, second = cmd(1.0), cmd(2.0)
    record = GatewayRecord(path)
    record.accept([first, second])
    record.applying(first)
    del record  # no close: as kill -9 leaves it (every write was committed)

    left = GatewayRecord(path).unfinished()
    assert [(d.command_id, d.progress, d.applied) for d, _ in left] == [
        (first.command_id, Progress.APPLYING, False), (second.command_id, Progress.ACCEPTED, False)]
    resumed = left[0][1]
    assert (resumed.command_id, resumed.attempts, resumed.parameters, resumed.created_at) == (
        first.command_id, 1, {"power_kw": 1.0}, T0)


def test_an_emergency_stop_keeps_the_order_but_not_the_restore(tmp_path):
    record = GatewayRecord(tmp_path / "gateway-gw.sqlite")
    c = cmd()
    record.accept([c])
    record.applied(c)
    assert [a.command_id for a in record.restorable("ast_1")] == [c.command_id]
    record.stop_restoring(["ast_1"])
    assert record.restorable("ast_1") == [] and record.in_force("ast_1", CommandType.SET_CHARGE_RATE) is not None
    newer = cmd(created=T0 + timedelta(minutes=1))
    record.accept([newer])
    record.applied(newer)
    assert [a.command_id for a in record.restorable("ast_1")] == [newer.command_id]


def test_a_setpoint_being_applied_stops_the_older_one_being_restored(tmp_path):
    # The gateway dies mid-call: the charger may hold the newer value; restoring the older on
    # its next boot would land after it (the planner's retry brings the newer one back).
    record = GatewayRecord(tmp_path / "gateway-gw.sqlite")
    older, newer = cmd(), cmd(created=T0 + timedelta(minutes=1))
    record.accept([older])
    record.applied(older)
    record.accept([newer])
    record.applying(newer)
    reopened = GatewayRecord(tmp_path / "gateway-gw.sqlite")
    assert reopened.restorable("ast_1") == []
    reopened.applied(newer)
    assert [a.command_id for a in reopened.restorable("ast_1")] == [newer.command_id]


def test_prune_forgets_only_old_finished_deliveries(tmp_path):
    record = GatewayRecord(tmp_path / "gateway-gw.sqlite")
    old, recent, open_ = cmd(), cmd(), cmd()
    record.accept([old, recent, open_])
    record.results([(c.command_id, 1, [result(c.command_id, c.asset_id, Outcome.FAILED, "x")], True)
                    for c in (old, recent)])
    record._db.execute("UPDATE deliveries SET finished_at = ? WHERE command_id = ?",
                       (time.time() - 8 * 86400, old.command_id))
    assert record.prune(7.0) == 1
    assert record.delivery(old.command_id, 1) is None
    assert record.delivery(recent.command_id, 1) is not None and record.delivery(open_.command_id, 1) is not None


def test_many_marks_in_one_transaction_are_as_one_each(tmp_path):
    older, newer = cmd(7.0), cmd(9.0, created=T0 + timedelta(seconds=1))
    other = Command("ast_2", CommandType.SET_CHARGE_RATE, {"power_kw": 3.0}, T0, created_at=T0)
    record = GatewayRecord(tmp_path / "gateway-gw.sqlite")
    record.accept([older, newer, other])
    record.applying_all([older, other])
    assert {d.command_id for d, _ in record.unfinished() if d.progress is Progress.APPLYING} == {
        older.command_id, other.command_id}
    record.applied_all([older, newer, other])  # in order: the later one of a channel is in force
    record.close()

    again = GatewayRecord(tmp_path / "gateway-gw.sqlite")
    in_force = [again.in_force(a, CommandType.SET_CHARGE_RATE) for a in ("ast_1", "ast_2")]
    assert [a.command_id if a else None for a in in_force] == [newer.command_id, other.command_id]
    deliveries = [again.delivery(c.command_id, c.attempts) for c in (older, newer, other)]
    assert all(d is not None and d.applied for d in deliveries)
