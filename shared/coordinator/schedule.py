"""Layer 3 schedule -> timed setpoint commands, with change detection.

A schedule is a DataFrame indexed by slot start (timezone-aware, sorted, unique), one
column per series. Setpoint columns (power in kW, >= 0):

=============================== ==================== ==============================
column                          command              asset_map key
=============================== ==================== ==============================
``ev_{vehicle_id}_kw``          SET_CHARGE_RATE      ``ev_{vehicle_id}``
``battery_charge_kw``           SET_CHARGE_RATE      ``battery``
``battery_discharge_kw``        SET_DISCHARGE_RATE   ``battery``
``battery_{id}_charge_kw``      SET_CHARGE_RATE      ``battery_{id}``
``battery_{id}_discharge_kw``   SET_DISCHARGE_RATE   ``battery_{id}``
=============================== ==================== ==============================

Every other column (total_ev_kw, price_per_kwh, battery_soc_kwh, ...) is ignored.
A command is emitted in the first slot that has a value and in every slot whose value
differs from the setpoint in force. NaN means "no instruction": the previous setpoint
stays in force. The rules are in docs/schedules.md.

The work is done on whole columns with numpy; Python only loops over the commands that
come out.
"""

from __future__ import annotations

import gc
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeAlias

from .base import Command, CommandStatus, CommandType
from .ids import COMMAND_PREFIX, new_ids
from .lazy_imports import LazyModule
from .timeutil import utcnow

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:  # imported when a schedule is first converted: most processes import this module, few convert
    np = LazyModule("numpy", globals(), "np")
    pd = LazyModule("pandas", globals(), "pd")

EV_COLUMN = re.compile(r"^ev_(?P<vehicle>.+)_kw$")
BATTERY_COLUMN = re.compile(r"^(?P<key>battery(?:_.+?)?)_(?P<direction>charge|discharge)_kw$")

# Column names of refused cells are listed up to this many, so an error stays readable.
_MAX_LISTED = 10


def schedule_span(index: pd.Index) -> tuple[datetime | None, datetime | None]:
    """(start of the first slot, END of the last slot) of a schedule's index; (None, None)
    for no rows. A slot lasts until the next one starts; the last one lasts one slot length,
    the smallest step between two slot starts (the schedule's resolution). A one-row
    schedule has no length to tell: its end is its start.

        >>> idx = pd.date_range("2025-01-15 08:00", periods=4, freq="15min", tz="UTC")
        >>> [t.isoformat() for t in schedule_span(idx)]
        ['2025-01-15T08:00:00+00:00', '2025-01-15T09:00:00+00:00']
    """
    if not len(index):
        return None, None
    start = index[0].to_pydatetime()
    if len(index) == 1:
        return start, start
    step = (index[1:] - index[:-1]).min()
    return start, (index[-1] + step).to_pydatetime()


class ScheduleError(ValueError):
    """The schedule cannot be turned into commands; nothing was created.

    ``reason`` is a short machine-readable code, ``columns`` the offending columns.
    """

    def __init__(self, reason: str, message: str, columns: Sequence[str] = ()) -> None:
        self.reason = reason
        self.columns = list(columns)
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SetpointColumns:
    """Which columns of a schedule are setpoints, grouped by asset_map key."""

    ev: dict[str, str]
    """asset_map key -> column"""
    battery: dict[str, tuple[str | None, str | None]]
    """asset_map key -> (charge column, discharge column)"""

    @property
    def keys(self) -> list[str]:
        return [*self.ev, *self.battery]


def classify_columns(columns: Sequence[str]) -> SetpointColumns:
    """Sort the setpoint columns from the rest, which are ignored."""
    ev: dict[str, str] = {}
    battery: dict[str, tuple[str | None, str | None]] = {}
    for name in columns:
        if not isinstance(name, str):
            continue
        if m := BATTERY_COLUMN.match(name):
            charge, discharge = battery.get(m["key"], (None, None))
            if m["direction"] == "charge":
                charge = name
            else:
                discharge = name
            battery[m["key"]] = (charge, discharge)
        elif m := EV_COLUMN.match(name):
            ev[name[: -len("_kw")]] = name
    return SetpointColumns(ev, battery)


