"""A battery system on Modbus TCP: its registers, its limits, and how to read its state.

The same description drives the Modbus gateway and the battery simulator, from the site
config (``[assets.modbus]``). Default registers (holding registers, references):

========= ===================== ======== ===== ==========================================
register  meaning               type     scale unit
========= ===================== ======== ===== ==========================================
40001     charge rate setpoint  uint16   10    kW (0.1 kW steps)
40002     discharge rate        uint16   10    kW
40003     power limit           uint16   10    kW
40004     SOC target            uint16   1     %
40101     operating mode        uint16   1     0 idle, 1 charging, 2 discharging, 3 standby, 4 faulted
40102     state of charge       uint16   10    % (0.1 % steps)
40103     active power          int16    10    kW, + charging, - discharging
40104     fault code            uint16   1     0 = no fault
40201     watchdog (heartbeat)  uint16   1     only with ``[assets.modbus.watchdog]``
========= ===================== ======== ===== ==========================================

The watchdog is how a battery system learns that its controller died: the gateway writes a
changing counter to the heartbeat register; when no new value arrives for the communication
timeout, the device drops its setpoints to its safe value by itself (charge at the asset's
fallback_kw, discharge 0), as common battery systems do (docs/modbus.md, leases).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coordinator.asset_machines import BatteryState
from coordinator.base import CommandType
from coordinator.protocols.modbus.registers import (
    DEFAULT_REGISTER_MAP,
    RegisterMap,
    RegisterSpec,
    RegisterType,
    decode_registers,
    encode_value,
)

MAX_READ_REGISTERS = 125  # Modbus: read holding registers carries at most 125 words


class OperatingMode(IntEnum):
    IDLE = 0
    CHARGING = 1
    DISCHARGING = 2
    STANDBY = 3
    FAULTED = 4

    @property
    def state(self) -> BatteryState:
        return BatteryState[self.name]


@dataclass(frozen=True)
class StatusRegisters:
    mode: RegisterSpec
    soc_percent: RegisterSpec
    active_power_kw: RegisterSpec
    fault_code: RegisterSpec

    def specs(self) -> dict[str, RegisterSpec]:
        return {"mode": self.mode, "soc_percent": self.soc_percent,
                "active_power_kw": self.active_power_kw, "fault_code": self.fault_code}

    def span(self) -> tuple[int, int]:
        """(first offset, word count) covering every status register."""
        first = min(s.offset for s in self.specs().values())
        last = max(s.offset + s.word_count for s in self.specs().values())
        return first, last - first

    def reads(self) -> list[tuple[int, int]]:
        """(offset, count) requests that cover every status register, as few as Modbus allows
        (at most 125 registers per read)."""
        requests: list[tuple[int, int]] = []
        for spec in sorted(self.specs().values(), key=lambda s: s.offset):
            end = spec.offset + spec.word_count
            if requests and end - requests[-1][0] <= MAX_READ_REGISTERS:
                start, count = requests[-1]
                requests[-1] = (start, max(count, end - start))
            else:
                requests.append((spec.offset, spec.word_count))
        return requests


DEFAULT_STATUS_REGISTERS = StatusRegisters(
    mode=RegisterSpec(40101),
    soc_percent=RegisterSpec(40102, scale=10, unit="%"),
    active_power_kw=RegisterSpec(40103, RegisterType.INT16, scale=10, unit="kW"),
    fault_code=RegisterSpec(40104),
)


@dataclass(frozen=True)
class DeviceStatus:
    """One poll of the status registers, decoded."""

    state: BatteryState
    soc_percent: float
    active_power_kw: float
    fault_code: int

    def telemetry(self) -> dict[str, Any]:
        return {"soc_percent": self.soc_percent, "active_power_kw": self.active_power_kw,
                "fault_code": self.fault_code, "mode": self.state.value}


def decode_status(registers: StatusRegisters, first_offset: int, words: list[int]) -> DeviceStatus:
    """Decode a block of words read from ``first_offset``. Pure.

    A non-zero fault code means FAULTED whatever the mode says; an unknown mode is an error.
    """
    def value(spec: RegisterSpec) -> float:
        start = spec.offset - first_offset
        return decode_registers(spec, words[start : start + spec.word_count])

    fault = int(value(registers.fault_code))
    raw_mode = int(value(registers.mode))
    try:
        mode = OperatingMode(raw_mode)
    except ValueError:
        raise ValueError(f"unknown operating mode {raw_mode}") from None
    state = BatteryState.FAULTED if fault else mode.state
    soc_percent = round(value(registers.soc_percent), 3)
    return DeviceStatus(state, soc_percent, round(value(registers.active_power_kw), 3), fault)


def status_writes(registers: StatusRegisters, status: DeviceStatus) -> list[tuple[int, list[int]]]:
    """The inverse of ``decode_status``: (offset, words) that make a device report ``status``.
    Pure; what the battery simulator serves. Raises TranslationError for a value a register
    cannot hold."""
    values = {
        "mode": OperatingMode[status.state.name],
        "soc_percent": status.soc_percent,
        "active_power_kw": status.active_power_kw,
        "fault_code": status.fault_code,
    }
    return [(spec.offset, encode_value(spec, values[name])[1]) for name, spec in registers.specs().items()]


HEARTBEATS_PER_TIMEOUT = 3
"""The gateway writes the heartbeat this many times per timeout: one or two lost writes do not trip it."""


def next_heartbeat(value: int) -> int:
    """The heartbeat counter's next value (uint16, wrapping): the device watches for a change."""
    return (value + 1) & 0xFFFF


