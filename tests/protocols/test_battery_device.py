import pytest

from coordinator.asset_machines import BatteryState
from coordinator.base import CommandType
from coordinator.protocols.modbus.device import (
    DEFAULT_STATUS_REGISTERS,
    DeviceStatus,
    ModbusDeviceConfig,
    StatusRegisters,
    decode_status,
    status_writes,
)
from coordinator.protocols.modbus.registers import RegisterSpec, RegisterType, encode_value


def words_for(registers: StatusRegisters, values: dict[str, float]) -> tuple[int, list[int]]:
    first, count = registers.span()
    words = [0] * count
    for name, spec in registers.specs().items():
        words[spec.offset - first : spec.offset - first + spec.word_count] = encode_value(spec, values[name])[1]
    return first, words


def test_decode_status_default_map():
    first, words = words_for(
        DEFAULT_STATUS_REGISTERS, {"mode": 2, "soc_percent": 61.3, "active_power_kw": -25.5, "fault_code": 0}
    )
    status = decode_status(DEFAULT_STATUS_REGISTERS, first, words)
    assert (status.state, status.soc_percent, status.active_power_kw, status.fault_code) == (
        BatteryState.DISCHARGING, 61.3, -25.5, 0
    )


def test_fault_code_wins_over_mode_and_unknown_mode_is_an_error():
    first, words = words_for(
        DEFAULT_STATUS_REGISTERS, {"mode": 1, "soc_percent": 50, "active_power_kw": 0, "fault_code": 17}
    )
    assert decode_status(DEFAULT_STATUS_REGISTERS, first, words).state is BatteryState.FAULTED
    first, words = words_for(
        DEFAULT_STATUS_REGISTERS, {"mode": 9, "soc_percent": 50, "active_power_kw": 0, "fault_code": 0}
    )
    with pytest.raises(ValueError, match="unknown operating mode 9"):
        decode_status(DEFAULT_STATUS_REGISTERS, first, words)


def test_status_reads_respect_the_125_register_limit():
    assert DEFAULT_STATUS_REGISTERS.reads() == [(100, 4)]
    far = StatusRegisters(
        RegisterSpec(40101), RegisterSpec(40102), RegisterSpec(40301, RegisterType.INT32), RegisterSpec(40104)
    )
    assert far.reads() == [(100, 4), (300, 2)]


def test_device_config_merges_custom_registers_and_refuses_bad_ones():
    config = ModbusDeviceConfig(registers={"SET_CHARGE_RATE": {"address": 40201, "data_type": "int32", "scale": 100}},
                                status_registers={"soc_percent": {"address": 40501, "data_type": "float32"}})
    assert config.register_map()[CommandType.SET_CHARGE_RATE].address == 40201
    assert config.register_map()[CommandType.SET_DISCHARGE_RATE].address == 40002  # default kept
    assert config.status().soc_percent.data_type is RegisterType.FLOAT32
    with pytest.raises(ValueError):
        ModbusDeviceConfig(registers={"SET_CHARGE_RATE": {"address": 40001, "data_type": "int128"}})
    with pytest.raises(ValueError, match="unknown status registers: temperature"):
        ModbusDeviceConfig(status_registers={"temperature": {"address": 40600}})


def test_status_writes_are_what_decode_status_reads():
    registers = DEFAULT_STATUS_REGISTERS
    first, count = registers.span()
    statuses = (DeviceStatus(BatteryState.DISCHARGING, 42.5, -7.4, 0), DeviceStatus(BatteryState.FAULTED, 5.0, 0.0, 3))
    for status in statuses:
        words = [0] * count
        for offset, written in status_writes(registers, status):
            words[offset - first : offset - first + len(written)] = written
        assert decode_status(registers, first, words) == status
