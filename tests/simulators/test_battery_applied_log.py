"""The battery simulator's device-side evidence: one line per setpoint register write it applies."""

from __future__ import annotations

import asyncio
import json

from coordinator.base import CommandType
from coordinator.protocols.modbus.device import ModbusDeviceConfig
from coordinator.protocols.modbus.registers import encode_value
from coordinator.site import AssetConfig, AssetKind
from simulators.applied_log import AppliedLog
from simulators.battery import CONTROL, REGISTER_COUNT, Control, SimulatedBattery


def battery(log: AppliedLog) -> SimulatedBattery:
    asset = AssetConfig(asset_id="ast_batt", kind=AssetKind.BATTERY, gateway_id="modbus", max_power_kw=100.0,
                        modbus=ModbusDeviceConfig(port=1502))
    return SimulatedBattery(asset, applied_log=log)


def write(sim: SimulatedBattery, regs: list[int], ctype: CommandType, kw: float) -> None:
    spec = sim.registers_map[ctype]
    words = encode_value(spec, kw)[1]
    asyncio.run(sim.action(16, 0, spec.offset, len(words), regs, words))
    regs[spec.offset : spec.offset + len(words)] = words  # what pymodbus does after the action


def test_each_applied_setpoint_is_logged_with_whether_it_changed(tmp_path):
    path = tmp_path / "applied.jsonl"
    sim, regs = battery(AppliedLog(path)), [0] * REGISTER_COUNT
    write(sim, regs, CommandType.SET_CHARGE_RATE, 12.5)
    write(sim, regs, CommandType.SET_CHARGE_RATE, 12.5)
    write(sim, regs, CommandType.SET_DISCHARGE_RATE, 0.0)
    sim.control = Control.IGNORE_WRITES  # accepted on the wire, never applied: no evidence
    write(sim, regs, CommandType.SET_CHARGE_RATE, 30.0)
    sim.control = Control.NORMAL
    asyncio.run(sim.action(16, 0, CONTROL.offset, 1, regs, [int(Control.NORMAL)]))  # not a setpoint
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["power_kw"], x["changed"], x["command_type"]) for x in lines] == [
        (12.5, True, "SET_CHARGE_RATE"), (12.5, False, "SET_CHARGE_RATE"), (0.0, False, "SET_DISCHARGE_RATE")]
    assert {x["asset_id"] for x in lines} == {"ast_batt"}