def validate_index(index: pd.Index) -> pd.DatetimeIndex:
    """Return the index in UTC, or raise ScheduleError if it is not a usable time axis."""
    if not isinstance(index, pd.DatetimeIndex):
        raise ScheduleError("bad_index", f"schedule index must be a DatetimeIndex, got {type(index).__name__}")
    if index.tz is None:
        raise ScheduleError("naive_index", "schedule index must be timezone-aware (tz_localize it, e.g. to UTC)")
    if index.hasnans:
        raise ScheduleError("bad_index", "schedule index contains NaT")
    if not index.is_unique:
        dupes = index[index.duplicated()].unique()
        raise ScheduleError("duplicate_index", f"schedule index has duplicated slots: {_listed(dupes)}")
    if not index.is_monotonic_increasing:
        raise ScheduleError("unsorted_index", "schedule index must be sorted in ascending time order")
    return index.tz_convert("UTC")


def _listed(items: Iterable[object]) -> str:
    names = [str(i) for i in items]
    more = f" (+{len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def _numeric_block(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The columns as one float64 matrix (slots x columns); refuse anything that is not a power.
    Read only: it may be the frame's own memory."""
    # Every column, in order (a depot of chargers): the frame itself, not a copy of it.
    block = df if list(df.columns) == columns else df[columns]
    bad_type = [
        c for c, dtype in zip(columns, block.dtypes, strict=True) if dtype.kind not in "iuf"
    ]  # bool, object, string, datetime... are not powers
    if bad_type:
        raise ScheduleError("non_numeric", f"setpoint columns must be numeric: {_listed(bad_type)}", bad_type)
    if all(dtype == np.float64 for dtype in block.dtypes):  # NaN is NaN already: a view, not a copy
        values = block.to_numpy(dtype=np.float64, copy=False)
    else:
        values = block.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isinf(values).any(axis=0)
    if bad.any():
        cols = [c for c, b in zip(columns, bad, strict=True) if b]
        raise ScheduleError("infinite_power", f"infinite power in columns: {_listed(cols)}", cols)
    with np.errstate(invalid="ignore"):
        negative = np.asarray((values < 0).any(axis=0))
    if negative.any():
        cols = [c for c, b in zip(columns, negative, strict=True) if b]
        raise ScheduleError(
            "negative_power",
            f"negative power in columns: {_listed(cols)} (use battery_discharge_kw to discharge)",
            cols,
        )
    return values


def _forward_fill(values: np.ndarray) -> np.ndarray:
    """NaN takes the last non-NaN value above it in the same column (leading NaN stays)."""
    if not np.isnan(values).any():
        return values
    rows = np.arange(values.shape[0])[:, None]
    last = np.where(np.isnan(values), 0, rows)
    np.maximum.accumulate(last, axis=0, out=last)
    filled: np.ndarray = values[last, np.arange(values.shape[1])]
    # rows before a column's first value pointed at row 0, which may itself be NaN: correct.
    return filled


def _changes(filled: np.ndarray) -> np.ndarray:
    """True where a setpoint must be sent: first value, and every change after it."""
    changed: np.ndarray = ~np.isnan(filled)
    with np.errstate(invalid="ignore"):
        changed[1:] &= filled[1:] != filled[:-1]
    # After a leading NaN the first value differs from NaN, so `!=` already marks it.
    return changed


@dataclass(frozen=True, slots=True)
class PlannedSetpoints:
    """The outcome of change detection, still columnar: one entry per command to create."""

    slot: np.ndarray  # row index into the schedule
    key_index: np.ndarray  # index into keys (int32): no object per command
    command_type: np.ndarray  # index into SETPOINT_TYPES (int8)
    power_kw: np.ndarray  # float64
    keys: tuple[str, ...] = ()  # the asset_map keys of the setpoint columns

    @property
    def key(self) -> np.ndarray:
        """Each entry's asset_map key (an object array)."""
        return np.array(self.keys, dtype=object)[self.key_index] if self.keys else np.empty(0, dtype=object)


