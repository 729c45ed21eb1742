"""The battery simulator's watchdog: no new heartbeat for the timeout, and it falls back by itself."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from coordinator.base import CommandType
from coordinator.protocols.modbus.device import ModbusDeviceConfig, WatchdogConfig, next_heartbeat
from coordinator.protocols.modbus.registers import decode_registers, encode_value
from coordinator.site import AssetConfig, AssetKind
from simulators.applied_log import AppliedLog
from simulators.battery import REGISTER_COUNT, SimulatedBattery

WATCHDOG = WatchdogConfig(address=40201, timeout_seconds=0.2)


def battery(log: AppliedLog | None = None, fallback_kw: float = 0.0,
            watchdog: WatchdogConfig | None = WATCHDOG) -> SimulatedBattery:
    asset = AssetConfig(asset_id="ast_batt", kind=AssetKind.BATTERY, gateway_id="modbus", max_power_kw=100.0,
                        fallback_kw=fallback_kw, modbus=ModbusDeviceConfig(port=1502, watchdog=watchdog))
    return SimulatedBattery(asset, applied_log=log)


async def write(sim: SimulatedBattery, regs: list[int], offset: int, words: list[int]) -> None:
    await sim.action(16, 0, offset, len(words), regs, words)
    regs[offset : offset + len(words)] = words  # what pymodbus does after the action


async def setpoint(sim: SimulatedBattery, regs: list[int], ctype: CommandType, kw: float) -> None:
    spec = sim.registers_map[ctype]
    await write(sim, regs, spec.offset, encode_value(spec, kw)[1])


def shown(sim: SimulatedBattery, regs: list[int], ctype: CommandType) -> float:
    spec = sim.registers_map[ctype]
    return decode_registers(spec, regs[spec.offset : spec.offset + spec.word_count])


def test_without_heartbeats_the_battery_falls_back_to_its_safe_value(tmp_path):
    path = tmp_path / "applied.jsonl"
    sim, regs = battery(AppliedLog(path), fallback_kw=5.0), [0] * REGISTER_COUNT

    async def scenario() -> None:
        sim.arm_watchdog()
        await setpoint(sim, regs, CommandType.SET_DISCHARGE_RATE, 40.0)
        fired = asyncio.get_running_loop().create_future()
        original = sim._watchdog_fired

        def fire() -> None:
            original()
            fired.set_result(None)

        sim._watchdog_fired = fire  # type: ignore[method-assign]
        sim.arm_watchdog()
        await asyncio.wait_for(fired, 5)

    asyncio.run(scenario())
    assert sim.timed_out
    assert shown(sim, regs, CommandType.SET_CHARGE_RATE) == 5.0
    assert shown(sim, regs, CommandType.SET_DISCHARGE_RATE) == 0.0
    watchdog_lines = [json.loads(x) for x in path.read_text().splitlines() if "WATCHDOG" in x]
    assert [(x["power_kw"], x["changed"]) for x in watchdog_lines] == [(5.0, True), (0.0, True)]


def test_a_new_heartbeat_value_arms_the_timer_again_and_a_repeated_one_does_not():
    sim, regs = battery(), [0] * REGISTER_COUNT
    offset = WATCHDOG.spec().offset

    async def scenario() -> tuple[float, float, float]:
        sim.arm_watchdog()
        assert sim._watchdog_timer is not None
        first = sim._watchdog_timer.when()
        await write(sim, regs, offset, [next_heartbeat(0)])
        second = sim._watchdog_timer.when()
        await write(sim, regs, offset, [next_heartbeat(0)])  # the same value: the gateway is stuck
        third = sim._watchdog_timer.when()
        sim._watchdog_timer.cancel()
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert second > first and third == second


def test_the_heartbeat_counter_wraps():
    assert next_heartbeat(0) == 1 and next_heartbeat(0xFFFF) == 0


def test_a_watchdog_register_may_not_be_a_setpoint_or_status_register():
    with pytest.raises(ValidationError, match="also SET_CHARGE_RATE"):
        ModbusDeviceConfig(watchdog=WatchdogConfig(address=40001))
    with pytest.raises(ValidationError, match="also mode"):
        ModbusDeviceConfig(watchdog=WatchdogConfig(address=40101))
    with pytest.raises(ValidationError):
        WatchdogConfig(address=30001)


def test_the_timeout_defaults_to_the_lease_and_heartbeats_come_three_times_per_timeout():
    assert WatchdogConfig().timeout(300.0) == 300.0 and WatchdogConfig().interval(300.0) == 100.0
    assert WATCHDOG.timeout(300.0) == 0.2


def test_a_fallback_above_the_asset_maximum_is_refused():
    with pytest.raises(ValidationError, match="fallback_kw"):
        battery(fallback_kw=150.0)
