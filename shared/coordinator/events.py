"""Typed synchronous pub/sub between the components of one process.

    >>> bus = EventBus()
    >>> seen = []
    >>> _ = bus.subscribe(EventType.STATE_CHANGED, lambda e: seen.append(e.payload["to_state"]))
    >>> _ = bus.emit(EventType.STATE_CHANGED, {"asset_id": "ast_1", "from_state": "IDLE", "to_state": "CHARGING"})
    >>> seen
    ['CHARGING']

Handlers run in the publisher's thread, in subscription order. A handler that raises is
logged with its traceback and counted in ``handler_errors``; the publisher and the other
handlers carry on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .ids import EVENT_PREFIX, new_id
from .timeutil import require_aware, utcnow

log = logging.getLogger(__name__)


class EventType(StrEnum):
    # the seed's eight
    COMMAND_CREATED = "COMMAND_CREATED"
    COMMAND_DISPATCHED = "COMMAND_DISPATCHED"
    COMMAND_ACKNOWLEDGED = "COMMAND_ACKNOWLEDGED"
    COMMAND_COMPLETED = "COMMAND_COMPLETED"
    COMMAND_FAILED = "COMMAND_FAILED"
    COMMAND_TIMED_OUT = "COMMAND_TIMED_OUT"
    STATE_CHANGED = "STATE_CHANGED"
    SCHEDULE_RECEIVED = "SCHEDULE_RECEIVED"
    # what the lifecycle needs beyond them
    COMMAND_RETRY_SCHEDULED = "COMMAND_RETRY_SCHEDULED"
    COMMAND_CANCELLED = "COMMAND_CANCELLED"
    COMMAND_HELD = "COMMAND_HELD"
    SCHEDULE_REJECTED = "SCHEDULE_REJECTED"
    # from gateways, about devices
    SETPOINT_CLAMPED = "SETPOINT_CLAMPED"
    DEVICE_LINK_DOWN = "DEVICE_LINK_DOWN"
    DEVICE_LINK_UP = "DEVICE_LINK_UP"
    ASSET_SAFE_STATE = "ASSET_SAFE_STATE"
    """A gateway put an asset into its safe state (emergency stop), or says why it could not."""
    # the site and its processes
    EMERGENCY_STOP_ACTIVATED = "EMERGENCY_STOP_ACTIVATED"
    EMERGENCY_STOP_RESET = "EMERGENCY_STOP_RESET"
    SERVICE_STATE_CHANGED = "SERVICE_STATE_CHANGED"
    """A process's lifecycle, operational or health state moved (coordinator.state)."""


@dataclass(frozen=True, slots=True)
class Event:
    event_type: EventType
    payload: Mapping[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)
    event_id: str = field(default_factory=lambda: new_id(EVENT_PREFIX))

    def __post_init__(self) -> None:
        require_aware(self.timestamp, "timestamp")
        if not isinstance(self.event_type, EventType):
            object.__setattr__(self, "event_type", EventType(self.event_type))


Handler = Callable[[Event], Any]


@dataclass(frozen=True, slots=True)
class Subscription:
    """Returned by ``subscribe``; pass it to ``unsubscribe`` (or call ``cancel``)."""

    bus: EventBus
    event_type: EventType | None
    handler: Handler

    def cancel(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    """Synchronous publish/subscribe keyed by EventType, used from one thread (a process's event loop)."""

    def __init__(self) -> None:
        # Copy-on-write tuples: a handler that subscribes or unsubscribes during a publish
        # changes what the next publish sees, not the one under way.
        self._by_type: dict[EventType, tuple[Handler, ...]] = {}
        self._all: tuple[Handler, ...] = ()
        self.handler_errors = 0

    def subscribe(self, event_type: EventType, handler: Handler) -> Subscription:
        event_type = EventType(event_type)
        self._by_type[event_type] = self._by_type.get(event_type, ()) + (handler,)
        return Subscription(self, event_type, handler)

    def subscribe_all(self, handler: Handler) -> Subscription:
        """Receive every event, whatever its type."""
        self._all = self._all + (handler,)
        return Subscription(self, None, handler)

    def unsubscribe(self, subscription: Subscription) -> None:
        """Remove one subscription. Unknown subscriptions are ignored (idempotent)."""
        if subscription.event_type is None:
            self._all = _without(self._all, subscription.handler)
        else:
            current = self._by_type.get(subscription.event_type, ())
            self._by_type[subscription.event_type] = _without(current, subscription.handler)

    def has_subscribers(self, event_type: EventType) -> bool:
        """True if publishing ``event_type`` would reach anyone (lets hot paths skip building events)."""
        return bool(self._all or self._by_type.get(event_type))

    def emit(self, event_type: EventType, payload: Mapping[str, Any] | None = None) -> Event:
        """Build an Event of ``event_type`` and publish it; return the event."""
        event = Event(EventType(event_type), dict(payload or {}))
        self.publish(event)
        return event

    def publish(self, event: Event) -> None:
        for handler in self._by_type.get(event.event_type, ()) + self._all:
            try:
                handler(event)
            except Exception:
                self.handler_errors += 1
                log.exception("event handler %r failed on %s %s", handler, event.event_type, event.event_id)


def _without(handlers: tuple[Handler, ...], handler: Handler) -> tuple[Handler, ...]:
    items = list(handlers)
    if handler in items:
        items.remove(handler)
    return tuple(items)
