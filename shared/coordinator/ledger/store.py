"""The ledger's SQLite file: what is written, in which transaction, and how it is read back.

Everything a unit of work changed (a schedule planned, commands created, each command's new
state and the transition that led to it, the messages that announce it) is written by one
transaction when the unit ends. Nothing leaves the process before that commit: a crash loses
at most the unit in progress, whose inbound message the broker has not had acknowledged, so
it comes again.

The file is in WAL mode with ``synchronous=FULL``: a committed unit survives a crash of the
process and of the machine. Times are stored as integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.base import Command, CommandStatus, CommandType
from coordinator.lazy_imports import LazyModule
from coordinator.ledger.plans import (
    SETPOINT_TYPES,
    Cancellation,
    Plan,
    PlannedSlot,
    cancel_mask,
    cancelled_from,
    commands_of,
)

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a schedule is first planned, not when the process starts
    np = LazyModule("numpy", globals(), "np")

SCHEMA_VERSION = 2
"""2: a schedule's commands not yet due are kept compact (plans, planned_slots, cancellations:
coordinator.ledger.plans). A version 1 file is taken over as it is (it has none of them)."""

REPLAY_WINDOW = timedelta(seconds=30)
"""How long a message the broker confirmed stays in the outbox: a broker killed before it
saved its state (autosave_interval, 10 s in mosquitto/mosquitto.conf) lost what it confirmed
since, and the planner sends that again when it finds its session gone."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schedules (
    schedule_id TEXT PRIMARY KEY,
    version INTEGER,
    status TEXT NOT NULL,            -- planned | rejected
    recorded_at INTEGER NOT NULL,
    received_at INTEGER,
    command_count INTEGER NOT NULL DEFAULT 0,
    superseded INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    message TEXT
);
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    schedule_id TEXT,
    asset_id TEXT NOT NULL,
    command_type TEXT NOT NULL,
    parameters TEXT NOT NULL,
    scheduled_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    timeout_seconds REAL NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    dispatched_at INTEGER,
    finished_at INTEGER,
    next_attempt_at INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS commands_open ON commands(status) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS commands_by_schedule ON commands(schedule_id);
