"""The library on its own: one Layer 3 schedule driven through the engine, in one process.

    python -m tools.walkthrough

Two EV chargers and a battery follow a 2-hour, 15-minute-slot schedule on a simulated
clock. Along the way a charger rejects a setpoint once (retry), the battery faults and is
reset (held commands, then the newest setpoint), and a vehicle leaves early (its remaining
commands are cancelled). Every event is printed as it happens.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pandas as pd

from coordinator import (
    AdapterRegistry,
    CommandStatus,
    CoordinatorConfig,
    DispatchEngine,
    EventBus,
    ModbusAdapter,
    OCPPAdapter,
    create_battery_state_machine,
    create_ev_charger_state_machine,
)
from tools.event_lines import describe

START = datetime(2025, 1, 15, 6, 0, tzinfo=UTC)
SLOT = timedelta(minutes=15)
ASSET_MAP = {"ev_bus_07": "ast_bay_1", "ev_bus_12": "ast_bay_2", "battery": "ast_batt_001"}


def sample_schedule(start: datetime = START, slot: timedelta = SLOT) -> pd.DataFrame:
    """What a Layer 3 optimizer hands over: setpoints plus columns Layer 4 ignores."""
    index = pd.date_range(start, periods=8, freq=slot)
    return pd.DataFrame(
        {
            "ev_bus_07_kw": [22, 22, 22, 11, 11, 0, 0, 0],
            "ev_bus_12_kw": [11, 11, 22, 22, 22, 22, 7, 0],
            "battery_charge_kw": [30, 30, 0, 0, 0, 0, 20, 20],
            "battery_discharge_kw": [0, 0, 25, 25, 40, 0, 0, 0],
            "total_ev_kw": [33, 33, 44, 33, 33, 22, 7, 0],
            "price_per_kwh": [0.12, 0.12, 0.31, 0.31, 0.35, 0.22, 0.10, 0.10],
        },
        index=index,
        dtype=float,
    )


def main() -> int:
    bus = EventBus()
    clock = {"now": START}
    bus.subscribe_all(lambda e: print(describe(e, clock["now"])))

    registry = AdapterRegistry()
    registry.register("ast_bay_1", OCPPAdapter("ocpp_site_1"))
    registry.register("ast_bay_2", OCPPAdapter("ocpp_site_1", ocpp_version="2.0.1"))
    registry.register("ast_batt_001", ModbusAdapter("modbus_site_1"))
    config = CoordinatorConfig(site_id="sit_demo_depot")
    engine = DispatchEngine(event_bus=bus, adapter_registry=registry, config=config)

    bay1 = create_ev_charger_state_machine("ast_bay_1", event_bus=bus)
    bay2 = create_ev_charger_state_machine("ast_bay_2", event_bus=bus)
    battery = create_battery_state_machine("ast_batt_001", event_bus=bus)
    for machine in (bay1, bay2, battery):
        engine.register_state_machine(machine)

    print("Layer 3 schedule (kW):")
    print(sample_schedule().to_string(float_format=lambda v: f"{v:g}"))
    print()
    for machine, trigger in ((bay1, "plug_in"), (bay2, "plug_in")):
        machine.trigger(trigger)
    commands = engine.schedule_to_commands(sample_schedule(), ASSET_MAP, schedule_id="sch_demo_0001")

    # What the simulated site does, keyed by minute offset from START.
    incidents = {
        0: lambda: (bay1.trigger("start_charge"), bay2.trigger("start_charge")),
        55: lambda: battery.trigger("fault"),
        70: lambda: battery.trigger("reset"),
        65: lambda: bay2.trigger("unplug"),  # bus 12 leaves before its session is over
    }

    step = timedelta(seconds=30)
    while clock["now"] < START + 8 * SLOT:
        now = clock["now"]
        minute = int((now - START).total_seconds() // 60)
        if now.second == 0 and minute in incidents:
            incidents.pop(minute)()
        engine.check_timeouts(now)
        for cmd in engine.get_pending_commands(now):
            payload = engine.dispatch_command(cmd, now=now)
            if payload is None:
                continue
            # The simulated device answers at once; bay 1 rejects its 06:45 setpoint once.
            if cmd.asset_id == "ast_bay_1" and minute == 45 and cmd.attempts == 1:
                engine.handle_response(cmd, success=False, error="Rejected by charge point", now=now)
                continue
            engine.handle_acknowledgement(cmd, now=now)
            engine.handle_response(cmd, success=True, now=now)
            if cmd.asset_id == "ast_batt_001":
                power_kw = cmd.parameters["power_kw"]
                assert isinstance(power_kw, float | int)
                follow_battery(battery, cmd.command_type.value, power_kw)
        clock["now"] = now + step

    counts = {status: sum(c.status is status for c in commands) for status in CommandStatus}
    print()
    print("Summary: " + ", ".join(f"{n} {s.value.lower()}" for s, n in counts.items() if n))
    print(f"Final states: bay 1 {bay1.state}, bay 2 {bay2.state}, battery {battery.state}")
    return 0


def follow_battery(battery, command_type: str, power_kw: float) -> None:
    """Drive the battery machine from what it was told to do."""
    target = "stop" if power_kw == 0 else ("charge" if command_type == "SET_CHARGE_RATE" else "discharge")
    if battery.can_trigger(target):
        battery.trigger(target)


if __name__ == "__main__":
    sys.exit(main())
