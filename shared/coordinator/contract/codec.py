"""msgpack wire form of commands, events and schedules; safe decoding of untrusted bytes.

    >>> from datetime import datetime, timedelta, timezone
    >>> from coordinator.base import Command, CommandType
    >>> ist = timezone(timedelta(hours=5, minutes=30))
    >>> cmd = Command("ast_1", CommandType.SET_CHARGE_RATE, {"power_kw": 22.0},
    ...               scheduled_at=datetime(2025, 1, 15, 13, 30, 0, 250, tzinfo=ist))
    >>> back = decode_command(encode_command(cmd))
    >>> back.scheduled_at == cmd.scheduled_at, back.scheduled_at.tzinfo
    (True, datetime.timezone.utc)
    >>> decode_command(b"\\xc1")
    Traceback (most recent call last):
    ...
    coordinator.contract.codec.DecodeError: not msgpack: invalid format byte

Datetimes travel as the msgpack Timestamp extension: the instant is exact to the
microsecond (nanosecond for schedule indexes), the UTC offset is not kept, so decoded
datetimes are in UTC. Every ``decode_*`` raises only ``DecodeError``. Formats and limits:
docs/codec.md.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import msgpack
import pydantic
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, StrictStr

from coordinator.base import COMMAND_ADAPTER, Command, CommandStatus, CommandType
from coordinator.contract.events import payload_model
from coordinator.events import Event, EventType

if TYPE_CHECKING:
    # Imported where schedules are encoded and decoded, not here: every process imports this
    # module, and pandas with numpy is about 0.4 s and 40 MB that most of them never use.
    import pandas as pd

MAX_MESSAGE_BYTES = 1 << 20
"""Largest encoded command or event (or runtime envelope, see ``coordinator.contract.messages``) accepted."""
MAX_SCHEDULE_BYTES = 16 << 20
"""Largest encoded schedule accepted."""
MAX_ITEMS = 100_000
"""Most elements in one msgpack array or map of a command or event."""
MAX_DEPTH = 32
"""Most levels of nested arrays/maps in a command or event (the top-level map is level 1)."""
MAX_ROWS = 100_000
MAX_COLUMNS = 20_000
MAX_ID_CHARS = 128
"""Longest schedule_id, site_id, asset_map key or asset id."""
MAX_COLUMN_NAME_CHARS = 256

_TIMESTAMP_EXT_MAX = 12  # the largest msgpack Timestamp form (96-bit)


class DecodeError(ValueError):
    """Bytes that are not a valid message; ``reason`` says what is wrong, for logs and replies."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------- bytes


def _refuse_ext(code: int, data: bytes) -> Any:
    # Only the Timestamp extension (-1) is part of the format; msgpack handles it before this hook.
    raise ValueError(f"unknown msgpack extension type {code}")


def _unpackb(data: object, max_bytes: int, timestamp: int, max_str: int, max_items: int, max_map: int) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise DecodeError(f"message is {len(data)} bytes, limit {max_bytes}")
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, timestamp=timestamp, ext_hook=_refuse_ext,
            max_str_len=max_str, max_bin_len=max_str, max_array_len=max_items, max_map_len=max_map,
            max_ext_len=_TIMESTAMP_EXT_MAX,
        )
    except msgpack.ExtraData:
        raise DecodeError("not msgpack: trailing bytes after the message") from None
    except msgpack.StackError:
        raise DecodeError("not msgpack: nesting too deep") from None
    except msgpack.FormatError:
        raise DecodeError("not msgpack: invalid format byte") from None
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: a Timestamp past year 9999
        if "exceeds max_" in str(exc):
            raise DecodeError(f"too large: {exc}") from None
        raise DecodeError(f"not msgpack: {exc}") from None


def _depth(obj: Any) -> int:
    """Levels of nested lists/dicts, walked level by level so no input can recurse us to death."""
    level = [obj] if type(obj) in (list, dict) else []
    depth = 0
    while level and depth <= MAX_DEPTH:
        depth += 1
        level = [
            child
            for container in level
            for child in (container.values() if type(container) is dict else container)
            if type(child) in (list, dict)
        ]
    return depth


