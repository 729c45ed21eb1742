"""One realistic example of every message and every event payload, as its sender builds it.

The contract's example payloads (docs/contract/examples/, shown in docs/wire-contract.md) are
generated from these by ``make contract``; tests/contract checks every sample against its
published JSON Schema, so an example can never show what a receiver would refuse.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
from pydantic import BaseModel

from coordinator.base import Command, CommandStatus, CommandType
from coordinator.contract import events as ev
from coordinator.contract import messages as msg
from coordinator.contract.codec import MAX_SCHEDULE_BYTES, ScheduleFormat, encode_schedule, unpack
from coordinator.contract.topics import query_reply_topic
from coordinator.events import EventType

IST = timezone(timedelta(hours=5, minutes=30))
AT = datetime(2025, 1, 15, 13, 30, 0, 250, tzinfo=IST)


def _command(status: CommandStatus = CommandStatus.DISPATCHED, error: str | None = None) -> Command:
    return Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": 11.0, "phases": 3, "note": None},
                   scheduled_at=AT, command_id="cmd_0123456789ab", status=status, attempts=1,
                   schedule_id="sch_1", dispatched_at=AT + timedelta(seconds=1), error=error)


SAMPLES: dict[EventType, ev.EventPayload] = {
    EventType.COMMAND_CREATED: ev.CommandCreated.of(
        Command("ast_bay_1", CommandType.STOP_CHARGING, scheduled_at=AT, command_id="cmd_0123456789ab")),
    EventType.COMMAND_DISPATCHED: ev.CommandDispatched.of(_command(), protocol="ocpp", gateway_id="ocpp"),
    EventType.COMMAND_ACKNOWLEDGED: ev.CommandAcknowledged.of(_command(CommandStatus.ACKNOWLEDGED)),
    EventType.COMMAND_COMPLETED: ev.CommandCompleted.of(_command(CommandStatus.COMPLETED)),
    EventType.COMMAND_FAILED: ev.CommandFailed.of(_command(CommandStatus.FAILED, "charger answered Rejected")),
    EventType.COMMAND_TIMED_OUT: ev.CommandTimedOut.of(_command(CommandStatus.TIMED_OUT, "no answer within 30 s")),
    EventType.COMMAND_CANCELLED: ev.CommandCancelled.of(_command(CommandStatus.CANCELLED, "superseded by cmd_x")),
    EventType.COMMAND_RETRY_SCHEDULED: ev.CommandRetryScheduled.of(
        _command(CommandStatus.PENDING, "device busy"), timed_out=False, retry_at=AT + timedelta(seconds=3)),
    EventType.COMMAND_HELD: ev.CommandHeld.of(_command(CommandStatus.PENDING), asset_state=None,
                                              site_hold="emergency stop: fire alarm"),
    EventType.STATE_CHANGED: ev.StateChanged(asset_id="ast_bay_1", from_state="AVAILABLE", to_state="PREPARING",
                                             trigger="plug_in"),
    EventType.SCHEDULE_RECEIVED: ev.ScheduleReceived(
        schedule_id="sch_1", site_id="sit_demo_depot", command_count=4, asset_count=2, slot_count=96,
        starts_at=AT, ends_at=AT + timedelta(hours=24), version=1736929800000000),
    EventType.SCHEDULE_PLANNED: ev.SchedulePlanned(
        schedule_id="sch_1", version=1736929800000000, site_id="sit_demo_depot", command_count=4, asset_count=2,
        superseded=3, first_due_at=AT),
    EventType.SCHEDULE_REJECTED: ev.ScheduleRejected(
        schedule_id="sch_1", reason="above_limit", message="setpoints above the asset's max_power_kw: ev_1_kw",
        site_id="sit_demo_depot", columns=["ev_1_kw"]),
    EventType.SETPOINT_CLAMPED: ev.SetpointClamped(
        asset_id="ast_batt_001", command_id="cmd_0123456789ab", command_type=CommandType.SET_DISCHARGE_RATE,
        requested=80.0, applied=50.0, limit=50.0),
    EventType.SETPOINT_NOT_FOLLOWED: ev.SetpointNotFollowed(
        asset_id="ast_bay_1", command_id="cmd_0123456789ab", limit_kw=7.0, measured_kw=11.0, tolerance_kw=0.7),
    EventType.DEVICE_LINK_UP: ev.DeviceLinkUp(asset_id="ast_batt_001", endpoint="127.0.0.1:5020", reason=""),
    EventType.DEVICE_LINK_DOWN: ev.DeviceLinkDown(asset_id="ast_bay_1", endpoint="CP_BAY_1", reason="closed"),
    EventType.ASSET_SAFE_STATE: ev.AssetSafeState(asset_id="ast_bay_1", safe=True, detail="0 W, profile accepted"),
    EventType.EMERGENCY_STOP_ACTIVATED: ev.EmergencyStopActivated(reason="fire alarm", issued_by="op@depot",
                                                                 ordered_at=AT),
    EventType.EMERGENCY_STOP_RESET: ev.EmergencyStopReset(reason="all clear", issued_by="op@depot", ordered_at=AT),
    EventType.SERVICE_STATE_CHANGED: ev.ServiceStateChanged(
        service="gateway-ocpp", lifecycle="Active", operational="Running", health="Warning",
        reasons=["device link down: ast_bay_1"], emergency_stop=False,
        previous=ev.ServiceStates(lifecycle="Active", operational="Running", health="Healthy")),
    EventType.PUBLISH_FAILED: ev.PublishFailed(
        topic="qubit/telemetry/ocpp/ast_bay_1", reason=ev.PublishFailureReason.QOS0_OFFLINE, message_bytes=4120,
        count=37, detail="broker link down for 12.5 s"),
    EventType.MESSAGE_REFUSED: ev.MessageRefused(
        topic="qubit/commands/ocpp", reason=ev.RefusalReason.OUT_OF_RANGE,
        detail="power_kw 1e+06 kW is above the max_power_kw of ast_bay_1 (22 kW)", message_id="cmd_0123456789ab",
        asset_id="ast_bay_1"),
    EventType.OPERATOR_COMMAND_ACCEPTED: ev.OperatorCommandAccepted(
        asset_id="ast_bay_1", request_id="req_0123456789ab", command_id="cmd_op0123456789abcdef", action="reset"),
    EventType.OPERATOR_COMMAND_REJECTED: ev.OperatorCommandRejected(
        request_id="req_0123456789ab", asset_id="ast_bay_1", action="soc_target", reason="wrong_kind",
        message="soc_target is for batteries; ast_bay_1 is an ev_charger"),
    EventType.SETPOINT_CAPPED: ev.SetpointCapped(
        asset_id="ast_bay_2", command_id="cmd_0123456789ab", command_type=CommandType.SET_CHARGE_RATE,
        requested=80.0, applied=72.0, limit="site_import", limit_kw=90.0),
}
"""One payload of every event type."""

SCHEDULE_FRAME = pd.DataFrame(
    {"ev_007_kw": [22.0, 22.0, 11.0, 0.0], "battery_charge_kw": [30.0, 0.0, 0.0, 0.0],
     "battery_discharge_kw": [0.0, 25.0, 0.0, 0.0], "price_per_kwh": [0.12, 0.31, 0.31, 0.12]},
    index=pd.date_range("2025-01-15 08:00", periods=4, freq="15min", tz="Europe/Berlin"),
)
"""A four-slot, 15-minute Layer 3 schedule: one charger, one battery, one ignored column."""
SCHEDULE_BYTES = encode_schedule(SCHEDULE_FRAME, asset_map={"ev_007": "ast_bay_1", "battery": "ast_batt_001"},
                                 site_id="sit_demo_depot", schedule_id="sch_1")

_CMD = Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": 22.0}, scheduled_at=AT,
               command_id="cmd_0123456789ab", status=CommandStatus.DISPATCHED, attempts=1, schedule_id="sch_1",
               created_at=AT - timedelta(minutes=5), dispatched_at=AT)

MESSAGES: dict[str, BaseModel | Command] = {
    "Schedule": ScheduleFormat.model_validate(unpack(SCHEDULE_BYTES, max_bytes=MAX_SCHEDULE_BYTES)),
    "Command": _CMD,
    "AcceptedSchedule": msg.AcceptedSchedule(schedule_id="sch_1", version=1736929800000000, received_at=AT,
                                             command_count=5, schedule=SCHEDULE_BYTES),
    "CommandBatch": msg.CommandBatch.of("loopback", [_CMD]),
    "CommandResult": msg.CommandResult(command_id="cmd_0123456789ab", asset_id="ast_bay_1",
                                       outcome=msg.Outcome.COMPLETED, at=AT + timedelta(seconds=1), attempt=1),
    "ResultBatch": msg.ResultBatch(gateway_id="loopback", results=[
        msg.CommandResult(command_id="cmd_0123456789ab", asset_id="ast_bay_1", outcome=msg.Outcome.ACKNOWLEDGED,
                          at=AT, attempt=1),
        msg.CommandResult(command_id="cmd_0123456789cd", asset_id="ast_bay_2", outcome=msg.Outcome.FAILED,
                          at=AT, error="charger answered Rejected", attempt=2)]),
    "ReceivedResultBatch": msg.ReceivedResultBatch(gateway_id="loopback", results=[
        {"command_id": "cmd_0123456789ab", "asset_id": "ast_bay_1", "outcome": "completed", "at": AT,
         "error": None, "attempt": 1}]),
    "StatusReport": msg.StatusReport(asset_id="ast_bay_1", state="CHARGING", at=AT,
                                     detail={"connector": 1, "ocpp_status": "Charging"}),
    "ChargerControl": msg.ChargerControl(charge_point_id="CP_BAY_1", action="plug_in"),
    "SimulatorRequest": msg.SimulatorRequest(asset_id="ast_bay_1", silent=True),
    "Telemetry": msg.Telemetry(asset_id="ast_batt_001", at=AT, values={
        "soc_percent": 64.5, "active_power_kw": -25.0, "fault_code": 0, "mode": "discharging"}),
    "AssetStateMessage": msg.AssetStateMessage(asset_id="ast_bay_1", kind="ev_charger", state="CHARGING",
                                               previous_state="PREPARING", trigger="start_charge", since=AT),
    "ServiceStatus": msg.ServiceStatus(service="planner", status="online", pid=4242, lifecycle="Active",
                                       operational="Running", health="Warning",
                                       reasons=["no asset state yet: ast_bay_2"], emergency_stop=False,
                                       metrics_port=9464, at=AT),
    "EmergencyStop": msg.EmergencyStop(active=True, reason="fire alarm", issued_by="op@depot", at=AT),
    "OperatorCommand": msg.OperatorCommand(request_id="req_0123456789ab", asset_id="ast_bay_1",
                                           action=msg.OperatorAction.POWER_LIMIT, kw=7.0, duration_s=3600,
                                           issued_by="op@depot", issued_at=AT),
    "Query": msg.Query(query_id="q_1", reply_to=query_reply_topic("qubit-cli-1234"), kind=msg.QueryKind.COMMAND,
                       id="cmd_0123456789ab"),
    "QueryReply": msg.QueryReply(query_id="q_1", ok=True, result={"command_id": "cmd_0123456789ab",
                                                                  "status": "COMPLETED"}),
}
"""One message of every model of ``schema.MESSAGE_MODELS`` but the event envelope (one per event)."""


def envelope(event_type: EventType) -> dict[str, Any]:
    """The whole event message of ``event_type``'s sample, as its map: envelope and payload."""
    return {"event_id": "evt_0123456789ab", "event_type": event_type.value, "timestamp": AT,
            "payload": SAMPLES[event_type].model_dump(mode="python")}
