"""The distributed runtime end to end: real Mosquitto, real processes, plain MQTT clients."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgpack
import pandas as pd
import pytest

from coordinator.contract.codec import MAX_SCHEDULE_BYTES, encode_schedule
from coordinator.contract.messages import AssetStateMessage, CommandBatch, decode
from coordinator.contract.topics import ASSET_STATES_ALL, SCHEDULES_IN, SERVICES_ALL, commands_topic
from coordinator.schedule import schedule_to_commands
from tools.launcher import CORE

pytestmark = pytest.mark.timeout(180)

ASSET_MAP = {"ev_007": "ast_bay_1", "ev_012": "ast_bay_2", "battery": "ast_batt_001"}
SLOT = timedelta(seconds=2)


def sample(start: datetime, slots: int = 5) -> pd.DataFrame:
    idx = pd.date_range(start, periods=slots, freq=SLOT)
    return pd.DataFrame(
        {
            "ev_007_kw": [22, 22, 11, 11, 0][:slots],
            "ev_012_kw": [11, 22, 22, 7, 0][:slots],
            "battery_charge_kw": [30, 0, 0, 20, 20][:slots],
            "battery_discharge_kw": [0, 25, 40, 0, 0][:slots],
            "price_per_kwh": [0.1, 0.3, 0.3, 0.1, 0.1][:slots],
        },
        index=idx, dtype=float,
    )


def demo_schedule(frame: pd.DataFrame, schedule_id: str | None = None) -> bytes:
    """``frame`` as Layer 3 publishes it for the demo depot."""
    return encode_schedule(frame, asset_map=ASSET_MAP, site_id="sit_demo_depot", schedule_id=schedule_id)


def key(asset_id, command_type, power, at):
    return (asset_id, str(command_type), float(power), at)


def test_schedule_becomes_exactly_the_predicted_commands_and_events(stack, events, plain):
    stack.start_all()
    df = sample(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2))
    expected = {key(c.asset_id, c.command_type.value, c.parameters["power_kw"], c.scheduled_at)
                for c in schedule_to_commands(df, ASSET_MAP)}
    layer3 = plain()
    layer3.publish(SCHEDULES_IN, demo_schedule(df, "sch_e2e_1"))

    events.wait_for(lambda ev: len([e for e in ev if e.event_type.value == "COMMAND_COMPLETED"]) >= len(expected),
                    timeout=40, what="every command completed")
    events.collect(0.5)  # and whatever else comes: a command completed twice would show here
    (planned,) = events.of("SCHEDULE_PLANNED")  # a schedule's commands are announced together
    assert planned.payload["schedule_id"] == "sch_e2e_1" and planned.payload["command_count"] == len(expected)
    completed = {key(p["asset_id"], p["command_type"], p["parameters"]["power_kw"], p["scheduled_at"])
                 for p in (e.payload for e in events.of("COMMAND_COMPLETED"))}
    assert completed == expected
    assert len(events.of("COMMAND_COMPLETED")) == len(expected)  # each exactly once
    (received,) = events.of("SCHEDULE_RECEIVED")
    assert received.payload["schedule_id"] == "sch_e2e_1" and received.payload["command_count"] == len(expected)
    assert events.of("COMMAND_FAILED") == [] and events.of("COMMAND_TIMED_OUT") == []
    # per-asset topics let SCADA filter: qubit/events/{type}/{asset}
    assert "qubit/events/COMMAND_COMPLETED/ast_batt_001" in events.topics
    assert "qubit/events/SCHEDULE_RECEIVED/site" in events.topics
    # the battery followed the schedule through the tracker's state machine
    battery_moves = [(e.payload["from_state"], e.payload["to_state"]) for e in events.of("STATE_CHANGED")
                     if e.payload["asset_id"] == "ast_batt_001"]
    assert battery_moves == [("IDLE", "CHARGING"), ("CHARGING", "DISCHARGING"), ("DISCHARGING", "CHARGING")]
    # a late subscriber sees every asset's state at once (retained)
    late = plain(ASSET_STATES_ALL)
    states = {decode(AssetStateMessage, m.payload).asset_id: decode(AssetStateMessage, m.payload).state
              for m in late.drain(1.0)}
    assert states == {"ast_bay_1": "SUSPENDED", "ast_bay_2": "SUSPENDED", "ast_batt_001": "CHARGING"}


def malformed_schedules(start):
    df = sample(start, 2)
    negative = df.copy()
    negative.iloc[1, 0] = -5.0
    clash = df.copy()
    clash["battery_charge_kw"] = 5.0
    return {
        "not_msgpack": (b"\xc1\x01 this is not msgpack", "not_msgpack"),
        "wrong_types": (msgpack.packb({"schedule_id": "sch_bad_types", "site_id": 7, "asset_map": [], "index": 1,
                                       "columns": 2}), "malformed"),
        # Just over the limit: the broker's max_packet_size admits it (the ingester says why it is
        # refused); a far larger one is a protocol violation the broker disconnects for.
        "too_large": (b"\x80" * (MAX_SCHEDULE_BYTES + 1), "too_large"),
        "bad_index": (demo_schedule(df.iloc[[1, 0]], "sch_bad_index"), "unsorted_index"),
        "unknown_column": (demo_schedule(df.assign(ev_999_kw=1.0), "sch_unmapped"), "unmapped_columns"),
        "negative": (demo_schedule(negative, "sch_negative"), "negative_power"),
        "contradictory": (demo_schedule(clash, "sch_clash"), "charge_and_discharge"),
        "unknown_asset": (encode_schedule(df, asset_map=ASSET_MAP | {"ev_007": "ast_ghost"}, site_id="sit_demo_depot",
                                          schedule_id="sch_ghost"), "unknown_asset"),
    }


def test_malformed_schedules_are_rejected_and_nothing_dies(stack, events, plain):
    stack.start_all()
    start = datetime.now(UTC) + timedelta(seconds=30)
    cases = malformed_schedules(start)
    layer3 = plain()
    for data, _ in cases.values():
        layer3.publish(SCHEDULES_IN, data)
    events.wait_for(lambda ev: len([e for e in ev if e.event_type.value == "SCHEDULE_REJECTED"]) >= len(cases),
                    timeout=20, what="a rejection per malformed schedule")
    reasons = sorted(e.payload["reason"] for e in events.of("SCHEDULE_REJECTED"))
    assert reasons == sorted(reason for _, reason in cases.values())
    ids = {e.payload["schedule_id"] for e in events.of("SCHEDULE_REJECTED")}
    assert {"sch_bad_types", "sch_bad_index", "sch_unmapped", "sch_negative", "sch_clash", "sch_ghost"} <= ids
    assert events.of("SCHEDULE_PLANNED") == [] and events.of("COMMAND_DISPATCHED") == []  # nothing half-applied
    assert all(stack.alive(n) for n in CORE)
    # and the pipeline still works
    layer3.publish(SCHEDULES_IN, demo_schedule(sample(start, 2)))
    events.wait_for(lambda ev: any(e.event_type.value == "SCHEDULE_RECEIVED" for e in ev), timeout=15,
                    what="SCHEDULE_RECEIVED")


def test_restarted_processes_pick_up_what_was_queued_for_them(stack, events, plain):
    stack.start_all()
    layer3 = plain()
    # The gateway dies; commands fall due while it is down and wait at the broker.
    stack.kill("gateway-loopback")
    df = sample(datetime.now(UTC) + timedelta(seconds=1), 2)
    expected = len(schedule_to_commands(df, ASSET_MAP))
    layer3.publish(SCHEDULES_IN, demo_schedule(df, "sch_queued_1"))
    events.wait_for(lambda ev: len([e for e in ev if e.event_type.value == "COMMAND_DISPATCHED"]) >= 3, timeout=15,
                    what="dispatch while the gateway is down")
    assert events.of("COMMAND_COMPLETED") == []
    stack.start("gateway-loopback")
    events.wait_for(lambda ev: len([e for e in ev if e.event_type.value == "COMMAND_COMPLETED"]) >= expected,
                    timeout=30, what="queued commands completed after the gateway restart")

    # The ingester dies; a schedule published meanwhile is processed when it is back.
    stack.kill("ingester")
    layer3.publish(SCHEDULES_IN, demo_schedule(sample(datetime.now(UTC) + timedelta(minutes=5), 2), "sch_queued_2"))
    stack.start("ingester")  # the publish was acknowledged: the broker keeps it for the ingester's session
    events.wait_for(lambda ev: any(e.payload.get("schedule_id") == "sch_queued_2"
                                   for e in ev if e.event_type.value == "SCHEDULE_RECEIVED"),
                    timeout=20, what="the schedule queued for the ingester")
    assert len(events.of("COMMAND_FAILED")) == 0


def test_sigterm_stops_cleanly_and_last_will_marks_a_crash(stack, plain):
    stack.start_all()
    watcher = plain(SERVICES_ALL)
    watcher.drain(0.5)
    stack.kill("tracker")  # SIGKILL: no goodbye, the broker publishes the Last Will
    codes = stack.stop_all()
    assert {n: c for n, c in codes.items() if n != "tracker"} == {"ingester": 0, "planner": 0, "gateway-loopback": 0}
    statuses = {}
    for m in watcher.drain(5.0):
        s = msgpack.unpackb(m.payload)
        statuses[s["service"]] = s["status"]
    assert statuses == {"ingester": "offline", "planner": "offline", "tracker": "offline",
                        "gateway-loopback": "offline"}


def test_broker_restart_keeps_sessions_and_queued_commands(stack, events, plain, broker):
    if not hasattr(broker, "restart") or type(broker).__name__ != "LocalMosquitto":
        pytest.skip("restart on the same port needs the local broker")
    stack.start_all()
    stack.kill("gateway-loopback")
    commands = plain(commands_topic("loopback"))
    df = sample(datetime.now(UTC) + timedelta(seconds=1), 2)
    expected = len(schedule_to_commands(df, ASSET_MAP))
    plain().publish(SCHEDULES_IN, demo_schedule(df, "sch_b1"))
    events.wait_for(lambda ev: len([e for e in ev if e.event_type.value == "COMMAND_DISPATCHED"]) >= 3, timeout=15,
                    what="dispatch while the gateway is down")
    routed, deadline = 0, time.monotonic() + 10
    while routed < 3:  # the broker has them: routed to us, and queued for the gateway's session
        assert time.monotonic() < deadline, "the dispatched commands did not reach the broker"
        routed += sum(len(decode(CommandBatch, m.payload).commands) for m in commands.drain(0.2))
    broker.restart()  # graceful: the queued commands are in the persistence snapshot
    events.close()
    stack.start("gateway-loopback")
    after = type(events)(broker)
    try:
        after.wait_for(lambda ev: len([e for e in ev if e.event_type.value == "COMMAND_COMPLETED"]) >= expected,
                       timeout=40, what="commands queued before the broker restart completed after it")
        assert all(stack.alive(n) for n in CORE)
    finally:
        after.close()
