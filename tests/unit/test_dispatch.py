from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from coordinator import (
    CoordinatorConfig,
    DispatchEngine,
    Event,
    EventBus,
    EventType,
    ScheduleError,
    create_battery_state_machine,
    create_ev_charger_state_machine,
)
from coordinator.adapters.base import ProtocolAdapter, TranslationError
from coordinator.base import Command, CommandStatus, CommandType

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


class EchoAdapter(ProtocolAdapter):
    """A pure adapter for these tests: echoes the command, refuses power above 50 kW."""

    protocol = "echo"

    def translate(self, command):
        if command.parameters.get("power_kw", 0) > 50:
            raise TranslationError("above 50 kW")
        return {"asset": command.asset_id, "type": command.command_type.value, **command.parameters}


@pytest.fixture
def bus_log():
    bus = EventBus()
    log: list[Event] = []
    bus.subscribe_all(log.append)
    return bus, log


def types(log):
    return [e.event_type for e in log]


def schedule(**cols):
    idx = pd.date_range(T0, periods=len(next(iter(cols.values()))), freq="15min")
    return pd.DataFrame(cols, index=idx)


def test_schedule_to_commands_publishes_received_and_created(bus_log):
    bus, log = bus_log
    engine = DispatchEngine(event_bus=bus)
    cmds = engine.schedule_to_commands(schedule(ev_1_kw=[7.0, 7.0, 0.0]), {"ev_1": "a"}, schedule_id="sch_x")
    assert len(cmds) == 2
    assert types(log) == [EventType.SCHEDULE_RECEIVED, EventType.COMMAND_CREATED, EventType.COMMAND_CREATED]
    assert log[0].payload["command_count"] == 2 and log[0].payload["schedule_id"] == "sch_x"
    assert engine.get_command(cmds[0].command_id) is cmds[0]
    assert engine.get_commands_for_asset("a") == cmds


def test_rejected_schedule_queues_nothing_and_says_why(bus_log):
    bus, log = bus_log
    engine = DispatchEngine(event_bus=bus)
    with pytest.raises(ScheduleError):
        engine.schedule_to_commands(schedule(ev_1_kw=[1.0, -1.0]), {"ev_1": "a"}, schedule_id="sch_bad")
    assert types(log) == [EventType.SCHEDULE_REJECTED]
    assert log[0].payload["reason"] == "negative_power" and log[0].payload["schedule_id"] == "sch_bad"
    assert engine.commands == [] and engine.get_pending_commands(T0 + 60 * MIN) == []


def test_full_lifecycle_pending_dispatched_completed(bus_log):
    bus, log = bus_log
    engine = DispatchEngine(event_bus=bus)
    c1, c2 = engine.schedule_to_commands(schedule(ev_1_kw=[7.0, 11.0]), {"ev_1": "a"})
    assert engine.get_pending_commands(T0 - MIN) == []
    assert engine.get_pending_commands(T0) == [c1]
    payload = engine.dispatch_command(c1, EchoAdapter("gw"), now=T0)
    assert payload == {"asset": "a", "type": "SET_CHARGE_RATE", "power_kw": 7.0}
    assert c1.status is CommandStatus.DISPATCHED and c1.attempts == 1
    engine.handle_acknowledgement(c1)
    assert c1.status is CommandStatus.ACKNOWLEDGED
    assert engine.handle_response(c1, success=True, now=T0 + MIN) is CommandStatus.COMPLETED
    assert engine.get_pending_commands(T0 + 15 * MIN) == [c2]
    assert types(log)[-3:] == [
        EventType.COMMAND_DISPATCHED, EventType.COMMAND_ACKNOWLEDGED, EventType.COMMAND_COMPLETED]
    dispatched = next(e for e in log if e.event_type is EventType.COMMAND_DISPATCHED)
    assert dispatched.payload["command_type"] == "SET_CHARGE_RATE" and dispatched.payload["asset_id"] == "a"


def test_one_command_in_flight_per_asset_and_newest_setpoint_wins(bus_log):
    bus, _ = bus_log
    engine = DispatchEngine(event_bus=bus)
    c1, c2, c3 = engine.schedule_to_commands(schedule(ev_1_kw=[7.0, 11.0, 3.0]), {"ev_1": "a"})
    engine.dispatch_command(c1, EchoAdapter("gw"), now=T0)
    # c2 and c3 fall due while c1 is in flight: nothing else goes to this asset
    assert engine.get_pending_commands(T0 + 30 * MIN) == []
    assert c2.status is CommandStatus.CANCELLED and "superseded by " + c3.command_id in (c2.error or "")
    engine.handle_response(c1, success=True)
    assert engine.get_pending_commands(T0 + 30 * MIN) == [c3]
    with pytest.raises(ValueError):
        engine.dispatch_command(c2, EchoAdapter("gw"))  # a cancelled command is never sent


