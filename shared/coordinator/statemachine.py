"""A small finite state machine that guards one asset (used from one thread, as every
object of the library: a process's event loop).

    >>> sm = StateMachine(
    ...     asset_id="ast_custom_001",
    ...     states={"OFF", "STARTING", "RUNNING", "STOPPING"},
    ...     initial_state="OFF",
    ...     transitions={
    ...         "OFF": {"start": "STARTING"},
    ...         "STARTING": {"ready": "RUNNING", "fail": "OFF"},
    ...         "RUNNING": {"stop": "STOPPING"},
    ...         "STOPPING": {"stopped": "OFF"},
    ...     },
    ... )
    >>> sm.trigger("start")
    'STARTING'
    >>> sm.available_triggers()
    ['ready', 'fail']
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import TypedDict

from .contract.events import StateChanged
from .events import EventBus, EventType
from .timeutil import utcnow


class HistoryEntry(TypedDict):
    from_state: str
    to_state: str
    trigger: str
    timestamp: datetime


TransitionListener = Callable[[str, str, str], None]
"""Called as listener(from_state, to_state, trigger) after every transition."""


class InvalidTransition(Exception):
    """A trigger that is not allowed from the current state."""

    def __init__(self, asset_id: str, current_state: str, trigger: str, valid_triggers: list[str]) -> None:
        self.asset_id = asset_id
        self.current_state = current_state
        self.trigger = trigger
        self.valid_triggers = valid_triggers
        super().__init__(
            f"{asset_id}: trigger {trigger!r} is not valid from state {current_state}; "
            f"valid triggers: {', '.join(valid_triggers) or 'none'}"
        )


class TransitionTable(Mapping[str, Mapping[str, str]]):
    """A checked, read-only ``transitions[state][trigger] -> next state`` that many machines
    share: a site's 5,000 chargers hold one table, not 5,000 copies (about 2 KB each)."""

    def __init__(self, states: Iterable[str], transitions: Mapping[str, Mapping[str, str]]) -> None:
        self.states = frozenset(states)
        self.table = {src: dict(by_trigger) for src, by_trigger in transitions.items()}
        _check_table(self.states, self.table)

    def __getitem__(self, state: str) -> Mapping[str, str]:
        return MappingProxyType(self.table[state])

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


class StateMachine:
    """A configurable FSM: ``transitions[state][trigger] -> next state``.

    Every transition is appended to ``history`` (the last ``history_limit`` entries are
    kept) and, when an ``event_bus`` is given, published as STATE_CHANGED with
    ``asset_id``, ``from_state``, ``to_state`` and ``trigger``; events are published in
    transition order.
    """

    def __init__(
        self,
        asset_id: str,
        states: Iterable[str],
        initial_state: str,
        transitions: Mapping[str, Mapping[str, str]],
        event_bus: EventBus | None = None,
        history_limit: int = 1000,
    ) -> None:
        self.asset_id = asset_id
        if isinstance(transitions, TransitionTable):  # checked once for every machine of its kind
            self.states, self._transitions = transitions.states, transitions.table
            _check_config(self.states, initial_state, {})
        else:
            self.states = frozenset(states)
            self._transitions = {src: dict(by_trigger) for src, by_trigger in transitions.items()}
            _check_config(self.states, initial_state, self._transitions)
        self._state = initial_state
        self._event_bus = event_bus
        self._history_limit = history_limit
        self._history: deque[HistoryEntry] | None = None  # made at the first transition: most never move
        self._listeners: list[TransitionListener] = []

    @property
    def state(self) -> str:
        return self._state

    @property
    def history(self) -> list[HistoryEntry]:
        return list(self._history or ())

    def can_trigger(self, trigger: str) -> bool:
        return trigger in self._transitions.get(self._state, {})

    def available_triggers(self) -> list[str]:
        return list(self._transitions.get(self._state, {}))

    def triggers_to(self, target: str) -> list[str] | None:
        """The shortest list of triggers that leads from the current state to ``target``.

        ``[]`` if already there, None if ``target`` cannot be reached. Used to follow a
        device that reports a state without saying how it got there.
        """
        start = self._state
        if target == start:
            return []
        paths: dict[str, list[str]] = {start: []}
        frontier = [start]
        while frontier:
            following = []
            for state in frontier:
                for trig, nxt in self._transitions.get(state, {}).items():
                    if nxt not in paths:
                        paths[nxt] = paths[state] + [trig]
                        if nxt == target:
                            return paths[nxt]
                        following.append(nxt)
            frontier = following
        return None

    def restore(self, state: str) -> None:
        """Put the machine back in ``state`` without a transition (recovery after a restart):
        no history entry, no event."""
        if state not in self.states:
            raise ValueError(f"{state!r} is not one of the states")
        self._state = state

    def add_listener(self, listener: TransitionListener) -> None:
        """Call ``listener(from_state, to_state, trigger)`` after each transition, before the bus event."""
        self._listeners.append(listener)

    def trigger(self, trigger: str) -> str:
        """Fire ``trigger``; return the new state or raise InvalidTransition (state unchanged)."""
        from_state = self._state
        to_state = self._transitions.get(from_state, {}).get(trigger)
        if to_state is None:
            raise InvalidTransition(self.asset_id, from_state, trigger, self.available_triggers())
        self._state = to_state
        if self._history is None:
            self._history = deque(maxlen=self._history_limit)
        self._history.append(
            HistoryEntry(from_state=from_state, to_state=to_state, trigger=trigger, timestamp=utcnow())
        )
        for listener in self._listeners:
            listener(from_state, to_state, trigger)
        if self._event_bus is not None:
            self._event_bus.emit(
                EventType.STATE_CHANGED,
                StateChanged(asset_id=self.asset_id, from_state=from_state, to_state=to_state, trigger=trigger),
            )
        return to_state

    def __repr__(self) -> str:
        return f"<StateMachine {self.asset_id} state={self._state}>"


def _check_config(states: frozenset[str], initial: str, transitions: Mapping[str, Mapping[str, str]]) -> None:
    if initial not in states:
        raise ValueError(f"initial_state {initial!r} is not one of the states {sorted(states)}")
    _check_table(states, transitions)


def _check_table(states: frozenset[str], transitions: Mapping[str, Mapping[str, str]]) -> None:
    for source, by_trigger in transitions.items():
        if source not in states:
            raise ValueError(f"transition source {source!r} is not one of the states")
        for trig, target in by_trigger.items():
            if target not in states:
                raise ValueError(f"transition {source} -{trig}-> {target!r}: target is not one of the states")
