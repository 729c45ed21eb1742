import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from coordinator.adapters import (
    DEFAULT_REGISTER_MAP,
    ModbusAdapter,
    ProtocolAdapter,
    RegisterMap,
    RegisterSpec,
    RegisterType,
    TranslationError,
    WordOrder,
    decode_registers,
    encode_value,
)
from coordinator.base import Command, CommandType

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
RANGES = {
    RegisterType.UINT16: (0, 2**16 - 1),
    RegisterType.INT16: (-(2**15), 2**15 - 1),
    RegisterType.UINT32: (0, 2**32 - 1),
    RegisterType.INT32: (-(2**31), 2**31 - 1),
}
PYMODBUS_TYPES = {t: getattr(ModbusClientMixin.DATATYPE, t.name) for t in RegisterType}


def cmd(ctype: CommandType, **params: Any) -> Command:
    return Command("ast_batt_001", ctype, params, T0)


def pymodbus_words(spec: RegisterSpec, raw: int | float) -> list[int]:
    return ModbusClientMixin.convert_to_registers(raw, PYMODBUS_TYPES[spec.data_type], word_order=spec.word_order.value)


def test_is_a_protocol_adapter():
    adapter = ModbusAdapter("modbus_site_1")
    assert isinstance(adapter, ProtocolAdapter)
    assert (adapter.protocol, adapter.gateway_id, adapter.device_id, adapter.register_map) == (
        "modbus", "modbus_site_1", 1, DEFAULT_REGISTER_MAP
    )


def test_default_map_is_the_seeds():
    assert {c: (s.address, s.offset, s.data_type, s.scale, s.unit) for c, s in DEFAULT_REGISTER_MAP.items()} == {
        CommandType.SET_CHARGE_RATE: (40001, 0, RegisterType.UINT16, 10, "kW"),
        CommandType.SET_DISCHARGE_RATE: (40002, 1, RegisterType.UINT16, 10, "kW"),
        CommandType.SET_POWER_LIMIT: (40003, 2, RegisterType.UINT16, 10, "kW"),
        CommandType.SET_SOC_TARGET: (40004, 3, RegisterType.UINT16, 1, "%"),
        CommandType.RESET: (40005, 4, RegisterType.UINT16, 1, ""),  # ours, after the seed's four (issue 13)
    }


def test_reset_writes_one_to_the_self_clearing_command_register():
    from coordinator.protocols.modbus.device import ModbusDeviceConfig
    from coordinator.protocols.modbus.setpoints import plan_command

    cmd = Command("ast_batt_001", CommandType.RESET, {}, datetime(2025, 1, 15, tzinfo=UTC))
    assert ModbusAdapter("m").translate(cmd)["address"] == 4 and ModbusAdapter("m").translate(cmd)["values"] == [1]
    (write,) = plan_command(cmd, ModbusDeviceConfig(port=1502), DEFAULT_REGISTER_MAP, 100.0).writes
    assert (write.spec.address, write.words, write.expected) == (40005, [1], 0.0)  # read back: the device cleared it


def test_translate_charge_rate():
    assert ModbusAdapter("m", device_id=7).translate(cmd(CommandType.SET_CHARGE_RATE, power_kw=5.0)) == {
        "action": "write_registers",
        "device_id": 7,
        "address": 0,
        "values": [50],
        "reference": 40001,
        "data_type": "uint16",
        "raw_value": 50,
    }


@pytest.mark.parametrize(("ctype", "params", "address", "values"), [
    (CommandType.SET_DISCHARGE_RATE, {"power_kw": 10.0}, 1, [100]),
    (CommandType.SET_POWER_LIMIT, {"power_kw": 6553.5}, 2, [65535]),
    (CommandType.SET_SOC_TARGET, {"soc_percent": 80}, 3, [80]),
    (CommandType.SET_SOC_TARGET, {"soc_percent": 100}, 3, [100]),
    (CommandType.SET_CHARGE_RATE, {"power_kw": 0}, 0, [0]),
    (CommandType.SET_CHARGE_RATE, {"power_kw": 7.46}, 0, [75]),  # nearest 0.1 kW
    (CommandType.SET_CHARGE_RATE, {"power_kw": 7.44}, 0, [74]),
])
def test_default_registers(ctype, params, address, values):
    out = ModbusAdapter("m").translate(cmd(ctype, **params))
    assert (out["address"], out["values"]) == (address, values)