def test_dispatching_while_another_is_in_flight_is_refused():
    engine = DispatchEngine()
    a = Command("a", CommandType.START_CHARGING, scheduled_at=T0)
    b = Command("a", CommandType.STOP_CHARGING, scheduled_at=T0)
    engine.add_commands([a, b])
    engine.dispatch_command(a, EchoAdapter("gw"), now=T0)
    with pytest.raises(ValueError, match="in flight"):
        engine.dispatch_command(b, EchoAdapter("gw"), now=T0)


def test_non_setpoint_commands_keep_their_order_and_are_not_superseded():
    engine = DispatchEngine()
    start = Command("a", CommandType.START_CHARGING, scheduled_at=T0)
    stop = Command("a", CommandType.STOP_CHARGING, scheduled_at=T0 + MIN)
    engine.add_commands([stop, start])
    assert engine.get_pending_commands(T0 + 2 * MIN) == [start]
    engine.dispatch_command(start, EchoAdapter("gw"), now=T0 + 2 * MIN)
    engine.handle_response(start, success=True)
    assert engine.get_pending_commands(T0 + 2 * MIN) == [stop]


def test_priority_orders_assets():
    engine = DispatchEngine()
    low = Command("a", CommandType.SET_POWER_LIMIT, {"power_kw": 1.0}, T0)
    high = Command("b", CommandType.SET_POWER_LIMIT, {"power_kw": 1.0}, T0 + MIN, priority=5)
    engine.add_commands([low, high])
    assert engine.get_pending_commands(T0 + MIN) == [high, low]


def test_failure_retries_with_exponential_backoff_then_fails(bus_log):
    bus, log = bus_log
    engine = DispatchEngine(event_bus=bus, config=CoordinatorConfig(retry_base_delay_seconds=1.0))
    (cmd,) = engine.schedule_to_commands(schedule(ev_1_kw=[7.0]), {"ev_1": "a"})
    now = T0
    retry_at = []
    for attempt in range(1, 5):
        assert engine.get_pending_commands(now) == [cmd]
        engine.dispatch_command(cmd, EchoAdapter("gw"), now=now)
        status = engine.handle_response(cmd, success=False, error="connection timeout", now=now)
        if attempt <= 3:
            assert status is CommandStatus.PENDING and cmd.next_attempt_at is not None
            retry_at.append((cmd.next_attempt_at - now).total_seconds())
            assert engine.get_pending_commands(now) == []  # backing off
            now = cmd.next_attempt_at
    assert retry_at == [1.0, 2.0, 4.0]
    assert cmd.status is CommandStatus.FAILED and cmd.attempts == 4 and cmd.error == "connection timeout"
    assert types(log).count(EventType.COMMAND_RETRY_SCHEDULED) == 3
    assert types(log).count(EventType.COMMAND_FAILED) == 1


def test_timeout_retries_then_times_out(bus_log):
    bus, log = bus_log
    engine = DispatchEngine(event_bus=bus, config=CoordinatorConfig(max_retries=1, command_timeout_seconds=10))
    (cmd,) = engine.schedule_to_commands(schedule(ev_1_kw=[7.0]), {"ev_1": "a"})
    engine.dispatch_command(cmd, EchoAdapter("gw"), now=T0)
    assert engine.check_timeouts(T0 + timedelta(seconds=9)) == []
    assert engine.check_timeouts(T0 + timedelta(seconds=10)) == [cmd]
    assert cmd.status is CommandStatus.PENDING
    retry = cmd.next_attempt_at
    assert retry is not None
    engine.dispatch_command(engine.get_pending_commands(retry)[0], EchoAdapter("gw"), now=retry)
    assert engine.check_timeouts(retry + timedelta(seconds=10)) == [cmd]
    assert cmd.status is CommandStatus.TIMED_OUT
    assert types(log)[-1] is EventType.COMMAND_TIMED_OUT
    # a late answer after the end changes nothing
    assert engine.handle_response(cmd, success=True) is CommandStatus.TIMED_OUT


def test_late_success_after_timeout_completes_the_waiting_retry():
    engine = DispatchEngine(config=CoordinatorConfig(command_timeout_seconds=5))
    (cmd,) = engine.schedule_to_commands(schedule(ev_1_kw=[7.0]), {"ev_1": "a"})
    engine.dispatch_command(cmd, EchoAdapter("gw"), now=T0)
    engine.check_timeouts(T0 + timedelta(seconds=6))
    assert engine.handle_response(cmd, success=True) is CommandStatus.COMPLETED
    assert engine.get_pending_commands(T0 + MIN) == []


