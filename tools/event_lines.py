"""Events as one line for a human, or as one JSON object for a machine (`qubit events`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from coordinator.events import Event, EventType

_WITH_REASON = {
    EventType.COMMAND_FAILED, EventType.COMMAND_TIMED_OUT, EventType.COMMAND_CANCELLED,
    EventType.COMMAND_RETRY_SCHEDULED, EventType.SCHEDULE_REJECTED,
}


def describe(event: Event, clock: datetime | None = None) -> str:
    """``HH:MM:SS  EVENT_TYPE  asset  detail``; ``clock`` overrides the event's own time."""
    p = event.payload
    stamp = (clock or event.timestamp).strftime("%H:%M:%S")
    kind = event.event_type.value
    if event.event_type is EventType.STATE_CHANGED:
        detail = f"{p.get('from_state')} -> {p.get('to_state')} ({p.get('trigger')})"
        return f"{stamp}  {kind:<24} {p.get('asset_id', ''):<13} {detail}"
    if event.event_type is EventType.SCHEDULE_RECEIVED:
        return (f"{stamp}  {kind:<24} {'':<13} {p.get('schedule_id')}: {p.get('command_count')} commands "
                f"for {p.get('asset_count')} assets over {p.get('slot_count')} slots")
    if event.event_type is EventType.SCHEDULE_REJECTED:
        return f"{stamp}  {kind:<24} {'':<13} {p.get('schedule_id')}: {p.get('reason')}: {p.get('message')}"
    if event.event_type is EventType.SERVICE_STATE_CHANGED:
        why = f"  ({'; '.join(p.get('reasons') or [])})" if p.get("reasons") else ""
        return f"{stamp}  {kind:<24} {p.get('service', ''):<13} {p.get('lifecycle')}/{p.get('operational')}/{p.get('health')}{why}"
    if event.event_type in (EventType.EMERGENCY_STOP_ACTIVATED, EventType.EMERGENCY_STOP_RESET):
        return f"{stamp}  {kind:<24} {'site':<13} by {p.get('issued_by')}: {p.get('reason')}"
    if event.event_type is EventType.ASSET_SAFE_STATE:
        detail = p.get("detail") if p.get("safe") else f"NOT SAFE: {p.get('error')}"
        return f"{stamp}  {kind:<24} {p.get('asset_id', ''):<13} {detail}"
    if "command_type" not in p:  # device links, clamps, ...: not about one command
        rest = ", ".join(f"{k}={v}" for k, v in p.items() if k != "asset_id")
        return f"{stamp}  {kind:<24} {p.get('asset_id', ''):<13} {rest}"
    params = ", ".join(f"{k}={v}" for k, v in (p.get("parameters") or {}).items())
    detail = f"{p.get('command_type')}({params})"
    if p.get("error") and event.event_type in _WITH_REASON:
        detail += f"  reason: {p['error']}"
    if event.event_type is EventType.COMMAND_RETRY_SCHEDULED and isinstance(p.get("retry_at"), datetime):
        detail += f"  retry at {p['retry_at']:%H:%M:%S}"
    if event.event_type is EventType.COMMAND_HELD:
        detail += f"  asset is {p.get('asset_state')}"
    return f"{stamp}  {kind:<24} {p.get('asset_id', ''):<13} {detail}"


def to_json(event: Event) -> str:
    return json.dumps(
        {"event_id": event.event_id, "event_type": event.event_type.value, "timestamp": event.timestamp,
         "payload": event.payload},
        default=_json_default, sort_keys=True,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot show {type(value).__name__} as JSON")