@pytest.mark.parametrize(("ctype", "params", "reason"), [
    (CommandType.SET_CHARGE_RATE, {"power_kw": 6553.6}, "outside the uint16 range 0..65535 of register 40001"),
    (CommandType.SET_CHARGE_RATE, {"power_kw": 1e12}, "outside the uint16 range"),
    (CommandType.SET_CHARGE_RATE, {"power_kw": -1.0}, "finite and >= 0"),
    (CommandType.SET_CHARGE_RATE, {"power_kw": math.nan}, "finite and >= 0"),
    (CommandType.SET_CHARGE_RATE, {"power_kw": math.inf}, "finite and >= 0"),
    (CommandType.SET_CHARGE_RATE, {"power_kw": "5"}, "must be a number"),
    (CommandType.SET_CHARGE_RATE, {"power_kw": False}, "must be a number"),
    (CommandType.SET_CHARGE_RATE, {}, "needs parameter power_kw"),
    (CommandType.SET_SOC_TARGET, {"power_kw": 5.0}, "needs parameter soc_percent"),
    (CommandType.SET_SOC_TARGET, {"soc_percent": 100.5}, "at most 100"),
    (CommandType.SET_SOC_TARGET, {"soc_percent": -1}, "finite and >= 0"),
    (CommandType.START_CHARGING, {}, "START_CHARGING has no register"),
    (CommandType.STOP_CHARGING, {"transaction_id": 1}, "STOP_CHARGING has no register"),
    (CommandType.CHANGE_AVAILABILITY, {"available": False}, "CHANGE_AVAILABILITY has no register"),
])
def test_refusals(ctype, params, reason):
    with pytest.raises(TranslationError, match=reason):
        ModbusAdapter("m").translate(cmd(ctype, **params))


def test_command_missing_from_a_custom_map_is_refused():
    adapter = ModbusAdapter("m", RegisterMap({CommandType.SET_CHARGE_RATE: RegisterSpec(40010)}))
    assert adapter.translate(cmd(CommandType.SET_CHARGE_RATE, power_kw=3))["values"] == [3]
    with pytest.raises(TranslationError, match="SET_SOC_TARGET has no register in the Modbus register map of m"):
        adapter.translate(cmd(CommandType.SET_SOC_TARGET, soc_percent=50))


def test_negative_scale_writes_discharge_into_a_shared_signed_register():
    registers = RegisterMap.from_dict({
        "SET_CHARGE_RATE": {"address": 40001, "data_type": "int16", "scale": 10},
        "SET_DISCHARGE_RATE": {"address": 40001, "data_type": "int16", "scale": -10},
    })
    adapter = ModbusAdapter("m", registers)
    assert adapter.translate(cmd(CommandType.SET_CHARGE_RATE, power_kw=5))["values"] == [50]
    out = adapter.translate(cmd(CommandType.SET_DISCHARGE_RATE, power_kw=5))
    assert (out["raw_value"], out["values"]) == (-50, [0x10000 - 50])
    assert decode_registers(registers[CommandType.SET_DISCHARGE_RATE], out["values"]) == 5.0