def unpack(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Untrusted bytes -> plain Python (dict, list, str, bytes, int, float, bool, None, UTC datetime).

    Enforces the size, item and depth limits; the base of every ``decode_*`` here and of
    ``coordinator.contract.messages``.

        >>> unpack(b"\\x81\\xa1a\\x01")
        {'a': 1}
    """
    obj = _unpackb(data, max_bytes, timestamp=3, max_str=max_bytes, max_items=MAX_ITEMS, max_map=MAX_ITEMS)
    if _depth(obj) > MAX_DEPTH:
        raise DecodeError(f"nested deeper than {MAX_DEPTH} levels")
    return obj


def _default(obj: Any) -> Any:
    """What msgpack cannot pack by itself but our messages legitimately carry."""
    if isinstance(obj, datetime):
        if obj.tzinfo is None or obj.utcoffset() is None:
            raise ValueError(f"cannot encode naive datetime {obj.isoformat()}: make it timezone-aware")
        # A datetime subclass (pandas.Timestamp): msgpack packs only the exact type.
        return datetime(obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second, obj.microsecond, obj.tzinfo,
                        fold=obj.fold)
    if isinstance(obj, Enum):
        return obj.value
    numpy = sys.modules.get("numpy")  # a numpy scalar exists only once numpy was imported
    if numpy is not None and isinstance(obj, numpy.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in a message")


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, datetime=True, use_bin_type=True, default=_default)
    return data


_WIRE_NAMES = {dict: "map", list: "array", type(None): "nil", datetime: "timestamp", msgpack.Timestamp: "timestamp"}


def _kind(value: object) -> str:
    """The msgpack name of a decoded value's type, for reasons."""
    return _WIRE_NAMES.get(type(value), type(value).__name__)


def _require_map(obj: Any, required: frozenset[str], optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    if type(obj) is not dict:
        raise DecodeError(f"top level must be a map, got {_kind(obj)}")
    if unknown := obj.keys() - required - optional:
        raise DecodeError("unknown field(s): " + ", ".join(sorted(repr(k)[:64] for k in unknown)[:5]))
    if missing := required - obj.keys():
        raise DecodeError("missing field(s): " + ", ".join(sorted(missing)))
    return obj


def _validation_reason(exc: pydantic.ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = [str(p) for p in first["loc"]]
    if len(loc) > 1 and len(errors) > 1 and all(
        e["loc"][:-1] == first["loc"][:-1] and e["input"] is first["input"] for e in errors
    ):
        # One value failing every member of a union: name the members, not the first one's complaint.
        msg = "matches none of " + ", ".join(str(e["loc"][-1]) for e in errors)
        loc = loc[:-1]
    else:
        msg = first["msg"]
    return f"field {'.'.join(loc)}: {msg}" if loc else msg


# -------------------------------------------------------------------------------- commands

_COMMAND_ORDER = tuple(f.name for f in dataclasses.fields(Command))  # stable bytes for equal commands
_COMMAND_FIELDS = frozenset(_COMMAND_ORDER)
_COMMAND_TIMES = ("scheduled_at", "created_at", "dispatched_at", "finished_at", "next_attempt_at")
_COMMAND_NUMBERS = ("attempts", "max_retries", "timeout_seconds", "priority")


def encode_command(cmd: Command) -> bytes:
    """A Command as a msgpack map of all its fields; enums as their values.

        >>> from datetime import datetime, timezone
        >>> cmd = Command("ast_1", CommandType.STOP_CHARGING, scheduled_at=datetime(2025, 1, 15, tzinfo=timezone.utc))
        >>> decode_command(encode_command(cmd)).command_id == cmd.command_id
        True
    """
    fields = {name: getattr(cmd, name) for name in _COMMAND_ORDER}
    fields["command_type"] = CommandType(cmd.command_type).value
    fields["status"] = CommandStatus(cmd.status).value
    return _pack(fields)


def decode_command(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Command:
    """Untrusted bytes -> Command by the rules of ``command_from_wire``; else DecodeError.

        >>> decode_command(encode_command(Command("ast_1", CommandType.STOP_CHARGING))).asset_id
        'ast_1'
    """
    return command_from_wire(unpack(data, max_bytes=max_bytes))


def command_from_wire(obj: object) -> Command:
    """One command as decoded from msgpack (a message of its own, or an item of a
    ``CommandBatch``) -> Command, validated by ``base.COMMAND_ADAPTER``; else DecodeError.

    The only way a command is read off the wire. Every field must be present (optional ones
    as nil): a missing ``command_id`` must not quietly become a fresh one, nor a missing
    ``scheduled_at`` "now". Datetimes must be msgpack Timestamps, not strings or numbers;
    numbers must not be bools.

        >>> command_from_wire({"asset_id": "ast_1"})
        Traceback (most recent call last):
        ...
        coordinator.contract.codec.DecodeError: missing field(s): attempts, command_id, command_type, ...
    """
    fields = _require_map(obj, _COMMAND_FIELDS)
    for name in _COMMAND_TIMES:
        if fields[name] is not None and not isinstance(fields[name], datetime):
            raise DecodeError(f"field {name}: expected a timestamp, got {_kind(fields[name])}")
    for name in _COMMAND_NUMBERS:
        if type(fields[name]) is bool:  # pydantic's lax mode would read true as 1
            raise DecodeError(f"field {name}: expected a number, got bool")
    try:
        return COMMAND_ADAPTER.validate_python(fields)
    except pydantic.ValidationError as exc:
        raise DecodeError(_validation_reason(exc)) from None


# ---------------------------------------------------------------------------------- events


class EventEnvelope(BaseModel):
    """An event on the wire: {event_id, event_type, timestamp, payload}; the payload's own
    model depends on event_type (``coordinator.contract.events.PAYLOAD_MODELS``)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    event_id: Annotated[str, Field(pattern=r"^evt_[0-9a-zA-Z_-]{1,64}$")]
    event_type: EventType
    timestamp: Annotated[AwareDatetime, Strict()]
    payload: dict[StrictStr, Any]
    """The event type's payload model (schemas/events/{event_type}.json)."""


_EVENT_FIELDS = frozenset(EventEnvelope.model_fields)


def encode_event(ev: Event) -> bytes:
    """An Event as a msgpack map {event_id, event_type, timestamp, payload}.

    The payload is its model's fields, every one of them (optional ones as nil when unset);
    datetimes travel as Timestamps and come back in UTC.

        >>> from coordinator.contract.events import StateChanged
        >>> ev = Event(EventType.STATE_CHANGED, StateChanged(asset_id="ast_1", from_state="IDLE",
        ...                                                  to_state="CHARGING", trigger="charge"))
        >>> decode_event(encode_event(ev)).payload.to_state
        'CHARGING'
    """
    return _pack(
        {"event_id": ev.event_id, "event_type": EventType(ev.event_type).value, "timestamp": ev.timestamp,
         "payload": ev.payload.model_dump(mode="python")}
    )


def decode_event(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Event:
    """Untrusted bytes -> Event; else DecodeError.

    The envelope must be complete (a known event_type, an aware Timestamp) and the payload
    must fit the type's model: no unknown or missing field, no text where a Timestamp belongs,
    no bool where a number belongs.

        >>> up = Event(EventType.DEVICE_LINK_UP, {"asset_id": "ast_1", "endpoint": "cp_1", "reason": ""})
        >>> decode_event(encode_event(up)).payload
        DeviceLinkUp(asset_id='ast_1', endpoint='cp_1', reason='')
    """
    obj = _require_map(unpack(data, max_bytes=max_bytes), _EVENT_FIELDS)
    try:
        wire = EventEnvelope.model_validate(obj)
    except pydantic.ValidationError as exc:
        raise DecodeError(_validation_reason(exc)) from None
    try:
        payload = payload_model(wire.event_type).model_validate(wire.payload)
    except pydantic.ValidationError as exc:
        raise DecodeError(f"{wire.event_type.value} payload: {_validation_reason(exc)}") from None
    return Event(wire.event_type, payload, wire.timestamp, wire.event_id)


# ------------------------------------------------------------------------------- schedules


@dataclass(frozen=True, slots=True, eq=False)
class ScheduleMessage:
    """A decoded schedule: structurally sound, not yet checked for meaning (see ``coordinator.schedule``)."""

    schedule_id: str | None
    site_id: str
    asset_map: dict[str, str]
    frame: pd.DataFrame
    """float64 columns (NaN where the message had nil), tz-aware UTC DatetimeIndex."""


class ScheduleFormat(BaseModel):
    """The schedule message's wire form, for its JSON Schema (docs/contract/). ``decode_schedule``
    checks these rules by hand, at C speed; a test holds the two together."""

    model_config = ConfigDict(extra="forbid", title="Schedule", use_attribute_docstrings=True)

    schedule_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)] | None = None
    """Your id; if absent, ``sch_`` + 12 hex of a hash of the bytes."""
    site_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
    asset_map: dict[Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)],
                    Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]]
    """Schedule key (ev_{key}_kw, battery) -> asset_id."""
    index: Annotated[list[AwareDatetime], Field(max_length=MAX_ROWS)]
    """Slot starts (Timestamps), ascending and unique."""
    columns: Annotated[dict[Annotated[str, Field(min_length=1, max_length=MAX_COLUMN_NAME_CHARS)],
                            list[float | None]], Field(max_length=MAX_COLUMNS)]
    """One list per column, as long as ``index``; nil is NaN."""


