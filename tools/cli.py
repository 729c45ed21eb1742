"""`qubit`: the operator's command line.

    qubit publish schedule.csv --asset-map ev_001=ast_bay_1,battery=ast_batt_001 --follow
    qubit events [--json] [--type COMMAND_FAILED] [--asset ast_bay_1]
    qubit states [--json]
    qubit status cmd_0123456789ab | sch_0123456789ab
    qubit services [--json]                       every process's lifecycle, operational state and health
    qubit estop --reason "fire alarm"             site emergency stop: every asset to its safe state
    qubit estop --reset --reason "all clear"      the explicit reset: dispatching resumes
    qubit command start|stop|reset ASSET          operator commands (docs/dispatch.md); each waits for
    qubit command availability ASSET operative|inoperative     its command's end: exit 0 completed,
    qubit command limit ASSET KW [--duration S]   1 rejected or failed, 5 no end in --timeout
    qubit command soc ASSET PERCENT

A user's mistake is one line on stderr and a documented exit status (tools/cli_errors.py,
docs/cli.md): 0 ok, 1 refused or failed, 2 usage or config, 3 broker unreachable,
4 credentials refused, 5 timed out.

The broker comes from QUBIT_MQTT_HOST / QUBIT_MQTT_PORT, the site from QUBIT_SITE_CONFIG.
`qubit` logs in as QUBIT_MQTT_USERNAME with QUBIT_MQTT_PASSWORD_FILE (TLS with
QUBIT_MQTT_CA_FILE): what it may do is that identity's role (docs/security.md): `layer3`
publishes schedules and follows them, `scada` reads events, states and services, `operator`
also sets the emergency stop and asks `qubit status`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import queue
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pydantic

from coordinator.contract.codec import DecodeError, decode_event, encode_schedule
from coordinator.contract.events import (
    CommandPayload,
    OperatorCommandAccepted,
    OperatorCommandRejected,
    SchedulePlanned,
    ScheduleReceived,
    ScheduleRejected,
)
from coordinator.contract.messages import (
    AssetStateMessage,
    EmergencyStop,
    OperatorCommand,
    Query,
    QueryKind,
    QueryReply,
    ServiceStatus,
    WireModel,
    decode,
)
from coordinator.contract.topics import (
    ASSET_STATES_ALL,
    EMERGENCY_STOP,
    EVENTS_ALL,
    OPERATOR_COMMANDS,
    QUERY_REQUESTS,
    ROOT,
    SCHEDULES_IN,
    SERVICES_ALL,
    query_reply_topic,
)
from coordinator.events import EventType
from coordinator.ids import new_id, schedule_content_id
from coordinator.runtime.mqtt import BrokerSettings, MqttClient
from coordinator.runtime.service import load_site
from tools.cli_errors import CliError, ExitCode
from tools.event_lines import describe, to_json
from tools.schedule_file import parse_asset_map, read_schedule

FINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}
SETTINGS = ("QUBIT_MQTT_HOST, QUBIT_MQTT_PORT, QUBIT_MQTT_USERNAME, QUBIT_MQTT_PASSWORD_FILE, QUBIT_MQTT_CA_FILE, "
            "QUBIT_SITE_CONFIG (docs/settings.md)")
ALREADY_PLANNED = "already_planned"
"""The planner's SCHEDULE_REJECTED reason for a resend: the schedule is in force already."""
M = TypeVar("M", bound=WireModel)