CREATE INDEX IF NOT EXISTS commands_finished ON commands(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS commands_completed_by_asset ON commands(asset_id, created_at, scheduled_at)
    WHERE status = 'COMPLETED';
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    command_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS transitions_by_command ON transitions(command_id);
CREATE TABLE IF NOT EXISTS asset_versions (asset_id TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    urgent INTEGER NOT NULL,
    confirmed_at INTEGER            -- the broker's PUBACK; kept REPLAY_WINDOW longer
);
CREATE INDEX IF NOT EXISTS outbox_confirmed ON outbox(confirmed_at);
CREATE TABLE IF NOT EXISTS plans (
    schedule_id TEXT PRIMARY KEY,
    asset_ids TEXT NOT NULL,        -- JSON array; a slot's entries index into it
    created_at INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    timeout_seconds REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS planned_slots (   -- commands not yet materialised, one row per slot
    schedule_id TEXT NOT NULL,
    scheduled_at INTEGER NOT NULL,
    command_ids BLOB NOT NULL,      -- 6 raw bytes each
    assets BLOB NOT NULL,           -- int32 little-endian indices into plans.asset_ids
    types BLOB NOT NULL,            -- int8 codes (coordinator.ledger.plans.SETPOINT_TYPES)
    powers BLOB NOT NULL,           -- float64 little-endian kW
    PRIMARY KEY (schedule_id, scheduled_at)
);
CREATE INDEX IF NOT EXISTS planned_slots_due ON planned_slots(scheduled_at);
CREATE TABLE IF NOT EXISTS cancellations (
    id INTEGER PRIMARY KEY,
    asset_id TEXT NOT NULL,
    created_before INTEGER NOT NULL,
    scheduled_from INTEGER NOT NULL,
    at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    announce INTEGER NOT NULL
);
"""


class LedgerError(RuntimeError):
    """The ledger cannot be opened or written: nothing more may be decided until it can."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message the planner publishes, kept until the broker confirmed it."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    urgent: bool
    """Command batches: sent ahead of events waiting in the outbox."""


@dataclass
class Unit:
    """What one unit of work changed, written when it ends (``Ledger.unit``)."""

    ledger: Ledger
    new_commands: dict[str, Command] = field(default_factory=dict)
    touched: dict[str, Command] = field(default_factory=dict)
    transitions: list[tuple[str, int, str, str, int, str | None]] = field(default_factory=list)
    messages: list[OutgoingMessage] = field(default_factory=list)
    schedules: list[tuple[Any, ...]] = field(default_factory=list)
    asset_versions: dict[str, int] = field(default_factory=dict)
    plans: list[Plan] = field(default_factory=list)
    planned_slots: list[PlannedSlot] = field(default_factory=list)
    cancellations: list[Cancellation] = field(default_factory=list)
    materialised: list[tuple[str, int]] = field(default_factory=list)

    def add_plan(self, plan: Plan, slots: Iterable[PlannedSlot]) -> None:
        """A schedule's commands kept compact until ``Ledger.due_slots`` hands them out."""
        self.plans.append(plan)
        self.planned_slots.extend(slots)

    def cancel_planned(self, rules: Iterable[Cancellation]) -> None:
        """Rules cancelling compact commands as they are materialised (coordinator.ledger.plans)."""
        self.cancellations.extend(rules)

    def add_commands(self, commands: Iterable[Command]) -> None:
        """Commands created in this unit without a COMMAND_CREATED each (a schedule's)."""
        self.new_commands.update((c.command_id, c) for c in commands)

    def record(self, cmd: Command, event: str, at: datetime) -> None:
        """``cmd`` moved (``event``, e.g. COMMAND_DISPATCHED): its state and the transition are
        written. COMMAND_CREATED inserts the command; its row records the creation."""
        if event == "COMMAND_CREATED":
            self.new_commands[cmd.command_id] = cmd
            return
        if cmd.command_id not in self.new_commands:
            self.touched[cmd.command_id] = cmd
        self.transitions.append((cmd.command_id, _us(at), event, cmd.status.value, cmd.attempts, cmd.error))

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, *, urgent: bool = False) -> None:
        """Send ``payload`` once this unit is committed (and again after a crash until confirmed)."""
        self.messages.append(OutgoingMessage(self.ledger._take_message_id(), topic, payload, qos, retain, urgent))

    def schedule_planned(self, schedule_id: str, version: int, received_at: datetime, at: datetime,
                         command_count: int, superseded: int) -> None:
        self.schedules.append((schedule_id, version, "planned", _us(at), _us(received_at), command_count,
                               superseded, None, None))

    def schedule_rejected(self, schedule_id: str, version: int | None, at: datetime, reason: str, message: str) -> None:
        self.schedules.append((schedule_id, version, "rejected", _us(at), None, 0, 0, reason, message))

    def set_asset_version(self, asset_id: str, version: int) -> None:
        self.asset_versions[asset_id] = version


class Ledger:
    """The planner's durable record. Used from one thread (the planner's event loop)."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._db = connection
        self.path = path
        self._unit: Unit | None = None
        self._depth = 0
        self._confirmed: list[tuple[int, int]] = []  # (confirmed_at, message id)
        self._committed_listeners: list[Any] = []
        self._plans: dict[str, Plan] = {}  # plans never change once written
        row = self._db.execute("SELECT max(id) FROM outbox").fetchone()
        self._next_message_id = (row[0] or 0) + 1

    @classmethod
    def open(cls, path: str | Path) -> Ledger:
        """Open (or create) the ledger at ``path``; ``":memory:"`` for a throwaway one.

        Raises LedgerError, with the reason, when the file cannot be used."""
        where = str(path)
        try:
            if where != ":memory:":
                Path(where).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(where, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            # Rows are written a slot (5,000 commands at most on a 5,000-asset site) at a time, the
            # rest of a schedule as a few blobs per slot (coordinator.ledger.plans): 8 MiB of page
            # cache hold a slot's B-tree pages without costing the planner its memory budget.
            db.execute("PRAGMA cache_size=-8192")
            db.executescript(_SCHEMA)
            found = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if found is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif found[0] == "1":  # the new tables were just made: nothing else differs
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            elif found[0] != str(SCHEMA_VERSION):
                raise LedgerError(f"ledger {where} has schema version {found[0]}, this planner reads {SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"ledger {where} cannot be opened: {exc}") from exc
        return cls(db, where)

    def close(self) -> None:
        self._db.close()

    # -- units of work -----------------------------------------------------------------

    def on_committed(self, listener: Any) -> None:
        """``listener(messages)`` after every commit, with the messages that unit published."""
        self._committed_listeners.append(listener)

    @property
    def current(self) -> Unit | None:
        """The unit of work in progress, if any."""
        return self._unit

    @contextmanager
    def unit(self) -> Iterator[Unit]:
        """A unit of work: everything recorded in it is committed when the outermost one ends.

        A body that raises still has what it recorded committed (it happened in memory; the
        ledger must say so), then the exception goes on. A commit that fails raises LedgerError."""
        if self._unit is None:
            self._unit = Unit(self)
        self._depth += 1
        try:
            yield self._unit
        finally:
            self._depth -= 1
            if self._depth == 0:
                unit, self._unit = self._unit, None
                self._commit(unit)
                for listener in self._committed_listeners:
                    listener(unit.messages)

    def confirmed(self, message_id: int, at: datetime | None = None) -> None:
        """The broker confirmed this message (recorded with the next commit; the message is
        deleted REPLAY_WINDOW later)."""
        self._confirmed.append((_us(at or datetime.now(UTC)), message_id))

    def _take_message_id(self) -> int:
        taken = self._next_message_id
        self._next_message_id += 1
        return taken

    def _commit(self, unit: Unit) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            if unit.plans:
                db.executemany("INSERT OR REPLACE INTO plans VALUES (?,?,?,?,?,?)", (
                    (p.schedule_id, json.dumps(p.asset_ids), p.created_at, p.priority, p.max_retries,
                     p.timeout_seconds) for p in unit.plans))
            if unit.planned_slots:
                db.executemany("INSERT INTO planned_slots VALUES (?,?,?,?,?,?)", (s.row() for s in unit.planned_slots))
            if unit.cancellations:
                db.executemany("INSERT INTO cancellations (asset_id, created_before, scheduled_from, at, reason,"
                               " announce) VALUES (?,?,?,?,?,?)", (c.row() for c in unit.cancellations))
            if unit.materialised:
                db.executemany("DELETE FROM planned_slots WHERE schedule_id = ? AND scheduled_at = ?",
                               unit.materialised)
            if unit.new_commands:
                db.executemany("INSERT INTO commands VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                               map(_row, unit.new_commands.values()))
            if unit.touched:
                db.executemany(
                    "UPDATE commands SET status=?, attempts=?, dispatched_at=?, finished_at=?, next_attempt_at=?,"
                    " error=?, parameters=? WHERE command_id=?", map(_state_row, unit.touched.values()))
            if unit.transitions:
                db.executemany("INSERT INTO transitions (command_id, at, event, status, attempt, reason)"
                               " VALUES (?,?,?,?,?,?)", unit.transitions)
            if unit.schedules:
                db.executemany("INSERT OR REPLACE INTO schedules VALUES (?,?,?,?,?,?,?,?,?)", unit.schedules)
            if unit.asset_versions:
                db.executemany("INSERT OR REPLACE INTO asset_versions VALUES (?,?)", unit.asset_versions.items())
            if unit.messages:
                db.executemany("INSERT INTO outbox VALUES (?,?,?,?,?,?,NULL)",
                               ((m.id, m.topic, m.payload, m.qos, int(m.retain), int(m.urgent)) for m in unit.messages))
            if self._confirmed:
                done, self._confirmed = self._confirmed, []
                db.executemany("UPDATE outbox SET confirmed_at = ? WHERE id = ?", done)
                db.execute("DELETE FROM outbox WHERE confirmed_at < ?", (done[-1][0] - _us_delta(REPLAY_WINDOW),))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            _roll_back(db)
            raise LedgerError(f"ledger {self.path}: a unit of work could not be recorded: {exc}") from exc

    # -- what a restarted planner reads back ------------------------------------------------

    def open_commands(self) -> list[Command]:
        """Every command not yet finished, as it was last recorded, in slot order."""
        rows = self._db.execute(
            "SELECT * FROM commands WHERE finished_at IS NULL ORDER BY scheduled_at, created_at").fetchall()
        return [_command(r) for r in rows]

    def asset_versions(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT asset_id, version FROM asset_versions").fetchall())

    def schedule_status(self, schedule_id: str) -> str | None:
        """planned, rejected, or None for a schedule never seen."""
        row = self._db.execute("SELECT status FROM schedules WHERE schedule_id = ?", (schedule_id,)).fetchone()
        return None if row is None else str(row[0])

    def newest_created_at(self) -> datetime | None:
        row = self._db.execute(
            "SELECT max(coalesce((SELECT max(created_at) FROM commands), -1),"
            " coalesce((SELECT max(created_at) FROM plans), -1))").fetchone()
        return None if row[0] < 0 else _dt(row[0])

    # -- compact plans (coordinator.ledger.plans) ----------------------------------------

    def due_slots(self, until: datetime) -> list[tuple[Plan, PlannedSlot]]:
        """Compact slots scheduled at or before ``until``, in slot order, with their plans."""
        cut = _us(until)
        slots = self._slots("WHERE scheduled_at <= ?", (cut,), lambda s: s.scheduled_at <= cut)
        return [(self._plan(s.schedule_id), s) for s in sorted(slots, key=lambda s: s.scheduled_at)]

    def materialise(self, until: datetime) -> tuple[list[Command], list[tuple[Command, Cancellation]]]:
        """Every compact command scheduled at or before ``until``, as Command objects: (pending
        ones, ones a cancellation rule ended with their rule). The current unit writes them as rows
        of the commands table (the cancelled ones with their transition) and drops their slots."""
        unit = self._unit
        if unit is None:
            raise RuntimeError("materialise outside a unit of work of the ledger")
        due = self.due_slots(until)
        if not due:
            return [], []
        rules = self._rules()
        applying: dict[str, dict[str, Cancellation]] = {}
        live: list[Command] = []
        cancelled: list[tuple[Command, Cancellation]] = []
        for plan, slot in due:
            if plan.schedule_id not in applying:
                applying[plan.schedule_id] = cancelled_from(plan, rules)
            pending, ended = commands_of(plan, slot, applying[plan.schedule_id], _dt)
            live += pending
            cancelled += ended
            unit.materialised.append((slot.schedule_id, slot.scheduled_at))
        unit.add_commands(live)
        unit.add_commands(cmd for cmd, _ in cancelled)
        unit.transitions.extend((cmd.command_id, rule.at, "COMMAND_CANCELLED", CommandStatus.CANCELLED.value, 0,
                                 rule.reason) for cmd, rule in cancelled)
        return live, cancelled

    def planned_pending(self, asset_ids: set[str], scheduled_from: datetime, exclude_schedule: str) -> int:
        """Compact commands of other schedules than ``exclude_schedule``, for ``asset_ids``,
        scheduled at or after ``scheduled_from`` and not cancelled by a rule: what a new
        schedule for those assets from that time on supersedes."""
        cut = _us(scheduled_from)
        slots = self._slots("WHERE scheduled_at >= ? AND schedule_id != ?", (cut, exclude_schedule),
                            lambda s: s.scheduled_at >= cut and s.schedule_id != exclude_schedule)
        return sum(self._pending_in(slot, asset_ids) for slot in slots)

    def _pending_in(self, slot: PlannedSlot, asset_ids: set[str] | None,
                    rules: list[Cancellation] | None = None) -> int:
        plan = self._plan(slot.schedule_id)
        applying = cancelled_from(plan, self._rules() if rules is None else rules)
        names = plan.asset_ids
        return sum(1 for i, rule in zip(slot.assets.tolist(), cancel_mask(plan, slot, applying), strict=True)
                   if rule is None and (asset_ids is None or names[i] in asset_ids))

    def planned_for(self, asset_id: str, created_before: datetime) -> list[Command]:
        """The compact commands of ``asset_id`` created before ``created_before`` and still pending."""
        cut, rules, found = _us(created_before), self._rules(), []
        for slot in self._slots("", (), lambda s: True):
            plan = self._plan(slot.schedule_id)
            if plan.created_at >= cut or asset_id not in plan.asset_ids:
                continue
            mine = np.flatnonzero(slot.assets == plan.asset_ids.index(asset_id)).tolist()
            if not mine:
                continue
            live, _ = commands_of(plan, slot.only(mine), cancelled_from(plan, rules), _dt)
            found += live
        return sorted(found, key=lambda c: c.scheduled_at)

    def planned_assets(self) -> set[str]:
        """Assets with compact commands not yet materialised."""
        found: set[str] = set()
        for slot in self._slots("", (), lambda s: True):
            names = self._plan(slot.schedule_id).asset_ids
            found.update(names[i] for i in set(slot.assets.tolist()))
        return found

    def _plan(self, schedule_id: str) -> Plan:
        known = self._plans.get(schedule_id)
        if known is not None:
            return known
        for plan in self._unit.plans if self._unit is not None else ():
            if plan.schedule_id == schedule_id:
                return plan
        row = self._db.execute("SELECT * FROM plans WHERE schedule_id = ?", (schedule_id,)).fetchone()
        if row is None:
            raise LedgerError(f"ledger {self.path}: planned slots of {schedule_id} without its plan")
        plan = self._plans[schedule_id] = Plan(row[0], tuple(json.loads(row[1])), row[2], row[3], row[4], row[5])
        return plan

    def _slots(self, where: str, args: tuple[Any, ...], keep: Any) -> list[PlannedSlot]:
        """Compact slots: committed ones matching ``where``, and this unit's matching ``keep``,
        less those this unit materialised."""
        slots = [PlannedSlot.from_row(r) for r in self._db.execute(f"SELECT * FROM planned_slots {where}", args)]
        unit = self._unit
        if unit is not None:
            slots += [s for s in unit.planned_slots if keep(s)]
            gone = set(unit.materialised)
            if gone:
                slots = [s for s in slots if (s.schedule_id, s.scheduled_at) not in gone]
        return slots

    def _rules(self) -> list[Cancellation]:
        rules = [Cancellation(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in self._db.execute(
            "SELECT asset_id, created_before, scheduled_from, at, reason, announce FROM cancellations")]
        if self._unit is not None:
            rules += self._unit.cancellations
        return rules

    def _planned_record(self, command_id: str) -> dict[str, Any] | None:
        """``command_record`` of a command still compact."""
        for slot in self._slots("", (), lambda s: True):
            i = slot.find(command_id)
            if i is None:
                continue
            plan = self._plan(slot.schedule_id)
            rule = cancel_mask(plan, slot, cancelled_from(plan, self._rules()))[i]
            return {
                "command_id": command_id, "schedule_id": plan.schedule_id,
                "asset_id": plan.asset_ids[int(slot.assets[i])],
                "command_type": SETPOINT_TYPES[int(slot.types[i])].value,
                "parameters": {"power_kw": float(slot.powers[i])}, "scheduled_at": _dt(slot.scheduled_at),
                "created_at": _dt(plan.created_at), "priority": plan.priority, "max_retries": plan.max_retries,
                "timeout_seconds": plan.timeout_seconds,
                "status": (CommandStatus.PENDING if rule is None else CommandStatus.CANCELLED).value, "attempts": 0,
                "dispatched_at": None, "finished_at": None if rule is None else _dt(rule.at), "next_attempt_at": None,
                "error": None if rule is None else rule.reason,
                "transitions": [] if rule is None else [{"at": _dt(rule.at), "event": "COMMAND_CANCELLED",
                                                         "status": CommandStatus.CANCELLED.value, "attempt": 0,
                                                         "reason": rule.reason}],
            }
        return None

    def unsent(self) -> list[OutgoingMessage]:
        """Messages committed and not yet confirmed by the broker, in the order they were made."""
        return self._outgoing("SELECT * FROM outbox WHERE confirmed_at IS NULL ORDER BY id")

    def recently_sent(self) -> list[OutgoingMessage]:
        """Every message still in the outbox, confirmed in the last REPLAY_WINDOW or not, in
        order: what to send again to a broker that lost its state."""
        return self._outgoing("SELECT * FROM outbox ORDER BY id")

    def _outgoing(self, query: str) -> list[OutgoingMessage]:
        return [OutgoingMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), bool(r[5]))
                for r in self._db.execute(query)]

    def completed_setpoints(self, command_types: Iterable[CommandType]) -> dict[str, Command]:
        """Per asset, the newest completed command of ``command_types`` (newest by
        (created_at, scheduled_at), the order gateways apply setpoints in)."""
        types = [t.value for t in command_types]
        marks = ",".join("?" * len(types))
        rows = self._db.execute(
            f"SELECT * FROM commands WHERE status = 'COMPLETED' AND command_type IN ({marks})"
            " ORDER BY asset_id, created_at, scheduled_at", types).fetchall()
        return {r[2]: _command(r) for r in rows}  # the last row of each asset wins

    # -- queries ---------------------------------------------------------------------------

    def command_record(self, command_id: str) -> dict[str, Any] | None:
        """The command as recorded, with every transition, for ``qubit status cmd_...``."""
        record = self._row_as_dict("SELECT * FROM commands WHERE command_id = ?", command_id)
        if record is None:
            return self._planned_record(command_id)
        for key in ("scheduled_at", "created_at", "dispatched_at", "finished_at", "next_attempt_at"):
            record[key] = _dt_or_none(record[key])
        record["parameters"] = json.loads(record["parameters"])
        record["transitions"] = [
            {"at": _dt(at), "event": event, "status": status, "attempt": attempt, "reason": reason}
            for at, event, status, attempt, reason in self._db.execute(
                "SELECT at, event, status, attempt, reason FROM transitions WHERE command_id = ? ORDER BY id",
                (command_id,))
        ]
        return record

    def schedule_record(self, schedule_id: str) -> dict[str, Any] | None:
        """The schedule's fate and its commands' statuses, for ``qubit status sch_...``."""
        record = self._row_as_dict("SELECT * FROM schedules WHERE schedule_id = ?", schedule_id)
        if record is None:
            return None
        record["recorded_at"] = _dt(record["recorded_at"])
        record["received_at"] = _dt_or_none(record["received_at"])
        statuses: dict[str, int] = dict(self._db.execute(
            "SELECT status, count(*) FROM commands WHERE schedule_id = ? GROUP BY status", (schedule_id,)).fetchall())
        rules = self._rules()
        for slot in self._slots("WHERE schedule_id = ?", (schedule_id,), lambda s: s.schedule_id == schedule_id):
            pending = self._pending_in(slot, None, rules)
            for status, count in (("PENDING", pending), ("CANCELLED", len(slot) - pending)):
                if count:
                    statuses[status] = statuses.get(status, 0) + count
        record["command_statuses"] = statuses
        return record

    def _row_as_dict(self, query: str, key: str) -> dict[str, Any] | None:
        cursor = self._db.execute(query, (key,))
        row = cursor.fetchone()
        return None if row is None else dict(zip([d[0] for d in cursor.description], row, strict=True))

    # -- retention ---------------------------------------------------------------------------

    def prune(self, finished_before: datetime) -> tuple[int, int]:
        """Forget commands finished before ``finished_before``, their transitions, and the
        schedules with no command left that were recorded before it. Returns (commands, schedules)."""
        cutoff = _us(finished_before)
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM transitions WHERE command_id IN"
                       " (SELECT command_id FROM commands WHERE finished_at < ?)", (cutoff,))
            commands = db.execute("DELETE FROM commands WHERE finished_at < ?", (cutoff,)).rowcount
            schedules = db.execute(
                "DELETE FROM schedules WHERE recorded_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM commands c WHERE c.schedule_id = schedules.schedule_id) AND NOT EXISTS"
                " (SELECT 1 FROM planned_slots s WHERE s.schedule_id = schedules.schedule_id)", (cutoff,)).rowcount
            # A plan with every slot materialised is not needed any more, nor the rules that could
            # only cancel commands older than every plan left.
            db.execute("DELETE FROM plans WHERE NOT EXISTS"
                       " (SELECT 1 FROM planned_slots s WHERE s.schedule_id = plans.schedule_id)")
            db.execute("DELETE FROM cancellations WHERE created_before <= coalesce((SELECT min(created_at) FROM plans),"
                       " 9223372036854775807)")
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            _roll_back(db)
            raise LedgerError(f"ledger {self.path}: pruning failed: {exc}") from exc
        self._plans.clear()
        return commands, schedules


def _roll_back(db: sqlite3.Connection) -> None:
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:  # the connection itself is gone: nothing was committed anyway
        pass


# -- rows <-> commands ---------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _us(at: datetime) -> int:
    # Exact, unlike timestamp(): a restored command must carry the very times it was sent with.
    return (at - _EPOCH) // _MICROSECOND


def _us_delta(span: timedelta) -> int:
    return span // _MICROSECOND


def _us_or_none(at: datetime | None) -> int | None:
    return None if at is None else _us(at)


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _dt_or_none(us: int | None) -> datetime | None:
    return None if us is None else _dt(us)


def _parameters(cmd: Command) -> str:
    parameters = cmd.parameters
    if len(parameters) == 1:  # a schedule's setpoint: a quarter of the cost of json.dumps, same text
        power = parameters.get("power_kw")
        if isinstance(power, float) and math.isfinite(power):
            return f'{{"power_kw":{power!r}}}'
    return json.dumps(parameters, separators=(",", ":"), allow_nan=False)


def _row(cmd: Command) -> tuple[Any, ...]:
    return (cmd.command_id, cmd.schedule_id, cmd.asset_id, cmd.command_type.value, _parameters(cmd),
            _us(cmd.scheduled_at), _us(cmd.created_at), cmd.priority, cmd.max_retries, cmd.timeout_seconds,
            cmd.status.value, cmd.attempts, _us_or_none(cmd.dispatched_at), _us_or_none(cmd.finished_at),
            _us_or_none(cmd.next_attempt_at), cmd.error)


def _state_row(cmd: Command) -> tuple[Any, ...]:
    # The parameters too: the planner caps a setpoint at dispatch (coordinator.limits).
    return (cmd.status.value, cmd.attempts, _us_or_none(cmd.dispatched_at), _us_or_none(cmd.finished_at),
            _us_or_none(cmd.next_attempt_at), cmd.error, _parameters(cmd), cmd.command_id)


def _command(row: tuple[Any, ...]) -> Command:
    (command_id, schedule_id, asset_id, command_type, parameters, scheduled_at, created_at, priority, max_retries,
     timeout_seconds, status, attempts, dispatched_at, finished_at, next_attempt_at, error) = row
    return Command(
        asset_id=asset_id, command_type=CommandType(command_type), parameters=json.loads(parameters),
        scheduled_at=_dt(scheduled_at), command_id=command_id, status=CommandStatus(status), attempts=attempts,
        max_retries=max_retries, timeout_seconds=timeout_seconds, priority=priority, schedule_id=schedule_id,
        created_at=_dt(created_at), dispatched_at=_dt_or_none(dispatched_at), finished_at=_dt_or_none(finished_at),
        next_attempt_at=_dt_or_none(next_attempt_at), error=error,
    )
