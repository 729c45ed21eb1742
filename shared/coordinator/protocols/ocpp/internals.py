"""Every private member and module global of the ``ocpp`` package this project relies on.

Why not the public API: ``ChargePoint.call`` deep-copies the payload, may validate it, and
builds a result dataclass that raises on any field it does not know; with a thousand chargers
at a slot boundary that was most of the latency (``make bench-ocpp``: p99 about 1.8 s with the
package's defaults, 230-290 ms on this path). So our own calls go through ``exchange`` below,
and inbound validation runs inline (``inline_validation``). Calls from the other side are
answered by ``handle_call`` in place of the package's ``_handle_call``: the same validation,
handlers and answers, without a signature inspection, two regular expressions per key and a
deep copy per call (a thousand chargers telling their status at once during an emergency stop
kept the gateway's loop busy with those). The simulated chargers read their connection
themselves (``receive``) to answer each CSMS call in its own task.

Checked against ``CHECKED_AGAINST``; pyproject.toml pins ocpp to that minor version, and
tests/protocols/test_ocpp_internals.py fails as soon as any member used here changes
(missing, another kind, another signature, a global no longer read).
Nothing outside this module touches a private member of the package.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

import ocpp.messages
from ocpp.charge_point import ChargePoint
from ocpp.messages import Call, CallError, CallResult, validate_payload

from coordinator.protocols.ocpp.payload import answer_payload, call_payload

CHECKED_AGAINST = "2.1"
"""The ocpp minor version these members were read in (ocpp/charge_point.py, ocpp/messages.py)."""

PRIVATE_MEMBERS = ("_call_lock", "_send", "_response_queue", "_connection", "_ocpp_version", "_handle_call")
"""The ``ChargePoint`` members used here: ``exchange``'s one-call-at-a-time lock, sender, and
the queue ``route_message`` puts every CallResult / CallError on; ``receive``'s connection;
the version ``handle_call`` validates against, and ``_handle_call``, which our points
override with ``handle_call``."""

VALIDATION_GLOBAL = "ASYNC_VALIDATION"
"""``ocpp.messages.ASYNC_VALIDATION``: True runs each schema validation in an executor thread."""


def inline_validation() -> None:
    """Validate inbound messages on the event loop instead of an executor thread.

    With many chargers a thread hand-off per message cost more than the check itself (field
    notes). Raises RuntimeError when the package no longer has the global, rather than
    setting an attribute nobody reads.
    """
    if not isinstance(getattr(ocpp.messages, VALIDATION_GLOBAL, None), bool):
        raise RuntimeError(f"ocpp.messages.{VALIDATION_GLOBAL} is gone (checked against ocpp {CHECKED_AGAINST})")
    setattr(ocpp.messages, VALIDATION_GLOBAL, False)


async def exchange(
    point: ChargePoint, message: Call, on_stray: Callable[[CallResult | CallError], None] | None = None
) -> CallResult | CallError:
    """Send ``message`` on ``point`` and return the charger's answer to it (CallResult or CallError).

    Keeps the package's rules: one call at a time per connection (its lock), answers arrive
    through its response queue. A stray answer (to an earlier call that timed out) is passed
    to ``on_stray`` and skipped. Waits as long as the charger takes: bound it with
    ``asyncio.timeout``. Raises websockets' ConnectionClosed when the link drops.
    """
    queue: asyncio.Queue[CallResult | CallError] = point._response_queue
    async with point._call_lock:
        await point._send(message.to_json())  # type: ignore[no-untyped-call]  # ocpp leaves both unannotated
        # One call at a time per connection (the lock): the next answer is ours, unless a
        # late answer to a call that timed out comes first.
        while (response := await queue.get()).unique_id != message.unique_id:
            if on_stray is not None:
                on_stray(response)
    return response


async def receive(point: ChargePoint) -> str:
    """The next message on ``point``'s connection, read as the package's own ``start`` reads it.

    For a reader that routes each message itself (``route_message`` is public). Raises
    websockets' ConnectionClosed when the link drops.
    """
    message: str = await point._connection.recv()
    return message


async def handle_call(point: ChargePoint, message: Call) -> None:
    """Answer a call from the other side as the package's ``ChargePoint._handle_call`` does:
    the handler's schema validation of the call and of the answer (unless the handler skips
    it), the handler called with snake_case keywords (and ``call_unique_id`` when it takes it),
    a CallError when it raises, the camelCase answer, then the ``after`` hook in a task of its
    own. Raises the package's OCPPError for an unknown action or an invalid payload; its
    ``route_message`` answers those with a CallError."""
    handlers: dict[str, Any] | None = point.route_map.get(message.action)
    if handlers is None or "_on_action" not in handlers or not isinstance(message.payload, dict):
        # the package's own path and errors (NotImplemented, NotSupported), whoever overrides it
        await ChargePoint._handle_call(point, message)  # type: ignore[no-untyped-call]
        return
    validate = not handlers.get("_skip_schema_validation", False)
    if validate:
        await validate_payload(message, point._ocpp_version)  # type: ignore[attr-defined]
    arguments = answer_payload(message.payload)
    handler = handlers["_on_action"]
    try:
        answer = handler(**arguments, **_unique_id(handler, message))
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception as exc:  # as the package does: the other side gets a CallError, the link goes on
        point.logger.exception("Error while handling request '%s'", message)
        await point._send(message.create_call_error(exc).to_json())  # type: ignore[no-untyped-call]
        return
    result = message.create_call_result(call_payload(answer))  # type: ignore[no-untyped-call]
    if validate:
        await validate_payload(result, point._ocpp_version)  # type: ignore[attr-defined]
    await point._send(result.to_json())  # type: ignore[no-untyped-call]
    after = handlers.get("_after_action")
    if after is not None:
        follow_up = after(**arguments, **_unique_id(after, message))
        if inspect.isawaitable(follow_up):  # a task: an after hook may make calls of its own
            task = asyncio.ensure_future(follow_up)
            _follow_ups.add(task)  # held: the loop keeps only weak references
            task.add_done_callback(_follow_ups.discard)


_follow_ups: set[asyncio.Future[Any]] = set()


def _unique_id(handler: Any, message: Call) -> dict[str, str]:
    return {"call_unique_id": message.unique_id} if _takes_unique_id(getattr(handler, "__func__", handler)) else {}


@functools.cache
def _takes_unique_id(handler: Callable[..., Any]) -> bool:
    """Does a handler want the call's unique id? (The package's rule, asked once per handler.)"""
    return "call_unique_id" in inspect.signature(handler).parameters