class Session:
    """A short-lived, non-persistent MQTT session that collects messages into a queue."""

    def __init__(self) -> None:
        self.client_id = new_id("cli_")
        self.client = MqttClient("cli", BrokerSettings.from_env(), client_id=self.client_id, persistent=False)
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()

    def listen(self, topic_filter: str) -> None:
        """Collect what arrives on ``topic_filter``; once connected, returns when the broker
        confirmed the subscription (what is published before that would be missed)."""
        self.client.subscribe(topic_filter, lambda topic, data: self.inbox.put((topic, data)))
        if self.client.connected.is_set():
            self._until_subscribed()

    def __enter__(self) -> Session:
        self.client.start(timeout=5)
        if self.client.refused.is_set():
            s = self.client.settings
            raise CliError(f"the MQTT broker at {s.host}:{s.port} refused our credentials as user "
                           f"{s.username or '(none)'} (QUBIT_MQTT_USERNAME, QUBIT_MQTT_PASSWORD_FILE)",
                           ExitCode.CREDENTIALS)
        if not self.client.connected.is_set():
            s = self.client.settings
            raise CliError(f"cannot reach the MQTT broker at {s.host}:{s.port} (QUBIT_MQTT_HOST/PORT)",
                           ExitCode.UNREACHABLE)
        self._until_subscribed()
        return self

    def _until_subscribed(self) -> None:
        if not self.client.wait_subscribed(timeout=5):
            raise CliError("the MQTT broker did not confirm the subscriptions within 5 s", ExitCode.TIMED_OUT)

    def __exit__(self, *exc: object) -> None:
        self.client.stop()

    def messages(self, timeout: float | None):
        """Yield (topic, payload) until ``timeout`` seconds pass without the caller stopping."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            try:
                yield self.inbox.get(timeout=wait)
            except queue.Empty:
                continue


# -- publish -------------------------------------------------------------------------


def cmd_publish(args: argparse.Namespace) -> int:
    df = read_schedule(Path(args.file))
    asset_map = parse_asset_map(args.asset_map)
    site_id = args.site_id or load_site(args.site_config).site_id
    try:
        data = encode_schedule(df, asset_map=asset_map, site_id=site_id, schedule_id=args.schedule_id)
    except (TypeError, ValueError) as exc:  # read_schedule checks what it can; the codec has the last word
        raise CliError(f"{args.file}: {exc}") from None
    schedule_id = args.schedule_id or schedule_content_id(data)
    waiting = args.follow or not args.no_wait
    with Session() as session:
        if waiting:
            session.listen(f"{ROOT}/events/#")
        info = session.client.publish(SCHEDULES_IN, data, qos=1)
        info.wait_for_publish(timeout=10)
        if not info.is_published():
            raise CliError("the broker did not confirm the schedule within 10 s; it may not have been received",
                           ExitCode.TIMED_OUT)
        print(f"published {schedule_id}: {len(df.columns)} columns x {len(df.index)} slots ({len(data)} bytes)",
              flush=True)
        if not waiting:
            return ExitCode.OK
        statuses: dict[str, str] = {}  # command events that overtake the verdict are kept for the follow
        code, planned = await_verdict(session, schedule_id, args.wait, statuses)
        if planned is None or not args.follow:
            return code
        return follow(session, schedule_id, args.timeout, planned, statuses)


def verdict(payload: object, schedule_id: str) -> tuple[str, ExitCode | None] | None:
    """What one event says of the schedule: (line to show, exit code, None = go on), or None
    when it says nothing of it. The planner's word is the verdict: SCHEDULE_PLANNED, or
    SCHEDULE_REJECTED (by the ingester or the planner); SCHEDULE_RECEIVED is on the way."""
    if not isinstance(payload, (ScheduleReceived, SchedulePlanned, ScheduleRejected)):
        return None
    if payload.schedule_id != schedule_id:
        return None
    if isinstance(payload, ScheduleReceived):
        return (f"received by the ingester as version {payload.version}: {payload.command_count} commands"
                f" for {payload.asset_count} assets", None)
    if isinstance(payload, SchedulePlanned):
        return f"planned: {payload.command_count} commands, {payload.superseded} superseded", ExitCode.OK
    if payload.reason == ALREADY_PLANNED:
        return f"already planned, nothing changed: {payload.message}", ExitCode.OK
    return f"rejected: {payload.reason}: {payload.message}", ExitCode.FAILED


def await_verdict(session: Session, schedule_id: str, wait: float,
                  statuses: dict[str, str]) -> tuple[ExitCode, int | None]:
    """Show the verdict on the schedule: its exit code, and the planned command count when it
    was planned now (a follow goes on from there)."""
    received = False
    for _topic, data in session.messages(wait):
        try:
            payload = decode_event(data).payload
        except DecodeError:
            continue
        if isinstance(payload, CommandPayload) and payload.schedule_id == schedule_id:
            statuses[payload.command_id] = payload.status.value
        said = verdict(payload, schedule_id)
        if said is None:
            continue
        line, code = said
        print(line, flush=True)
        if code is None:
            received = True
        else:
            return code, payload.command_count if isinstance(payload, SchedulePlanned) else None
    who = "the planner" if received else "the ingester"
    raise CliError(f"no verdict on {schedule_id} from {who} within {wait:g} s (is it running? --wait to wait longer)",
                   ExitCode.TIMED_OUT)


def progress(statuses: dict[str, str], expected: int) -> str:
    """``2/3 commands ended (1 acknowledged, 2 completed)``: the schedule's progress."""
    done = sum(s in FINAL for s in statuses.values())
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(_count(statuses).items()))
    return f"{done}/{expected} commands ended ({counts or 'none yet'})"


