from datetime import UTC, datetime

from coordinator.contract.events import MessageRefused, RefusalReason
from coordinator.contract.messages import (
    AssetStateMessage,
    Query,
    QueryKind,
    QueryReply,
    StatusReport,
    decode,
)
from coordinator.events import EventType
from services.tracker import StateTracker

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)


def report(asset_id, state):
    return StatusReport(asset_id=asset_id, state=state, at=T0).encode()


def retained(recorder):
    return {t: decode(AssetStateMessage, p) for t, p, _, r in recorder.sent if r}


def test_status_reports_drive_machines_and_retained_states(site, recorder):
    tracker = StateTracker(site, recorder)
    tracker.on_status("qubit/status/loopback/ast_bay_1", report("ast_bay_1", "CHARGING"))
    changes = recorder.events(EventType.STATE_CHANGED)
    assert [(e.payload["from_state"], e.payload["to_state"]) for e in changes] == [
        ("AVAILABLE", "PREPARING"), ("PREPARING", "CHARGING")]
    state = retained(recorder)["qubit/state/ast_bay_1"]
    assert (state.state, state.previous_state, state.trigger) == ("CHARGING", "PREPARING", "start_charge")
    tracker.on_status("qubit/status/loopback/ast_bay_1", report("ast_bay_1", "AVAILABLE"))  # unplugged mid-charge
    state = retained(recorder)["qubit/state/ast_bay_1"]
    assert (state.state, state.previous_state, state.trigger) == ("AVAILABLE", "CHARGING", "unplug")


def test_bad_reports_are_refused_and_change_nothing(site, recorder):
    tracker = StateTracker(site, recorder)
    refused: list[MessageRefused] = []  # the payloads of MESSAGE_REFUSED
    tracker.refusals.bus.subscribe(EventType.MESSAGE_REFUSED, lambda e: refused.append(e.payload))  # type: ignore[arg-type]
    tracker.on_status("t", b"\xff\xfe")
    tracker.on_status("qubit/status/loopback/ast_ghost", report("ast_ghost", "CHARGING"))
    tracker.on_status("qubit/status/loopback/ast_bay_1", report("ast_bay_1", "EXPLODED"))
    tracker.on_status("qubit/status/ocpp/ast_bay_1", report("ast_bay_1", "CHARGING"))  # another gateway's identity
    tracker.on_status("qubit/status/loopback/ast_bay_2", report("ast_bay_1", "CHARGING"))  # topic and report differ
    assert tracker.machines["ast_bay_1"].state == "AVAILABLE"
    assert recorder.sent == []
    assert [r.reason for r in refused] == [RefusalReason.UNREADABLE, RefusalReason.UNKNOWN_ASSET,
                                           RefusalReason.INVALID, RefusalReason.NOT_YOURS, RefusalReason.NOT_YOURS]


def test_retained_states_restore_machines_after_restart(site, recorder):
    first = StateTracker(site, recorder)
    first.on_status("qubit/status/loopback/ast_batt_001", report("ast_batt_001", "DISCHARGING"))
    saved = [(t, p) for t, p, _, r in recorder.sent if r]
    second = StateTracker(site, recorder)
    for topic, payload in saved:
        second.on_retained_state(topic, payload)
    assert second.machines["ast_batt_001"].state == "DISCHARGING"
    assert second.machines["ast_batt_001"].history == []


def test_initial_states_published_for_silent_assets(site, recorder):
    tracker = StateTracker(site, recorder)
    tracker.on_status("qubit/status/loopback/ast_bay_1", report("ast_bay_1", "PREPARING"))
    tracker.tick(datetime.now(UTC).replace(year=2100))
    assert set(retained(recorder)) == {"qubit/state/ast_bay_1", "qubit/state/ast_bay_2", "qubit/state/ast_batt_001"}
    assert retained(recorder)["qubit/state/ast_bay_2"].state == "AVAILABLE"


def test_answers_asset_states_and_leaves_commands_to_the_planner(site, recorder):
    tracker = StateTracker(site, recorder)
    tracker.on_status("qubit/status/loopback/ast_bay_1", report("ast_bay_1", "PREPARING"))

    def ask(kind: QueryKind, id_: str | None = None) -> QueryReply | None:
        return tracker.answer(Query(query_id="q1", reply_to="qubit/query/replies/me", kind=kind, id=id_))

    states = ask(QueryKind.ASSET_STATES)
    assert states is not None and states.result["ast_bay_1"]["state"] == "PREPARING"
    assert set(states.result) == {"ast_bay_1", "ast_bay_2", "ast_batt_001"}
    assert ask(QueryKind.COMMAND, "cmd_1") is None and ask(QueryKind.SCHEDULE, "sch_1") is None
    tracker.on_query("q", Query(query_id="q2", reply_to="qubit/query/replies/me", kind=QueryKind.COMMAND,
                                id="cmd_1").encode())
    assert recorder.on("qubit/query/replies/") == []  # the planner's to answer
