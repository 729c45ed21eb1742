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

Relative paths (``tls_cert``, ``tls_key``, ``ca_file``, a charger's ``password_file``) are read
against the site file's directory. A config error names the file, the key and the rule, never
the value (``SiteConfigError``): a value may be a secret.
"""

from __future__ import annotations

import logging
import tomllib
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from coordinator.protocols.modbus.device import ModbusDeviceConfig

from .asset_machines import (
    create_battery_state_machine,
    create_ev_charger_state_machine,
)
from .config import CoordinatorConfig
from .events import EventBus
from .statemachine import StateMachine

log = logging.getLogger(__name__)

TopicSafeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]

BASE_DIR = "base_dir"
"""Validation context key: the directory relative paths of the site file resolve against."""
MIN_PASSWORD_BYTES = 16
"""OCPP security profiles 1 and 2: a charger's Basic-auth password is at least 16 bytes."""
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me")
"""A password holding one of these (any case) is a sample's placeholder: refused."""
SAMPLE_PASSWORDS = frozenset({"change-me-bay-1-secret", "change-me-bay-2-secret"})
"""The literal passwords earlier samples shipped with: refused."""


class SiteConfigError(ValueError):
    """A site config that cannot be used: one line each in ``lines``, as ``file: key: rule``.

    Never holds a value of the file: any of them may be a secret."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def _resolve(value: str | None, info: ValidationInfo) -> str | None:
    """``value`` against the site file's directory when relative (and the loader said where that is)."""
    base = (info.context or {}).get(BASE_DIR) if isinstance(info.context, dict) else None
    if value is None or base is None or Path(value).is_absolute():
        return value
    return str(Path(base) / value)


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be a charger's password, or None. Never quotes it."""
    if len(password.encode()) < MIN_PASSWORD_BYTES:
        return f"must be at least {MIN_PASSWORD_BYTES} bytes (OCPP security profiles 1 and 2)"
    lowered = password.lower()
    if lowered in SAMPLE_PASSWORDS or any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        return "is a placeholder (change-me): give each charger its own secret (qubit-credentials makes them)"
    return None


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
    """Its private key, if not in tls_cert's file."""
    ca_file: str | None = None
    """The CA that signed tls_cert: what a client of this site (the charge point simulator)
    trusts for wss://. The gateway itself does not read it."""
    require_auth: bool = True
    """HTTP Basic auth per charge point (security profile 1, or 2 with TLS). False lets any
    client that knows a charge point id in as that charger: allowed, with a WARNING at start."""

    @field_validator("tls_cert", "tls_key", "ca_file")
    @classmethod
    def _relative_to_site(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve(value, info)

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Self:
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key is set without tls_cert")
        return self

    @property
    def tls(self) -> bool:
        """Does the gateway speak wss:// (security profile 2)?"""
        return self.tls_cert is not None


class OcppChargerConfig(BaseModel):
    """``[assets.ocpp]``: how a charger identifies itself to the gateway."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    charge_point_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,48}$")]
    connector_id: int = Field(1, ge=1)
    password: str | None = Field(None, repr=False)
    """Basic auth password (OCPP: at least 16 bytes), inline; never logged. Prefer password_file.
    After ``SiteConfig.load(..., secrets_for=gateway)`` it holds the file's password too."""
    password_file: str | None = None
    """A file holding the Basic auth password (one line; made by qubit-credentials). Read only by
    the processes that need it (the OCPP gateway, the simulator): ``SiteConfig.load(secrets_for=)``."""
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

    @field_validator("password_file")
    @classmethod
    def _relative_to_site(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve(value, info)

    @field_validator("password")
    @classmethod
    def _password_usable(cls, value: str | None) -> str | None:
        problem = None if value is None else password_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("password and password_file are both set: keep one (password_file)")
        return self

    @property
    def has_password(self) -> bool:
        return self.password is not None or self.password_file is not None


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
            raise ValueError(f"{self.asset_id}: fallback_kw exceeds max_power_kw")
        return self

    def create_state_machine(self, event_bus: EventBus | None = None) -> StateMachine:
        factory = create_ev_charger_state_machine if self.kind is AssetKind.EV_CHARGER else create_battery_state_machine
        return factory(self.asset_id, event_bus=event_bus)


class SiteLimits(BaseModel):
    """``[site_limits]``: the grid connection's limits on the sum of the controlled assets'
    setpoints (chargers and battery charging import, battery discharge exports). Absent: no
    site cap. The planner shares them across assets proportionally (docs/dispatch.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    import_kw: float | None = Field(None, gt=0, allow_inf_nan=False)
    """The most the site's assets may draw together (kW)."""
    export_kw: float | None = Field(None, ge=0, allow_inf_nan=False)
    """The most the site's batteries may feed back together (kW); 0: no export at all."""


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: TopicSafeId
    coordinator: CoordinatorConfig = CoordinatorConfig()
    """Engine tunables ([coordinator] table); its site_id is taken from this file's."""
    gateways: list[GatewayConfig]
    assets: list[AssetConfig]
    site_limits: SiteLimits = SiteLimits()
    """The grid connection's import and export limits ([site_limits] table)."""
    _by_id: dict[str, AssetConfig] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object) -> None:
        self._by_id = {a.asset_id: a for a in self.assets}

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        gateway_ids = [g.gateway_id for g in self.gateways]
        asset_ids = [a.asset_id for a in self.assets]
        for label, ids in (("gateway_id", gateway_ids), ("asset_id", asset_ids)):
            dupes = sorted(i for i, n in Counter(ids).items() if n > 1)  # not ids.count: 0.5 s at 5,000 assets
            if dupes:
                raise ValueError(f"duplicated {label}: {', '.join(dupes)}")
        unknown = sorted({a.gateway_id for a in self.assets} - set(gateway_ids))
        if unknown:
            raise ValueError(f"assets refer to undeclared gateways: {', '.join(unknown)}")
        protocols = {g.gateway_id: g.protocol for g in self.gateways}
        missing = [a.asset_id for a in self.assets if protocols[a.gateway_id] is Protocol.MODBUS and a.modbus is None]
        if missing:
            raise ValueError(f"assets behind a modbus gateway need a [assets.modbus] table: {', '.join(missing)}")
        requires_auth = {g.gateway_id: (g.ocpp or OcppListenConfig()).require_auth for g in self.gateways}
        for i, asset in enumerate(self.assets):
            if asset.ocpp is not None and requires_auth[asset.gateway_id] and not asset.ocpp.has_password:
                raise ValueError(f"assets[{i}].ocpp: {asset.ocpp.charge_point_id} has no password or password_file, "
                                 f"and gateway {asset.gateway_id} requires auth")
        if self.coordinator.site_id != self.site_id:
            object.__setattr__(self, "coordinator", self.coordinator.model_copy(update={"site_id": self.site_id}))
        return self

    @classmethod
    def load(cls, path: str | Path, secrets_for: str | None = None) -> SiteConfig:
        """The site file at ``path``; SiteConfigError (naming file, key and rule) if unusable.

        ``secrets_for``: a gateway id whose chargers' password files are read now (the OCPP
        gateway, the simulator); other processes never open them."""
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SiteConfigError([f"{path}: cannot read the site config ({reason})"]) from None
        except tomllib.TOMLDecodeError as exc:  # its message gives line and column, not the text
            raise SiteConfigError([f"{path}: not valid TOML: {exc}"]) from None
        try:
            site = cls.model_validate(raw, context={BASE_DIR: str(Path(path).resolve().parent)})
        except ValidationError as exc:
            raise SiteConfigError([f"{path}: {line}" for line in explain(exc)]) from None
        if secrets_for is not None:
            problems = site.read_passwords(secrets_for)
            if problems:
                raise SiteConfigError([f"{path}: {line}" for line in problems])
        return site

    def read_passwords(self, gateway_id: str) -> list[str]:
        """Fill each of the gateway's chargers' ``password`` from its ``password_file``.

        Returns one line per problem (key and rule, never the content); nothing is filled then."""
        problems: list[str] = []
        found: dict[int, str] = {}
        for i, asset in enumerate(self.assets):
            if asset.gateway_id != gateway_id or asset.ocpp is None or asset.ocpp.password_file is None:
                continue
            key = f"assets[{i}].ocpp.password_file"
            try:
                secret = Path(asset.ocpp.password_file)
                text = secret.read_text(encoding="utf-8").strip()
                mode = secret.stat().st_mode & 0o777
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                problems.append(f"{key}: cannot read {asset.ocpp.password_file} ({reason}); "
                                f"qubit-credentials makes the site's password files")
                continue
            problem = "is empty" if not text else password_problem(text)
            if problem:
                problems.append(f"{key}: the password in the file {problem}")
                continue
            if mode & 0o077:  # usable, but anyone on the machine may read it
                log.warning("%s: %s is readable by group or others (mode %03o): chmod 600 it", key,
                            asset.ocpp.password_file, mode)
            found[i] = text
        if not problems:
            for i, text in found.items():
                charger = self.assets[i].ocpp
                object.__setattr__(charger, "password", text)  # frozen: filled once, at load
        return problems

    def asset(self, asset_id: str) -> AssetConfig | None:
        return self._by_id.get(asset_id)

    def gateway(self, gateway_id: str) -> GatewayConfig | None:
        return next((g for g in self.gateways if g.gateway_id == gateway_id), None)

    def assets_of(self, gateway_id: str) -> list[AssetConfig]:
        return [a for a in self.assets if a.gateway_id == gateway_id]


def config_key(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the file's key: ``('assets', 0, 'ocpp')`` -> ``assets[0].ocpp``."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def explain(error: ValidationError) -> list[str]:
    """One ``key: rule`` line per error, without the offending value.

    pydantic's own text carries ``input_value=...``; only ``msg`` is used, and a custom
    validator's message is scrubbed of the input in case it quotes it."""
    lines = []
    for e in error.errors(include_url=False, include_input=True):
        rule = str(e["msg"]).removeprefix("Value error, ")
        value: Any = e.get("input")
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            text = str(value)
            if len(text) >= 6 and text in rule:
                rule = rule.replace(text, "<value>")
        lines.append(f"{config_key(tuple(e['loc']))}: {rule}" if e["loc"] else rule)
    return lines