def follow(session: Session, schedule_id: str, timeout: float, expected: int, statuses: dict[str, str]) -> int:
    """One line per change of the schedule's progress, until every command of it has ended
    (plain lines, no redraw: the same in a terminal and in a log)."""
    shown = ""

    def show() -> ExitCode | None:
        nonlocal shown
        line = f"{schedule_id}: {progress(statuses, expected)}"
        if line != shown:
            print(line, flush=True)
            shown = line
        if sum(s in FINAL for s in statuses.values()) < expected:
            return None
        return ExitCode.OK if all(s in ("COMPLETED", "CANCELLED") for s in statuses.values()) else ExitCode.FAILED

    ended = show()
    for _topic, data in ([] if ended is not None else session.messages(timeout)):
        try:
            p = decode_event(data).payload
        except DecodeError:
            continue
        if isinstance(p, CommandPayload) and p.schedule_id == schedule_id:
            statuses[p.command_id] = p.status.value
            ended = show()
            if ended is not None:
                break
    if ended is not None:
        return ended
    raise CliError(f"gave up following {schedule_id} after {timeout:g} s (qubit status {schedule_id} shows it)",
                   ExitCode.TIMED_OUT)


def _count(statuses: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    return counts


# -- events, states, status ----------------------------------------------------------


def event_type_filter(value: str | None) -> str | None:
    """``--type``, checked against the contract's event types (any case)."""
    if value is None:
        return None
    known = [t.value for t in EventType]
    if value.upper() not in known:
        raise CliError(f"--type {value!r}: not an event type; one of {', '.join(known)}")
    return value.upper()


def asset_filter(value: str | None) -> str | None:
    """``--asset``: an asset id, one topic level, no MQTT wildcards."""
    if value is not None and (not value or any(c in value for c in "#+/\0") or value != value.strip()):
        raise CliError(f"--asset {value!r}: not an asset id (one word such as ast_bay_1, no / + #)")
    return value


def cmd_events(args: argparse.Namespace) -> int:
    kind, asset = event_type_filter(args.type), asset_filter(args.asset)
    narrowed = kind or asset
    topic_filter = f"{ROOT}/events/{kind or '+'}/{asset or '+'}" if narrowed else EVENTS_ALL
    shown = 0
    with Session() as session:
        session.listen(topic_filter)
        try:
            print(f"qubit: listening on {topic_filter}", file=sys.stderr, flush=True)
            for topic, data in session.messages(args.timeout):
                try:
                    event = decode_event(data)
                except DecodeError as exc:
                    print(f"unreadable event on {topic}: {exc.reason}", file=sys.stderr)
                    continue
                print(to_json(event) if args.json else describe(event), flush=True)
                shown += 1
                if args.count and shown >= args.count:
                    break
        except KeyboardInterrupt:
            pass
    return 0


def collect_retained(topic_filter: str, model: type[M], key: Callable[[M], str], wait: float) -> dict[str, M]:
    """The retained messages under ``topic_filter`` (the newest per ``key``), gathered for ``wait`` s."""
    found: dict[str, M] = {}
    with Session() as session:
        session.listen(topic_filter)
        for topic, data in session.messages(wait):
            try:
                message = decode(model, data)
            except DecodeError as exc:
                print(f"unreadable {model.__name__} on {topic}: {exc.reason}", file=sys.stderr)
                continue
            found[key(message)] = message
    return found


def print_retained(found: dict[str, M], as_json: bool, nothing: str, row: Callable[[str, M], str]) -> None:
    """One JSON object keyed like ``found``, or one line per message (``nothing`` when none)."""
    if as_json:
        print(json.dumps({k: m.model_dump(mode="json") for k, m in sorted(found.items())}, indent=2))
    elif not found:
        print(nothing)
    for key, message in ([] if as_json else sorted(found.items())):
        print(row(key, message))


def cmd_states(args: argparse.Namespace) -> int:
    states = collect_retained(ASSET_STATES_ALL, AssetStateMessage, lambda m: m.asset_id, args.wait)
    print_retained(states, args.json, "no asset states published yet (is the tracker running?)",
                   lambda a, m: f"{a:<20} {m.kind:<11} {m.state:<12} since {m.since:%Y-%m-%d %H:%M:%S}Z")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if not args.id.startswith(("cmd_", "sch_")):
        raise CliError(f"{args.id!r}: not a command (cmd_...) or schedule (sch_...) id")
    kind = QueryKind.COMMAND if args.id.startswith("cmd_") else QueryKind.SCHEDULE
    with Session() as session:
        reply_to = query_reply_topic(session.client_id)
        session.listen(reply_to)
        query = Query(query_id=new_id("qry_"), reply_to=reply_to, kind=kind, id=args.id)
        session.client.publish(QUERY_REQUESTS, query.encode(), qos=1)
        for _topic, data in session.messages(args.timeout):
            try:
                reply = decode(QueryReply, data)
            except DecodeError:
                continue
            if reply.query_id != query.query_id:
                continue
            if not reply.ok:
                print(f"qubit: {reply.error}", file=sys.stderr)
                return ExitCode.FAILED
            if args.json:
                print(json.dumps(reply.result, indent=2, default=str, sort_keys=True))
            else:
                print(describe_record(kind, args.id, reply.result or {}))
            return 0
    raise CliError(f"no answer from the planner within {args.timeout:g} s (is it running?)", ExitCode.TIMED_OUT)


def schedule_progress(record: dict[str, object]) -> str:
    """A schedule's state in one word, from the planner's record: REJECTED, PLANNED (nothing
    started), IN_PROGRESS, COMPLETED (every command completed or cancelled) or FAILED (every
    command ended, some failed or timed out)."""
    if record.get("status") == "rejected":
        return "REJECTED"
    counts = record.get("command_statuses")
    statuses: dict[str, int] = counts if isinstance(counts, dict) else {}
    if not statuses or set(statuses) <= {"PENDING"}:
        return "PLANNED"
    if not set(statuses) <= FINAL:
        return "IN_PROGRESS"
    return "COMPLETED" if set(statuses) <= {"COMPLETED", "CANCELLED"} else "FAILED"


def describe_record(kind: QueryKind, wanted: str, record: dict[str, object]) -> str:
    """`qubit status` for a human: the overall word first, then the details."""
    if kind is QueryKind.SCHEDULE:
        counts = record.get("command_statuses")
        per = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) if isinstance(counts, dict) else ""
        why = f" ({record.get('reason')}: {record.get('message')})" if record.get("status") == "rejected" else ""
        return (f"{wanted}: {schedule_progress(record)}{why}  version {record.get('version')}, "
                f"{record.get('command_count', 0)} commands ({per or 'none'})")
    lines = [f"{wanted}: {record.get('status')}  {record.get('command_type')} {record.get('asset_id')}"
             f" {record.get('parameters')}  schedule {record.get('schedule_id')}, attempts {record.get('attempts')}"]
    transitions = record.get("transitions")
    for t in transitions if isinstance(transitions, list) else []:
        reason = f"  {t.get('reason')}" if t.get("reason") else ""
        lines.append(f"  {t.get('at')}  {t.get('event'):<24} {t.get('status')}{reason}")
    return "\n".join(lines)