def plan_setpoints(df: pd.DataFrame, asset_map: Mapping[str, str]) -> PlannedSetpoints:
    """Change detection over every setpoint column; raises ScheduleError on bad input."""
    validate_index(df.index)
    if not df.columns.is_unique:
        dupes = df.columns[df.columns.duplicated()].unique()
        raise ScheduleError("duplicate_columns", f"schedule has duplicated columns: {_listed(dupes)}", list(dupes))
    cols = classify_columns(list(df.columns))
    unmapped = [k for k in cols.keys if k not in asset_map]
    if unmapped:
        names = [cols.ev[k] for k in unmapped if k in cols.ev] + [
            c for k in unmapped if k in cols.battery for c in cols.battery[k] if c
        ]
        raise ScheduleError(
            "unmapped_columns",
            f"setpoint columns with no asset_map entry: {_listed(names)} (add keys {_listed(unmapped)})",
            names,
        )
    targets = [asset_map[k] for k in cols.keys]
    shared = sorted(t for t, n in Counter(targets).items() if n > 1)
    if shared:
        keys = [k for k in cols.keys if asset_map[k] in shared]
        raise ScheduleError(
            "duplicate_asset",
            f"several asset_map keys name the same asset ({_listed(shared)}): {_listed(keys)}; "
            "one asset takes one setpoint per slot",
            [c for k in keys for c in ([cols.ev[k]] if k in cols.ev else [c for c in cols.battery[k] if c])],
        )
    ev, batteries = _plan_ev(df, cols.ev), _plan_batteries(df, cols.battery)
    key_names = tuple(cols.keys)
    # Each part is in slot order already (np.nonzero walks row by row); merging two costs a sort
    # and a copy of every array, which a site of one kind (a depot of chargers) need not pay.
    if not len(batteries[0]) or not len(ev[0]):
        slot, index, types, power = ev if len(ev[0]) else (batteries[0], batteries[1] + len(cols.ev), *batteries[2:])
        return PlannedSetpoints(slot=slot, key_index=index.astype(np.int32), command_type=types, power_kw=power,
                                keys=key_names)
    slot = np.concatenate([ev[0], batteries[0]])
    order = np.argsort(slot, kind="stable")
    return PlannedSetpoints(
        slot=slot[order],
        key_index=np.concatenate([ev[1], batteries[1] + len(cols.ev)]).astype(np.int32)[order],
        command_type=np.concatenate([ev[2], batteries[2]])[order],
        power_kw=np.concatenate([ev[3], batteries[3]])[order],
        keys=key_names,
    )


# Command types travel through numpy as small codes: numpy would turn StrEnum members into str.
SETPOINT_TYPES = (CommandType.SET_CHARGE_RATE, CommandType.SET_DISCHARGE_RATE)
_CHARGE, _DISCHARGE = 0, 1

_Part: TypeAlias = "tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]"


def _plan_ev(df: pd.DataFrame, ev: dict[str, str]) -> _Part:
    keys = list(ev)
    values = _forward_fill(_numeric_block(df, [ev[k] for k in keys]))
    slots, idx = np.nonzero(_changes(values))
    types = np.full(len(slots), _CHARGE, dtype=np.int8)
    return slots, idx, types, values[slots, idx]


