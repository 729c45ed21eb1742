"""Every example of seeds 002/003 (Layer 4 overview; 003 is the same page as text)."""

from datetime import UTC, datetime
from types import SimpleNamespace

import pandas as pd


def test_quick_start():
    idx = pd.date_range("2025-01-15 08:00", periods=3, freq="15min", tz="UTC")
    optimization_result = SimpleNamespace(schedule=pd.DataFrame({"ev_001_kw": [11.0, 22.0, 0.0]}, index=idx))
    now = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)

    from coordinator import AdapterRegistry, DispatchEngine, EventBus, OCPPAdapter

    # Set up infrastructure
    bus = EventBus()
    registry = AdapterRegistry()
    registry.register("ast_ev_001", OCPPAdapter("ocpp_site_1"))

    engine = DispatchEngine(event_bus=bus, adapter_registry=registry)

    # Convert a Layer 3 schedule to commands
    commands = engine.schedule_to_commands(
        optimization_result.schedule,
        asset_map={"ev_001": "ast_ev_001"}
    )

    # Dispatch pending commands
    sent = []
    for cmd in engine.get_pending_commands(now):
        adapter = registry.get(cmd.asset_id)
        sent.append(engine.dispatch_command(cmd, adapter))

    assert len(commands) == 3
    assert len(sent) == 1 and sent[0] is not None and sent[0]["action"] == "SetChargingProfile"
    assert commands[0].status.value == "DISPATCHED"


def test_event_bus_section(capsys):
    alerts = []

    def alert_oncall(payload):
        alerts.append(payload)

    from coordinator import EventBus, EventType

    bus = EventBus()

    # Subscribe to state changes
    bus.subscribe(EventType.STATE_CHANGED, lambda e: print(
        f"Asset {e.payload['asset_id']}: {e.payload['from_state']} → {e.payload['to_state']}"
    ))

    # Subscribe to command failures for alerting
    bus.subscribe(EventType.COMMAND_FAILED, lambda e: alert_oncall(e.payload))

    from coordinator import create_ev_charger_state_machine

    create_ev_charger_state_machine("ast_ev_001", event_bus=bus).trigger("plug_in")
    from coordinator import Command, CommandType
    from coordinator.contract.events import CommandFailed

    failure = CommandFailed.of(Command("ast_ev_001", CommandType.STOP_CHARGING, command_id="cmd_000000000001"))
    bus.emit(EventType.COMMAND_FAILED, failure)
    assert capsys.readouterr().out == "Asset ast_ev_001: AVAILABLE → PREPARING\n"
    assert [a["command_id"] for a in alerts] == ["cmd_000000000001"]


def test_eight_event_types_listed():
    from coordinator import EventType

    for name in ("COMMAND_CREATED", "COMMAND_DISPATCHED", "COMMAND_ACKNOWLEDGED", "COMMAND_COMPLETED",
                 "COMMAND_FAILED", "COMMAND_TIMED_OUT", "STATE_CHANGED", "SCHEDULE_RECEIVED"):
        assert EventType[name].value == name


def test_adapter_tables():
    from coordinator import ModbusAdapter, OCPPAdapter
    from coordinator.base import Command, CommandType, ParameterValue

    t = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
    ocpp = OCPPAdapter("ocpp_site_1")
    actions: dict[CommandType, tuple[dict[str, ParameterValue], str]] = {
        CommandType.SET_CHARGE_RATE: ({"power_kw": 7.4}, "SetChargingProfile"),
        CommandType.START_CHARGING: ({}, "RemoteStartTransaction"),
        CommandType.STOP_CHARGING: ({"transaction_id": 1}, "RemoteStopTransaction"),
        CommandType.CHANGE_AVAILABILITY: ({"available": False}, "ChangeAvailability"),
    }
    for ctype, (params, action) in actions.items():
        assert ocpp.translate(Command("ast_ev_001", ctype, params, t))["action"] == action
    profile = ocpp.translate(Command("ast_ev_001", CommandType.SET_CHARGE_RATE, {"power_kw": 7.4}, t))["payload"]
    assert profile["csChargingProfiles"]["chargingSchedule"]["chargingRateUnit"] == "W"
    assert profile["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 7400

    modbus = ModbusAdapter("modbus_site_1")
    registers: dict[CommandType, tuple[dict[str, ParameterValue], int]] = {
        CommandType.SET_CHARGE_RATE: ({"power_kw": 5.0}, 40001),
        CommandType.SET_DISCHARGE_RATE: ({"power_kw": 5.0}, 40002),
        CommandType.SET_POWER_LIMIT: ({"power_kw": 5.0}, 40003),
        CommandType.SET_SOC_TARGET: ({"soc_percent": 80}, 40004),
    }
    for ctype, (params, reference) in registers.items():
        assert modbus.translate(Command("ast_batt_001", ctype, params, t))["reference"] == reference