def cmd_services(args: argparse.Namespace) -> int:
    statuses = collect_retained(SERVICES_ALL, ServiceStatus, lambda s: s.service, args.wait)
    print_retained(statuses, args.json, "no service has published its status yet",
                   lambda n, s: f"{n:<24} {s.status:<8} {s.lifecycle:<13} {s.operational:<18} {s.health:<9}"
                                + (f"  ({'; '.join(s.reasons)})" if s.reasons else ""))
    return 0


def cmd_estop(args: argparse.Namespace) -> int:
    order = EmergencyStop(active=not args.reset, reason=args.reason, issued_by=args.by, at=datetime.now(UTC))
    with Session() as session:
        # Retained: a process that starts (or reconnects) during the stop starts stopped.
        info = session.client.publish(EMERGENCY_STOP, order.encode(), qos=1, retain=True)
        info.wait_for_publish(5)
        if not info.is_published():
            print("qubit: the broker did not confirm the order; it may not have been received", file=sys.stderr)
            return 1
    print(f"emergency stop {'RESET' if args.reset else 'ACTIVATED'} by {args.by}: {args.reason}")
    return 0


# -- operator commands ---------------------------------------------------------------

COMMAND_ACTIONS = {"start": "start_session", "stop": "stop_session", "availability": "set_availability",
                   "reset": "reset", "limit": "power_limit", "soc": "soc_target"}
