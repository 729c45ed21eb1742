from datetime import UTC, datetime

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
    tracker.on_status("t", report("ast_bay_1", "AVAILABLE"))  # unplugged mid-charge: one step, an early departure
    state = retained(recorder)["qubit/state/ast_bay_1"]
    assert (state.state, state.previous_state, state.trigger) == ("AVAILABLE", "CHARGING", "unplug")


def test_bad_reports_are_refused_and_change_nothing(site, recorder, caplog):
    tracker = StateTracker(site, recorder)
    tracker.on_status("t", b"\xff\xfe")
    tracker.on_status("t", report("ast_ghost", "CHARGING"))
    tracker.on_status("t", report("ast_bay_1", "EXPLODED"))
    assert tracker.machines["ast_bay_1"].state == "AVAILABLE"
    assert recorder.sent == []
    for text in ("unreadable status report", "unknown asset ast_ghost", "'EXPLODED'"):
        assert text in caplog.text


def test_retained_states_restore_machines_after_restart(site, recorder):
    first = StateTracker(site, recorder)
    first.on_status("t", report("ast_batt_001", "DISCHARGING"))
    saved = [(t, p) for t, p, _, r in recorder.sent if r]
    second = StateTracker(site, recorder)
    for topic, payload in saved:
        second.on_retained_state(topic, payload)
    assert second.machines["ast_batt_001"].state == "DISCHARGING"
    assert second.machines["ast_batt_001"].history == []


def test_initial_states_published_for_silent_assets(site, recorder):
    tracker = StateTracker(site, recorder)
    tracker.on_status("t", report("ast_bay_1", "PREPARING"))
    tracker.tick(datetime.now(UTC).replace(year=2100))
    assert set(retained(recorder)) == {"qubit/state/ast_bay_1", "qubit/state/ast_bay_2", "qubit/state/ast_batt_001"}
    assert retained(recorder)["qubit/state/ast_bay_2"].state == "AVAILABLE"


def test_queries(site, recorder):
    from coordinator.contract.codec import encode_event
    from coordinator.events import Event

    tracker = StateTracker(site, recorder)
    from coordinator.base import Command, CommandStatus, CommandType
    from coordinator.contract.events import CommandCompleted, CommandRetryScheduled, ScheduleReceived

    received = ScheduleReceived(schedule_id="sch_1", site_id=site.site_id, command_count=2, asset_count=1, slot_count=2,
                                starts_at=None, ends_at=None)
    tracker.on_event("e", encode_event(Event(EventType.SCHEDULE_RECEIVED, received)))
    done = Command("ast_bay_1", CommandType.STOP_CHARGING, command_id="cmd_1", schedule_id="sch_1",
                   status=CommandStatus.COMPLETED)
    retry = Command("ast_bay_1", CommandType.STOP_CHARGING, command_id="cmd_2", schedule_id="sch_1")
    for etype, payload in ((EventType.COMMAND_COMPLETED, CommandCompleted.of(done)),
                           (EventType.COMMAND_RETRY_SCHEDULED,
                            CommandRetryScheduled.of(retry, timed_out=True, retry_at=retry.scheduled_at))):
        tracker.on_event("e", encode_event(Event(etype, payload)))

    def ask(kind: QueryKind, id_: str | None = None) -> QueryReply:
        return tracker.answer(Query(query_id="q1", reply_to="qubit/query/replies/me", kind=kind, id=id_))

    assert ask(QueryKind.COMMAND, "cmd_1").result["status"] == "COMPLETED"
    assert ask(QueryKind.SCHEDULE, "sch_1").result["command_statuses"] == {"COMPLETED": 1, "PENDING": 1}
    assert not ask(QueryKind.COMMAND, "cmd_404").ok
    assert set(ask(QueryKind.ASSET_STATES).result) == {"ast_bay_1", "ast_bay_2", "ast_batt_001"}
    query = Query(query_id="q2", reply_to="qubit/query/replies/me", kind=QueryKind.COMMAND, id="cmd_2")
    tracker.on_query("q", query.encode())
    ((topic, payload),) = recorder.on("qubit/query/replies/")
    assert topic == "qubit/query/replies/me" and decode(QueryReply, payload).result["status"] == "PENDING"