_SCHEDULE_REQUIRED = frozenset({"site_id", "asset_map", "index", "columns"})
_SCHEDULE_OPTIONAL = frozenset({"schedule_id"})
_NUMBER_TYPES = frozenset({float, int, type(None)})  # bool is not int here: type(), not isinstance
_NAT = -(1 << 63)
"""numpy.iinfo(numpy.int64).min: pandas' NaT as int64 nanoseconds."""


def encode_schedule(
    df: pd.DataFrame, *, asset_map: dict[str, str], site_id: str, schedule_id: str | None = None
) -> bytes:
    """A Layer 3 schedule in columnar form: {schedule_id?, site_id, asset_map, index, columns}.

    The index must be a timezone-aware DatetimeIndex (sent exact to the nanosecond, as UTC);
    columns must be numeric (not bool) and are sent as floats, NaN as nil.

        >>> idx = pd.date_range("2025-01-15 08:00", periods=2, freq="15min", tz="Europe/Paris")
        >>> df = pd.DataFrame({"ev_1_kw": [22.0, float("nan")]}, index=idx)
        >>> msg = decode_schedule(encode_schedule(df, asset_map={"ev_1": "ast_1"}, site_id="sit_1"))
        >>> msg.frame["ev_1_kw"].tolist(), str(msg.frame.index.tz)
        ([22.0, nan], 'UTC')
    """
    import numpy as np
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"schedule must be a pandas DataFrame, got {type(df).__name__}")
    if not isinstance(df.index, pd.DatetimeIndex) or df.index.tz is None:
        raise ValueError("schedule index must be a timezone-aware DatetimeIndex")
    names = list(df.columns)
    if not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        raise ValueError("schedule column names must be unique strings")
    for name, dtype in df.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            raise ValueError(f"column {name}: dtype {dtype} is not numeric")
    nanos = df.index.as_unit("ns").asi8
    if (nanos == _NAT).any():
        raise ValueError("schedule index contains NaT")
    # Whole-matrix conversion: one float array, one object copy with None for NaN, one tolist.
    values = df.to_numpy(dtype=np.float64, na_value=np.nan)
    cells = values.astype(object)
    cells[np.isnan(values)] = None
    message: dict[str, Any] = {} if schedule_id is None else {"schedule_id": schedule_id}
    message |= {
        "site_id": site_id,
        "asset_map": dict(asset_map),
        "index": [msgpack.Timestamp.from_unix_nano(n) for n in nanos.tolist()],
        "columns": dict(zip(map(str, names), cells.T.tolist(), strict=True)),
    }
    return _pack(message)


