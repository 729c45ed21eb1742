"""From a command to the register writes that carry it out, and how to check them. Pure.

This is how the Modbus gateway translates a command: on top of the adapter's encoding it
clamps to the device's limits and zeroes the opposite direction first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coordinator.adapters.base import TranslationError
from coordinator.base import Command, CommandType

from .device import ModbusDeviceConfig
from .registers import COMMAND_REGISTERS, RESET_VALUE, SETPOINT_PARAMETERS, RegisterMap, RegisterSpec, encode_value

_OPPOSITE = {CommandType.SET_CHARGE_RATE: CommandType.SET_DISCHARGE_RATE,
             CommandType.SET_DISCHARGE_RATE: CommandType.SET_CHARGE_RATE}


@dataclass(frozen=True)
class RegisterWrite:
    spec: RegisterSpec
    value: float
    words: list[int]
    expected: float | None = None
    """What the read-back must show, when not ``value``: 0 for a self-clearing command register."""


@dataclass(frozen=True)
class SetpointPlan:
    writes: list[RegisterWrite]
    """In order: the opposite direction is zeroed first, so a battery is never told to
    charge and discharge at once."""
    requested: float
    applied: float
    limit: float

    @property
    def clamped(self) -> bool:
        return self.applied != self.requested


def limit_for(command_type: CommandType, device: ModbusDeviceConfig, asset_max_kw: float) -> float:
    if command_type is CommandType.SET_CHARGE_RATE:
        return device.max_charge_kw or asset_max_kw
    if command_type is CommandType.SET_DISCHARGE_RATE:
        return device.max_discharge_kw or asset_max_kw
    if command_type is CommandType.SET_SOC_TARGET:
        return 100.0
    return asset_max_kw


def plan_command(
    cmd: Command, device: ModbusDeviceConfig, register_map: RegisterMap, asset_max_kw: float
) -> SetpointPlan:
    """Raise TranslationError for what no register can carry; clamp what exceeds the device's limits."""
    if cmd.command_type in COMMAND_REGISTERS and cmd.command_type in register_map:
        spec = register_map[cmd.command_type]
        write = RegisterWrite(spec, RESET_VALUE, encode_value(spec, RESET_VALUE)[1], expected=0.0)
        return SetpointPlan([write], RESET_VALUE, RESET_VALUE, RESET_VALUE)
    name = SETPOINT_PARAMETERS.get(cmd.command_type)
    if name is None or cmd.command_type not in register_map:
        raise TranslationError(f"{cmd.command_type} has no register on this battery")
    requested = cmd.parameters.get(name)
    if (not isinstance(requested, (int, float)) or isinstance(requested, bool)
            or not math.isfinite(requested) or requested < 0):
        raise TranslationError(f"{name} must be a finite number >= 0, got {requested!r}")
    limit = limit_for(cmd.command_type, device, asset_max_kw)
    applied = min(float(requested), limit)
    writes = []
    opposite = _OPPOSITE.get(cmd.command_type)
    if opposite is not None and opposite in register_map:
        writes.append(_write(register_map[opposite], 0.0))
    writes.append(_write(register_map[cmd.command_type], applied))
    return SetpointPlan(writes, float(requested), applied, limit)


def _write(spec: RegisterSpec, value: float) -> RegisterWrite:
    # The register encoding every Modbus write goes through (the adapter's too).
    return RegisterWrite(spec, value, encode_value(spec, value)[1])


def shows(spec: RegisterSpec, shown: float, expected: float, tolerance: float | None) -> bool:
    """Is the decoded register value ``shown`` the ``expected`` one? Default tolerance: half a register step."""
    allowed = tolerance if tolerance is not None else 0.5 / abs(spec.scale)
    return abs(shown - expected) <= allowed + 1e-9


def coalesce(writes: list[RegisterWrite]) -> list[tuple[int, list[int]]]:
    """(offset, words) requests for ``writes``: adjacent registers go in one request, so
    the default map's charge/discharge pair changes in one atomic write. Order is kept
    where registers are apart (the zeroing write still goes first)."""
    requests: list[tuple[int, list[int]]] = []
    for w in writes:
        offset = w.spec.offset
        if requests:
            start, words = requests[-1]
            if start + len(words) == offset:
                requests[-1] = (start, words + w.words)
                continue
            if offset + len(w.words) == start:
                requests[-1] = (offset, w.words + words)
                continue
        requests.append((offset, list(w.words)))
    return requests