@pytest.mark.parametrize(("spec", "value", "words"), [
    (RegisterSpec(40101, RegisterType.INT32, 100, WordOrder.BIG), 123.45, [0x0000, 0x3039]),
    (RegisterSpec(40101, RegisterType.INT32, 100, WordOrder.LITTLE), 123.45, [0x3039, 0x0000]),
    (RegisterSpec(40101, RegisterType.INT32, 1, WordOrder.BIG), -2, [0xFFFF, 0xFFFE]),
    (RegisterSpec(40101, RegisterType.UINT32, 1, WordOrder.BIG), 70000, [0x0001, 0x1170]),
    (RegisterSpec(40101, RegisterType.UINT32, 1, WordOrder.LITTLE), 70000, [0x1170, 0x0001]),
    (RegisterSpec(40101, RegisterType.FLOAT32, 1, WordOrder.BIG), 1.0, [0x3F80, 0x0000]),
    (RegisterSpec(40101, RegisterType.FLOAT32, 1, WordOrder.LITTLE), -2.5, [0x0000, 0xC020]),
    (RegisterSpec(40101, RegisterType.INT16, 1), -1, [0xFFFF]),
])
def test_known_encodings(spec, value, words):
    assert encode_value(spec, value)[1] == words
    assert decode_registers(spec, words) == pytest.approx(value)


@pytest.mark.parametrize(("data_type", "raw"), [
    (RegisterType.UINT16, -1), (RegisterType.UINT16, 65536), (RegisterType.INT16, 32768), (RegisterType.INT16, -32769),
    (RegisterType.UINT32, 2**32), (RegisterType.INT32, 2**31), (RegisterType.INT32, -(2**31) - 1),
])
def test_out_of_range_is_refused_never_wrapped(data_type, raw):
    with pytest.raises(TranslationError, match=f"outside the {data_type} range"):
        encode_value(RegisterSpec(40001, data_type), raw)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e39, -1e39])
def test_float32_refuses_what_it_cannot_hold(value):
    with pytest.raises(TranslationError):
        encode_value(RegisterSpec(40001, RegisterType.FLOAT32), value)


def test_float32_raw_value_is_what_the_register_holds():
    raw, _ = encode_value(RegisterSpec(40001, RegisterType.FLOAT32), 0.1)
    assert raw != 0.1 and raw == pytest.approx(0.1, rel=1e-7)


integer_types = st.sampled_from(list(RANGES))
word_orders = st.sampled_from(list(WordOrder))
scales = st.sampled_from([1, 10, 100, 1000, 0.5, -10])


@given(integer_types, word_orders, scales, st.data())
def test_integer_round_trip(data_type, word_order, scale, data):
    spec = RegisterSpec(40001, data_type, scale, word_order)
    low, high = RANGES[data_type]
    raw = data.draw(st.integers(low, high))
    raw_value, words = encode_value(spec, raw / scale)
    assert raw_value == raw
    assert words == pymodbus_words(spec, raw)  # same wire format as pymodbus' own converter
    assert all(0 <= w <= 0xFFFF for w in words) and len(words) == spec.word_count
    assert decode_registers(spec, words) == raw / scale


@given(integer_types, word_orders, scales, st.data())
def test_any_in_range_value_comes_back_within_half_a_step(data_type, word_order, scale, data):
    spec = RegisterSpec(40001, data_type, scale, word_order)
    low, high = sorted(bound / scale for bound in RANGES[data_type])
    value = data.draw(st.floats(low, high))
    try:
        _, words = encode_value(spec, value)
    except TranslationError:  # value within half a step of a bound may round outside it
        assert min(abs(value * scale - b) for b in RANGES[data_type]) <= 0.5
        return
    assert abs(decode_registers(spec, words) - value) <= 0.5 / abs(scale) * (1 + 1e-9)


