"""The site config file: which assets exist, what they are, and which gateway owns each.

TOML, one file for every process (``QUBIT_SITE_CONFIG`` names it)::

    site_id = "sit_demo_depot"

    [[gateways]]
    gateway_id = "loopback"
    protocol = "loopback"

    [[assets]]
    asset_id = "ast_bay_1"
    kind = "ev_charger"
    gateway_id = "loopback"
    max_power_kw = 22.0
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from coordinator.protocols.modbus.device import ModbusDeviceConfig

from .asset_machines import (
    create_battery_state_machine,
    create_ev_charger_state_machine,
)
from .config import CoordinatorConfig
from .events import EventBus
from .statemachine import StateMachine

TopicSafeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class AssetKind(StrEnum):
    EV_CHARGER = "ev_charger"
    BATTERY = "battery"


class Protocol(StrEnum):
    LOOPBACK = "loopback"
    OCPP = "ocpp"
    MODBUS = "modbus"


class OcppListenConfig(BaseModel):
    """``[gateways.ocpp]``: where the OCPP gateway (the CSMS) accepts charge points."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(9000, ge=1, le=65535)
    tls_cert: str | None = None
    """PEM certificate chain; with tls_key, the gateway speaks wss:// (security profile 2)."""
    tls_key: str | None = None
    require_auth: bool = True
    """HTTP Basic auth per charge point (security profile 1, or 2 with TLS)."""


class OcppChargerConfig(BaseModel):
    """``[assets.ocpp]``: how a charger identifies itself to the gateway."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    charge_point_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,48}$")]
    connector_id: int = Field(1, ge=1)
    password: str | None = Field(None, min_length=16, repr=False)
    """Basic auth password (OCPP: at least 16 bytes); never logged."""
    version: str = Field("1.6", pattern=r"^(1\.6|2\.0\.1)$")
    """The version the simulator speaks; the gateway accepts either, per connection."""
    verify_applied: bool = True
    """After an Accepted setpoint, prove it with the charger's composite schedule (docs/ocpp.md);
    false only for a charger that cannot answer GetCompositeSchedule: then Accepted completes."""
    verify_tolerance_kw: float = Field(0.7, ge=0, allow_inf_nan=False)
    """How far the limit in force may be from the setpoint: one amp on three phases at 230 V,
    since chargers that limit in whole amps report the limit they rounded to."""
    meter_check_seconds: float = Field(60.0, ge=0, allow_inf_nan=False)
    """For this long after a setpoint was proven, the charger's meter values are held to it:
    more than the limit plus verify_tolerance_kw is a SETPOINT_NOT_FOLLOWED event; 0: no check."""


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway_id: TopicSafeId
    protocol: Protocol
    ocpp: OcppListenConfig | None = None


class AssetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    asset_id: TopicSafeId
    kind: AssetKind
    gateway_id: TopicSafeId
    max_power_kw: float = Field(gt=0, allow_inf_nan=False)
    fallback_kw: float = Field(0.0, ge=0, allow_inf_nan=False)
    """The safe value the device falls back to by itself when the coordinator stops renewing its
    setpoint (docs/ocpp.md, docs/modbus.md: leases): a charger's default profile, a battery's
    charge rate once its watchdog times out (discharge goes to 0)."""
    modbus: ModbusDeviceConfig | None = None
    """How to reach a battery behind a Modbus gateway (see coordinator.protocols.modbus.device)."""
    ocpp: OcppChargerConfig | None = None
    """How a charger behind an OCPP gateway identifies itself."""

    @model_validator(mode="after")
    def _fallback_within_max(self) -> Self:
        if self.fallback_kw > self.max_power_kw:
            raise ValueError(f"{self.asset_id}: fallback_kw {self.fallback_kw} exceeds max_power_kw "
                             f"{self.max_power_kw}")
        return self

    def create_state_machine(self, event_bus: EventBus | None = None) -> StateMachine:
        factory = create_ev_charger_state_machine if self.kind is AssetKind.EV_CHARGER else create_battery_state_machine
        return factory(self.asset_id, event_bus=event_bus)


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: TopicSafeId
    coordinator: CoordinatorConfig = CoordinatorConfig()
    """Engine tunables ([coordinator] table); its site_id is taken from this file's."""
    gateways: list[GatewayConfig]
    assets: list[AssetConfig]
    _by_id: dict[str, AssetConfig] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object) -> None:
        self._by_id = {a.asset_id: a for a in self.assets}

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        gateway_ids = [g.gateway_id for g in self.gateways]
        asset_ids = [a.asset_id for a in self.assets]
        for label, ids in (("gateway_id", gateway_ids), ("asset_id", asset_ids)):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicated {label}: {', '.join(dupes)}")
        unknown = sorted({a.gateway_id for a in self.assets} - set(gateway_ids))
        if unknown:
            raise ValueError(f"assets refer to undeclared gateways: {', '.join(unknown)}")
        protocols = {g.gateway_id: g.protocol for g in self.gateways}
        missing = [a.asset_id for a in self.assets if protocols[a.gateway_id] is Protocol.MODBUS and a.modbus is None]
        if missing:
            raise ValueError(f"assets behind a modbus gateway need a [assets.modbus] table: {', '.join(missing)}")
        if self.coordinator.site_id != self.site_id:
            object.__setattr__(self, "coordinator", self.coordinator.model_copy(update={"site_id": self.site_id}))
        return self

    @classmethod
    def load(cls, path: str | Path) -> SiteConfig:
        with open(path, "rb") as f:
            return cls.model_validate(tomllib.load(f))

    def asset(self, asset_id: str) -> AssetConfig | None:
        return self._by_id.get(asset_id)

    def gateway(self, gateway_id: str) -> GatewayConfig | None:
        return next((g for g in self.gateways if g.gateway_id == gateway_id), None)

    def assets_of(self, gateway_id: str) -> list[AssetConfig]:
        return [a for a in self.assets if a.gateway_id == gateway_id]