def _plan_batteries(df: pd.DataFrame, battery: dict[str, tuple[str | None, str | None]]) -> _Part:
    keys = list(battery)
    n = len(df.index)
    charge = np.zeros((n, len(keys)))
    discharge = np.zeros((n, len(keys)))
    for j, k in enumerate(keys):
        c_col, d_col = battery[k]
        block = _numeric_block(df, [c for c in (c_col, d_col) if c])
        charge[:, j] = block[:, 0] if c_col else np.where(np.isnan(block[:, 0]), np.nan, 0.0)
        discharge[:, j] = block[:, -1] if d_col else np.where(np.isnan(block[:, 0]), np.nan, 0.0)
    # A slot with both values missing carries no instruction; one missing value counts as 0.
    both_missing = np.isnan(charge) & np.isnan(discharge)
    charge = np.nan_to_num(charge, nan=0.0)
    discharge = np.nan_to_num(discharge, nan=0.0)
    clash = (charge > 0) & (discharge > 0)
    if clash.any():
        slots, idx = np.nonzero(clash)
        where = [f"{df.index[int(s)].isoformat()} ({keys[i]})" for s, i in zip(slots, idx, strict=True)]
        cols = sorted({c for i in idx for c in battery[keys[i]] if c})
        raise ScheduleError(
            "charge_and_discharge",
            f"battery charge and discharge both non-zero in one slot: {_listed(where)}",
            cols,
        )
    net = np.where(both_missing, np.nan, charge - discharge)
    net = _forward_fill(net)
    slots, idx = np.nonzero(_changes(net))
    changed_net = net[slots, idx]
    # Going to zero is said on the register in use: after discharging, "discharge 0".
    last_mode = _forward_fill(np.where(net == 0, np.nan, np.sign(net)))[slots, idx]
    discharging = (changed_net < 0) | ((changed_net == 0) & (last_mode < 0))
    types = np.where(discharging, _DISCHARGE, _CHARGE).astype(np.int8)
    return slots, idx, types, np.abs(changed_net)


def schedule_to_commands(
    df: pd.DataFrame,
    asset_map: Mapping[str, str],
    *,
    schedule_id: str | None = None,
    timeout_seconds: float = 30.0,
    max_retries: int = 3,
    now: datetime | None = None,
) -> list[Command]:
    """Pure conversion: a schedule to the commands change detection calls for, in slot order.

    >>> import pandas as pd
    >>> idx = pd.date_range("2025-01-15 08:00", periods=4, freq="h", tz="UTC")
    >>> df = pd.DataFrame({"ev_001_kw": [22.0, 22.0, 22.0, 0.0], "price_per_kwh": [0.3] * 4}, index=idx)
    >>> [(c.scheduled_at.hour, c.parameters["power_kw"]) for c in schedule_to_commands(df, {"ev_001": "ast_bay_1"})]
    [(8, 22.0), (11, 0.0)]
    """
    plan = plan_setpoints(df, asset_map)
    count = len(plan.slot)
    slot_times = validate_index(df.index).to_pydatetime()
    created = now or utcnow()
    ids = new_ids(COMMAND_PREFIX, count)
    # Tens of thousands of small objects and no garbage to collect: the cyclic GC would
    # only rescan them (about a third of the time here).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_commands(plan, asset_map, slot_times, ids, schedule_id, created, timeout_seconds, max_retries)
    finally:
        if gc_was_enabled:
            gc.enable()


def _build_commands(
    plan: PlannedSetpoints,
    asset_map: Mapping[str, str],
    slot_times: np.ndarray,
    ids: list[str],
    schedule_id: str | None,
    created: datetime,
    timeout_seconds: float,
    max_retries: int,
) -> list[Command]:
    types = SETPOINT_TYPES
    pending = CommandStatus.PENDING
    assets = [asset_map[key] for key in plan.keys]
    # Positional arguments: about a quarter cheaper than keywords at this volume.
    return [
        Command(
            assets[key],
            types[ctype],
            {"power_kw": power},
            slot_times[slot],
            command_id,
            pending,
            0,
            max_retries,
            timeout_seconds,
            1,
            schedule_id,
            created,
        )
        for slot, key, ctype, power, command_id in zip(
            plan.slot.tolist(), plan.key_index.tolist(), plan.command_type.tolist(), plan.power_kw.tolist(), ids,
            strict=True
        )
    ]
