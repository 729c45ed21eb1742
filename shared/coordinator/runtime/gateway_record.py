"""A gateway's durable record: every delivery it took and what it last applied per asset.

One SQLite file per gateway (``{data_dir}/gateway-{gateway_id}.sqlite``, WAL mode), written
only from the gateway's event loop. Two tables:

- ``deliveries``: one row per delivery (command id and attempt) with the command as it
  arrived, its progress (accepted -> applying -> finished), whether the device applied it,
  and every result sent for it, so that a repeat is answered from here across restarts;
- ``in_force``: per asset and channel (setpoint_order.CHANNEL), the setpoint last applied:
  what a newer delivery is ordered against, and what a charger that reboots is given again.

Every method commits before it returns: a caller that touches a device after ``applying``
or publishes after ``accept`` does so with the record already on disk. ``synchronous=NORMAL``
in WAL mode survives a crash of the process (kill -9) at any point; a power loss may lose
the last transactions (the operating system's cache), which FULL would not, at one fsync per
commit.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgpack

from coordinator.base import Command, CommandType
from coordinator.contract.codec import decode_command, encode_command
from coordinator.contract.messages import CommandResult
from coordinator.runtime.settings import settings
from coordinator.setpoint_order import Applied, channel_of

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    command_id  TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    asset_id    TEXT    NOT NULL,
    state       TEXT    NOT NULL,            -- accepted | applying | finished
    applied     INTEGER NOT NULL DEFAULT 0,  -- 1 once the device confirmed it
    command     BLOB    NOT NULL,            -- codec.encode_command, to resume it after a restart
    results     BLOB    NOT NULL,            -- msgpack list of the CommandResults sent for it
    accepted_at REAL    NOT NULL,
    finished_at REAL,
    PRIMARY KEY (command_id, attempt)
);
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (state) WHERE state != 'finished';
CREATE INDEX IF NOT EXISTS deliveries_finished_at ON deliveries (finished_at);
CREATE TABLE IF NOT EXISTS in_force (
    asset_id     TEXT    NOT NULL,
    channel      TEXT    NOT NULL,
    command_id   TEXT    NOT NULL,
    attempt      INTEGER NOT NULL,
    command_type TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,           -- ISO 8601 with offset
    scheduled_at TEXT    NOT NULL,
    parameters   BLOB    NOT NULL,           -- msgpack map
    restore      INTEGER NOT NULL DEFAULT 1, -- 0 after an emergency stop: not given again on reboot
    PRIMARY KEY (asset_id, channel)
);
"""


class Progress(StrEnum):
    ACCEPTED = "accepted"
    """Recorded inside the MQTT handler, before the broker's ack; not started yet."""
    APPLYING = "applying"
    """The device is being (or was, when a crash left it so) told."""
    FINISHED = "finished"
    """A final result was sent, or the command was left to the planner's timeout."""


@dataclass(frozen=True, slots=True)
class Delivery:
    command_id: str
    attempt: int
    asset_id: str
    progress: Progress
    applied: bool
    results: list[CommandResult] = field(default_factory=list)


def record_path(gateway_id: str) -> Path:
    """Where the gateway ``gateway_id`` keeps its record (from QUBIT_DATA_DIR)."""
    return settings().data_dir / f"gateway-{gateway_id}.sqlite"


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, datetime=True, use_bin_type=True)
    return data


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, timestamp=3)


def _results(data: bytes) -> list[CommandResult]:
    return [CommandResult.model_validate(r) for r in _unpack(data)]


