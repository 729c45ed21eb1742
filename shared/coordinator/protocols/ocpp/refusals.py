"""What the OCPP gateway refused, counted by reason, with its log lines rate-limited.

A flood of refused connections or frames must not become a flood of log lines: the first of
each reason is logged, then at most one line per ``interval`` seconds with how many were
left out. Never logs a credential or a frame's content.

Until the site-wide MESSAGE_REFUSED event lands (coordinator/runtime/service.py), this is
where the gateway's refusals are counted; ``counts`` is what its metric will report.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from enum import StrEnum


class Refusal(StrEnum):
    """Why the gateway refused a connection or a frame (the reason code of a refusal)."""

    UNKNOWN_CHARGE_POINT = "unknown_charge_point"
    BAD_CREDENTIALS = "bad_credentials"
    NO_SUBPROTOCOL = "no_subprotocol"
    DUPLICATE_CONNECTION = "duplicate_connection"
    NESTING_TOO_DEEP = "nesting_too_deep"


class Refusals:
    """Counts per reason; logs each reason at most once per ``interval`` seconds."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.interval, self.clock = logger, interval, clock
        self.counts: Counter[Refusal] = Counter()
        self._logged_at: dict[Refusal, float] = {}
        self._quiet: Counter[Refusal] = Counter()

    def refuse(self, reason: Refusal, message: str, *args: object) -> bool:
        """Count one refusal; log ``message % args`` unless this reason was logged recently.

        Returns whether the line was logged."""
        self.counts[reason] += 1
        now = self.clock()
        last = self._logged_at.get(reason)
        if last is not None and now - last < self.interval:
            self._quiet[reason] += 1
            return False
        self._logged_at[reason] = now
        quiet = self._quiet.pop(reason, 0)
        suffix = f" (and {quiet} more {reason.value} refusals since the last line)" if quiet else ""
        self.log.warning(message + "%s", *args, suffix)
        return True
