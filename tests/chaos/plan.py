"""What a chaos run drives: a generated site, a schedule whose every value names its command,
and the commands the library makes of it. Pure (no broker, no processes).

Every (asset, slot) value is unique: ``power_kw = 1 + slot + index / 100`` with the asset's
index below 100, so a value seen on a device tells which asset and which slot it came from,
and change detection (a command only where the value changes) makes exactly one command per
asset per slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd

from coordinator.base import Command
from coordinator.schedule import schedule_to_commands

SITE_ID = "sit_chaos"
MAX_ASSETS = 100
"""The value encoding keeps two decimals for the asset index."""
VALUE_DECIMALS = 3
"""Values are compared rounded to this many decimals (kW to W conversions leave float noise)."""
OCPP_PASSWORD = "chaos-suite-password-0123"


@dataclass(frozen=True, slots=True)
class Asset:
    asset_id: str
    kind: str  # "ev_charger" or "battery"
    gateway_id: str
    index: int
    """Position in the site; part of every value this asset is given."""
    column: str
    """The schedule column that carries its setpoints."""
    key: str
    """Its asset_map key."""
    port: int | None = None
    """Modbus batteries: the simulator's TCP port."""


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """How many assets of each kind, behind which gateway."""

    loopback_chargers: int = 30
    loopback_batteries: int = 3
    ocpp_chargers: int = 0
    ocpp_version: str = "1.6"
    modbus_batteries: int = 0
    dispatch_interval_seconds: float = 0.2
    command_timeout_seconds: float = 4.0
    max_retries: int = 3
    ocpp_port: int = 0
    modbus_ports: tuple[int, ...] = field(default_factory=tuple)

    def assets(self) -> list[Asset]:
        out: list[Asset] = []

        def add(asset_id: str, kind: str, gateway: str, port: int | None = None) -> None:
            i = len(out)
            key = f"ev_{i:03d}" if kind == "ev_charger" else f"battery_{i:03d}"
            column = f"{key}_kw" if kind == "ev_charger" else f"{key}_charge_kw"
            out.append(Asset(asset_id, kind, gateway, i, column, key, port))

        for n in range(self.loopback_chargers):
            add(f"ast_lb_ev_{n:03d}", "ev_charger", "loopback")
        for n in range(self.loopback_batteries):
            add(f"ast_lb_batt_{n:03d}", "battery", "loopback")
        for n in range(self.ocpp_chargers):
            add(f"ast_cp_{n:03d}", "ev_charger", "ocpp")
        for n in range(self.modbus_batteries):
            add(f"ast_mb_batt_{n:03d}", "battery", "modbus", self.modbus_ports[n])
        if len(out) > MAX_ASSETS:
            raise ValueError(f"at most {MAX_ASSETS} assets: the values name the asset by two decimals")
        return out

    def gateways(self) -> list[str]:
        return sorted({a.gateway_id for a in self.assets()})


def site_toml(spec: SiteSpec) -> str:
    """The site config every process of the run reads."""
    lines = [
        f'site_id = "{SITE_ID}"', "",
        "[coordinator]",
        f"dispatch_interval_seconds = {spec.dispatch_interval_seconds}",
        f"command_timeout_seconds = {spec.command_timeout_seconds}",
        f"max_retries = {spec.max_retries}",
        "retry_backoff_factor = 2.0",
        "retry_base_delay_seconds = 0.5", "",
    ]
    for gateway in spec.gateways():
        lines += ["[[gateways]]", f'gateway_id = "{gateway}"', f'protocol = "{gateway}"']
        if gateway == "ocpp":
            lines += ["[gateways.ocpp]", 'host = "127.0.0.1"', f"port = {spec.ocpp_port}"]
        lines.append("")
    for asset in spec.assets():
        lines += ["[[assets]]", f'asset_id = "{asset.asset_id}"', f'kind = "{asset.kind}"',
                  f'gateway_id = "{asset.gateway_id}"', "max_power_kw = 100.0"]
        if asset.gateway_id == "ocpp":
            lines += ["[assets.ocpp]", f'charge_point_id = "CP{asset.index:03d}"',
                      f'password = "{OCPP_PASSWORD}"', f'version = "{spec.ocpp_version}"']
        if asset.gateway_id == "modbus":
            # 0.01 kW registers: the values differ in the second decimal
            lines += ["[assets.modbus]", f"port = {asset.port}", "poll_interval_seconds = 0.2",
                      "verify_window_seconds = 1.0", "capacity_kwh = 10000.0"]
            for ctype, address in (("SET_CHARGE_RATE", 40201), ("SET_DISCHARGE_RATE", 40203)):
                lines += [f"[assets.modbus.registers.{ctype}]", f"address = {address}", 'data_type = "int32"',
                          "scale = 100", 'word_order = "little"']
            lines += ["[assets.modbus.status_registers.active_power_kw]", "address = 40301",
                      'data_type = "int32"', "scale = 100"]
        lines.append("")
    return "\n".join(lines)


def power_kw(asset_index: int, slot: int) -> float:
    """The unique value of one (asset, slot)."""
    return round(1.0 + slot + asset_index / 100.0, 2)


def value_key(value: float) -> float:
    return round(value, VALUE_DECIMALS)


def schedule_frame(assets: list[Asset], slots: int, slot_seconds: float, start: datetime) -> pd.DataFrame:
    """``slots`` slots of ``slot_seconds`` from ``start`` (timezone-aware), one column per asset."""
    index = pd.date_range(start, periods=slots, freq=pd.Timedelta(seconds=slot_seconds))
    return pd.DataFrame({a.column: [power_kw(a.index, s) for s in range(slots)] for a in assets}, index=index)


def asset_map(assets: list[Asset]) -> dict[str, str]:
    return {a.key: a.asset_id for a in assets}


@dataclass(frozen=True, slots=True)
class Expected:
    """One command the schedule calls for, and where it sits in its asset's order."""

    asset_id: str
    slot: int
    power_kw: float
    scheduled_at: datetime

    @property
    def key(self) -> tuple[str, float]:
        return self.asset_id, value_key(self.power_kw)


def expected_commands(frame: pd.DataFrame, assets: list[Asset]) -> list[Expected]:
    """The library's own conversion of the frame: what the planner must turn into device actions."""
    commands: list[Command] = schedule_to_commands(frame, asset_map(assets))
    slot_of = {t: i for i, t in enumerate(pd.DatetimeIndex(frame.index).to_pydatetime())}
    out = []
    for c in commands:
        power = c.parameters["power_kw"]
        assert isinstance(power, float | int)  # the library makes power setpoints only
        out.append(Expected(c.asset_id, slot_of[c.scheduled_at], float(power), c.scheduled_at))
    return out


def first_slot_start(now: datetime, lead_seconds: float) -> datetime:
    """A whole second at least ``lead_seconds`` from now: time to publish and plan before the first slot."""
    return (now + timedelta(seconds=lead_seconds)).replace(microsecond=0) + timedelta(seconds=1)
