"""Events as one line for a human, or as one JSON object for a machine (`qubit events`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from coordinator.contract.events import (
    AssetSafeState,
    CommandHeld,
    CommandPayload,
    CommandRetryScheduled,
    EmergencyStopPayload,
    EventPayload,
    ScheduleReceived,
    ScheduleRejected,
    ServiceStateChanged,
    StateChanged,
)
from coordinator.events import Event, EventType

_WITH_REASON = {
    EventType.COMMAND_FAILED, EventType.COMMAND_TIMED_OUT, EventType.COMMAND_CANCELLED,
    EventType.COMMAND_RETRY_SCHEDULED,
}


def describe(event: Event, clock: datetime | None = None) -> str:
    """``HH:MM:SS  EVENT_TYPE  subject  detail``; ``clock`` overrides the event's own time."""
    stamp = (clock or event.timestamp).strftime("%H:%M:%S")
    subject, detail = _subject_and_detail(event.event_type, event.payload)
    return f"{stamp}  {event.event_type.value:<24} {subject:<13} {detail}"


def _subject_and_detail(kind: EventType, p: EventPayload) -> tuple[str, str]:
    if isinstance(p, StateChanged):
        return p.asset_id, f"{p.from_state} -> {p.to_state} ({p.trigger})"
    if isinstance(p, ScheduleReceived):
        return "", (f"{p.schedule_id}: {p.command_count} commands for {p.asset_count} assets "
                    f"over {p.slot_count} slots")
    if isinstance(p, ScheduleRejected):
        return "", f"{p.schedule_id}: {p.reason}: {p.message}"
    if isinstance(p, ServiceStateChanged):
        why = f"  ({'; '.join(p.reasons)})" if p.reasons else ""
        return p.service, f"{p.lifecycle}/{p.operational}/{p.health}{why}"
    if isinstance(p, EmergencyStopPayload):
        return "site", f"by {p.issued_by}: {p.reason}"
    if isinstance(p, AssetSafeState):
        return p.asset_id, f"{p.detail}" if p.safe else f"NOT SAFE: {p.error}"
    if isinstance(p, CommandPayload):
        return p.asset_id, _command_detail(kind, p)
    # device links, clamps, ...: not about one command; every field but the subject
    rest = ", ".join(f"{name}={value}" for name, value in p if name != "asset_id")
    return p.about_asset or "", rest


def _command_detail(kind: EventType, p: CommandPayload) -> str:
    params = ", ".join(f"{k}={v}" for k, v in p.parameters.items())
    detail = f"{p.command_id} {p.command_type.value}({params})"  # the id `qubit status` takes
    if p.error and kind in _WITH_REASON:
        detail += f"  reason: {p.error}"
    if isinstance(p, CommandRetryScheduled):
        detail += f"  retry at {p.retry_at:%H:%M:%S}"
    if isinstance(p, CommandHeld):
        detail += f"  asset is {p.asset_state}"
    return detail


def to_json(event: Event) -> str:
    return json.dumps(
        {"event_id": event.event_id, "event_type": event.event_type.value, "timestamp": event.timestamp,
         "payload": event.payload.model_dump(mode="python")},
        default=_json_default, sort_keys=True,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot show {type(value).__name__} as JSON")
