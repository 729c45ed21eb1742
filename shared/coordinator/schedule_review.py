"""The checks a schedule must pass against the site before anything acts on it. Pure.

The ingester runs them on what Layer 3 publishes; the planner runs them again on every
accepted schedule before planning it (defense in depth: a forged qubit/schedules/accepted
must not reach a device either).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from coordinator.contract.codec import MAX_SCHEDULE_BYTES, DecodeError, ScheduleMessage, decode_schedule, unpack
from coordinator.ids import schedule_content_id
from coordinator.lazy_imports import LazyModule
from coordinator.schedule import PlannedSetpoints, ScheduleError, SetpointColumns, classify_columns, plan_setpoints
from coordinator.site import AssetKind, SiteConfig

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a schedule is first reviewed, not when a process starts
    np = LazyModule("numpy", globals(), "np")


@dataclass(frozen=True)
class Rejected:
    reason: str
    message: str
    schedule_id: str | None = None
    columns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Accepted:
    schedule: ScheduleMessage
    schedule_id: str
    command_count: int
    asset_ids: list[str]
    plan: PlannedSetpoints
    """Its commands, columnar (coordinator.schedule.plan_setpoints): the planner plans from these."""


def review_schedule(data: bytes, site: SiteConfig) -> Accepted | Rejected:
    """Every check a schedule must pass before anything acts on it. Pure."""
    if len(data) > MAX_SCHEDULE_BYTES:
        return Rejected("too_large", f"schedule is {len(data)} bytes, the limit is {MAX_SCHEDULE_BYTES}")
    try:
        msg = decode_schedule(data)
    except DecodeError as exc:
        readable, schedule_id = _peek(data)
        return Rejected("malformed" if readable else "not_msgpack", exc.reason, schedule_id)
    schedule_id = msg.schedule_id or schedule_content_id(data)
    if msg.site_id != site.site_id:
        return Rejected("wrong_site", f"schedule is for site {msg.site_id!r}, this is {site.site_id!r}", schedule_id)
    unknown = sorted({a for a in msg.asset_map.values() if site.asset(a) is None})
    if unknown:
        names = ", ".join(unknown)
        return Rejected("unknown_asset", f"asset_map names assets not in the site config: {names}", schedule_id)
    columns = classify_columns(list(msg.frame.columns))
    expected = [(k, AssetKind.EV_CHARGER) for k in columns.ev] + [(k, AssetKind.BATTERY) for k in columns.battery]
    wrong_kind = [
        k for k, kind in expected
        if (asset := site.asset(msg.asset_map.get(k, ""))) is not None and asset.kind is not kind
    ]
    if wrong_kind:
        return Rejected(
            "wrong_asset_kind",
            f"ev_* columns need ev_charger assets and battery_* columns battery assets: {', '.join(wrong_kind)}",
            schedule_id,
        )
    try:
        plan = plan_setpoints(msg.frame, msg.asset_map)
    except ScheduleError as exc:
        return Rejected(exc.reason, str(exc), schedule_id, exc.columns)
    over = _over_limit(msg, columns, site)
    if over:
        return Rejected("above_limit", "setpoints above the asset's max_power_kw: " + ", ".join(over), schedule_id,
                        [c.split(" ")[0] for c in over])
    return Accepted(msg, schedule_id, len(plan.slot), sorted({msg.asset_map[k] for k in columns.keys}), plan)


def _over_limit(msg: ScheduleMessage, columns: SetpointColumns, site: SiteConfig) -> list[str]:
    by_column = {c: k for k, c in columns.ev.items()}
    by_column |= {c: k for k, pair in columns.battery.items() for c in pair if c}
    limits = {a.asset_id: a.max_power_kw for a in site.assets}  # review_schedule refused unknown assets already
    if not by_column:
        return []
    names = list(by_column)
    # One matrix and one reduction for every column: a 5,000-asset schedule has 5,000 of them.
    frame = msg.frame if list(msg.frame.columns) == names else msg.frame[names]
    values = frame.to_numpy(dtype=float, copy=False)
    if not len(values):
        return []
    peaks = np.nan_to_num(np.fmax.reduce(values, axis=0), nan=0.0)  # fmax skips NaN; an all-NaN column is 0
    bounds = np.array([limits[msg.asset_map[by_column[c]]] for c in names])
    return [f"{names[j]} ({peaks[j]:g} kW > {bounds[j]:g} kW for {msg.asset_map[by_column[names[j]]]})"
            for j in np.flatnonzero(peaks > bounds).tolist()]


def _peek(data: bytes) -> tuple[bool, str | None]:
    """After a refusal: was it msgpack at all, and which schedule_id did it claim?"""
    try:
        obj = unpack(data, max_bytes=MAX_SCHEDULE_BYTES)
    except DecodeError:
        return False, None
    value = obj.get("schedule_id") if isinstance(obj, dict) else None
    return True, value if isinstance(value, str) and 0 < len(value) <= 128 else None
