"""Typed synchronous pub/sub between the components of one process.

    >>> from coordinator.contract.events import StateChanged
    >>> bus = EventBus()
    >>> seen = []
    >>> _ = bus.subscribe(EventType.STATE_CHANGED, lambda e: seen.append(e.payload.to_state))
    >>> _ = bus.emit(EventType.STATE_CHANGED, StateChanged(asset_id="ast_1", from_state="IDLE",
    ...                                                    to_state="CHARGING", trigger="charge"))
    >>> seen
    ['CHARGING']

Every payload is the event type's model (``coordinator.contract.events``); a mapping given to
``emit`` or ``Event`` is validated into that model, so a payload that does not fit its type
raises at the emitter, never at a reader.

Handlers run in the publisher's thread, in subscription order. A handler that raises is
logged with its traceback and counted in ``handler_errors``; the publisher and the other
handlers carry on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .contract.events import EventPayload, EventType, payload_model
from .ids import EVENT_PREFIX, new_id
from .timeutil import require_aware, utcnow

__all__ = ["Event", "EventBus", "EventPayload", "EventType", "Handler", "Subscription"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its type, its typed payload, when and which.

    ``payload`` may be given as a mapping: it is validated into the type's model
    (pydantic.ValidationError, a ValueError, when it does not fit).
    """

    event_type: EventType
    payload: EventPayload
    timestamp: datetime = field(default_factory=utcnow)
    event_id: str = field(default_factory=lambda: new_id(EVENT_PREFIX))

    def __post_init__(self) -> None:
        require_aware(self.timestamp, "timestamp")
        if not isinstance(self.event_type, EventType):
            object.__setattr__(self, "event_type", EventType(self.event_type))
        object.__setattr__(self, "payload", _typed(self.event_type, self.payload))

    @property
    def asset_id(self) -> str | None:
        """The asset the event is about, None for a site-wide one (schedules, processes)."""
        return self.payload.about_asset


def _typed(event_type: EventType, payload: EventPayload | Mapping[str, Any]) -> EventPayload:
    model = payload_model(event_type)
    if type(payload) is model:
        return payload
    if isinstance(payload, EventPayload):
        raise TypeError(f"{event_type} carries {model.__name__}, not {type(payload).__name__}")
    return model.model_validate(dict(payload))


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
        self._by_type[event_type] = (*self._by_type.get(event_type, ()), handler)
        return Subscription(self, event_type, handler)

    def subscribe_all(self, handler: Handler) -> Subscription:
        """Receive every event, whatever its type."""
        self._all = (*self._all, handler)
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

    def emit(self, event_type: EventType, payload: EventPayload | Mapping[str, Any]) -> Event:
        """Build an Event of ``event_type`` with ``payload`` (its model, or a mapping that fits
        it) and publish it; return the event."""
        event_type = EventType(event_type)
        event = Event(event_type, _typed(event_type, payload))
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
