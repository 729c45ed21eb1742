"""The nesting check on raw OCPP-J frames, and the gateway's rate-limited refusal log."""

import json
import logging
import time

from coordinator.protocols.ocpp.frames import MAX_DEPTH, message_id, too_deep
from coordinator.protocols.ocpp.refusals import Refusal, Refusals


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


def test_ordinary_frames_pass():
    boot = json.dumps([2, "42", "BootNotification", {"chargePointVendor": "q", "chargePointModel": "m"}])
    profile = json.dumps([2, "7", "SetChargingProfile", {"csChargingProfiles": {"chargingSchedule": {
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}}}])
    assert not too_deep(boot) and not too_deep(profile)
    assert not too_deep(nested(MAX_DEPTH)) and too_deep(nested(MAX_DEPTH + 1))


def test_deep_arrays_and_objects_are_found():
    assert too_deep(nested(5000))
    assert too_deep('[2,"1","Heartbeat",' + '{"a":' * 5000 + "1" + "}" * 5000 + "]")
    assert too_deep("[" * 100_000)  # unterminated: still refused, not handed to the parser


def test_brackets_inside_strings_do_not_count():
    text = json.dumps([2, "1", "DataTransfer", {"data": "[" * 5000 + '\\"{{{{' + "]" * 10}])
    assert not too_deep(text)
    assert too_deep('["\\"", ' + nested(MAX_DEPTH) + "]")  # an escaped quote does not end the string early


def test_wide_frames_are_not_deep_and_the_scan_is_linear():
    wide = "[" + ",".join(["[1]"] * 200_000) + "]"
    assert not too_deep(wide)
    started = time.perf_counter()
    too_deep(wide)
    assert time.perf_counter() - started < 2.0  # 400,000 brackets; quadratic would be hours
    hostile = '"\\"' * 100_000  # quotes and escapes, never closed: one token, not one retry per quote
    started = time.perf_counter()
    assert not too_deep(hostile + nested(MAX_DEPTH + 1))  # all inside the one unterminated string
    assert time.perf_counter() - started < 2.0


def test_message_id_is_read_without_parsing():
    assert message_id('[2, "abc-1", "Heartbeat", ' + nested(5000) + "]") == (2, "abc-1")
    assert message_id('[3,"u-9",' + nested(5000) + "]") == (3, "u-9")
    assert message_id(nested(5000)) is None
    assert message_id('[2,"' + "x" * 37 + '","Heartbeat",{}]') is None  # OCPP ids are at most 36 characters


def test_refusals_are_counted_and_their_log_lines_rate_limited(caplog):
    now = [0.0]
    refusals = Refusals(logging.getLogger("test.refusals"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        for _ in range(200):
            refusals.refuse(Refusal.DUPLICATE_CONNECTION, "refused %s: already connected", "CP001")
        refusals.refuse(Refusal.BAD_CREDENTIALS, "refused %s: wrong or missing credentials", "CP002")
        now[0] = 11.0
        refusals.refuse(Refusal.DUPLICATE_CONNECTION, "refused %s: already connected", "CP001")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused CP001: already connected", "refused CP002: wrong or missing credentials",
                     "refused CP001: already connected "
                     "(and 199 more duplicate_connection refusals since the last line)"]
    assert refusals.counts[Refusal.DUPLICATE_CONNECTION] == 201 and refusals.counts[Refusal.BAD_CREDENTIALS] == 1