class GatewayRecord:
    """The record of one gateway; every write is one committed transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # autocommit off by hand (isolation_level None): each write below is an explicit transaction
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._in_force: dict[tuple[str, str], Applied] = {
            (a.asset_id, a.channel): a for a in self._read_in_force()
        }  # read on every delivery: kept in memory too, written through

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reading ---------------------------------------------------------------------

    def delivery(self, command_id: str, attempt: int) -> Delivery | None:
        row = self._db.execute(
            "SELECT command_id, attempt, asset_id, state, applied, results FROM deliveries "
            "WHERE command_id = ? AND attempt = ?", (command_id, attempt)).fetchone()
        return None if row is None else self._delivery(row)

    @staticmethod
    def _delivery(row: tuple[Any, ...]) -> Delivery:
        return Delivery(row[0], row[1], row[2], Progress(row[3]), bool(row[4]), _results(row[5]))

    def applied_attempt(self, command_id: str) -> int | None:
        """The attempt of ``command_id`` the device applied, if one did."""
        row = self._db.execute("SELECT min(attempt) FROM deliveries WHERE command_id = ? AND applied = 1",
                               (command_id,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def in_force(self, asset_id: str, command_type: CommandType) -> Applied | None:
        """The setpoint last applied on the channel of ``command_type`` (None: none, or no channel)."""
        channel = channel_of(command_type)
        return None if channel is None else self._in_force.get((asset_id, channel))

    def restorable(self, asset_id: str) -> list[Applied]:
        """What ``asset_id`` is given again when it reboots: its channels' last setpoints,
        except those an emergency stop overrode since."""
        rows = self._db.execute("SELECT asset_id, channel FROM in_force WHERE asset_id = ? AND restore = 1",
                                (asset_id,)).fetchall()
        return [self._in_force[(a, c)] for a, c in rows]

    def _read_in_force(self) -> list[Applied]:
        rows = self._db.execute("SELECT asset_id, channel, command_id, attempt, command_type, created_at, "
                                "scheduled_at, parameters FROM in_force").fetchall()
        return [Applied(r[0], r[1], r[2], r[3], CommandType(r[4]), datetime.fromisoformat(r[5]),
                        datetime.fromisoformat(r[6]), _unpack(r[7])) for r in rows]

    def unfinished(self) -> list[tuple[Delivery, Command]]:
        """Deliveries a crash or shutdown left accepted or applying, in the order they arrived."""
        rows = self._db.execute(
            "SELECT command_id, attempt, asset_id, state, applied, results, command FROM deliveries "
            "WHERE state != 'finished' ORDER BY rowid").fetchall()
        return [(self._delivery(r[:6]), decode_command(r[6])) for r in rows]

    # -- writing ---------------------------------------------------------------------

    def accept(self, commands: Iterable[Command], answered: Iterable[tuple[Command, list[CommandResult]]] = ()) -> None:
        """Record new deliveries: ``commands`` to do, ``answered`` finished at once with these results."""
        now = time.time()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO deliveries (command_id, attempt, asset_id, state, command, results, accepted_at) "
                "VALUES (?, ?, ?, 'accepted', ?, ?, ?)",
                [(c.command_id, c.attempts, c.asset_id, encode_command(c), _pack([]), now) for c in commands])
            db.executemany(
                "INSERT INTO deliveries (command_id, attempt, asset_id, state, command, results, accepted_at, "
                "finished_at) VALUES (?, ?, ?, 'finished', ?, ?, ?, ?)",
                [(c.command_id, c.attempts, c.asset_id, encode_command(c),
                  _pack([r.model_dump() for r in results]), now, now) for c, results in answered])

    def applying(self, cmd: Command) -> None:
        """Call right before the device is touched. From now on the device may hold ``cmd``:
        its channel's older setpoint is not given again on a reboot (it would land after a
        newer one) until ``cmd`` or a later setpoint is confirmed applied."""
        self.applying_all([cmd])

    def applying_all(self, cmds: Iterable[Command]) -> None:
        """``applying`` for many commands (of different assets) in one transaction: many
        devices touched at once (a slot boundary) cost one commit, not one each."""
        cmds = list(cmds)
        with self._transaction() as db:
            db.executemany("UPDATE deliveries SET state = 'applying' WHERE command_id = ? AND attempt = ?",
                           [(c.command_id, c.attempts) for c in cmds])
            db.executemany("UPDATE in_force SET restore = 0 WHERE asset_id = ? AND channel = ?",
                           [(c.asset_id, channel) for c in cmds if (channel := channel_of(c.command_type)) is not None])

    def applied(self, cmd: Command) -> None:
        """The device confirmed ``cmd``: it is in force on its channel (a newer one applied
        before it would have been checked by the caller: setpoint_order.ordering)."""
        self.applied_all([cmd])

    def applied_all(self, cmds: Iterable[Command]) -> None:
        """``applied`` for many commands in one transaction, in order (a later one of an
        asset's channel is the one in force)."""
        cmds = list(cmds)
        channels = [(c, channel_of(c.command_type)) for c in cmds]
        with self._transaction() as db:
            db.executemany("UPDATE deliveries SET applied = 1 WHERE command_id = ? AND attempt = ?",
                           [(c.command_id, c.attempts) for c in cmds])
            db.executemany(
                "INSERT OR REPLACE INTO in_force (asset_id, channel, command_id, attempt, command_type, "
                "created_at, scheduled_at, parameters, restore) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                [(c.asset_id, channel, c.command_id, c.attempts, c.command_type.value, c.created_at.isoformat(),
                  c.scheduled_at.isoformat(), _pack(dict(c.parameters))) for c, channel in channels
                 if channel is not None])
        for c, channel in channels:
            if channel is not None:
                self._in_force[(c.asset_id, channel)] = Applied.of(c, channel)

    def results(self, sent: Iterable[tuple[str, int, list[CommandResult], bool]]) -> None:
        """Add results to their deliveries: (command_id, attempt, results, final) each;
        a final one finishes its delivery."""
        now = time.time()
        with self._transaction() as db:
            for command_id, attempt, results, final in sent:
                row = db.execute("SELECT results FROM deliveries WHERE command_id = ? AND attempt = ?",
                                 (command_id, attempt)).fetchone()
                if row is None:
                    log.error("results for %s attempt %d, a delivery not in the record", command_id, attempt)
                    continue
                kept = _unpack(row[0]) + [r.model_dump() for r in results]
                db.execute("UPDATE deliveries SET results = ?, state = CASE WHEN ? THEN 'finished' ELSE state END, "
                           "finished_at = CASE WHEN ? THEN ? ELSE finished_at END "
                           "WHERE command_id = ? AND attempt = ?",
                           (_pack(kept), final, final, now, command_id, attempt))

    def stop_restoring(self, asset_ids: Iterable[str]) -> None:
        """An emergency stop overrode what is in force on these assets: a reboot gives them
        nothing again until a new setpoint is applied (the planner restores after the reset)."""
        with self._transaction() as db:
            db.executemany("UPDATE in_force SET restore = 0 WHERE asset_id = ?", [(a,) for a in asset_ids])

    def prune(self, older_than_days: float) -> int:
        """Forget finished deliveries older than ``older_than_days``; how many."""
        cutoff = time.time() - older_than_days * 86400
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM deliveries WHERE state = 'finished' AND finished_at < ?", (cutoff,))
        return cursor.rowcount
