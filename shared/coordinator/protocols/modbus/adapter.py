"""Modbus adapter: setpoint commands to holding-register writes (values as 16-bit words, no I/O).

The registers and their encoding are in registers.py; this module turns one command into
the write a gateway sends.

    >>> from datetime import datetime, timezone
    >>> from coordinator.base import Command, CommandType
    >>> cmd = Command("ast_batt_001", CommandType.SET_CHARGE_RATE, {"power_kw": 5.0},
    ...               datetime(2025, 1, 15, 8, 0, tzinfo=timezone.utc))
    >>> out = ModbusAdapter("modbus_site_1").translate(cmd)
    >>> out["reference"], out["address"], out["values"], out["raw_value"]
    (40001, 0, [50], 50)
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

from coordinator.adapters.base import ProtocolAdapter, TranslationError
from coordinator.base import Command

from .registers import (
    COMMAND_REGISTERS,
    DEFAULT_REGISTER_MAP,
    RESET_VALUE,
    SETPOINT_PARAMETERS,
    RegisterMap,
    encode_value,
)


class ModbusAction(StrEnum):
    WRITE_REGISTERS = "write_registers"
    """Write multiple holding registers (function code 16), also used for a single register."""


class ModbusAdapter(ProtocolAdapter):
    """Translates setpoint commands into holding-register writes for one Modbus device.

    ``translate`` returns ``{"action": "write_registers", "device_id", "address" (0-based),
    "values" (16-bit words), "reference", "data_type", "raw_value"}``.
    """

    protocol = "modbus"

    def __init__(self, gateway_id: str, register_map: RegisterMap | None = None, device_id: int = 1) -> None:
        super().__init__(gateway_id)
        if isinstance(device_id, bool) or not isinstance(device_id, int) or not 0 <= device_id <= 255:
            raise ValueError(f"device_id must be a Modbus unit id 0..255, got {device_id!r}")
        if register_map is not None and not isinstance(register_map, RegisterMap):
            raise TypeError(
                f"register_map must be a RegisterMap (see RegisterMap.from_dict), got {type(register_map).__name__}"
            )
        self.register_map = DEFAULT_REGISTER_MAP if register_map is None else register_map
        self.device_id = device_id

    def translate(self, command: Command) -> dict[str, Any]:
        ctype = command.command_type
        spec = self.register_map.get(ctype)
        if spec is None:
            raise TranslationError(f"{ctype} has no register in the Modbus register map of {self.gateway_id}")
        value = RESET_VALUE if ctype in COMMAND_REGISTERS else _setpoint(command, SETPOINT_PARAMETERS[ctype])
        raw, words = encode_value(spec, value)
        return {
            "action": ModbusAction.WRITE_REGISTERS.value,
            "device_id": self.device_id,
            "address": spec.offset,
            "values": words,
            "reference": spec.address,
            "data_type": spec.data_type.value,
            "raw_value": raw,
        }

    def __repr__(self) -> str:
        return f"ModbusAdapter({self.gateway_id!r}, device_id={self.device_id})"


def _setpoint(command: Command, name: str) -> float:
    value = command.parameters.get(name)
    if value is None:
        raise TranslationError(f"{command.command_type} needs parameter {name}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise TranslationError(f"{name} must be finite and >= 0, got {value!r}")
    if name == "soc_percent" and value > 100:
        raise TranslationError(f"soc_percent must be at most 100, got {value!r}")
    return value