def _text(value: object, where: str, max_chars: int) -> str:
    if type(value) is not str or not 0 < len(value) <= max_chars or not value.isprintable():
        raise DecodeError(f"{where}: expected a string of 1-{max_chars} printable characters, got {_kind(value)}")
    return value


def _texts(values: list[Any], where: str, max_chars: int) -> None:
    """``_text`` on many strings at C speed; the per-item loop runs only to name the culprit."""
    if not values or (
        set(map(type, values)) == {str}
        and min(map(len, values)) > 0
        and max(map(len, values)) <= max_chars
        and "".join(values).isprintable()
    ):
        return
    for value in values:
        _text(value, where, max_chars)


def decode_schedule(data: bytes, *, max_bytes: int = MAX_SCHEDULE_BYTES) -> ScheduleMessage:
    """Untrusted bytes -> ScheduleMessage, checking structure only; else DecodeError.

    Refused: wrong types, unknown or missing fields, a column whose length differs from
    the index, a value that is not a number or nil (bools included), more than MAX_ROWS
    rows or MAX_COLUMNS columns. Sorting, duplicates and value ranges are checked later.

        >>> try:
        ...     decode_schedule(b"\\x90")
        ... except DecodeError as exc:
        ...     exc.reason
        'top level must be a map, got array'
    """
    import numpy as np
    import pandas as pd

    obj = _require_map(
        # timestamp=0: Timestamp objects, turned into int64 nanoseconds without a detour via datetime
        _unpackb(data, max_bytes, timestamp=0, max_str=4 * MAX_COLUMN_NAME_CHARS, max_items=MAX_ROWS,
                 max_map=MAX_COLUMNS),
        _SCHEDULE_REQUIRED, _SCHEDULE_OPTIONAL,
    )
    schedule_id = obj.get("schedule_id")
    if schedule_id is not None:
        _text(schedule_id, "field schedule_id", MAX_ID_CHARS)
    site_id = _text(obj["site_id"], "field site_id", MAX_ID_CHARS)

    asset_map = obj["asset_map"]
    if type(asset_map) is not dict:
        raise DecodeError(f"field asset_map: expected a map, got {_kind(asset_map)}")
    _texts(list(asset_map), "field asset_map: key", MAX_ID_CHARS)
    _texts(list(asset_map.values()), "field asset_map: asset id", MAX_ID_CHARS)

    stamps = obj["index"]
    if type(stamps) is not list:
        raise DecodeError(f"field index: expected an array, got {_kind(stamps)}")
    if not set(map(type, stamps)) <= {msgpack.Timestamp}:
        bad = next(s for s in stamps if type(s) is not msgpack.Timestamp)
        raise DecodeError(f"field index: entries must be timestamps, got {_kind(bad)}")
    try:
        nanos = np.array([s.to_unix_nano() for s in stamps], dtype=np.int64)
    except OverflowError:
        nanos = np.array([_NAT])
    if (nanos == _NAT).any():
        raise DecodeError("field index: timestamp outside 1677-2262 (pandas' range)")
    rows = len(nanos)

    columns = obj["columns"]
    if type(columns) is not dict:
        raise DecodeError(f"field columns: expected a map, got {_kind(columns)}")
    names, cells = list(columns), list(columns.values())
    _texts(names, "field columns: name", MAX_COLUMN_NAME_CHARS)
    # np.array(..., float64) would turn True into 1.0 and "7" into 7.0: check types first.
    if not (
        set(map(type, cells)) <= {list}
        and set(map(len, cells)) <= {rows}
        and all(set(map(type, column)) <= _NUMBER_TYPES for column in cells)
    ):
        for name, column in columns.items():
            if type(column) is not list:
                raise DecodeError(f"column {name}: expected an array, got {_kind(column)}")
            if len(column) != rows:
                raise DecodeError(f"column {name}: {len(column)} values for {rows} index entries")
            if bad := [v for v in column if type(v) not in _NUMBER_TYPES]:
                raise DecodeError(f"column {name}: values must be numbers or nil, got {_kind(bad[0])}")
    # One 2-D conversion (None becomes NaN) instead of one array per column.
    matrix = np.array(cells, dtype=np.float64).reshape(len(cells), rows)
    index = pd.DatetimeIndex(nanos.view("datetime64[ns]")).tz_localize("UTC")
    frame = pd.DataFrame(matrix.T, index=index, columns=names, copy=False)
    return ScheduleMessage(schedule_id, site_id, dict(asset_map), frame)