def test_untranslatable_command_fails_at_once_without_retry(bus_log):
    bus, log = bus_log
    engine = DispatchEngine(event_bus=bus)
    (cmd,) = engine.schedule_to_commands(schedule(ev_1_kw=[99.0]), {"ev_1": "a"})
    assert engine.dispatch_command(cmd, EchoAdapter("gw"), now=T0) is None
    assert cmd.status is CommandStatus.FAILED and "above 50 kW" in (cmd.error or "")
    assert types(log)[-1] is EventType.COMMAND_FAILED


def test_no_adapter_fails_with_reason():
    engine = DispatchEngine()
    (cmd,) = engine.schedule_to_commands(schedule(ev_1_kw=[9.0]), {"ev_1": "a"})
    assert engine.dispatch_command(cmd, now=T0) is None
    assert cmd.status is CommandStatus.FAILED and "no protocol adapter" in (cmd.error or "")


def test_registry_is_used_when_no_adapter_given():
    from coordinator import AdapterRegistry

    registry = AdapterRegistry()
    registry.register("a", EchoAdapter("gw"))
    engine = DispatchEngine(adapter_registry=registry)
    (cmd,) = engine.schedule_to_commands(schedule(ev_1_kw=[9.0]), {"ev_1": "a"})
    sent = engine.dispatch_command(cmd, now=T0)
    assert sent is not None and sent["power_kw"] == 9.0


@pytest.mark.parametrize("trigger_path", [["fault"], ["disable"]])
def test_faulted_or_unavailable_asset_is_held_then_released_with_newest_setpoint(bus_log, trigger_path):
    bus, log = bus_log
    engine = DispatchEngine(event_bus=bus)
    charger = create_ev_charger_state_machine("a", event_bus=bus)
    engine.register_state_machine(charger)
    c1, c2 = engine.schedule_to_commands(schedule(ev_1_kw=[7.0, 11.0]), {"ev_1": "a"})
    for t in trigger_path:
        charger.trigger(t)
    assert engine.get_pending_commands(T0) == []
    assert engine.dispatch_command(c1, EchoAdapter("gw"), now=T0) is None  # direct dispatch is held too
    assert c1.status is CommandStatus.PENDING
    held = [e for e in log if e.event_type is EventType.COMMAND_HELD]
    assert len(held) == 1 and held[0].payload["asset_state"] in ("FAULTED", "UNAVAILABLE")
    charger.trigger("reset" if trigger_path == ["fault"] else "enable")
    assert engine.get_pending_commands(T0 + 20 * MIN) == [c2]
    assert c1.status is CommandStatus.CANCELLED


def test_battery_fault_holds():
    engine = DispatchEngine()
    battery = create_battery_state_machine("b")
    engine.register_state_machine(battery)
    engine.schedule_to_commands(schedule(battery_charge_kw=[5.0]), {"battery": "b"})
    battery.trigger("fault")
    assert engine.get_pending_commands(T0) == []
    battery.trigger("reset")
    assert len(engine.get_pending_commands(T0)) == 1


def test_reported_state_holds_without_a_local_machine():
    engine = DispatchEngine()
    engine.schedule_to_commands(schedule(ev_1_kw=[5.0]), {"ev_1": "a"})
    engine.set_asset_state("a", "FAULTED")
    assert engine.get_pending_commands(T0) == []
    engine.set_asset_state("a", "AVAILABLE")
    assert len(engine.get_pending_commands(T0)) == 1


@pytest.mark.parametrize(("state", "releasing"), [
    ("FAULTED", Command("a", CommandType.RESET, {}, T0)),
    ("UNAVAILABLE", Command("a", CommandType.CHANGE_AVAILABILITY, {"available": True}, T0)),
])
def test_the_command_that_recovers_a_held_asset_is_not_held(state, releasing):
    engine = DispatchEngine()
    (setpoint,) = engine.schedule_to_commands(schedule(ev_1_kw=[5.0]), {"ev_1": "a"})
    engine.set_asset_state("a", state)
    engine.add_commands([releasing])
    assert engine.get_pending_commands(T0) == [releasing]  # the setpoint stays held
    engine.hold_site("emergency stop")
    assert engine.get_pending_commands(T0) == []  # the site's stop holds it too
    engine.release_site()
    engine.set_asset_state("a", "AVAILABLE")
    assert setpoint.status is CommandStatus.PENDING


@pytest.mark.parametrize("path", [["plug_in"], ["plug_in", "start_charge"], ["plug_in", "start_charge", "suspend"]])
def test_early_departure_cancels_remaining_commands(bus_log, path):
    bus, log = bus_log
    engine = DispatchEngine(event_bus=bus)
    charger = create_ev_charger_state_machine("a", event_bus=bus)
    engine.register_state_machine(charger)
    c1, c2, c3 = engine.schedule_to_commands(schedule(ev_1_kw=[7.0, 11.0, 0.0]), {"ev_1": "a"})
    for t in path:
        charger.trigger(t)
    engine.dispatch_command(c1, EchoAdapter("gw"), now=T0)
    charger.trigger("unplug")
    assert (c2.status, c3.status) == (CommandStatus.CANCELLED, CommandStatus.CANCELLED)
    assert "early departure" in (c2.error or "")
    assert c1.status is CommandStatus.DISPATCHED  # in flight: finishes normally
    assert types(log).count(EventType.COMMAND_CANCELLED) == 2
    assert engine.get_pending_commands(T0 + 60 * MIN) == []


