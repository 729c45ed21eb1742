"""The verdict of a chaos run: counts, from device-side evidence and the persistent subscriber. Pure.

Inputs: the commands the schedule calls for (``plan.expected_commands``, the library's own
``schedule_to_commands`` of the same frame), the device applications (``evidence``), in the
order each device saw them, and the subscriber's event lines (``recorder.event_lines``).
A command is identified by its value: every (asset, slot) value is unique (plan.py), so a
value on a device, or in an event's ``parameters.power_kw``, names exactly one expected
command. The planner's command ids are learnt from the events, never assumed.

Each count, precisely (a command = one expected (asset, slot) value):

commands
    expected commands.
applied
    commands whose value entered force on the device at least once (an application with
    ``changed`` true).
superseded
    commands never applied whose terminal event is COMMAND_CANCELLED (a newer setpoint was
    due while this one was still pending: after an outage that is correct, not a loss).
failed
    commands never applied whose terminal event is COMMAND_FAILED or COMMAND_TIMED_OUT: the
    coordinator said why (a device that stopped answering); not lost, but listed.
lost
    commands never applied and with no terminal event saying why (no CANCELLED, FAILED or
    TIMED_OUT). A command reported COMPLETED that no device applied is lost too.
twice
    commands whose value entered force more than once (two or more ``changed`` applications),
    not counting a re-application of the newest slot after the device rebooted or its own
    doing displaced it (a fallback profile, an expired lease, a watchdog): restoring it is
    right.
repeated_writes
    applications of a command's value with ``changed`` false (told again what was in force):
    reported, not an error (a gateway may re-send after a crash; the device did nothing).
out_of_order
    applications with ``changed`` true whose slot is earlier than the newest slot already in
    force on that asset (an older setpoint after a newer one), re-applications after a reboot
    excepted when they restore the newest slot. A superseded command applied after a newer
    one counts here.
unexpected
    applications with ``changed`` true of a value no expected command has (reported).
no_terminal
    commands that reached no terminal state by any source: neither a terminal event nor a
    final status (COMPLETED, FAILED, TIMED_OUT, CANCELLED) in ``qubit status``.
terminal_events_missing
    commands for which the subscriber saw no terminal event (COMMAND_COMPLETED, _FAILED,
    _TIMED_OUT or _CANCELLED).

lost, twice, out_of_order, no_terminal and terminal_events_missing must be 0.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.chaos.evidence import Application
from tests.chaos.plan import Expected, value_key

TERMINAL_EVENTS = {
    "COMMAND_COMPLETED": "COMPLETED", "COMMAND_FAILED": "FAILED",
    "COMMAND_TIMED_OUT": "TIMED_OUT", "COMMAND_CANCELLED": "CANCELLED",
}
MUST_BE_ZERO = ("lost", "twice", "out_of_order", "no_terminal", "terminal_events_missing")


@dataclass
class Verdict:
    commands: int = 0
    applied: int = 0
    superseded: int = 0
    failed: int = 0
    lost: int = 0
    twice: int = 0
    repeated_writes: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    no_terminal: int = 0
    terminal_events_missing: int = 0
    faults: int = 0
    evidence: str = ""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """A few offending commands per count, to start the investigation from."""

    @property
    def failures(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in MUST_BE_ZERO if getattr(self, name)}

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _example(verdict: Verdict, count: str, what: str, limit: int = 5) -> None:
    listed = verdict.examples.setdefault(count, [])
    if len(listed) < limit:
        listed.append(what)


def terminal_by_key(events: Iterable[dict[str, Any]]) -> dict[tuple[str, float], str]:
    """(asset, value) -> the last terminal status an event announced for that command."""
    out: dict[tuple[str, float], str] = {}
    for e in events:
        status = TERMINAL_EVENTS.get(e.get("event_type", ""))
        if status is not None and e.get("power_kw") is not None:
            out[(e["asset_id"], value_key(float(e["power_kw"])))] = status
    return out


def judge(expected: list[Expected], applications: list[Application], events: list[dict[str, Any]],
          final_statuses: dict[tuple[str, float], str] | None = None, *, faults: int = 0,
          evidence: str = "device log") -> Verdict:
    """Count what happened; ``final_statuses`` (from ``qubit status``, when it answered) fill in
    terminal states the events did not show."""
    v = Verdict(commands=len(expected), faults=faults, evidence=evidence)
    by_key = {e.key: e for e in expected}
    terminal = terminal_by_key(events)
    changed_count: Counter[tuple[str, float]] = Counter()
    newest_slot: dict[str, int] = {}
    displaced: set[str] = set()  # assets whose command value was pushed out by no command
    for app in applications:
        if app.after_boot:
            displaced.add(app.asset_id)
        exp = by_key.get(app.key)
        if exp is None:
            if app.changed:  # a fallback, an expired lease, a watchdog: the device's own doing
                displaced.add(app.asset_id)
                v.unexpected += 1
                _example(v, "unexpected", f"{app.asset_id} {app.power_kw}")
            continue
        if not app.changed:
            v.repeated_writes += 1
            continue
        newest = newest_slot.get(app.asset_id, -1)
        restoring = app.asset_id in displaced and exp.slot == newest
        displaced.discard(app.asset_id)
        if not restoring:
            changed_count[app.key] += 1
        if exp.slot < newest:
            v.out_of_order += 1
            _example(v, "out_of_order", f"{app.asset_id} slot {exp.slot} after slot {newest}")
        newest_slot[app.asset_id] = max(newest, exp.slot)

    statuses = final_statuses or {}
    for exp in expected:
        status = terminal.get(exp.key)
        applied = changed_count[exp.key] > 0
        if applied:
            v.applied += 1
        elif status == "CANCELLED":
            v.superseded += 1
        elif status in ("FAILED", "TIMED_OUT"):
            v.failed += 1
        else:
            v.lost += 1
            _example(v, "lost", f"{exp.asset_id} slot {exp.slot} ({exp.power_kw} kW): terminal event {status}")
        if changed_count[exp.key] > 1:
            v.twice += 1
            _example(v, "twice", f"{exp.asset_id} slot {exp.slot} applied {changed_count[exp.key]} times")
        if status is None:
            v.terminal_events_missing += 1
            _example(v, "terminal_events_missing", f"{exp.asset_id} slot {exp.slot}")
            if statuses.get(exp.key) not in TERMINAL_EVENTS.values():
                v.no_terminal += 1
    return v


def statuses_by_key(events: list[dict[str, Any]], by_command: dict[str, str]) -> dict[tuple[str, float], str]:
    """Per-command statuses (command_id -> status, e.g. from ``qubit status cmd_...``), keyed by value."""
    key_of: dict[str, tuple[str, float]] = {}
    for e in events:
        if e.get("command_id") and e.get("power_kw") is not None:
            key_of[e["command_id"]] = (e["asset_id"], value_key(float(e["power_kw"])))
    out: dict[tuple[str, float], str] = defaultdict(str)
    for command_id, status in by_command.items():
        if command_id in key_of:
            out[key_of[command_id]] = status
    return dict(out)
