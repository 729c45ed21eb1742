"""DispatchEngine.dispatch_to_gateway: the engine's lifecycle for a process whose gateways translate."""

from datetime import UTC, datetime, timedelta

import pandas as pd

from coordinator import DispatchEngine, Event, EventBus, EventType, create_ev_charger_state_machine
from coordinator.adapters import Route, RoutingTable
from coordinator.base import CommandStatus

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
ROUTES = RoutingTable({"a": Route("ocpp", "ocpp")})


def one_command(engine, asset="a"):
    frame = pd.DataFrame({"ev_1_kw": [7.0]}, index=pd.date_range(T0, periods=1, freq="15min"))
    (cmd,) = engine.schedule_to_commands(frame, {"ev_1": asset})
    return cmd


def test_dispatched_to_the_routed_gateway_without_a_registry():
    bus = EventBus()
    log: list[Event] = []
    bus.subscribe(EventType.COMMAND_DISPATCHED, log.append)
    engine = DispatchEngine(event_bus=bus)
    cmd = one_command(engine)
    assert engine.dispatch_to_gateway(cmd, ROUTES, now=T0) == Route("ocpp", "ocpp")
    assert cmd.status is CommandStatus.DISPATCHED and cmd.attempts == 1 and cmd.dispatched_at == T0
    assert log[0].payload["gateway_id"] == "ocpp" and log[0].payload["protocol"] == "ocpp"
    # In flight: the engine's timeout and retry rules apply as to any dispatched command.
    assert engine.get_pending_commands(T0) == []
    assert engine.check_timeouts(T0 + timedelta(seconds=31)) == [cmd]
    assert cmd.status is CommandStatus.PENDING and cmd.next_attempt_at is not None


def test_an_asset_without_a_route_fails_at_once():
    engine = DispatchEngine()
    cmd = one_command(engine, asset="b")
    assert engine.dispatch_to_gateway(cmd, ROUTES, now=T0) is None
    assert cmd.status is CommandStatus.FAILED and "no gateway routes commands for b" in cmd.error


def test_a_held_asset_stays_pending():
    bus = EventBus()
    engine = DispatchEngine(event_bus=bus)
    machine = create_ev_charger_state_machine("a", event_bus=bus)
    engine.register_state_machine(machine)
    machine.trigger("fault")
    cmd = one_command(engine)
    assert engine.dispatch_to_gateway(cmd, ROUTES, now=T0) is None
    assert cmd.status is CommandStatus.PENDING and cmd.attempts == 0
