"""The nesting check on raw OCPP-J frames, and how the gateway's refusals become site-wide ones."""

import json
import logging
import time
from types import SimpleNamespace

from coordinator.contract.events import RefusalReason
from coordinator.events import EventBus, EventType
from coordinator.protocols.ocpp.frames import MAX_DEPTH, message_id, too_deep
from coordinator.runtime.refusals import LOG_BURST, Refusals, topic_family
from coordinator.site import OcppListenConfig
from services.ocpp_gateway.central import CentralSystem


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


class _Sink:
    """The gateway as CentralSystem sees it, for its refusals only."""

    def __init__(self) -> None:
        self.bus = EventBus()
        self.refusals = Refusals(self.bus, clock=lambda: 0.0)


def test_refusals_are_site_wide_events_and_a_hostile_id_is_never_repeated(caplog):
    sink = _Sink()
    seen: list = []
    sink.bus.subscribe(EventType.MESSAGE_REFUSED, seen.append)
    central = CentralSystem(OcppListenConfig(), {"CP001": SimpleNamespace(asset_id="ast_bay_1")}, sink)  # type: ignore[arg-type,dict-item]
    hostile = "CP" + "\x00x" * 5000
    with caplog.at_level(logging.ERROR, logger="services.ocpp_gateway.central"):
        for _ in range(200):
            central.refuse("CP001", RefusalReason.DUPLICATE_CONNECTION, "CP001: already connected")
        central.refuse(hostile, RefusalReason.UNKNOWN_CHARGE_POINT, "connection for an unknown id")
    assert len(seen) == 201  # every refusal is an event; only the log is rate-limited
    first, last = seen[0].payload, seen[-1].payload
    assert (first.topic, first.reason, first.asset_id) == ("ocpp/CP001", RefusalReason.DUPLICATE_CONNECTION,
                                                           "ast_bay_1")
    assert (last.topic, last.asset_id) == ("ocpp/unknown", None) and hostile not in last.detail
    assert {topic_family(e.payload.topic) for e in seen} == {"ocpp"}
    assert len(caplog.records) == LOG_BURST