"""`qubit command WHAT` -> OperatorCommand.action."""


def cmd_command(args: argparse.Namespace) -> int:
    """Send one operator command and wait for its end, with the exit codes of every `qubit`
    command (tools/cli_errors.py): 0 completed, 1 rejected by the planner or the command failed
    (timed out, cancelled), 5 no end within --timeout."""
    fields: dict[str, object] = {}
    if args.what == "availability":
        fields["availability"] = args.value
    elif args.what == "limit":
        fields.update(kw=args.value, duration_s=args.duration)
    elif args.what == "soc":
        fields["percent"] = args.value
    try:
        order = OperatorCommand.model_validate({
            "request_id": new_id("req_"), "asset_id": args.asset, "action": COMMAND_ACTIONS[args.what],
            "issued_by": args.by, "issued_at": datetime.now(UTC), **fields})
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"command {args.what}: {'.'.join(map(str, first['loc']))}: {first['msg']}",
                       ExitCode.USAGE) from None
    with Session() as session:
        session.listen(f"{ROOT}/events/+/{args.asset}")
        info = session.client.publish(OPERATOR_COMMANDS, order.encode(), qos=1)
        info.wait_for_publish(timeout=5)
        if not info.is_published():
            raise CliError("the broker did not confirm the command; it may not have been received",
                           ExitCode.TIMED_OUT)
        return follow_command(session, order, args.timeout)


def follow_command(session: Session, order: OperatorCommand, timeout: float) -> int:
    """One line per step of ``order``'s command, until it ends (exit codes: ``cmd_command``)."""
    command_id: str | None = None
    for _topic, data in session.messages(timeout):
        try:
            p = decode_event(data).payload
        except DecodeError:
            continue
        if isinstance(p, OperatorCommandRejected) and p.request_id == order.request_id:
            print(f"qubit: rejected: {p.reason}: {p.message}", file=sys.stderr)
            return ExitCode.FAILED
        if isinstance(p, OperatorCommandAccepted) and p.request_id == order.request_id:
            command_id = p.command_id
            print(f"{p.action} {p.asset_id}: accepted as {p.command_id}", flush=True)
        elif isinstance(p, CommandPayload) and command_id is not None and p.command_id == command_id:
            print(f"{p.command_id} {p.status.value}" + (f": {p.error}" if p.error else ""), flush=True)
            if p.status.value in FINAL:
                return ExitCode.OK if p.status.value == "COMPLETED" else ExitCode.FAILED
    if command_id is None:
        print(f"qubit: no answer from the planner within {timeout:g} s (is it running?)", file=sys.stderr)
    else:
        print(f"qubit: {command_id} did not end within {timeout:g} s (see `qubit status {command_id}`)",
              file=sys.stderr)
    return ExitCode.TIMED_OUT


