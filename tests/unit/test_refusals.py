"""Refusals: one event and one count for each, log lines rate-limited per topic family."""

from __future__ import annotations

import logging

import pytest

from coordinator.contract.events import MessageRefused, RefusalReason
from coordinator.events import EventBus, EventType
from coordinator.runtime.metrics import ServiceMetrics
from coordinator.runtime.refusals import LOG_BURST, LOG_WINDOW, Refusals, topic_family
from coordinator.runtime.service import EmergencyStopHandler, Service
from coordinator.runtime.supervision import Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def refused_on(bus: EventBus) -> list[MessageRefused]:
    seen: list[MessageRefused] = []
    bus.subscribe(EventType.MESSAGE_REFUSED, lambda e: seen.append(e.payload))  # type: ignore[arg-type]
    return seen


@pytest.mark.parametrize(("topic", "family"), [
    ("qubit/commands/loopback", "commands"),
    ("qubit/status/ocpp/ast_bay_1", "status"),
    ("qubit/schedules/accepted", "schedules/accepted"),
    ("qubit/control/emergency_stop", "control/emergency_stop"),
    ("qubit/query/replies/abc", "query/replies"),
    ("qubit/made-up/x", "other"),
    ("not/ours", "other"),
    ("", "other"),
])
def test_topic_families_are_a_bounded_set(topic, family):
    assert topic_family(topic) == family


def test_every_refusal_is_an_event_and_a_count_but_the_log_is_rate_limited(caplog):
    bus, clock = EventBus(), Clock()
    metrics = ServiceMetrics("gateway-loopback")
    metrics.observe_bus(bus)
    seen = refused_on(bus)
    refusals = Refusals(bus, clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(LOG_BURST + 50):
            refusals.refuse("qubit/commands/loopback", RefusalReason.OUT_OF_RANGE, "power_kw nan")
        refusals.refuse("qubit/results/loopback", RefusalReason.UNREADABLE, "not msgpack")  # a family of its own
        assert len(caplog.records) == LOG_BURST + 1
        clock.now = LOG_WINDOW + 1
        refusals.refuse("qubit/commands/loopback", RefusalReason.OUT_OF_RANGE, "power_kw nan")
    assert "50 more messages on commands refused" in caplog.records[-2].getMessage()
    assert len(seen) == LOG_BURST + 52
    text = metrics.render().decode()
    assert (f'qubit_messages_refused_total{{reason="out_of_range",service="gateway-loopback",topic_family="commands"}} '
            f'{LOG_BURST + 51}.0') in text


def test_a_refusal_never_fails_on_what_it_quotes():
    refusals = Refusals(EventBus())
    refused = refusals.refuse("qubit/" + "x" * 70_000, RefusalReason.INVALID, "y" * 10_000,
                              message_id="cmd_" + "z" * 500, asset_id=12)
    assert len(refused.topic) == 256 and len(refused.detail) < 600
    assert refused.message_id is None and refused.asset_id is None


def test_an_unreadable_emergency_stop_is_refused_and_changes_nothing():
    service = Service()
    seen = refused_on(service.refusals.bus)
    supervisor = Supervisor("planner", lambda *a, **k: None, EventBus())
    handler = EmergencyStopHandler(supervisor, service)
    handler("qubit/control/emergency_stop", b"\x81\xa6active\xc3")  # active, and nothing else
    assert supervisor.emergency is None
    assert [(r.topic, r.reason) for r in seen] == [("qubit/control/emergency_stop", RefusalReason.UNREADABLE)]


def test_setpoint_limits():
    from coordinator.base import Command, CommandType
    from coordinator.setpoint_limits import out_of_range
    from coordinator.site import AssetConfig, AssetKind

    bay = AssetConfig(asset_id="ast_bay_1", kind=AssetKind.EV_CHARGER, gateway_id="gw", max_power_kw=22.0)
    batt = AssetConfig(asset_id="ast_batt_1", kind=AssetKind.BATTERY, gateway_id="gw", max_power_kw=50.0)

    def check(asset, ctype, **parameters):
        return out_of_range(Command(asset.asset_id, ctype, parameters), asset)

    assert check(bay, CommandType.SET_CHARGE_RATE, power_kw=22.0) is None
    assert check(bay, CommandType.SET_CHARGE_RATE, power_kw=0) is None
    assert check(bay, CommandType.START_CHARGING) is None
    assert check(batt, CommandType.SET_DISCHARGE_RATE, power_kw=50.0) is None
    assert check(batt, CommandType.SET_SOC_TARGET, soc_percent=80) is None
    for refused in (check(bay, CommandType.SET_CHARGE_RATE, power_kw=1_000_000.0),
                    check(bay, CommandType.SET_CHARGE_RATE, power_kw=float("nan")),
                    check(bay, CommandType.SET_CHARGE_RATE, power_kw=float("inf")),
                    check(bay, CommandType.SET_CHARGE_RATE, power_kw=-1.0),
                    check(bay, CommandType.SET_CHARGE_RATE, power_kw=True),
                    check(bay, CommandType.SET_CHARGE_RATE),
                    check(bay, CommandType.SET_DISCHARGE_RATE, power_kw=5.0),
                    check(bay, CommandType.START_CHARGING, note=float("-inf")),
                    check(batt, CommandType.SET_SOC_TARGET, soc_percent=101)):
        assert refused is not None
