"""An operator's command (OperatorCommand, qubit/operator/commands) checked against the site
and turned into a ledger command. Pure: the planner does the I/O.

    >>> from datetime import datetime, timezone
    >>> from coordinator.contract.messages import OperatorCommand
    >>> from coordinator.site import SiteConfig
    >>> site = SiteConfig.model_validate({"site_id": "sit_1",
    ...     "gateways": [{"gateway_id": "loopback", "protocol": "loopback"}],
    ...     "assets": [{"asset_id": "ast_bay_1", "kind": "ev_charger", "gateway_id": "loopback",
    ...                 "max_power_kw": 22}]})
    >>> at = datetime(2025, 1, 15, 8, tzinfo=timezone.utc)
    >>> order = OperatorCommand(request_id="r1", asset_id="ast_bay_1", action="soc_target", percent=80,
    ...                         issued_at=at)
    >>> operator_command(order, site, at)
    OperatorRejection(reason='wrong_kind', message='soc_target is for batteries; ast_bay_1 is an ev_charger')
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from .base import Command, CommandType, ParameterValue
from .contract.messages import Availability, OperatorAction, OperatorCommand
from .site import AssetKind, SiteConfig

ORDER_LIFETIME = timedelta(minutes=5)
"""How old (by ``issued_at``, or how far ahead: the clocks' skew) an order may be when the planner
reads it. An operator's "start" or "reset" is meant for now: one delivered late (the planner
was down, the broker kept it) is refused ``expired``, not carried out by surprise."""

OPERATOR_PRIORITY = 10
"""Above every schedule's (1): an operator's command goes first when several are due."""

CHARGER_ONLY = frozenset({OperatorAction.START_SESSION, OperatorAction.STOP_SESSION, OperatorAction.SET_AVAILABILITY})
BATTERY_ONLY = frozenset({OperatorAction.SOC_TARGET})

COMMAND_TYPES = {
    OperatorAction.START_SESSION: CommandType.START_CHARGING,
    OperatorAction.STOP_SESSION: CommandType.STOP_CHARGING,
    OperatorAction.SET_AVAILABILITY: CommandType.CHANGE_AVAILABILITY,
    OperatorAction.RESET: CommandType.RESET,
    OperatorAction.POWER_LIMIT: CommandType.SET_POWER_LIMIT,
    OperatorAction.SOC_TARGET: CommandType.SET_SOC_TARGET,
}


@dataclass(frozen=True, slots=True)
class OperatorRejection:
    """Why an operator's command is not carried out: a reason code and a sentence."""

    reason: str
    message: str


def operator_command_id(request_id: str) -> str:
    """The ledger's command id for an operator's request: derived from the request id, so a
    resend of the same request finds its command instead of queueing a second one."""
    return "cmd_op" + hashlib.blake2b(request_id.encode(), digest_size=8).hexdigest()


def operator_command(order: OperatorCommand, site: SiteConfig, now: datetime) -> Command | OperatorRejection:
    """``order`` as a command due ``now``, or why not (unknown asset, wrong kind, missing or
    out-of-range value)."""
    if abs(now - order.issued_at) > ORDER_LIFETIME:
        return OperatorRejection("expired", f"issued at {order.issued_at.isoformat()}, more than "
                                 f"{ORDER_LIFETIME.total_seconds():g} s from the planner's clock")
    asset = site.asset(order.asset_id)
    if asset is None:
        return OperatorRejection("unknown_asset", f"{order.asset_id} is not an asset of site {site.site_id}")
    action = order.action
    if action in CHARGER_ONLY and asset.kind is not AssetKind.EV_CHARGER:
        return OperatorRejection("wrong_kind", f"{action} is for chargers; {asset.asset_id} is a {asset.kind}")
    if action in BATTERY_ONLY and asset.kind is not AssetKind.BATTERY:
        return OperatorRejection("wrong_kind", f"{action} is for batteries; {asset.asset_id} is an {asset.kind}")
    parameters = _parameters(order, asset.max_power_kw)
    if isinstance(parameters, OperatorRejection):
        return parameters
    config = site.coordinator
    return Command(asset.asset_id, COMMAND_TYPES[action], parameters, now,
                   command_id=operator_command_id(order.request_id), priority=OPERATOR_PRIORITY,
                   max_retries=config.max_retries, timeout_seconds=config.command_timeout_seconds, created_at=now)


def _parameters(order: OperatorCommand, max_power_kw: float) -> dict[str, ParameterValue] | OperatorRejection:
    action = order.action
    if action is OperatorAction.SET_AVAILABILITY:
        if order.availability is None:
            return OperatorRejection("invalid", "set_availability needs availability: operative or inoperative")
        return {"available": order.availability is Availability.OPERATIVE}
    if action is OperatorAction.POWER_LIMIT:
        if order.kw is None or order.duration_s is None:
            return OperatorRejection("invalid", "power_limit needs kw and duration_s")
        if order.kw > max_power_kw:
            return OperatorRejection("out_of_range",
                                     f"{order.kw} kW is above {order.asset_id}'s max_power_kw {max_power_kw}")
        return {"power_kw": order.kw, "duration_s": order.duration_s}
    if action is OperatorAction.SOC_TARGET:
        if order.percent is None:
            return OperatorRejection("invalid", "soc_target needs percent (0-100)")
        return {"soc_percent": order.percent}
    return {}
