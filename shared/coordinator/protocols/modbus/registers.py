"""Holding registers: where a setpoint lives and how its value is encoded. Pure.

A ``RegisterSpec`` says where a setpoint lives and how it is encoded: the register's reference
number (40001 = holding register offset 0), its data type, a scale (register value = physical
value x scale, so scale 10 gives 0.1 kW resolution) and, for 32-bit types, the word order.
Values a register cannot hold are refused with TranslationError, never wrapped or truncated.
A ``RegisterMap`` is one device model's table of setpoint registers.

    >>> spec = RegisterSpec(40001, RegisterType.UINT16, scale=10, unit="kW")
    >>> encode_value(spec, 7.46), decode_registers(spec, [75])
    ((75, [75]), 7.5)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

from coordinator.adapters.base import TranslationError
from coordinator.base import CommandType


class RegisterType(StrEnum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT32 = "float32"


class WordOrder(StrEnum):
    """Order of the 16-bit words of a 32-bit value (bytes within a word are always big-endian).

    BIG: most significant word first (the Modbus convention). LITTLE: least significant
    word first ("word swapped"). Same meaning as pymodbus' ``word_order="big"/"little"``.
    """

    BIG = "big"
    LITTLE = "little"


_E = TypeVar("_E", RegisterType, WordOrder)

_STRUCT_CODES: dict[RegisterType, str] = {
    RegisterType.UINT16: "H",
    RegisterType.INT16: "h",
    RegisterType.UINT32: "I",
    RegisterType.INT32: "i",
    RegisterType.FLOAT32: "f",
}

_INTEGER_RANGES: dict[RegisterType, tuple[int, int]] = {
    RegisterType.UINT16: (0, 0xFFFF),
    RegisterType.INT16: (-0x8000, 0x7FFF),
    RegisterType.UINT32: (0, 0xFFFF_FFFF),
    RegisterType.INT32: (-0x8000_0000, 0x7FFF_FFFF),
}

# Reference notations for holding registers: 5-digit 40001-49999 and 6-digit 400001-465536.
_REFERENCE_BASES: tuple[tuple[int, int], ...] = ((40001, 49999), (400001, 465536))
_HOLDING_REGISTERS = 65536


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """Where and how one setpoint is written. Raises ValueError when inconsistent.

    ``address`` is the reference number (40001 or 400001 = first holding register).
    ``scale`` may be negative, e.g. to write discharge as negative values into the same
    signed register that holds the charge rate.
    """

    address: int
    data_type: RegisterType = RegisterType.UINT16
    scale: float = 1.0
    word_order: WordOrder = WordOrder.BIG
    unit: str = ""

    def __post_init__(self) -> None:
        # Coerce config strings ("int32", "little") so a spec built by hand behaves like from_dict's.
        object.__setattr__(self, "data_type", _enum(RegisterType, self.data_type, "data_type"))
        object.__setattr__(self, "word_order", _enum(WordOrder, self.word_order, "word_order"))
        if isinstance(self.address, bool) or not isinstance(self.address, int):
            raise ValueError(f"address must be an integer reference like 40001, got {self.address!r}")
        if not any(low <= self.address <= high for low, high in _REFERENCE_BASES):
            raise ValueError(
                f"address {self.address} is not a holding register reference (40001-49999 or 400001-465536)"
            )
        if self.offset + self.word_count > _HOLDING_REGISTERS:
            raise ValueError(f"{self.data_type} at {self.address} runs past the last holding register")
        scale = self.scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale == 0:
            raise ValueError(f"scale must be a finite non-zero number, got {self.scale!r}")
        if not isinstance(self.unit, str):
            raise ValueError(f"unit must be a string, got {self.unit!r}")

    @property
    def offset(self) -> int:
        """0-based holding register address, as pymodbus' ``address=`` expects."""
        base = 40001 if self.address <= _REFERENCE_BASES[0][1] else 400001
        return self.address - base

    @property
    def word_count(self) -> int:
        """Number of 16-bit registers the value occupies (1 or 2)."""
        return struct.calcsize(">" + _STRUCT_CODES[self.data_type]) // 2


