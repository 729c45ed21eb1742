"""A charger's answer to one of our calls -> the command's outcome. Pure.

Every status word comes from the ``ocpp`` package's enums; the words are the same in 1.6
and 2.0.1 where both versions have them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ocpp.v16 import enums as v16

from coordinator.contract.messages import Outcome

COMPLETES: frozenset[str] = frozenset({
    v16.ChargingProfileStatus.accepted,  # "Accepted": every call we send
    v16.AvailabilityStatus.scheduled,  # "Scheduled": ChangeAvailability, applied once the session ends
})
"""Answers that complete the command."""

NEVER_SUCCEEDS: frozenset[str] = frozenset({
    v16.ChargingProfileStatus.not_supported,  # "NotSupported"
    v16.TriggerMessageStatus.not_implemented,  # "NotImplemented"
    v16.ClearChargingProfileStatus.unknown,  # "Unknown"
})
"""Answers that say the charger can never do it: a retry would be answered the same."""


def outcome_of(answer: Mapping[str, Any]) -> tuple[Outcome, str | None]:
    """The payload of the charger's answer (snake_case) -> the command's outcome.

    Accepted (and Scheduled, for availability) completes; NotSupported can never succeed
    (refused); anything else (Rejected, a missing or unknown status, ...) failed this attempt
    and may be retried. The answer is read defensively: it comes from the device.
    """
    status = answer.get("status")
    if status in COMPLETES:
        return Outcome.COMPLETED, None
    if isinstance(status, str):
        reason = f"charger answered {status}"
    else:
        reason = f"charger answered without a status: {answer!r:.200}"
    info = answer.get("status_info")
    if info:
        reason += f" ({info.get('reason_code') if isinstance(info, dict) else info})"
    return (Outcome.REFUSED if status in NEVER_SUCCEEDS else Outcome.FAILED), reason
