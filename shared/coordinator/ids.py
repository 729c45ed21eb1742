"""Qubit identifiers: a type prefix (``cmd_``, ``evt_``, ``sch_``) and 12 hex digits."""

from __future__ import annotations

import hashlib
import os

COMMAND_PREFIX = "cmd_"
EVENT_PREFIX = "evt_"
SCHEDULE_PREFIX = "sch_"


def new_id(prefix: str) -> str:
    """Return ``prefix`` followed by 12 random hex digits (48 bits of entropy)."""
    return prefix + os.urandom(6).hex()


def new_ids(prefix: str, count: int) -> list[str]:
    """Return ``count`` fresh ids at once; one urandom call instead of ``count`` calls."""
    raw = os.urandom(6 * count).hex()
    return [prefix + raw[i : i + 12] for i in range(0, 12 * count, 12)]


def schedule_content_id(data: bytes) -> str:
    """The id of a schedule sent without one: derived from its bytes, so the same schedule
    sent twice is recognised as one."""
    return SCHEDULE_PREFIX + hashlib.blake2b(data, digest_size=6).hexdigest()
