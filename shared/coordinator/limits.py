"""Limits on setpoints, applied by the planner before it dispatches them. Pure.

The effective setpoint of an asset is the schedule's, capped first by any operator power limit
in force for the asset, then by the site's import and export limits (``[site_limits]``). The
site's limits are shared proportionally: the setpoints due together (one slot's) share what the
setpoints already in force on the other assets leave of the limit, each scaled by the same
factor. docs/dispatch.md has the policy and its reasons.

    >>> from datetime import datetime, timezone
    >>> from coordinator.base import Command, CommandType
    >>> from coordinator.site import SiteLimits
    >>> at = datetime(2025, 1, 15, 8, tzinfo=timezone.utc)
    >>> due = [Command(a, CommandType.SET_CHARGE_RATE, {"power_kw": 30.0}, at) for a in ("ast_a", "ast_b")]
    >>> [(c.asset_id, c.applied, c.limit) for c in cap_setpoints(due, {}, {}, SiteLimits(import_kw=40), at)]
    [('ast_a', 20.0, 'site_import'), ('ast_b', 20.0, 'site_import')]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .base import Command, CommandType
from .site import SiteLimits

POWER_SETPOINTS = (CommandType.SET_CHARGE_RATE, CommandType.SET_DISCHARGE_RATE)
REQUESTED = "requested_kw"
"""The parameter a capped command keeps the schedule's value in (power_kw is what is sent)."""
OPERATOR = "operator"
SITE_IMPORT = "site_import"
SITE_EXPORT = "site_export"


@dataclass(frozen=True, slots=True)
class OperatorLimit:
    """An operator's power limit on one asset: at most ``kw`` until ``until``."""

    kw: float
    until: datetime
    command_id: str
    duration: timedelta = timedelta(0)
    """How long it was given for (``until`` - duration: when it was set); the newest one wins."""


@dataclass(frozen=True, slots=True)
class Cap:
    """One limit lowered one command's setpoint from ``requested`` to ``applied`` (kW, >= 0)."""

    asset_id: str
    command_id: str
    command_type: CommandType
    requested: float
    applied: float
    limit: str
    limit_kw: float


def requested_kw(cmd: Command) -> float | None:
    """The power the schedule asked of ``cmd`` (before any cap), None for a non-setpoint."""
    if cmd.command_type not in POWER_SETPOINTS:
        return None
    value = cmd.parameters.get(REQUESTED, cmd.parameters.get("power_kw"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def signed_kw(cmd: Command) -> float | None:
    """What ``cmd`` sends, as the site sees it: import positive, a discharge negative."""
    value = cmd.parameters.get("power_kw")
    if cmd.command_type not in POWER_SETPOINTS or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return -float(value) if cmd.command_type is CommandType.SET_DISCHARGE_RATE else float(value)


def cap_setpoints(due: Sequence[Command], in_force: Mapping[str, float], operator: Mapping[str, OperatorLimit],
                  limits: SiteLimits, now: datetime) -> list[Cap]:
    """The caps to apply to the power setpoints among ``due`` (at most one per asset), in the
    order they apply (an operator's first, then the site's). ``in_force``: asset -> signed kW
    in force (import positive); the due commands' assets are left out of it. Nothing is changed."""
    values: dict[str, float] = {}
    setpoints = [c for c in due if requested_kw(c) is not None]
    caps: list[Cap] = []
    for cmd in setpoints:
        value = requested_kw(cmd)
        assert value is not None
        limit = operator.get(cmd.asset_id)
        if limit is not None and limit.until > now and value > limit.kw:
            caps.append(Cap(cmd.asset_id, cmd.command_id, cmd.command_type, value, limit.kw, OPERATOR, limit.kw))
            value = limit.kw
        values[cmd.command_id] = value
    due_assets = {c.asset_id for c in setpoints}
    others = [v for a, v in in_force.items() if a not in due_assets]
    for command_type, limit_kw, name, sign in (
        (CommandType.SET_CHARGE_RATE, limits.import_kw, SITE_IMPORT, 1.0),
        (CommandType.SET_DISCHARGE_RATE, limits.export_kw, SITE_EXPORT, -1.0),
    ):
        if limit_kw is None:
            continue
        sharing = [c for c in setpoints if c.command_type is command_type and values[c.command_id] > 0]
        wanted = sum(values[c.command_id] for c in sharing)
        headroom = max(limit_kw - sum(max(sign * v, 0.0) for v in others), 0.0)
        if wanted <= headroom:
            continue
        factor = headroom / wanted
        for cmd in sharing:
            before = values[cmd.command_id]
            values[cmd.command_id] = math.floor(before * factor * 1000) / 1000  # never above the limit
            caps.append(Cap(cmd.asset_id, cmd.command_id, cmd.command_type, before, values[cmd.command_id], name,
                            limit_kw))
    return caps
