"""Battery simulator: real Modbus TCP servers (pymodbus) that behave like battery systems.

Every battery of a modbus gateway in the site config is served on its configured
host:port and unit id, with its configured register map. A battery integrates its state
of charge from the applied power, keeps to its power limits and SOC bounds, and reports
mode, SOC, active power and fault code in its status registers.

Tests and operators steer it through one extra holding register, 40900 (``CONTROL``):
0 normal (clears a fault), 1 fault, 2 stop answering, 3 accept writes without applying them.
A battery with a ``[assets.modbus.watchdog]`` watches its heartbeat register: when no new
value was written to it for the communication timeout (default: the site's lease), it drops
its setpoints to its safe value by itself (charge at the asset's fallback_kw, discharge 0) and
logs that as a ``WATCHDOG`` line, as common battery systems do. The timer runs from the
simulator's start; a new heartbeat value arms it again.

``--applied-log PATH`` appends one JSON line per setpoint register write a battery applies
(simulators/applied_log.py), the device-side evidence of the fault-injection suite.

    qubit-battery-simulator --site-config deploy/site.toml --gateway-id modbus
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from enum import IntEnum
from typing import cast

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from coordinator.base import CommandType
from coordinator.protocols.modbus.device import DeviceStatus, OperatingMode, status_writes
from coordinator.protocols.modbus.registers import RegisterSpec, decode_registers, encode_value
from coordinator.runtime.log_format import configure_logging
from coordinator.runtime.service import SETTINGS_HELP, load_site
from coordinator.runtime.settings import DEFAULT_SITE_CONFIG
from coordinator.site import AssetConfig, Protocol
from simulators.applied_log import AppliedLog

log = logging.getLogger(__name__)

CONTROL = RegisterSpec(40900)
REGISTER_COUNT = 1000  # 40001..41000: every default register, the control register and room for custom maps


class Control(IntEnum):
    NORMAL = 0
    FAULT = 1
    MUTE = 2
    IGNORE_WRITES = 3


@dataclass
class BatteryPhysics:
    """State of charge and power, advanced in time. Pure."""

    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    soc_percent: float = 50.0
    soc_min: float = 5.0
    soc_max: float = 95.0

    def applied_power(self, charge_kw: float, discharge_kw: float) -> float:
        """+ charging / - discharging, within the power limits and SOC bounds."""
        power = min(charge_kw, self.max_charge_kw) - min(discharge_kw, self.max_discharge_kw)
        if power > 0 and self.soc_percent >= self.soc_max:
            return 0.0
        if power < 0 and self.soc_percent <= self.soc_min:
            return 0.0
        return power

    def advance(self, power_kw: float, seconds: float) -> None:
        delta = power_kw * seconds / 3600.0 / self.capacity_kwh * 100.0
        if power_kw:
            self.soc_percent = min(self.soc_max, max(self.soc_min, self.soc_percent + delta))


class SimulatedBattery:
    def __init__(self, asset: AssetConfig, soc_percent: float = 50.0, applied_log: AppliedLog | None = None,
                 lease_seconds: float = 300.0) -> None:
        assert asset.modbus is not None  # the site config refuses a modbus asset without one
        device = asset.modbus
        self.endpoint = (device.host, device.port)
        self.asset_id = asset.asset_id
        self.unit = device.device_id
        self.registers_map = device.register_map()
        self.status = device.status()
        self.physics = BatteryPhysics(
            device.capacity_kwh, device.max_charge_kw or asset.max_power_kw,
            device.max_discharge_kw or asset.max_power_kw, soc_percent,
        )
        self.control = Control.NORMAL
        self.applied_log = applied_log
        self._last = time.monotonic()
        self.fallback_kw = asset.fallback_kw
        self.watchdog = device.watchdog.spec() if device.watchdog is not None else None
        self.watchdog_timeout = device.watchdog.timeout(lease_seconds) if device.watchdog is not None else None
        self.timed_out = False
        """The watchdog fired and no heartbeat came since."""
        self._registers: list[int] | None = None
        """The device's live holding registers, as pymodbus hands them to the first request."""
        self._watchdog_timer: asyncio.TimerHandle | None = None

    def _get(self, regs: list[int], spec: RegisterSpec) -> float:
        return decode_registers(spec, regs[spec.offset : spec.offset + spec.word_count])

    def _put(self, regs: list[int], spec: RegisterSpec, value: float) -> None:
        regs[spec.offset : spec.offset + spec.word_count] = encode_value(spec, value)[1]

    def _setpoint(self, regs: list[int], ctype: CommandType) -> float:
        spec = self.registers_map.get(ctype)
        return self._get(regs, spec) if spec is not None else 0.0

    def refresh(self, regs: list[int]) -> None:
        """Advance time and write the status registers from the setpoints in force."""
        now = time.monotonic()
        faulted = self.control is Control.FAULT
        power = 0.0 if faulted else self.physics.applied_power(
            self._setpoint(regs, CommandType.SET_CHARGE_RATE), self._setpoint(regs, CommandType.SET_DISCHARGE_RATE))
        self.physics.advance(power, now - self._last)
        self._last = now
        power = 0.0 if faulted else self.physics.applied_power(
            self._setpoint(regs, CommandType.SET_CHARGE_RATE), self._setpoint(regs, CommandType.SET_DISCHARGE_RATE))
        mode = (OperatingMode.FAULTED if faulted else OperatingMode.CHARGING if power > 0
                else OperatingMode.DISCHARGING if power < 0 else OperatingMode.IDLE)
        shown = DeviceStatus(mode.state, round(self.physics.soc_percent, 1), round(power, 1), 1 if faulted else 0)
        for offset, words in status_writes(self.status, shown):
            regs[offset : offset + len(words)] = words

    # -- watchdog --------------------------------------------------------------------

    def arm_watchdog(self) -> None:
        """(Re)start the communication timeout; call on the event loop. No watchdog: nothing."""
        if self.watchdog_timeout is None:
            return
        if self._watchdog_timer is not None:
            self._watchdog_timer.cancel()
        self._watchdog_timer = asyncio.get_running_loop().call_later(self.watchdog_timeout, self._watchdog_fired)

    def _heartbeat_in(self, start_address: int, address: int, current: list[int], written: list[int]) -> bool:
        """Does this write (``current`` starts at ``start_address``) put a new value into the heartbeat register?"""
        spec = self.watchdog
        if spec is None or not address <= spec.offset < address + len(written):
            return False
        return written[spec.offset - address] != current[spec.offset - start_address]

    def _watchdog_fired(self) -> None:
        self._watchdog_timer = None
        self.timed_out = True
        log.warning("%s: no heartbeat for %g s: falling back to %g kW", self.asset_id, self.watchdog_timeout,
                    self.fallback_kw)
        if self._registers is None:  # nobody ever talked to it: its setpoints are the boot zeros
            return
        safe = {CommandType.SET_CHARGE_RATE: self.fallback_kw, CommandType.SET_DISCHARGE_RATE: 0.0}
        for ctype, value in safe.items():
            spec = self.registers_map.get(ctype)
            if spec is None:
                continue
            before = self._get(self._registers, spec)
            self._put(self._registers, spec, value)
            if self.applied_log is not None:
                self.applied_log.applied(self.asset_id, value, before != value, "WATCHDOG")
        self.refresh(self._registers)

    async def action(self, function_code: int, start_address: int, address: int, count: int,
                     current_registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        self._registers = current_registers
        if address <= CONTROL.offset < address + count:  # the control register always answers
            if set_values is not None:
                try:
                    self.control = Control(set_values[CONTROL.offset - address])
                except ValueError:
                    return ExcCodes.ILLEGAL_VALUE
                log.info("%s: control %s", self.asset_id, self.control.name)
                if self.control is Control.FAULT:  # a tripped battery drops its setpoints, as real ones do
                    for ctype in (CommandType.SET_CHARGE_RATE, CommandType.SET_DISCHARGE_RATE):
                        if ctype in self.registers_map:
                            self._put(current_registers, self.registers_map[ctype], 0)
            self.refresh(current_registers)
            return None
        if self.control is Control.MUTE:
            await asyncio.sleep(3600)  # the request is never answered; other batteries carry on
        self.refresh(current_registers)
        if set_values is not None:
            if self._reset_in(address, cast(list[int], set_values)):
                return None
            if self.control is Control.FAULT:
                return ExcCodes.DEVICE_FAILURE
            if self.control is Control.IGNORE_WRITES:
                # registers only: pymodbus hands bits (list[bool]) for coil requests, which this device has none of
                kept = current_registers[address - start_address : address - start_address + count]
                cast(list[int], set_values)[:] = kept
            else:
                written = cast(list[int], set_values)
                if self._heartbeat_in(start_address, address, current_registers, written):
                    self.timed_out = False
                    self.arm_watchdog()
                self._log_setpoints(start_address, address, current_registers, written)
        return None

    def _reset_in(self, address: int, written: list[int]) -> bool:
        """A write of the reset command register (RESET): a fault is cleared, the register
        goes back to 0 (self-clearing, as the gateway's read-back expects). Taken while
        faulted too, which is what it is for."""
        spec = self.registers_map.get(CommandType.RESET)
        if spec is None or not address <= spec.offset < address + len(written):
            return False
        if written[spec.offset - address] != 0:
            log.info("%s: reset (was %s)", self.asset_id, self.control.name)
            if self.control is Control.FAULT:
                self.control = Control.NORMAL
            written[spec.offset - address] = 0
            if self._registers is not None:
                self.refresh(self._registers)
        return True

    def _log_setpoints(self, start_address: int, address: int, before: list[int], written: list[int]) -> None:
        """One applied-log line per setpoint register this write covers (power setpoints only)."""
        if self.applied_log is None:
            return
        for ctype in (CommandType.SET_CHARGE_RATE, CommandType.SET_DISCHARGE_RATE):
            spec = self.registers_map.get(ctype)
            if spec is None or not (address <= spec.offset and spec.offset + spec.word_count <= address + len(written)):
                continue
            new = decode_registers(spec, written[spec.offset - address : spec.offset - address + spec.word_count])
            old = decode_registers(spec, before[spec.offset - start_address :
                                               spec.offset - start_address + spec.word_count])
            self.applied_log.applied(self.asset_id, new, new != old, ctype.value)


def build_servers(assets: list[AssetConfig], soc_percent: float, applied_log: AppliedLog | None = None,
                  lease_seconds: float = 300.0) -> tuple[list[ModbusTcpServer], dict[str, SimulatedBattery]]:
    """One server per host:port; batteries sharing one are told apart by unit id."""
    by_endpoint: dict[tuple[str, int], list[SimDevice]] = defaultdict(list)
    batteries = {}
    for asset in assets:
        battery = SimulatedBattery(asset, soc_percent, applied_log, lease_seconds)
        batteries[asset.asset_id] = battery
        registers = SimData(0, count=REGISTER_COUNT, values=0, datatype=DataType.REGISTERS)
        device = SimDevice(id=battery.unit, simdata=[registers],
                           action=battery.action)
        by_endpoint[battery.endpoint].append(device)
    servers = [ModbusTcpServer(context=devices if len(devices) > 1 else devices[0], address=endpoint)
               for endpoint, devices in by_endpoint.items()]
    return servers, batteries


async def serve(assets: list[AssetConfig], soc_percent: float, applied_log: AppliedLog | None = None,
                lease_seconds: float = 300.0) -> None:
    servers, batteries = build_servers(assets, soc_percent, applied_log, lease_seconds)
    for battery in batteries.values():
        battery.arm_watchdog()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(s.serve_forever()) for s in servers]
    log.info("simulating %d batteries on %d endpoints", len(assets), len(servers))
    await stop.wait()
    for server in servers:
        await server.shutdown()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=SETTINGS_HELP)
    parser.add_argument("--site-config", help=f"default: $QUBIT_SITE_CONFIG or {DEFAULT_SITE_CONFIG.name}")
    parser.add_argument("--gateway-id", default="modbus")
    parser.add_argument("--soc", type=float, default=50.0, help="initial state of charge, percent")
    parser.add_argument("--applied-log", metavar="PATH", help="append one JSON line per setpoint a battery applies")
    args = parser.parse_args(argv)
    configure_logging("battery-simulator")
    site = load_site(args.site_config)
    gateway = site.gateway(args.gateway_id)
    if gateway is None or gateway.protocol is not Protocol.MODBUS:
        parser.error(f"{args.gateway_id!r} is not a modbus gateway of the site config")
    assets = site.assets_of(args.gateway_id)
    applied_log = AppliedLog(args.applied_log) if args.applied_log else None
    if applied_log is not None:
        applied_log.boot(a.asset_id for a in assets)
    asyncio.run(serve(assets, args.soc, applied_log, site.coordinator.lease_seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
