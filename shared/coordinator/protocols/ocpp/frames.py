"""Checks on a raw OCPP-J frame, before the ``ocpp`` package parses it.

The package hands every frame to ``json.loads``, whose recursion ends in a RecursionError
(not a JSONDecodeError) at a few thousand levels: a 5,000-deep array from an authenticated
charger was a traceback in the gateway. ``too_deep`` finds such a frame with a scan whose
cost is linear in the frame and that stops at the first bracket past the bound.
"""

from __future__ import annotations

import re

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects a frame may have. An OCPP-J frame is one array
around a payload; the deepest schema of 1.6 and 2.0.1 (a charging profile's periods, a
report's variable attributes) is well under 10 levels."""

# A JSON string (escapes included; possessive, so an unterminated one is consumed to the end
# rather than retried from every later quote), or one bracket.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"?|[\[\]{}]', re.DOTALL)
_MESSAGE_ID = re.compile(r'\A\s*\[\s*([234])\s*,\s*"((?:[^"\\]|\\.){1,36}+)"')


def too_deep(frame: str, limit: int = MAX_DEPTH) -> bool:
    """Does ``frame`` nest arrays/objects more than ``limit`` levels? Brackets inside strings do not count."""
    if frame.count("[") + frame.count("{") <= limit:  # the common case, at C speed
        return False
    depth = 0
    for token in _TOKEN.finditer(frame):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif bracket in ("]", "}"):
            depth -= 1  # an unbalanced close is the JSON parser's to refuse
    return False


def message_id(frame: str) -> tuple[int, str] | None:
    """(message type id, unique id) of a frame that starts like an OCPP-J message, without parsing it.

    2 is a Call, 3 a CallResult, 4 a CallError; None when the frame does not start like one."""
    match = _MESSAGE_ID.match(frame)
    return (int(match.group(1)), match.group(2)) if match else None
