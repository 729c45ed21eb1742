"""The JSON mirror end to end: a SCADA client with no msgpack reads a schedule's events as JSON."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from coordinator.contract.codec import encode_schedule
from coordinator.contract.topics import SCHEDULES_IN
from tools.launcher import CORE

pytestmark = pytest.mark.timeout(90)

ASSET_MAP = {"ev_007": "ast_bay_1"}


def wait_json(client, predicate, what: str, timeout: float = 30.0) -> list[tuple[str, dict, bool]]:
    """(topic, document, retain) of every message until ``predicate`` holds for the list."""
    seen: list[tuple[str, dict, bool]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in client.drain(0.2):
            seen.append((m.topic, json.loads(m.payload), bool(m.retain)))  # JSON, or this raises
        if predicate(seen):
            return seen
    raise AssertionError(f"timed out waiting for {what}; saw {[t for t, _, _ in seen][-20:]}")


def test_a_plain_scada_client_reads_a_schedules_events_as_json(stack, plain):
    stack.start_all((*CORE, "json-mirror"))
    scada = plain("qubit/json/events/#", "qubit/json/state/+", identity="scada")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    df = pd.DataFrame({"ev_007_kw": [11.0, 0.0]}, index=pd.date_range(start, periods=2, freq="2s"))
    plain(identity="layer3").publish(
        SCHEDULES_IN, encode_schedule(df, asset_map=ASSET_MAP, site_id="sit_demo_depot", schedule_id="sch_json_1"))

    def done(seen):
        return sum(t == "qubit/json/events/COMMAND_COMPLETED/ast_bay_1" for t, _, _ in seen) >= 2

    seen = wait_json(scada, done, "both commands completed, in JSON")
    documents = {t: d for t, d, _ in seen}
    received = documents["qubit/json/events/SCHEDULE_RECEIVED/site"]
    assert set(received) == {"event_id", "event_type", "timestamp", "payload"}
    assert received["event_type"] == "SCHEDULE_RECEIVED" and received["payload"]["schedule_id"] == "sch_json_1"
    # RFC 3339 in UTC; ends_at is the end of the last slot (its start + the slot length)
    assert received["payload"]["starts_at"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert datetime.fromisoformat(received["payload"]["ends_at"]) == start + timedelta(seconds=4)
    completed = documents["qubit/json/events/COMMAND_COMPLETED/ast_bay_1"]
    assert completed["payload"]["command_type"] == "SET_CHARGE_RATE" and completed["payload"]["status"] == "COMPLETED"
    assert datetime.fromisoformat(completed["timestamp"]).tzinfo is not None
    state = [(d, r) for t, d, r in seen if t == "qubit/json/state/ast_bay_1"]
    assert state, "the state changes, mirrored live"
    late = plain("qubit/json/state/ast_bay_1", identity="scada")  # a late subscriber gets the retained copy
    (first, *_) = wait_json(late, lambda s: bool(s), "the retained JSON state")
    assert first[2] is True and first[1]["asset_id"] == "ast_bay_1"


def test_what_the_mirror_cannot_read_is_refused_not_mirrored(stack, plain):
    stack.start_all((*CORE, "json-mirror"))
    scada = plain("qubit/json/#", identity="scada")
    plain().publish("qubit/state/ast_bay_1", b"\xc1 not msgpack")  # the harness plays a forger
    seen = wait_json(scada, lambda s: any(t == "qubit/json/events/MESSAGE_REFUSED/site"
                                          and d["payload"]["topic"] == "qubit/state/ast_bay_1" for t, d, _ in s),
                     "the mirror's refusal, mirrored")
    refusal = next(d for t, d, _ in seen if t == "qubit/json/events/MESSAGE_REFUSED/site")
    assert refusal["payload"]["reason"] == "unreadable"
    # every JSON copy on the state topic is a real state (wait_json parsed each one), none is the forgery's
    assert all(d["asset_id"] == "ast_bay_1" and d["kind"] == "ev_charger" for t, d, _ in seen
               if t == "qubit/json/state/ast_bay_1")
