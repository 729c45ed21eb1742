from datetime import UTC, datetime

import pytest

from coordinator.adapters import TranslationError
from coordinator.base import Command, CommandType
from coordinator.protocols.modbus.device import ModbusDeviceConfig
from coordinator.protocols.modbus.setpoints import coalesce, plan_command, shows
from simulators.battery import BatteryPhysics

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
DEVICE = ModbusDeviceConfig(max_charge_kw=50.0)


def plan(ctype, value, device=DEVICE, name="power_kw"):
    return plan_command(Command("b", ctype, {name: value}, T0), device, device.register_map(), 100.0)


def test_charge_zeroes_discharge_first_then_writes_the_setpoint():
    p = plan(CommandType.SET_CHARGE_RATE, 12.5)
    assert [(w.spec.address, w.value, w.words) for w in p.writes] == [(40002, 0.0, [0]), (40001, 12.5, [125])]
    assert not p.clamped


def test_discharge_zeroes_charge_first():
    p = plan(CommandType.SET_DISCHARGE_RATE, 30.0)
    assert [(w.spec.address, w.words) for w in p.writes] == [(40001, [0]), (40002, [300])]


def test_setpoint_above_the_limit_is_clamped_and_says_so():
    p = plan(CommandType.SET_CHARGE_RATE, 80.0)
    assert (p.requested, p.applied, p.limit, p.clamped) == (80.0, 50.0, 50.0, True)
    assert p.writes[-1].words == [500]
    assert plan(CommandType.SET_DISCHARGE_RATE, 120.0).applied == 100.0  # asset max_power_kw when no device limit


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "fast", True, None])
def test_bad_values_refused(value):
    with pytest.raises(TranslationError):
        plan(CommandType.SET_CHARGE_RATE, value)


def test_commands_without_a_register_refused():
    with pytest.raises(TranslationError, match="no register"):
        plan(CommandType.START_CHARGING, 1.0)


def test_value_a_register_cannot_hold_is_refused_not_wrapped():
    device = ModbusDeviceConfig(max_charge_kw=10000.0)
    with pytest.raises(TranslationError):
        plan(CommandType.SET_CHARGE_RATE, 7000.0, device)  # 70000 > uint16 at scale 10


def test_soc_target_and_read_back_tolerance():
    p = plan(CommandType.SET_SOC_TARGET, 80, name="soc_percent")
    (write,) = p.writes
    assert shows(write.spec, 80, 80, None) and not shows(write.spec, 79, 80, None)
    rate = plan(CommandType.SET_CHARGE_RATE, 12.34).writes[-1]  # 0.1 kW steps: 12.3 is what the device can show
    assert shows(rate.spec, 12.3, 12.34, None) and not shows(rate.spec, 12.5, 12.3, None)
    assert shows(rate.spec, 12.5, 12.3, 0.5)


def test_adjacent_registers_travel_in_one_request():
    assert coalesce(plan(CommandType.SET_CHARGE_RATE, 12.5).writes) == [(0, [125, 0])]
    assert coalesce(plan(CommandType.SET_DISCHARGE_RATE, 3.0).writes) == [(0, [0, 30])]
    apart = ModbusDeviceConfig(
        registers={"SET_CHARGE_RATE": {"address": 40201}, "SET_DISCHARGE_RATE": {"address": 40301}}
    )
    assert coalesce(plan(CommandType.SET_CHARGE_RATE, 1.0, apart).writes) == [(300, [0]), (200, [1])]


def test_physics_integrates_and_keeps_to_bounds():
    battery = BatteryPhysics(capacity_kwh=100.0, max_charge_kw=50.0, max_discharge_kw=40.0, soc_percent=50.0)
    assert battery.applied_power(80.0, 0.0) == 50.0
    battery.advance(50.0, 3600)  # 50 kWh into 100 kWh
    assert battery.soc_percent == 95.0  # capped at soc_max
    assert battery.applied_power(10.0, 0.0) == 0.0  # full: stops charging
    assert battery.applied_power(0.0, 60.0) == -40.0
    battery.advance(-40.0, 36000)
    assert battery.soc_percent == 5.0 and battery.applied_power(0.0, 10.0) == 0.0
