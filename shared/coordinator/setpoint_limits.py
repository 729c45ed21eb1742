"""Is a command within its asset's limits? The check every gateway makes before a device sees it. Pure.

The planner only makes commands within the site's limits (the ingester and the planner both
check schedules against max_power_kw), so a command out of range is forged or a bug: it is
refused, never clamped, so that a forged command changes nothing on a device. (Clamping
remains where a device's own limit is below the asset's rating: the Modbus gateway's
max_charge_kw / max_discharge_kw, reported as SETPOINT_CLAMPED.)

    >>> from coordinator.site import AssetConfig
    >>> bay = AssetConfig(asset_id="ast_bay_1", kind="ev_charger", gateway_id="gw", max_power_kw=22.0)
    >>> out_of_range(Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": 1_000_000.0}), bay)
    'power_kw 1e+06 kW is above the max_power_kw of ast_bay_1 (22 kW)'
    >>> out_of_range(Command("ast_bay_1", CommandType.SET_CHARGE_RATE, {"power_kw": 11.0}), bay) is None
    True
"""

from __future__ import annotations

import math

from coordinator.base import Command, CommandType
from coordinator.site import AssetConfig, AssetKind

POWER_COMMANDS = frozenset({CommandType.SET_CHARGE_RATE, CommandType.SET_DISCHARGE_RATE, CommandType.SET_POWER_LIMIT})
"""Commands that carry a power (``power_kw``, kW, >= 0: the direction is in the command type)."""
TOLERANCE_KW = 1e-6
"""Rounding headroom above max_power_kw (a schedule's float arithmetic), far below any device's step."""


def out_of_range(cmd: Command, asset: AssetConfig) -> str | None:
    """Why ``cmd`` must not reach ``asset``'s device, or None when it is within its limits.

    Every numeric parameter must be finite; a power command needs ``power_kw`` as a number,
    0 <= power_kw <= max_power_kw; a charger is never told to discharge (the site config has
    no bidirectional chargers); a state-of-charge target is 0..100 %."""
    for name, value in cmd.parameters.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} {value} is not a finite number"
    if cmd.command_type is CommandType.SET_DISCHARGE_RATE and asset.kind is AssetKind.EV_CHARGER:
        return f"{asset.asset_id} is a charger: it cannot discharge"
    if cmd.command_type in POWER_COMMANDS:
        power = cmd.parameters.get("power_kw")
        if not isinstance(power, int | float) or isinstance(power, bool):
            return f"power_kw must be a number, got {type(power).__name__}"
        if power < 0:
            return f"power_kw {power:g} kW is negative (the direction is in the command type)"
        if power > asset.max_power_kw + TOLERANCE_KW:
            return f"power_kw {power:g} kW is above the max_power_kw of {asset.asset_id} ({asset.max_power_kw:g} kW)"
    if cmd.command_type is CommandType.SET_SOC_TARGET:
        soc = cmd.parameters.get("soc_percent")
        if not isinstance(soc, int | float) or isinstance(soc, bool) or not 0 <= soc <= 100:
            return f"soc_percent must be a number within 0..100, got {soc!r}"
    return None
