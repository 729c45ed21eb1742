"""Every private member and module global of the ``ocpp`` package this project relies on.

Why not the public API: ``ChargePoint.call`` deep-copies the payload, may validate it, and
builds a result dataclass that raises on any field it does not know; with a thousand chargers
at a slot boundary that was most of the latency (``make bench-ocpp``: p99 about 1.8 s with the
package's defaults, 230-290 ms on this path). So our own calls go through ``exchange`` below,
and inbound validation runs inline (``inline_validation``). The simulated chargers read their
connection themselves (``receive``) to answer each CSMS call in its own task.

Checked against ``CHECKED_AGAINST``; pyproject.toml pins ocpp to that minor version, and
tests/protocols/test_ocpp_internals.py fails as soon as any member used here changes
(missing, another kind, another signature, a global no longer read).
Nothing outside this module touches a private member of the package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import ocpp.messages
from ocpp.charge_point import ChargePoint
from ocpp.messages import Call, CallError, CallResult

CHECKED_AGAINST = "2.1"
"""The ocpp minor version these members were read in (ocpp/charge_point.py, ocpp/messages.py)."""

PRIVATE_MEMBERS = ("_call_lock", "_send", "_response_queue", "_connection")
"""The ``ChargePoint`` members used here: ``exchange``'s one-call-at-a-time lock, sender, and
the queue ``route_message`` puts every CallResult / CallError on; ``receive``'s connection."""

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
