"""Every refused message of a process: one MESSAGE_REFUSED event and one count, few log lines.

A flood of hostile messages must not become a flood of log lines (1.5 MB of log per flood
before this), yet none of it may go unseen: each refusal is an event on the process's bus
(published on qubit/events/MESSAGE_REFUSED/site, counted by ``qubit_messages_refused_total``
from there), and only its log line is rate-limited, per topic family: the first
``LOG_BURST`` refusals of a family in a ``LOG_WINDOW``, then one summary line with how many
were not logged.

    >>> from coordinator.contract.events import RefusalReason
    >>> refusals = Refusals(EventBus())
    >>> refusals.refuse("qubit/commands/loopback", RefusalReason.OUT_OF_RANGE, "power_kw nan").topic
    'qubit/commands/loopback'
    >>> topic_family("qubit/status/loopback/ast_bay_1")
    'status'
    >>> topic_family("ocpp/CP001")
    'ocpp'

What a process receives from outside the bus is refused the same way, under a topic-like
source of its own: the OCPP gateway's connections and frames under ``ocpp/<charge_point_id>``
(``ocpp/unknown`` for an id the site does not have), family ``ocpp``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.contract.events import MessageRefused, RefusalReason
from coordinator.contract.topics import relative
from coordinator.events import EventBus, EventType

log = logging.getLogger(__name__)

LOG_BURST = 10
"""Refusals of one topic family logged in full per LOG_WINDOW; the rest are summarised."""
LOG_WINDOW = 60.0
"""Seconds."""
MAX_DETAIL = 500
"""A refusal's detail is cut here: it may quote untrusted text (a field's error), never at length."""

_FAMILIES = {"schedules", "control", "query"}  # families whose second level says what they are


OCPP_SOURCE = "ocpp"
"""The first level of the OCPP gateway's sources (``ocpp/<charge_point_id>``) and their family."""


def topic_family(topic: str) -> str:
    """The metric label of ``topic``: its first level under qubit/ (``commands``, ``results``,
    ``status``...), two for schedules, control and query (``schedules/accepted``); ``ocpp``
    for what an OCPP gateway refused. Bounded: a topic outside these is ``other``, so a
    hostile topic cannot grow the label set."""
    source = topic.split("/")
    if source[0] == OCPP_SOURCE and len(source) == 2:
        return OCPP_SOURCE
    levels = relative(topic)  # under the site's topic root
    if not levels:
        return "other"
    parts = ["", *levels]
    if parts[1] in _FAMILIES and len(parts) > 2 and parts[2] in _KNOWN_SECOND.get(parts[1], ()):
        return f"{parts[1]}/{parts[2]}"
    return parts[1] if parts[1] in _KNOWN_FIRST else "other"


_KNOWN_FIRST = frozenset({"schedules", "commands", "results", "status", "telemetry", "state", "events", "services",
                          "control", "query", "sim"})
_KNOWN_SECOND = {"schedules": ("in", "accepted"), "control": ("emergency_stop",), "query": ("requests", "replies")}


def usable_id(value: object) -> str | None:
    """``value`` if it can be named in an event (a string of 1..128 characters), else None."""
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


@dataclass
class _Window:
    started: float
    logged: int = 0
    quiet: int = 0


@dataclass
class Refusals:
    """The process's one way to refuse what it received. ``bus`` is the process's event bus
    (runtime/service.py ``serve`` gives it the one forwarded to the broker and counted in
    metrics); ``clock`` is monotonic seconds, for the log's rate limit."""

    bus: EventBus
    clock: Callable[[], float] = time.monotonic
    _windows: dict[str, _Window] = field(default_factory=dict)

    def refuse(self, topic: str, reason: RefusalReason, detail: str, *, message_id: object = None,
               asset_id: object = None, logger: logging.Logger | None = None) -> MessageRefused:
        """Report one refusal: the event (never rate-limited) and, within the family's
        budget, an ERROR line on ``logger`` (someone sent what no process of the site sends)."""
        detail = detail if len(detail) <= MAX_DETAIL else detail[:MAX_DETAIL] + "..."
        refused = MessageRefused(topic=topic[:256], reason=reason, detail=detail, message_id=usable_id(message_id),
                                 asset_id=usable_id(asset_id))
        self._log(logger or log, refused)
        self.bus.emit(EventType.MESSAGE_REFUSED, refused)
        return refused

    def _log(self, logger: logging.Logger, refused: MessageRefused) -> None:
        family = topic_family(refused.topic)
        now = self.clock()
        window = self._windows.get(family)
        if window is None or now - window.started >= LOG_WINDOW:
            if window is not None and window.quiet:
                logger.error("%d more messages on %s refused in the last %.0f s (not logged one by one; "
                               "see MESSAGE_REFUSED events and qubit_messages_refused_total)",
                               window.quiet, family, now - window.started)
            window = self._windows[family] = _Window(now)
        if window.logged < LOG_BURST:
            window.logged += 1
            logger.error("refused %s on %s: %s%s", refused.reason.value, refused.topic, refused.detail,
                           f" ({refused.message_id})" if refused.message_id else "")
        else:
            window.quiet += 1


class Refused(Exception):
    """Raised by a message handler (one wrapped by runtime/service.py ``receives``) to refuse the
    whole message before it changed anything: ``receives`` reports it, and the process goes on."""

    def __init__(self, reason: RefusalReason, detail: str, *, message_id: object = None,
                 asset_id: object = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.message_id, self.asset_id = reason, detail, message_id, asset_id
