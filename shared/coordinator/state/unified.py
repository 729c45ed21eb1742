"""``UnifiedStateMachine``: a module's lifecycle, operational and health layers behind one
event queue (seed 004).

    >>> sm = UnifiedStateMachine(module_name="my_module")
    >>> _ = sm.handle_event(EventType.START)
    >>> _ = sm.handle_event(EventType.INIT_SUCCESS)
    >>> print(sm.handle_event(EventType.SET_READY))
    Active/Ready/Healthy

How the queue works: the thread that hands in an event while nothing is being processed
processes the queue until it is empty, running callbacks without holding the lock. An event
handed in meanwhile is queued: HIGH before NORMAL before LOW, in arrival order within a
priority. From a callback (the processing thread itself) the call returns None at once and
the event is handled right after the current one; from another thread the call waits until
its event has been handled and then returns or raises as if it had been alone.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from ..timeutil import utcnow
from .state_events import EventType, StateEvent
from .state_types import HealthState, InvalidTransitionError, LifecycleState, OperationalState, StateSnapshot
from .transitions import Step, resolve

log = logging.getLogger(__name__)

S = TypeVar("S", LifecycleState, OperationalState, HealthState)
StateCallback = Callable[[S, S, StateEvent], object]
"""Called as ``callback(old_state, new_state, event)`` after the event has been applied."""


@dataclass(frozen=True, slots=True)
class HandledEvent:
    """One entry of ``UnifiedStateMachine.history``: an event and what it did. Refused
    events are kept too, with ``error`` set and ``after == before``."""

    event: StateEvent
    before: StateSnapshot
    after: StateSnapshot
    handled_at: datetime
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None


@dataclass(eq=False, slots=True)
class _Ticket:
    event: StateEvent
    done: bool = False
    result: StateSnapshot | None = None
    error: BaseException | None = None

    def outcome(self) -> StateSnapshot:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class UnifiedStateMachine:
    """Three layers (lifecycle, operational, health) of one module, driven by events.

    Starts Offline / Idle / Healthy. Thread-safe; see the module docstring for the queue.

        >>> sm = UnifiedStateMachine(module_name="my_module")
        >>> try:
        ...     sm.handle_event(EventType.TASK_START)
        ... except InvalidTransitionError as e:
        ...     print(f"Invalid event: {e}")
        Invalid event: Cannot transition from Idle to Running with event TASK_START
    """

    def __init__(self, module_name: str, *, history_limit: int = 1000) -> None:
        if not isinstance(module_name, str) or not module_name:
            raise ValueError("module_name must be a non-empty string")
        self.module_name = module_name
        self._states = StateSnapshot()
        self._lock = threading.Lock()
        # notified whenever an event has been handled or the processing thread leaves
        self._changed = threading.Condition(self._lock)
        self._queue: list[tuple[int, int, _Ticket]] = []
        self._seq = itertools.count()
        self._processor: int | None = None  # ident of the thread processing the queue
        self._history: deque[HandledEvent] = deque(maxlen=history_limit)
        self._callbacks: dict[str, list[StateCallback[Any]]] = {"lifecycle": [], "operational": [], "health": []}

    # -- reading ---------------------------------------------------------------------

    def get_lifecycle_state(self) -> LifecycleState:
        return self._states.lifecycle

    def get_operational_state(self) -> OperationalState:
        return self._states.operational

    def get_health_state(self) -> HealthState:
        return self._states.health

    @property
    def states(self) -> StateSnapshot:
        """All three layers, read at once (a snapshot is immutable, so never half-updated)."""
        return self._states

    def get_all_states(self) -> dict[str, LifecycleState | OperationalState | HealthState]:
        """``{"lifecycle": "Active", "operational": "Ready", "health": "Healthy"}`` (str enums)."""
        return self._states.as_dict()

    @property
    def history(self) -> list[HandledEvent]:
        """The last ``history_limit`` handled events, oldest first, refused ones included."""
        with self._lock:
            return list(self._history)

    @property
    def queue_depth(self) -> int:
        """Events waiting behind the one being processed."""
        with self._lock:
            return len(self._queue)

    # -- callbacks -------------------------------------------------------------------

    def register_lifecycle_callback(self, callback: StateCallback[LifecycleState]) -> StateCallback[LifecycleState]:
        """Call ``callback(old_state, new_state, event)`` whenever an event moves the
        lifecycle layer (self-transitions such as an EMERGENCY_STOP while ShuttingDown
        included). Returns ``callback``, so it also works as a decorator.

            >>> def on_lifecycle_event(old_state, new_state, event):
            ...     print(f"Lifecycle: {old_state} → {new_state}")
            >>> sm = UnifiedStateMachine(module_name="my_module")
            >>> _ = sm.register_lifecycle_callback(on_lifecycle_event)
            >>> _ = sm.handle_event(EventType.START)
            Lifecycle: Offline → Initializing
        """
        return self._register("lifecycle", callback)

    def register_operational_callback(
        self, callback: StateCallback[OperationalState]
    ) -> StateCallback[OperationalState]:
        """As ``register_lifecycle_callback``, for the operational layer."""
        return self._register("operational", callback)

    def register_health_callback(self, callback: StateCallback[HealthState]) -> StateCallback[HealthState]:
        """As ``register_lifecycle_callback``, for the health layer (a FAULT while Critical
        calls it with old and new both Critical: the payload is new)."""
        return self._register("health", callback)

    def _register(self, layer: str, callback: StateCallback[S]) -> StateCallback[S]:
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        with self._lock:
            self._callbacks[layer].append(callback)
        return callback

    # -- handling --------------------------------------------------------------------

    def handle_event(self, event: EventType | StateEvent) -> StateSnapshot | None:
        """Handle ``event`` (an EventType, or a StateEvent to carry a payload).

        Returns the states right after this event was applied. Raises
        InvalidTransitionError if the current state refuses it (nothing changes), ValueError
        for a malformed RECOVER / PRIORITY_OVERRIDE payload, TypeError for anything but an
        EventType or StateEvent (strings included). Called from one of this machine's
        callbacks it returns None at once: the event is queued and handled as soon as the
        current one is done; if it is refused, that is logged and kept in ``history``.

            >>> sm = UnifiedStateMachine(module_name="my_module")
            >>> sm.handle_event(EventType.START).lifecycle
            <LifecycleState.INITIALIZING: 'Initializing'>
        """
        ticket = _Ticket(_as_state_event(event))
        role = self._submit(ticket)
        if role == "queued":
            return None
        if role == "process":
            self._process_queue()
        self._wait(ticket)
        return ticket.outcome()

    async def handle_event_async(self, event: EventType | StateEvent) -> StateSnapshot | None:
        """``handle_event`` for coroutines: same result and errors, and the event loop is not
        blocked while another thread is processing the queue. When the queue is free the
        event is handled right away on the loop's thread, callbacks included.

            >>> async def main():
            ...     sm = UnifiedStateMachine(module_name="my_module")
            ...     return await sm.handle_event_async(EventType.START)
            >>> str(asyncio.run(main()))
            'Initializing/Idle/Healthy'
        """
        ticket = _Ticket(_as_state_event(event))
        role = self._submit(ticket)
        if role == "queued":
            return None
        if role == "process":
            self._process_queue()
        else:
            await asyncio.to_thread(self._wait, ticket)
        return ticket.outcome()

    def _submit(self, ticket: _Ticket) -> Literal["queued", "process", "wait"]:
        """Queue ``ticket`` and say what the calling thread does next: nothing (it is the
        processing thread, in a callback), process the queue, or wait for its turn."""
        with self._lock:
            # heapq pops the smallest: negate the priority so HIGH comes first; the sequence
            # number keeps arrival order within a priority
            heapq.heappush(self._queue, (-ticket.event.priority, next(self._seq), ticket))
            me = threading.get_ident()
            if self._processor == me:
                return "queued"
            if self._processor is None:
                self._processor = me
                return "process"
            return "wait"

    def _wait(self, ticket: _Ticket) -> None:
        """Block until ``ticket`` is handled, taking over the queue if its processor left."""
        while True:
            with self._lock:
                while not ticket.done and self._processor is not None:
                    self._changed.wait()
                if ticket.done:
                    return
                # the processing thread left (an exception such as KeyboardInterrupt in a
                # callback) before reaching this event: carry on in its place
                self._processor = threading.get_ident()
            self._process_queue()

    def _process_queue(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._queue:
                        return
                    ticket = heapq.heappop(self._queue)[2]
                    steps, callbacks = self._apply(ticket)
                try:
                    # logging and callbacks run unlocked, so that other threads can queue
                    # events (a FAULT jumping ahead) while a slow callback runs
                    self._log(ticket, steps)
                    for step in steps:
                        for callback in callbacks[step.layer]:
                            self._call(callback, step, ticket.event)
                finally:
                    with self._lock:
                        ticket.done = True
                        self._changed.notify_all()
        finally:
            with self._lock:
                self._processor = None
                self._changed.notify_all()

    def _apply(self, ticket: _Ticket) -> tuple[tuple[Step, ...], dict[str, list[StateCallback[Any]]]]:
        """Under the lock: resolve, update the states, record. Never raises: a refusal is
        stored on the ticket, for its caller."""
        event = ticket.event
        before = self._states
        try:
            steps = resolve(before, event)
        except Exception as exc:
            ticket.error = exc
            self._history.append(HandledEvent(event, before, before, utcnow(), error=str(exc)))
            return (), {}
        after = before
        for step in steps:
            after = after.with_state(step.layer, step.new)
        self._states = after
        ticket.result = after
        self._history.append(HandledEvent(event, before, after, utcnow()))
        return steps, {layer: list(items) for layer, items in self._callbacks.items()}

    def _log(self, ticket: _Ticket, steps: tuple[Step, ...]) -> None:
        event = ticket.event
        name = event.event_type.name
        extra = self._log_extra(event)
        if ticket.error is not None:
            refused = isinstance(ticket.error, (InvalidTransitionError, ValueError))
            level = logging.WARNING if refused else logging.ERROR
            log.log(level, "Rejected event %s: %s", name, ticket.error, extra=extra)
            return
        for step in steps:
            log.info("Handling event %s: %s → %s", name, step.old, step.new, extra={**extra, "layer": step.layer})
        if not steps:
            log.info("Handling event %s: no state change", name, extra=extra)

    def _log_extra(self, event: StateEvent) -> dict[str, object]:
        return {"module_name": self.module_name, "event_id": event.event_id}

    def _call(self, callback: StateCallback[Any], step: Step, event: StateEvent) -> None:
        # A failing observer must not stop the machine: the state has already changed and
        # other threads may be waiting on the queue.
        try:
            callback(step.old, step.new, event)
        except Exception:
            log.exception(
                "%s callback %r failed on event %s", step.layer, callback, event.event_type.name,
                extra=self._log_extra(event),
            )

    def __repr__(self) -> str:
        return f"<UnifiedStateMachine {self.module_name} {self._states}>"


def _as_state_event(event: EventType | StateEvent) -> StateEvent:
    if isinstance(event, StateEvent):
        return event
    if isinstance(event, EventType):
        return StateEvent(event_type=event)
    hint = ""
    if isinstance(event, str):
        match = EventType._value2member_map_.get(event) or EventType.__members__.get(event)
        hint = f"; use EventType.{match.name}" if match is not None else ""
    raise TypeError(f"handle_event takes an EventType or a StateEvent, not {type(event).__name__} {event!r}{hint}")