def _enum(kind: type[_E], value: Any, name: str) -> _E:
    try:
        return kind(value.lower() if isinstance(value, str) else value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValueError(f"unknown {name} {value!r} (use one of {allowed})") from None


def encode_value(spec: RegisterSpec, value: float) -> tuple[int | float, list[int]]:
    """Return ``(raw_value, words)`` for physical ``value``: raw = value x scale, rounded for integer types.

    Raises TranslationError when the raw value does not fit the register type, or is NaN/inf.
    """
    raw: int | float = value * spec.scale
    if not math.isfinite(raw):
        raise TranslationError(f"{value!r} x scale {spec.scale} is not a finite number for register {spec.address}")
    code = _STRUCT_CODES[spec.data_type]
    if spec.data_type is not RegisterType.FLOAT32:
        raw = round(raw)  # nearest integer, ties to even
        low, high = _INTEGER_RANGES[spec.data_type]
        if not low <= raw <= high:
            raise TranslationError(
                f"{value!r}{spec.unit and ' ' + spec.unit} x scale {spec.scale} = {raw} is outside the "
                f"{spec.data_type} range {low}..{high} of register {spec.address}"
            )
    try:
        packed = struct.pack(">" + code, raw)
    except OverflowError:  # only float32: finite in float64 but beyond float32's ~3.4e38
        raise TranslationError(f"{raw!r} does not fit the float32 register {spec.address}") from None
    if spec.data_type is RegisterType.FLOAT32:
        (raw,) = struct.unpack(">f", packed)  # report what the register will hold, not the float64
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    return raw, words[::-1] if spec.word_order is WordOrder.LITTLE else words


def decode_registers(spec: RegisterSpec, words: Sequence[int]) -> float:
    """Inverse of the encoding: the physical value held by ``words`` (e.g. a read-back).

    Raises ValueError when ``words`` has the wrong length or a word outside 0..65535.
    """
    well_formed = all(type(w) is int and 0 <= w <= 0xFFFF for w in words)
    if len(words) != spec.word_count or not well_formed:
        raise ValueError(f"{spec.data_type} needs {spec.word_count} words of 0..65535, got {list(words)!r}")
    ordered = list(words)[::-1] if spec.word_order is WordOrder.LITTLE else list(words)
    (raw,) = struct.unpack(">" + _STRUCT_CODES[spec.data_type], b"".join(w.to_bytes(2, "big") for w in ordered))
    return float(raw) / spec.scale


SETPOINT_PARAMETERS: Mapping[CommandType, str] = MappingProxyType({
    CommandType.SET_CHARGE_RATE: "power_kw",
    CommandType.SET_DISCHARGE_RATE: "power_kw",
    CommandType.SET_POWER_LIMIT: "power_kw",
    CommandType.SET_SOC_TARGET: "soc_percent",
})
"""The command types a register can express, and the parameter each one writes."""

COMMAND_REGISTERS: frozenset[CommandType] = frozenset({CommandType.RESET})
"""Command types carried by a self-clearing command register, not a setpoint: the gateway
writes RESET_VALUE, the device acts (a reset clears its fault) and sets the register back to 0."""
RESET_VALUE = 1.0

_SPEC_KEYS = frozenset(f.name for f in fields(RegisterSpec))


class RegisterMap(Mapping[CommandType, RegisterSpec]):
    """Immutable CommandType -> RegisterSpec table of one device model.

    Only setpoint commands (SET_CHARGE_RATE, SET_DISCHARGE_RATE, SET_POWER_LIMIT,
    SET_SOC_TARGET) and the RESET command register can be mapped; a command type missing from the map is refused at
    translation. Raises ValueError on construction for anything else.
    """

    def __init__(self, specs: Mapping[CommandType | str, RegisterSpec]) -> None:
        table: dict[CommandType, RegisterSpec] = {}
        for key, spec in specs.items():
            ctype = _command_type(key)
            if not isinstance(spec, RegisterSpec):
                raise ValueError(f"{ctype}: expected a RegisterSpec, got {spec!r}")
            table[ctype] = spec
        self._specs = MappingProxyType(table)

    @classmethod
    def from_dict(cls, config: Mapping[str, Mapping[str, Any]]) -> RegisterMap:
        """Build from plain config, e.g. ``{"SET_CHARGE_RATE": {"address": 40101, "data_type": "int32",
        "scale": 100, "word_order": "little", "unit": "kW"}}``. Only ``address`` is required.
        """
        specs: dict[CommandType | str, RegisterSpec] = {}
        for key, entry in config.items():
            if not isinstance(entry, Mapping):
                raise ValueError(f"register map {key}: expected a mapping of register settings, got {entry!r}")
            if unknown := set(entry) - _SPEC_KEYS:
                raise ValueError(
                    f"register map {key}: unknown setting(s) {sorted(unknown)} (allowed: {sorted(_SPEC_KEYS)})"
                )
            if "address" not in entry:
                raise ValueError(f"register map {key}: address is required")
            try:
                specs[_command_type(key)] = RegisterSpec(**entry)
            except ValueError as exc:
                raise ValueError(f"register map {key}: {exc}") from None
        return cls(specs)

    def __getitem__(self, key: CommandType) -> RegisterSpec:
        return self._specs[key]

    def __iter__(self) -> Iterator[CommandType]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"RegisterMap({dict(self._specs)!r})"


def _command_type(key: CommandType | str) -> CommandType:
    try:
        ctype = CommandType(key.upper() if isinstance(key, str) else key)
    except ValueError:
        raise ValueError(f"unknown command type {key!r}") from None
    if ctype not in SETPOINT_PARAMETERS and ctype not in COMMAND_REGISTERS:
        mappable = ", ".join([*SETPOINT_PARAMETERS, *COMMAND_REGISTERS])
        raise ValueError(f"{ctype} is not a setpoint and cannot be mapped to a register (mappable: {mappable})")
    return ctype


DEFAULT_REGISTER_MAP = RegisterMap(
    {
        CommandType.SET_CHARGE_RATE: RegisterSpec(40001, RegisterType.UINT16, scale=10, unit="kW"),
        CommandType.SET_DISCHARGE_RATE: RegisterSpec(40002, RegisterType.UINT16, scale=10, unit="kW"),
        CommandType.SET_POWER_LIMIT: RegisterSpec(40003, RegisterType.UINT16, scale=10, unit="kW"),
        CommandType.SET_SOC_TARGET: RegisterSpec(40004, RegisterType.UINT16, scale=1, unit="%"),
        CommandType.RESET: RegisterSpec(40005, RegisterType.UINT16, scale=1),
    }
)
"""The seed's registers: power in 0.1 kW steps (0..6553.5 kW), SOC target in whole percent;
and the reset command register (write 1: clear a fault; the device sets it back to 0)."""