class WatchdogConfig(BaseModel):
    """``[assets.modbus.watchdog]``: the device's heartbeat register and communication timeout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: int = 40201
    """Holding register reference (uint16) the gateway writes its heartbeat counter to."""
    timeout_seconds: float | None = Field(None, gt=0)
    """No new heartbeat for this long: the device falls back. Default: the site's lease_seconds."""

    @field_validator("address")
    @classmethod
    def _holding_register(cls, value: int) -> int:
        RegisterSpec(value)
        return value

    def spec(self) -> RegisterSpec:
        return RegisterSpec(self.address)

    def timeout(self, lease_seconds: float) -> float:
        return self.timeout_seconds if self.timeout_seconds is not None else lease_seconds

    def interval(self, lease_seconds: float) -> float:
        """Seconds between two heartbeat writes."""
        return self.timeout(lease_seconds) / HEARTBEATS_PER_TIMEOUT


class ModbusDeviceConfig(BaseModel):
    """``[assets.modbus]`` of a battery in the site config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    device_id: int = Field(1, ge=0, le=255)
    max_charge_kw: float | None = Field(None, gt=0)
    """Setpoints above this are clamped (and the clamp reported); default: the asset's max_power_kw."""
    max_discharge_kw: float | None = Field(None, gt=0)
    registers: dict[str, dict[str, Any]] | None = None
    """Setpoint registers by command type, e.g. {"SET_CHARGE_RATE": {"address": 40101, "data_type": "int32"}}."""
    status_registers: dict[str, dict[str, Any]] | None = None
    """Overrides of mode / soc_percent / active_power_kw / fault_code."""
    poll_interval_seconds: float = Field(1.0, gt=0)
    timeout_seconds: float = Field(1.0, gt=0)
    verify_window_seconds: float = Field(3.0, gt=0)
    """How long a written value may take to show in the read-back."""
    verify_tolerance_kw: float | None = Field(None, ge=0)
    """Default: half a register step, i.e. exact after rounding."""
    capacity_kwh: float = Field(200.0, gt=0)
    """For the simulator."""
    watchdog: WatchdogConfig | None = None
    """The device's heartbeat register; without one a device holds its last setpoint for ever."""

    @field_validator("registers")
    @classmethod
    def _valid_map(cls, value: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        if value is not None:
            RegisterMap.from_dict(value)
        return value

    @field_validator("status_registers")
    @classmethod
    def _valid_status(cls, value: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        if value is not None:
            _status_registers(value)
        return value

    @model_validator(mode="after")
    def _watchdog_apart(self) -> ModbusDeviceConfig:
        if self.watchdog is None:
            return self
        taken = {spec.offset + i: name for name, spec in self.status().specs().items() for i in range(spec.word_count)}
        taken |= {spec.offset + i: str(ctype) for ctype, spec in self.register_map().items()
                  for i in range(spec.word_count)}
        offset = self.watchdog.spec().offset
        if offset in taken:
            raise ValueError(f"watchdog register {self.watchdog.address} is also {taken[offset]}")
        return self

    def register_map(self) -> RegisterMap:
        if not self.registers:
            return DEFAULT_REGISTER_MAP
        merged: dict[CommandType | str, RegisterSpec] = dict(DEFAULT_REGISTER_MAP.items())
        merged.update(RegisterMap.from_dict(self.registers).items())
        return RegisterMap(merged)

    def status(self) -> StatusRegisters:
        return _status_registers(self.status_registers or {})


def _status_registers(overrides: dict[str, dict[str, Any]]) -> StatusRegisters:
    unknown = set(overrides) - set(DEFAULT_STATUS_REGISTERS.specs())
    if unknown:
        raise ValueError(f"unknown status registers: {', '.join(sorted(unknown))}")
    specs = DEFAULT_STATUS_REGISTERS.specs() | {name: RegisterSpec(**spec) for name, spec in overrides.items()}
    return StatusRegisters(**specs)
