"""A charger's composite schedule -> the limit in force now, and whether it proves a setpoint. Pure.

"Accepted" only says the charger took the profile; the composite schedule (GetCompositeSchedule,
both versions) is what the charger itself computes from every profile it holds, so it is the
charger's own statement of the limit it enforces. The gateway asks for it after every Accepted
setpoint (docs/ocpp.md, "Verification").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from ocpp.v16 import enums as v16

VOLTS_PER_PHASE = 230.0
"""A schedule in A is read as W at this nominal voltage (the charger does not say its own)."""
DEFAULT_PHASES = 3
"""numberPhases when a period leaves it out (both versions' default)."""
COMPOSITE_SECONDS = 60
"""How far ahead we ask: only the limit in force now is read, but some chargers refuse tiny durations."""


class Unreadable(ValueError):
    """The answer does not say which limit is in force (refused, malformed, an unknown unit)."""


def limit_in_force_w(answer: Mapping[str, Any]) -> float | None:
    """The limit in force at the start of the composite schedule in ``answer`` (the charger's
    GetCompositeSchedule answer, snake_case, either version) in W; None when no period covers
    it, i.e. no profile limits the charger at all.

    The start of the composite is the charger's "now": reading the period there, rather than at
    our clock's now, keeps a charger whose clock is off from failing every command. Raises
    Unreadable, with what the charger said, for anything else.
    """
    status = answer.get("status")
    if status != v16.GetCompositeScheduleStatus.accepted:
        raise Unreadable(f"charger answered GetCompositeSchedule with {status!r:.60}")
    # 1.6: chargingSchedule beside scheduleStart; 2.0.1: one schedule object holding both.
    schedule = answer.get("charging_schedule") or answer.get("schedule")
    if schedule is None:  # Accepted with nothing to enforce: no profile covers the window
        return None
    if not isinstance(schedule, Mapping):
        raise Unreadable(f"composite schedule is not an object: {schedule!r:.200}")
    periods = schedule.get("charging_schedule_period") or []
    if not isinstance(periods, list):
        raise Unreadable(f"chargingSchedulePeriod is not a list: {periods!r:.200}")
    offset = _offset_seconds(answer.get("schedule_start") or schedule.get("schedule_start"),
                             schedule.get("start_schedule"))
    in_force = None
    for period in periods:  # the last period that started by the composite's own start
        try:
            start, limit = float(period["start_period"]), float(period["limit"])
            phases = int(period.get("number_phases") or DEFAULT_PHASES)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise Unreadable(f"unreadable charging schedule period: {period!r:.200}") from None
        if start <= offset and (in_force is None or start >= in_force[0]):
            in_force = (start, limit, phases)
    if in_force is None:
        return None
    _, limit, phases = in_force
    unit = schedule.get("charging_rate_unit")
    if unit == v16.ChargingRateUnitType.watts:
        return limit
    if unit == v16.ChargingRateUnitType.amps:
        return limit * VOLTS_PER_PHASE * phases
    raise Unreadable(f"composite schedule in unknown unit {unit!r:.40}")


def _offset_seconds(schedule_start: object, start_schedule: object) -> float:
    """Seconds from the periods' origin (1.6 startSchedule) to the composite's start; 0 when
    either is missing or unreadable, as in 2.0.1 where the periods count from scheduleStart."""
    if not (isinstance(schedule_start, str) and isinstance(start_schedule, str)):
        return 0.0
    try:
        return (_parse(schedule_start) - _parse(start_schedule)).total_seconds()
    except (ValueError, TypeError):
        return 0.0


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def unproven(wanted_kw: float, in_force_w: float | None, tolerance_kw: float, *, cap: bool,
             caps_kw: Iterable[float] = ()) -> str | None:
    """Why the limit in force does not prove the command, or None when it does.

    A setpoint (``cap`` False) is proven when the limit in force is the one we asked for, or
    the lower limit of a cap the gateway knows to be in force (``caps_kw``: the charger-wide
    maximum we applied): a charger holding 11 kW under a 7 kW station limit enforces 7 kW, as
    it should. A cap (a station-wide maximum) is proven when nothing above it is in force.
    """
    shown = "no limit" if in_force_w is None else f"{in_force_w / 1000:g} kW"
    if in_force_w is not None:
        in_force_kw = in_force_w / 1000
        if cap and in_force_kw <= wanted_kw + tolerance_kw:
            return None
        expected = {wanted_kw} | {min(wanted_kw, c) for c in caps_kw}
        if not cap and any(abs(in_force_kw - e) <= tolerance_kw for e in expected):
            return None
    wanted = f"at most {wanted_kw:g} kW" if cap else f"{wanted_kw:g} kW"
    return f"not applied: composite schedule shows {shown} (wanted {wanted})"