@given(word_orders, st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_round_trip(word_order, value):
    spec = RegisterSpec(40001, RegisterType.FLOAT32, 1, word_order)
    raw, words = encode_value(spec, value)
    assert words == pymodbus_words(spec, value)
    assert decode_registers(spec, words) == value == raw


@pytest.mark.parametrize("words", [[], [1, 2], [65536], [-1], [True], [1.0]])
def test_decode_refuses_malformed_words(words):
    with pytest.raises(ValueError, match="uint16 needs 1 words"):
        decode_registers(RegisterSpec(40001), words)


def test_from_dict():
    registers = RegisterMap.from_dict({
        "SET_CHARGE_RATE": {"address": 40101, "data_type": "int32", "scale": 100, "word_order": "little", "unit": "kW"},
        "set_soc_target": {"address": 400201},
    })
    assert dict(registers) == {
        CommandType.SET_CHARGE_RATE: RegisterSpec(40101, RegisterType.INT32, 100, WordOrder.LITTLE, "kW"),
        CommandType.SET_SOC_TARGET: RegisterSpec(400201, RegisterType.UINT16, 1.0, WordOrder.BIG, ""),
    }
    out = ModbusAdapter("m", registers).translate(cmd(CommandType.SET_CHARGE_RATE, power_kw=1.5))
    assert (out["address"], out["reference"], out["values"], out["data_type"]) == (100, 40101, [150, 0], "int32")
    assert ModbusAdapter("m", registers).translate(cmd(CommandType.SET_SOC_TARGET, soc_percent=90))["address"] == 200


@pytest.mark.parametrize(("config", "reason"), [
    ({"SET_CHARGE_RATE": {}}, "register map SET_CHARGE_RATE: address is required"),
    ({"SET_CHARGE_RATE": {"address": 40001, "scal": 10}}, r"unknown setting\(s\) \['scal'\]"),
    ({"SET_CHARGE_RATE": {"address": 40001, "data_type": "int64"}},
     "unknown data_type 'int64' \\(use one of uint16, int16"),
    ({"SET_CHARGE_RATE": {"address": 40001, "word_order": "middle"}}, "unknown word_order 'middle'"),
    ({"SET_CHARGE_RATE": {"address": 30001}}, "not a holding register reference"),
    ({"SET_CHARGE_RATE": {"address": "40001"}}, "address must be an integer"),
    ({"SET_CHARGE_RATE": {"address": 40001, "scale": 0}}, "scale must be a finite non-zero number"),
    ({"SET_CHARGE_RATE": {"address": 40001, "scale": math.nan}}, "scale must be a finite non-zero number"),
    ({"SET_CHARGE_RATE": {"address": 465536, "data_type": "uint32"}}, "runs past the last holding register"),
    ({"SET_CHARGE_RATE": 40001}, "expected a mapping"),
    ({"SET_CHARGING_RATE": {"address": 40001}}, "register map SET_CHARGING_RATE: unknown command type"),
    ({"START_CHARGING": {"address": 40001}}, "START_CHARGING is not a setpoint"),
])
def test_from_dict_errors_are_clear(config, reason):
    with pytest.raises(ValueError, match=reason):
        RegisterMap.from_dict(config)


def test_register_spec_is_frozen_and_coerces_config_words():
    spec = RegisterSpec(40001, "FLOAT32", word_order="LITTLE")  # type: ignore[arg-type]  # config words, coerced
    assert (spec.data_type, spec.word_order, spec.word_count) == (RegisterType.FLOAT32, WordOrder.LITTLE, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.scale = 2  # type: ignore[misc]


def test_register_map_is_read_only_and_checked():
    registers = RegisterMap({"SET_CHARGE_RATE": RegisterSpec(40001)})
    assert list(registers) == [CommandType.SET_CHARGE_RATE] and len(registers) == 1
    with pytest.raises(TypeError):
        registers[CommandType.SET_SOC_TARGET] = RegisterSpec(40002)  # type: ignore[index]
    with pytest.raises(ValueError, match="expected a RegisterSpec"):
        RegisterMap({CommandType.SET_CHARGE_RATE: {"address": 40001}})  # type: ignore[dict-item]


@pytest.mark.parametrize("device_id", [-1, 256, True, "1"])
def test_bad_device_id(device_id):
    with pytest.raises(ValueError, match="device_id"):
        ModbusAdapter("m", device_id=device_id)


def test_plain_dict_register_map_is_refused():
    with pytest.raises(TypeError, match=r"RegisterMap\.from_dict"):
        ModbusAdapter("m", {"SET_CHARGE_RATE": {"address": 40001}})  # type: ignore[arg-type]