def test_normal_unplug_after_finishing_cancels_nothing():
    engine = DispatchEngine()
    charger = create_ev_charger_state_machine("a")
    engine.register_state_machine(charger)
    _, c2 = engine.schedule_to_commands(schedule(ev_1_kw=[7.0, 0.0]), {"ev_1": "a"})
    for t in ("plug_in", "start_charge", "complete", "unplug"):
        charger.trigger(t)
    assert c2.status is CommandStatus.PENDING


def test_cancel_command_only_when_pending():
    engine = DispatchEngine()
    c1, c2 = engine.schedule_to_commands(schedule(ev_1_kw=[7.0, 1.0]), {"ev_1": "a"})
    engine.dispatch_command(c1, EchoAdapter("gw"), now=T0)
    assert not engine.cancel_command(c1, "operator")
    assert engine.cancel_command(c2, "operator") and c2.status is CommandStatus.CANCELLED
    assert not engine.cancel_command(c2, "again")


def test_naive_now_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        DispatchEngine().get_pending_commands(datetime(2025, 1, 1))


def test_handle_response_for_undispatched_command_is_an_error():
    engine = DispatchEngine()
    (cmd,) = engine.schedule_to_commands(schedule(ev_1_kw=[7.0]), {"ev_1": "a"})
    with pytest.raises(ValueError, match="never dispatched"):
        engine.handle_response(cmd, success=True)


def test_two_schedules_interleave_in_slot_order_per_asset():
    engine = DispatchEngine()
    late = engine.schedule_to_commands(schedule(ev_1_kw=[7.0]).shift(2, freq="15min"), {"ev_1": "a"})
    early = engine.schedule_to_commands(schedule(ev_1_kw=[3.0, 4.0]), {"ev_1": "a"})
    due = engine.get_pending_commands(T0 + 45 * MIN)
    # newest slot wins: the two older setpoints are superseded
    assert due == late
    assert [c.status for c in early] == [CommandStatus.CANCELLED, CommandStatus.CANCELLED]


def test_config_defaults_from_seed():
    cfg = CoordinatorConfig()
    assert (cfg.dispatch_interval_seconds, cfg.command_timeout_seconds, cfg.max_retries,
            cfg.retry_backoff_factor, cfg.stale_state_seconds) == (5.0, 30.0, 3, 2.0, 60.0)


def test_refused_result_is_final():
    engine = DispatchEngine()
    (cmd,) = engine.schedule_to_commands(schedule(ev_1_kw=[7.0]), {"ev_1": "a"})
    engine.dispatch_command(cmd, EchoAdapter("gw"), now=T0)
    assert engine.handle_response(cmd, success=False, error="NotSupported", retryable=False) is CommandStatus.FAILED


def test_newer_schedule_supersedes_future_commands_of_older_one(bus_log):
    bus, _ = bus_log
    engine = DispatchEngine(event_bus=bus)
    old = engine.schedule_to_commands(schedule(ev_1_kw=[1.0, 2.0, 3.0, 4.0], ev_2_kw=[5.0, 6.0, 7.0, 8.0]),
                                      {"ev_1": "a", "ev_2": "b"}, schedule_id="sch_old")
    new = engine.schedule_to_commands(schedule(ev_1_kw=[9.0, 9.0]).shift(2, freq="15min"), {"ev_1": "a"},
                                      schedule_id="sch_new")
    cancelled = engine.supersede(["a"], T0 + 30 * MIN, "sch_new")
    a_old = [c for c in old if c.asset_id == "a"]
    assert cancelled == a_old[2:]
    assert all(c.status is CommandStatus.PENDING for c in a_old[:2] + new)
    assert all(c.status is CommandStatus.PENDING for c in old if c.asset_id == "b")
    assert "superseded by schedule sch_new" in (a_old[2].error or "")


def test_forget_finished_drops_only_old_terminal_commands():
    engine = DispatchEngine()
    c1, c2 = engine.schedule_to_commands(schedule(ev_1_kw=[7.0, 1.0]), {"ev_1": "a"})
    engine.dispatch_command(c1, EchoAdapter("gw"), now=T0)
    engine.handle_response(c1, success=True, now=T0)
    assert engine.forget_finished(T0) == 0
    assert engine.forget_finished(T0 + MIN) == 1
    assert engine.get_command(c1.command_id) is None and engine.get_commands_for_asset("a") == [c2]