def add_command_parser(sub: argparse._SubParsersAction) -> None:
    """`qubit command start|stop|availability|reset|limit|soc ASSET ...`"""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("asset", help="the asset's id, e.g. ast_bay_1")
    common.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the command's end")
    common.add_argument("--by", default=f"{getpass.getuser()}@{socket.gethostname()}", help="who gives the order")
    p = sub.add_parser("command", help="an operator command for one asset; waits for its end",
                       description=cmd_command.__doc__)
    p.set_defaults(run=cmd_command)
    what = p.add_subparsers(dest="what", required=True)
    for name, text in (("start", "start the charging session"), ("stop", "stop the charging session"),
                       ("reset", "reset the asset (clears a fault)")):
        what.add_parser(name, help=text, parents=[common])
    what.add_parser("availability", help="take a charger out of service or back", parents=[common]).add_argument(
        "value", choices=("operative", "inoperative"))
    a = what.add_parser("limit", help="cap the asset's power for a while", parents=[common])
    a.add_argument("value", type=float, metavar="KW")
    a.add_argument("--duration", type=float, default=3600.0, metavar="SECONDS", help="default: 3600")
    what.add_parser("soc", help="a battery's SOC target", parents=[common]).add_argument(
        "value", type=float, metavar="PERCENT")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qubit", description="Operate a qubit-energy-coordinator site.",
        epilog=f"Reads {SETTINGS}. Exit status: 0 ok, 1 refused or failed, 2 usage or config error, "
               "3 broker unreachable, 4 credentials refused, 5 timed out (docs/cli.md).")
    parser.add_argument("--site-config", help="site config file (default: $QUBIT_SITE_CONFIG or deploy/site.toml)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("publish", help="publish a Layer 3 schedule (CSV or Parquet)")
    p.add_argument("file")
    p.add_argument("--asset-map", required=True, help="JSON file or key=asset_id,key=asset_id")
    p.add_argument("--site-id", help="default: the site config's")
    p.add_argument("--schedule-id")
    p.add_argument("--follow", action="store_true", help="after the verdict, one line per change until every "
                   "command has ended (exit 1 if one failed)")
    p.add_argument("--wait", type=_seconds, default=10.0, help="seconds to wait for the verdict (default 10; "
                   "exit 1 on a rejection, 5 without a verdict)")
    p.add_argument("--no-wait", action="store_true", help="exit once the broker has the schedule, without a verdict")
    p.add_argument("--timeout", type=_seconds, default=3600.0, help="--follow gives up after this (exit 5)")
    p.set_defaults(run=cmd_publish)

    p = sub.add_parser("events", help="print events as they happen")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--type", help="only this event type, e.g. COMMAND_FAILED")
    p.add_argument("--asset", help="only this asset")
    p.add_argument("--count", type=_count_arg, default=0, help="stop after this many events")
    p.add_argument("--timeout", type=_seconds, default=None, help="stop after this many seconds")
    p.set_defaults(run=cmd_events)

    p = sub.add_parser("states", help="every asset's current state")
    p.add_argument("--json", action="store_true")
    p.add_argument("--wait", type=_seconds, default=1.0, help="seconds to collect retained states")
    p.set_defaults(run=cmd_states)

    p = sub.add_parser("status", help="status of a command (cmd_...) or schedule (sch_...)")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="the planner's whole record as JSON")
    p.add_argument("--timeout", type=_seconds, default=5.0, help="seconds to wait for the planner's answer (exit 5)")
    p.set_defaults(run=cmd_status)

    p = sub.add_parser("services", help="every process's lifecycle, operational state and health")
    p.add_argument("--json", action="store_true")
    p.add_argument("--wait", type=_seconds, default=1.0, help="seconds to collect retained statuses")
    p.set_defaults(run=cmd_services)

    p = sub.add_parser("estop", help="site emergency stop (or, with --reset, its reset)")
    p.add_argument("--reason", required=True, help="recorded with the order and in every event")
    p.add_argument("--reset", action="store_true", help="end the stop: dispatching resumes")
    p.add_argument("--by", default=f"{getpass.getuser()}@{socket.gethostname()}", help="who gives the order")
    p.set_defaults(run=cmd_estop)
    add_command_parser(sub)

    args = parser.parse_args(argv)
    # The MQTT client's "not reachable yet, retrying" is for services; the CLI says it in its one line.
    logging.basicConfig(level=logging.ERROR, format="qubit: %(message)s")
    try:
        return int(args.run(args))
    except CliError as exc:
        print(f"qubit: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def _count_arg(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of events (0: no limit)")
    return int(value)


if __name__ == "__main__":
    raise SystemExit(main())
