"""Every example of seed 001 (Dispatch Engine), with the context the page assumes."""

import logging
from datetime import UTC, datetime
from types import SimpleNamespace

import pandas as pd


def layer3_result():
    idx = pd.date_range("2025-01-15 08:00", periods=4, freq="h", tz="UTC")
    return SimpleNamespace(
        schedule=pd.DataFrame(
            {
                "ev_001_kw": [22.0, 22.0, 22.0, 0.0],
                "ev_002_kw": [11.0, 11.0, 7.0, 7.0],
                "battery_charge_kw": [0.0, 5.0, 0.0, 0.0],
                "battery_discharge_kw": [0.0, 0.0, 10.0, 0.0],
                "total_ev_kw": [33.0, 33.0, 29.0, 7.0],
                "price_per_kwh": [0.2, 0.25, 0.3, 0.2],
            },
            index=idx,
        )
    )


def test_dispatch_page_end_to_end(caplog, capsys):
    from coordinator import AdapterRegistry, EventType, ModbusAdapter, OCPPAdapter

    result = layer3_result()
    log = logging.getLogger("seed")

    from coordinator import DispatchEngine, EventBus

    bus = EventBus()
    engine = DispatchEngine(event_bus=bus)

    # From Layer 3 EV scheduler result
    commands = engine.schedule_to_commands(
        result.schedule,
        asset_map={
            "ev_001": "ast_charger_bay_1",
            "ev_002": "ast_charger_bay_2",
            "battery": "ast_batt_001",
        },
    )
    # change detection: ev_001 22@8, 0@11; ev_002 11@8, 7@10; battery 0@8, charge 5@9, discharge 10@10, 0@11
    assert len(commands) == 8
    bay1 = [(c.scheduled_at.hour, c.parameters["power_kw"]) for c in commands if c.asset_id == "ast_charger_bay_1"]
    assert bay1 == [(8, 22.0), (11, 0.0)]

    registry = AdapterRegistry()
    registry.register("ast_charger_bay_1", OCPPAdapter("ocpp_site_1"))
    registry.register("ast_charger_bay_2", OCPPAdapter("ocpp_site_1"))
    registry.register("ast_batt_001", ModbusAdapter("modbus_site_1"))

    # Monitor all dispatched commands
    bus.subscribe(EventType.COMMAND_DISPATCHED, lambda e: log.info(
        f"Dispatched {e.payload['command_type']} to {e.payload['asset_id']}"
    ))

    from datetime import datetime

    # Get commands ready for execution
    now = datetime.now(UTC)
    pending = engine.get_pending_commands(now)

    # Dispatch through protocol adapters
    with caplog.at_level(logging.INFO, logger="seed"):
        for cmd in pending:
            adapter = registry.get(cmd.asset_id)
            engine.dispatch_command(cmd, adapter)
    assert len(pending) == 3  # one per asset: the newest setpoint of each
    assert "Dispatched SET_CHARGE_RATE to ast_charger_bay_1" in caplog.text

    cmd = pending[0]
    # Asset acknowledged and executed
    engine.handle_response(cmd, success=True)
    cmd2 = pending[1]
    # Asset reported an error — will retry if under max_retries
    engine.handle_response(cmd2, success=False, error="connection timeout")
    assert cmd.status.value == "COMPLETED" and cmd2.status.value == "PENDING" and cmd2.error == "connection timeout"

    # Check for commands stuck in DISPATCHED state
    later = datetime.now(UTC).replace(year=now.year + 1)
    timed_out = engine.check_timeouts(later)
    for cmd in timed_out:
        print(f"Command {cmd.command_id} to {cmd.asset_id} timed out")
    assert capsys.readouterr().out == f"Command {pending[2].command_id} to {pending[2].asset_id} timed out\n"

    # Find a specific command
    found = engine.get_command(commands[0].command_id)
    assert found is commands[0]
    # Get all commands for an asset
    asset_cmds = engine.get_commands_for_asset("ast_charger_bay_1")
    assert [c.asset_id for c in asset_cmds] == ["ast_charger_bay_1"] * 2


def test_command_object():
    from coordinator.base import Command, CommandStatus, CommandType

    cmd = Command(
        asset_id="ast_charger_001",
        command_type=CommandType.SET_CHARGE_RATE,
        parameters={"power_kw": 22.0},
        scheduled_at=datetime(2025, 1, 15, 8, 0, tzinfo=UTC),
        # Auto-generated:
        # command_id="cmd_a1b2c3d4e5f6"
        # status=CommandStatus.PENDING
        # max_retries=3
        # timeout_seconds=30.0
    )
    assert cmd.command_id.startswith("cmd_") and len(cmd.command_id) == 16
    assert cmd.status == CommandStatus.PENDING and cmd.max_retries == 3 and cmd.timeout_seconds == 30.0


def test_command_types_table():
    from coordinator.base import CommandType

    # The seed's seven, in its order; RESET (an operator's, issue 13) comes after them.
    assert [t.value for t in CommandType][:7] == [
        "SET_CHARGE_RATE", "SET_DISCHARGE_RATE", "SET_POWER_LIMIT", "START_CHARGING",
        "STOP_CHARGING", "CHANGE_AVAILABILITY", "SET_SOC_TARGET",
    ]
