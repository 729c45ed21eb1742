"""One readable line per event, as `qubit events` and the demo print them."""

import json
from datetime import UTC, datetime

from coordinator.base import Command, CommandStatus, CommandType
from coordinator.contract import events as ev
from coordinator.events import Event, EventType
from tools.event_lines import describe, to_json

AT = datetime(2026, 1, 1, 8, 30, 5, tzinfo=UTC)


def line(event_type, payload):
    return describe(Event(event_type, payload, timestamp=AT))


def charge(error=None):
    return Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": 11.0}, scheduled_at=AT,
                   status=CommandStatus.FAILED, attempts=1, error=error)


def test_commands_show_type_parameters_and_reason():
    command = charge("charger answered Rejected")
    text = line(EventType.COMMAND_FAILED, ev.CommandFailed.of(command))
    assert text == (f"08:30:05  COMMAND_FAILED           ast_bay_1     {command.command_id} "
                    "SET_CHARGE_RATE(power_kw=11.0)  reason: charger answered Rejected")


def test_retries_say_when_and_holds_say_why():
    retry = ev.CommandRetryScheduled.of(charge("no answer within 30 s"), timed_out=True,
                                        retry_at=datetime(2026, 1, 1, 8, 30, 7, tzinfo=UTC))
    assert line(EventType.COMMAND_RETRY_SCHEDULED, retry).endswith(
        "reason: no answer within 30 s  retry at 08:30:07")
    held = ev.CommandHeld.of(charge(), asset_state="FAULTED")
    assert line(EventType.COMMAND_HELD, held).endswith("SET_CHARGE_RATE(power_kw=11.0)  asset is FAULTED")


def test_schedules_and_state_changes():
    received = ev.ScheduleReceived(schedule_id="sch_1", site_id="sit_1", command_count=4, asset_count=2,
                                   slot_count=3, starts_at=AT, ends_at=AT, version=7)
    assert line(EventType.SCHEDULE_RECEIVED, received).endswith("sch_1: 4 commands for 2 assets over 3 slots")
    rejected = ev.ScheduleRejected(schedule_id=None, reason="not_msgpack", message="invalid format byte",
                                   site_id="sit_1")
    assert line(EventType.SCHEDULE_REJECTED, rejected).endswith("None: not_msgpack: invalid format byte")
    moved = ev.StateChanged(asset_id="ast_bay_1", from_state="AVAILABLE", to_state="PREPARING", trigger="plug_in")
    assert line(EventType.STATE_CHANGED, moved).endswith("ast_bay_1     AVAILABLE -> PREPARING (plug_in)")


def test_service_states_emergency_stops_and_safe_states():
    states = ev.ServiceStateChanged(
        service="gateway-ocpp", lifecycle="Active", operational="Running", health="Warning",
        reasons=["device link down: ast_bay_1"], emergency_stop=False,
        previous=ev.ServiceStates(lifecycle="Active", operational="Running", health="Healthy"))
    assert line(EventType.SERVICE_STATE_CHANGED, states) == (
        "08:30:05  SERVICE_STATE_CHANGED    gateway-ocpp  Active/Running/Warning  (device link down: ast_bay_1)")
    stop = ev.EmergencyStopActivated(issued_by="op@depot", reason="fire alarm", ordered_at=AT)
    assert line(EventType.EMERGENCY_STOP_ACTIVATED, stop).endswith("site          by op@depot: fire alarm")
    assert line(EventType.ASSET_SAFE_STATE, ev.AssetSafeState(asset_id="ast_bay_2", safe=False,
                                                              error="not connected")).endswith(
        "ast_bay_2     NOT SAFE: not connected")
    assert line(EventType.ASSET_SAFE_STATE, ev.AssetSafeState(asset_id="ast_bay_2", safe=True,
                                                              detail="0 W")).endswith("ast_bay_2     0 W")


def test_other_device_events_list_their_fields():
    up = ev.DeviceLinkUp(asset_id="ast_bay_1", endpoint="CP_BAY_1", reason="ocpp1.6")
    assert line(EventType.DEVICE_LINK_UP, up).endswith("ast_bay_1     endpoint=CP_BAY_1, reason=ocpp1.6")


def test_json_lines_carry_everything():
    up = ev.DeviceLinkUp(asset_id="a", endpoint="CP_A", reason="")
    out = json.loads(to_json(Event(EventType.DEVICE_LINK_UP, up, timestamp=AT)))
    assert out["timestamp"] == "2026-01-01T08:30:05+00:00"
    assert out["payload"] == {"asset_id": "a", "endpoint": "CP_A", "reason": ""}
    failed = json.loads(to_json(Event(EventType.COMMAND_FAILED, ev.CommandFailed.of(charge("x")), timestamp=AT)))
    assert failed["payload"]["command_type"] == "SET_CHARGE_RATE"
    assert failed["payload"]["scheduled_at"] == "2026-01-01T08:30:05+00:00"
