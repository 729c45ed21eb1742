"""Defense in depth on the real stack: forged messages, published as a stolen identity straight
onto the topics of the processes, are refused with an event and change nothing.

Each forged message of issue 12 is here: commands out of range sent straight to a gateway, a
command batch with malformed items among valid ones, forged accepted schedules (another site,
9,999 kW, version 2^62), forged results and a forged status report from the wrong gateway.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from coordinator.base import Command, CommandType
from coordinator.contract.codec import encode_schedule
from coordinator.contract.messages import (
    AcceptedSchedule,
    CommandBatch,
    CommandResult,
    Outcome,
    Query,
    QueryKind,
    QueryReply,
    ResultBatch,
    StatusReport,
    command_to_wire,
    decode,
)
from coordinator.contract.topics import (
    SCHEDULES_ACCEPTED,
    SCHEDULES_IN,
    commands_topic,
    query_reply_topic,
    results_topic,
    status_topic,
)

pytestmark = pytest.mark.timeout(120)

ASSET_MAP = {"ev_007": "ast_bay_1", "ev_012": "ast_bay_2"}
SITE_ID = "sit_demo_depot"


def refusals(events, **match):
    return [e.payload for e in events.of("MESSAGE_REFUSED")
            if all(getattr(e.payload, k) == v for k, v in match.items())]


def schedule(kw: float, schedule_id: str, site_id: str = SITE_ID, start: datetime | None = None) -> bytes:
    start = start or datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    frame = pd.DataFrame({"ev_007_kw": [kw], "ev_012_kw": [kw]}, index=pd.date_range(start, periods=1, freq="15min"),
                         dtype=float)
    return encode_schedule(frame, asset_map=ASSET_MAP, site_id=site_id, schedule_id=schedule_id)


def accepted(data: bytes, schedule_id: str, version: int) -> bytes:
    return AcceptedSchedule(schedule_id=schedule_id, version=version, received_at=datetime.now(UTC),
                            command_count=2, schedule=data).encode()


def ask(plain, what: QueryKind, ident: str | None = None) -> QueryReply:
    reply_to = query_reply_topic("forged_test")
    client = plain(reply_to)
    query = Query(query_id="q1", reply_to=reply_to, kind=what, id=ident)
    client.publish("qubit/query/requests", query.encode())
    replies = [decode(QueryReply, m.payload) for m in client.drain(3.0)]
    assert replies, f"no answer to {what.value} {ident}"
    return replies[0]


def test_forged_commands_straight_to_a_gateway_are_refused_and_the_valid_ones_go_on(stack, events, plain, tmp_path):
    device_log = tmp_path / "devices.jsonl"
    stack.start_all(args={"gateway-loopback": ("--device-log", str(device_log))})
    now = datetime.now(UTC)
    forged = [Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": kw}, now)
              for kw in (1_000_000.0, float("nan"), float("inf"), -7.0)]
    valid = Command("ast_bay_2", CommandType.SET_CHARGE_RATE, {"power_kw": 7.0}, now, attempts=1)
    bad_ids = [command_to_wire(Command("ast_bay_2", CommandType.SET_CHARGE_RATE, {"power_kw": 7.0}, now)) | {
        "command_id": cid} for cid in ("cmd_a/b", "cmd_nul\x00", "cmd_" + "x" * 200)]
    missing = {k: v for k, v in command_to_wire(valid).items() if k != "scheduled_at"} | {"command_id": "cmd_missing"}
    results = plain(results_topic("loopback"))
    attacker = plain()
    batch = CommandBatch(gateway_id="loopback",
                         commands=[*map(command_to_wire, forged), *bad_ids, missing, command_to_wire(valid)])
    attacker.publish(commands_topic("loopback"), batch.encode())

    events.wait_for(lambda _: len(refusals(events, topic=commands_topic("loopback"))) >= 8, timeout=15,
                    what="every forged item refused by the gateway")
    by_gateway = refusals(events, topic=commands_topic("loopback"))
    assert sorted(r.reason.value for r in by_gateway) == ["malformed_item"] * 4 + ["out_of_range"] * 4
    answered = [r for m in results.drain(1.0) for r in decode(ResultBatch, m.payload).results]
    outcomes = {(r.command_id, r.outcome) for r in answered}
    assert outcomes == {*((c.command_id, Outcome.REFUSED) for c in forged), ("cmd_missing", Outcome.REFUSED),
                        (valid.command_id, Outcome.ACKNOWLEDGED), (valid.command_id, Outcome.COMPLETED)}
    # the device saw only the valid command; none of the forged powers
    applied = [json.loads(line) for line in device_log.read_text().splitlines()]
    assert [(a["command_id"], a["power_kw"]) for a in applied] == [(valid.command_id, 7.0)]
    # and the planner, which never sent any of them, refuses their results
    events.wait_for(lambda _: len(refusals(events, topic=results_topic("loopback"))) >= 5, timeout=10,
                    what="the planner refusing results for commands it never made")
    assert {r.reason.value for r in refusals(events, topic=results_topic("loopback"))} == {"unknown_command"}


def test_forged_accepted_schedules_are_refused_and_a_legitimate_one_still_plans(stack, events, plain):
    stack.start_all()
    attacker = plain()
    elsewhere = schedule(7.0, "sch_other_site", "sit_elsewhere")
    attacker.publish(SCHEDULES_ACCEPTED, accepted(elsewhere, "sch_other_site", 1))
    attacker.publish(SCHEDULES_ACCEPTED, accepted(schedule(9_999.0, "sch_too_much"), "sch_too_much", 2))
    attacker.publish(SCHEDULES_ACCEPTED, accepted(schedule(7.0, "sch_forever"), "sch_forever", 2 ** 62))
    events.wait_for(lambda _: len(refusals(events, topic=SCHEDULES_ACCEPTED)) >= 3, timeout=15,
                    what="three forged accepted schedules refused")
    assert [(r.message_id, r.reason.value) for r in refusals(events, topic=SCHEDULES_ACCEPTED)] == [
        ("sch_other_site", "wrong_site"), ("sch_too_much", "out_of_range"), ("sch_forever", "future_version")]
    assert {e.payload.schedule_id for e in events.of("SCHEDULE_REJECTED")} == {
        "sch_other_site", "sch_too_much", "sch_forever"}
    assert ask(plain, QueryKind.SCHEDULE, "sch_forever").result["status"] == "rejected"

    plain().publish(SCHEDULES_IN, schedule(11.0, "sch_legit"))
    events.wait_for(lambda _: any(e.payload.schedule_id == "sch_legit" for e in events.of("SCHEDULE_PLANNED")),
                    timeout=15, what="the legitimate schedule planned")
    events.wait_for(lambda _: len(events.of("COMMAND_COMPLETED")) >= 2, timeout=15, what="its commands completed")
    assert {e.payload.schedule_id for e in events.of("COMMAND_DISPATCHED")} == {"sch_legit"}
    assert {e.payload.parameters["power_kw"] for e in events.of("COMMAND_COMPLETED")} == {11.0}


def test_forged_results_and_status_reports_are_refused_and_change_nothing(stack, events, plain):
    stack.start_all(args={"gateway-loopback": ("--silent", "ast_bay_2")})  # ast_bay_2 never answers
    plain().publish(SCHEDULES_IN, schedule(7.0, "sch_silent"))
    events.wait_for(lambda ev: any(e.payload.asset_id == "ast_bay_2" for e in events.of("COMMAND_DISPATCHED")),
                    timeout=15, what="the silent charger's command dispatched")
    (pending,) = [e.payload for e in events.of("COMMAND_DISPATCHED") if e.payload.asset_id == "ast_bay_2"]
    completed = CommandResult(command_id=pending.command_id, asset_id="ast_bay_2", outcome=Outcome.COMPLETED,
                              at=datetime.now(UTC))
    attacker = plain()
    # a stolen identity of another gateway says the command completed ...
    attacker.publish(results_topic("ocpp"), ResultBatch(gateway_id="ocpp", results=[completed]).encode())
    # ... or lies about its own name on the loopback gateway's topic
    attacker.publish(results_topic("loopback"), ResultBatch(gateway_id="ocpp", results=[completed]).encode())
    # and reports a fault of ast_bay_1 from the wrong gateway
    fault = StatusReport(asset_id="ast_bay_1", state="FAULTED", at=datetime.now(UTC))
    attacker.publish(status_topic("ocpp", "ast_bay_1"), fault.encode())

    events.wait_for(lambda _: len(refusals(events, reason="not_yours")) >= 3, timeout=15,
                    what="forged results and the forged status refused")
    assert {(r.topic, r.reason.value) for r in refusals(events)} == {
        (results_topic("ocpp"), "not_yours"), (results_topic("loopback"), "not_yours"),
        (status_topic("ocpp", "ast_bay_1"), "not_yours")}
    record = ask(plain, QueryKind.COMMAND, pending.command_id).result
    assert record["status"] != "COMPLETED", record  # the charger never answered
    states = ask(plain, QueryKind.ASSET_STATES).result
    assert states["ast_bay_1"]["state"] != "FAULTED"
    assert not [e for e in events.of("STATE_CHANGED") if e.payload.to_state == "FAULTED"]
