import math
from datetime import UTC, datetime, timedelta, timezone

import msgpack
import numpy as np
import pandas as pd
import pytest
from event_samples import SAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.base import Command, CommandStatus, CommandType
from coordinator.contract.codec import (
    MAX_COLUMNS,
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    MAX_ROWS,
    MAX_SCHEDULE_BYTES,
    DecodeError,
    ScheduleMessage,
    decode_command,
    decode_event,
    decode_schedule,
    encode_command,
    encode_event,
    encode_schedule,
    unpack,
)
from coordinator.contract.events import CommandDispatched, ScheduleReceived
from coordinator.events import Event, EventType

IST = timezone(timedelta(hours=5, minutes=30))
T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
COMMAND_TIMES = ("scheduled_at", "created_at", "dispatched_at", "finished_at", "next_attempt_at")


def full_command() -> Command:
    return Command(
        asset_id="ast_charger_001",
        command_type=CommandType.SET_CHARGE_RATE,
        parameters={"power_kw": 22.5, "phases": 3, "force": True, "note": "peak", "limit": None},
        scheduled_at=datetime(2025, 1, 15, 13, 30, 0, 123457, tzinfo=IST),
        command_id="cmd_0123456789ab",
        status=CommandStatus.ACKNOWLEDGED,
        attempts=2,
        max_retries=5,
        timeout_seconds=12.5,
        priority=-7,
        schedule_id="sch_abc",
        created_at=datetime(2025, 1, 15, 7, 0, 0, 1, tzinfo=timezone(timedelta(hours=-3))),
        dispatched_at=datetime(2025, 1, 15, 8, 0, 0, 999999, tzinfo=UTC),
        finished_at=datetime(2025, 1, 15, 8, 0, 1, tzinfo=IST),
        next_attempt_at=datetime(2025, 1, 15, 8, 0, 2, 500, tzinfo=UTC),
        error="device busy",
    )


def assert_same_command(back: Command, cmd: Command) -> None:
    for name in Command.__dataclass_fields__:
        got, want = getattr(back, name), getattr(cmd, name)
        assert got == want, name
        assert type(got) is type(want), name
        if isinstance(want, datetime):
            assert got.utcoffset() == timedelta(0), name  # offset normalised to UTC, instant exact
    assert {k: type(v) for k, v in back.parameters.items()} == {k: type(v) for k, v in cmd.parameters.items()}


def raw(**fields) -> dict:
    """The wire map of full_command(), with some fields replaced (None-valued kwargs are kept)."""
    obj = msgpack.unpackb(encode_command(full_command()), timestamp=3)
    obj.update(fields)
    return obj


def pack(obj) -> bytes:
    return msgpack.packb(obj, datetime=True)


def reason_of(decode, data, **kw) -> str:
    with pytest.raises(DecodeError) as info:
        decode(data, **kw)
    assert str(info.value) == info.value.reason
    return info.value.reason


# ---------------------------------------------------------------------------- commands


def test_command_round_trip_keeps_every_field_and_exact_instants():
    cmd = full_command()
    back = decode_command(encode_command(cmd))
    assert_same_command(back, cmd)
    assert back.scheduled_at.microsecond == 123457 and back.scheduled_at.hour == 8  # 13:30+05:30 = 08:00Z


def test_command_round_trip_with_unset_optionals():
    cmd = Command("ast_1", CommandType.STOP_CHARGING, scheduled_at=T0)
    assert_same_command(decode_command(encode_command(cmd)), cmd)


def test_command_wire_form_is_enum_strings_and_timestamps():
    obj = msgpack.unpackb(encode_command(full_command()), timestamp=0)
    assert obj["command_type"] == "SET_CHARGE_RATE" and obj["status"] == "ACKNOWLEDGED"
    assert type(obj["scheduled_at"]) is msgpack.Timestamp and obj["dispatched_at"].nanoseconds == 999999000
    assert set(obj) == set(Command.__dataclass_fields__)


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"scheduled_at": "2025-01-15T08:00:00"}, "field scheduled_at: expected a timestamp, got str"),
        ({"finished_at": 1736928000}, "field finished_at: expected a timestamp, got int"),
        ({"attempts": True}, "field attempts: expected a number, got bool"),
        ({"attempts": -1}, "field attempts: Input should be greater than or equal to 0"),
        ({"timeout_seconds": float("nan")}, "field timeout_seconds: Input should be a finite number"),
        ({"command_type": "LAUNCH_ROCKET"}, "field command_type: Input should be 'SET_CHARGE_RATE'"),
        ({"status": "LOST"}, "field status: Input should be 'PENDING'"),
        ({"command_id": "evt_1"}, "field command_id: String should match pattern"),
        ({"asset_id": ""}, "field asset_id: String should have at least 1 character"),
        ({"parameters": {"power_kw": [1, 2]}}, "field parameters.power_kw: matches none of float, int, str, bool"),
        ({"parameters": [1]}, "field parameters: Input should be a valid dictionary"),
        ({"colour": "red"}, "unknown field(s): 'colour'"),
    ],
)
def test_command_field_refusals_name_the_field(fields, reason):
    assert reason_of(decode_command, pack(raw(**fields))).startswith(reason)


def test_command_missing_field_refused_rather_than_defaulted():
    obj = raw()
    del obj["command_id"], obj["error"]
    assert reason_of(decode_command, pack(obj)) == "missing field(s): command_id, error"


def test_encode_command_refuses_naive_datetime():
    cmd = full_command()
    cmd.dispatched_at = datetime(2025, 1, 15, 8)
    with pytest.raises(ValueError, match="naive datetime"):
        encode_command(cmd)


# ------------------------------------------------------------------------------ events


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_round_trips_with_its_model(event_type):
    ev = Event(event_type, SAMPLES[event_type], datetime(2025, 1, 15, 9, 0, 0, 7, tzinfo=IST))
    back = decode_event(encode_event(ev))
    assert (back.event_id, back.event_type, back.timestamp) == (ev.event_id, ev.event_type, ev.timestamp)
    assert back.timestamp.utcoffset() == timedelta(0) and back.timestamp.microsecond == 7
    assert type(back.payload) is type(ev.payload)
    assert back.payload == ev.payload


def test_event_payloads_travel_as_maps_of_every_field():
    dispatched = SAMPLES[EventType.COMMAND_DISPATCHED]
    assert isinstance(dispatched, CommandDispatched)
    ev = Event(EventType.COMMAND_DISPATCHED, dispatched)
    wire = unpack(encode_event(ev))["payload"]
    assert list(wire) == ["asset_id", "command_id", "command_type", "parameters", "scheduled_at", "status",
                          "attempts", "schedule_id", "error", "dispatched_at", "protocol", "gateway_id"]
    assert wire["command_type"] == "SET_CHARGE_RATE" and type(wire["command_type"]) is str
    assert wire["error"] is None  # optional fields travel as nil, never left out
    assert wire["scheduled_at"] == dispatched.scheduled_at


def test_event_payload_conversions():
    received = SAMPLES[EventType.SCHEDULE_RECEIVED].model_copy(
        update={"starts_at": pd.Timestamp("2025-01-15 08:00:00.000001+01:00")})
    ev = Event(EventType.SCHEDULE_RECEIVED, received, timestamp=pd.Timestamp("2025-01-15 08:00", tz="Europe/Paris"))
    back = decode_event(encode_event(ev))
    assert isinstance(back.payload, ScheduleReceived)
    assert back.payload.starts_at == datetime(2025, 1, 15, 7, 0, 0, 1, tzinfo=UTC)
    assert type(back.payload.starts_at) is datetime
    assert back.timestamp == datetime(2025, 1, 15, 7, tzinfo=UTC) and type(back.timestamp) is datetime


def event_wire(**fields) -> dict:
    obj = {"event_id": "evt_0123456789ab", "event_type": "STATE_CHANGED", "timestamp": T0,
           "payload": dict(SAMPLES[EventType.STATE_CHANGED])}
    obj.update(fields)
    return obj


def command_wire(**fields) -> dict:
    payload = SAMPLES[EventType.COMMAND_DISPATCHED].model_dump() | fields
    return event_wire(event_type="COMMAND_DISPATCHED", payload=payload)


@pytest.mark.parametrize(
    "obj, reason",
    [
        (event_wire(event_type="PARTY"), "field event_type: Input should be 'COMMAND_CREATED'"),
        (event_wire(timestamp="2025-01-15T08:00:00Z"), "field timestamp: Input should be a valid datetime"),
        (event_wire(payload=[1]), "field payload: Input should be a valid dictionary"),
        (event_wire(payload={b"k": 1}), "field payload.b'k'.[key]: Input should be a valid string"),
        (event_wire(event_id="cmd_1"), "field event_id: String should match pattern"),
        (event_wire(extra=1), "unknown field(s): 'extra'"),
        ({"event_type": "STATE_CHANGED"}, "missing field(s): event_id, payload, timestamp"),
        # the payload against its type's model
        (event_wire(payload={}), "STATE_CHANGED payload: field asset_id: Field required"),
        (event_wire(payload=dict(SAMPLES[EventType.STATE_CHANGED]) | {"x": 1}),
         "STATE_CHANGED payload: field x: Extra inputs are not permitted"),
        (event_wire(payload=dict(SAMPLES[EventType.STATE_CHANGED]) | {"trigger": 1}),
         "STATE_CHANGED payload: field trigger: Input should be a valid string"),
        (event_wire(event_type="COMMAND_FAILED"), "COMMAND_FAILED payload: field command_id: Field required"),
        (command_wire(attempts=True), "COMMAND_DISPATCHED payload: field attempts: Input should be a valid integer"),
        (command_wire(attempts="1"), "COMMAND_DISPATCHED payload: field attempts: Input should be a valid integer"),
        (command_wire(scheduled_at="2025-01-15T08:00:00Z"),
         "COMMAND_DISPATCHED payload: field scheduled_at: Input should be a valid datetime"),
        (command_wire(status="LOST"), "COMMAND_DISPATCHED payload: field status: Input should be 'PENDING'"),
        (command_wire(parameters={"power_kw": [1]}), "COMMAND_DISPATCHED payload: field parameters.power_kw"),
        (event_wire(event_type="ASSET_SAFE_STATE", payload={"asset_id": "ast_1", "safe": False}),
         "ASSET_SAFE_STATE payload: Value error, an asset that is not safe says why (error)"),
    ],
)
def test_event_refusals_name_the_field(obj, reason):
    assert reason_of(decode_event, pack(obj)).startswith(reason)


# ------------------------------------------------------------------ shared byte-level refusals

def schedule_frame(tz: str = "Asia/Kolkata") -> pd.DataFrame:
    index = pd.date_range("2025-01-15 08:00", periods=3, freq="15min", tz=tz)
    return pd.DataFrame({"ev_1_kw": [22.0, np.nan, 7.5], "battery_charge_kw": [0, 5, 10]}, index=index)


VALID = {
    decode_command: encode_command(full_command()),
    decode_event: encode_event(Event(EventType.STATE_CHANGED, SAMPLES[EventType.STATE_CHANGED])),
    decode_schedule: encode_schedule(schedule_frame(), asset_map={"ev_1": "ast_1"}, site_id="sit_1"),
}
DECODERS = pytest.mark.parametrize("decode", list(VALID), ids=lambda f: f.__name__)


def nested(depth: int):
    obj: object = 1
    for _ in range(depth - 1):
        obj = [obj]
    return {"k": obj}


@DECODERS
@pytest.mark.parametrize(
    "data, reason",
    [
        ("\x80", "expected bytes, got str"),
        (None, "expected bytes, got NoneType"),
        (b"", "not msgpack: "),
        (b"\xc1", "not msgpack: invalid format byte"),
        (b"\x81\xa1a", "not msgpack: "),  # truncated
        (b"\x81\xa2\xff\xfe\x01", "not msgpack: 'utf-8' codec can't decode"),
        (b"\x81\x01\x01", "not msgpack: int is not allowed for map key"),
        (msgpack.packb({"k": msgpack.ExtType(5, b"x")}), "not msgpack: unknown msgpack extension type 5"),
        (b"\x81\xa1k" + b"\x91" * 5000 + b"\xc0", "not msgpack: nesting too deep"),
        (b"\x90", "top level must be a map, got array"),
        (b"\xc0", "top level must be a map, got nil"),
        (msgpack.packb({"k": [0] * (MAX_ROWS + 1)}), "too large: 100001 exceeds max_array_len(100000)"),
    ],
)
def test_byte_level_refusals(decode, data, reason):
    assert reason_of(decode, data).startswith(reason)


@DECODERS
def test_trailing_bytes_refused(decode):
    assert reason_of(decode, VALID[decode] + b"\x00") == "not msgpack: trailing bytes after the message"


@DECODERS
def test_every_truncation_refused(decode):
    data = VALID[decode]
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut])


@pytest.mark.parametrize("decode, limit", [(decode_command, MAX_MESSAGE_BYTES), (decode_event, MAX_MESSAGE_BYTES),
                                           (decode_schedule, MAX_SCHEDULE_BYTES)])
def test_size_limit_checked_before_parsing(decode, limit):
    assert reason_of(decode, b"\xc0" * (limit + 1)) == f"message is {limit + 1} bytes, limit {limit}"
    assert reason_of(decode, VALID[decode], max_bytes=10) == f"message is {len(VALID[decode])} bytes, limit 10"
    assert decode(bytearray(VALID[decode])) is not None


def test_deep_nesting_refused_below_msgpack_stack_limit():
    ok = pack(event_wire(payload=nested(MAX_DEPTH - 1)))  # + the top-level map and payload map
    assert reason_of(decode_event, ok).startswith("STATE_CHANGED payload: ")  # read, then refused by the model
    too_deep = pack(event_wire(payload=nested(MAX_DEPTH)))
    assert reason_of(decode_event, too_deep) == f"nested deeper than {MAX_DEPTH} levels"
    assert reason_of(unpack, too_deep) == f"nested deeper than {MAX_DEPTH} levels"


def test_unpack_returns_plain_python_with_utc_datetimes():
    obj = unpack(pack({"a": [1, "x", b"y", None, datetime(2025, 1, 15, 13, 30, tzinfo=IST)]}))
    assert obj == {"a": [1, "x", b"y", None, T0.replace(hour=8)]}
    assert obj["a"][4].tzinfo is UTC


# --------------------------------------------------------------------------- schedules


def test_schedule_round_trip():
    df = schedule_frame()
    msg = decode_schedule(encode_schedule(df, asset_map={"ev_1": "ast_1"}, site_id="sit_1", schedule_id="sch_1"))
    assert isinstance(msg, ScheduleMessage)
    assert (msg.schedule_id, msg.site_id, msg.asset_map) == ("sch_1", "sit_1", {"ev_1": "ast_1"})
    assert isinstance(msg.frame.index, pd.DatetimeIndex)
    assert str(msg.frame.index.tz) == "UTC" and (msg.frame.index == df.index).all()  # same instants
    assert list(msg.frame.dtypes) == [np.float64, np.float64]
    expected = df.astype(float).tz_convert("UTC")
    pd.testing.assert_frame_equal(
        msg.frame, expected, check_freq=False, check_index_type=False, check_column_type=False
    )


def test_schedule_wire_form():
    obj = msgpack.unpackb(VALID[decode_schedule], timestamp=0)
    assert list(obj) == ["site_id", "asset_map", "index", "columns"]  # no schedule_id key when it is None
    assert obj["columns"] == {"ev_1_kw": [22.0, None, 7.5], "battery_charge_kw": [0.0, 5.0, 10.0]}
    assert obj["index"][0] == msgpack.Timestamp.from_datetime(datetime(2025, 1, 15, 2, 30, tzinfo=UTC))


def test_schedule_index_keeps_nanoseconds():
    index = pd.DatetimeIndex(
        [pd.Timestamp("2025-01-15 08:00:00.000000001", tz="UTC"), pd.Timestamp("1970-01-01", tz="UTC")]
    )
    df = pd.DataFrame({"x": [1.0, 2.0]}, index=index)
    back = decode_schedule(encode_schedule(df, asset_map={}, site_id="s")).frame.index
    assert isinstance(back, pd.DatetimeIndex)
    assert back.as_unit("ns").asi8.tolist() == index.as_unit("ns").asi8.tolist()


def test_empty_schedules():
    index = pd.DatetimeIndex([], tz="UTC")
    no_rows = decode_schedule(encode_schedule(pd.DataFrame({"x": []}, index=index), asset_map={}, site_id="s")).frame
    assert no_rows.shape == (0, 1) and list(no_rows.columns) == ["x"]
    no_cols = pd.DataFrame(index=pd.date_range("2025-01-15", periods=2, freq="h", tz="UTC"))
    assert decode_schedule(encode_schedule(no_cols, asset_map={}, site_id="s")).frame.shape == (2, 0)


def test_schedule_accepts_ints_and_nan_floats_in_columns():
    wire = msgpack.unpackb(VALID[decode_schedule], timestamp=0)
    wire["columns"] = {"a": [1, 2**64 - 1, float("nan")], "b": [-(2**63), None, 0.5]}
    frame = decode_schedule(msgpack.packb(wire)).frame
    assert frame["a"].iloc[:2].tolist() == [1.0, float(2**64 - 1)] and math.isnan(frame["a"].iloc[2])
    assert frame["b"].isna().tolist() == [False, True, False]


def sched_wire(**fields) -> bytes:
    obj = msgpack.unpackb(VALID[decode_schedule], timestamp=0)
    obj.update(fields)
    return msgpack.packb({k: v for k, v in obj.items() if v is not ...})


@pytest.mark.parametrize(
    "data, reason",
    [
        (sched_wire(columns={"ev_1_kw": [1.0, "2", 3.0]}), "column ev_1_kw: values must be numbers or nil, got str"),
        (sched_wire(columns={"ev_1_kw": [1.0, False, 3.0]}), "column ev_1_kw: values must be numbers or nil, got bool"),
        (sched_wire(columns={"ev_1_kw": [True, 2.0, 3.0]}), "column ev_1_kw: values must be numbers or nil, got bool"),
        (sched_wire(columns={"ev_1_kw": [1.0, b"", 3.0]}), "column ev_1_kw: values must be numbers or nil, got bytes"),
        (sched_wire(columns={"ev_1_kw": [1.0, [2.0], 3.0]}),
         "column ev_1_kw: values must be numbers or nil, got array"),
        (sched_wire(columns={"ok": [1, 2, 3], "ev_1_kw": [1.0, 2.0]}), "column ev_1_kw: 2 values for 3 index entries"),
        (sched_wire(columns={"ev_1_kw": {"a": 1}}), "column ev_1_kw: expected an array, got map"),
        (sched_wire(columns=[[1.0]]), "field columns: expected a map, got array"),
        (sched_wire(columns={"": [1, 2, 3]}), "field columns: name: expected a string of 1-256 printable"),
        (sched_wire(columns={"a\nb": [1, 2, 3]}), "field columns: name: expected a string of 1-256 printable"),
        (sched_wire(index=["2025-01-15T08:00Z"] * 3), "field index: entries must be timestamps, got str"),
        (sched_wire(index={"a": 1}), "field index: expected an array, got map"),
        (sched_wire(index=[msgpack.Timestamp(2**40, 0)] * 3), "field index: timestamp outside 1677-2262"),
        (sched_wire(site_id=7), "field site_id: expected a string of 1-128 printable characters, got int"),
        (sched_wire(site_id="s" * 129), "field site_id: expected a string of 1-128"),
        (sched_wire(schedule_id=b"sch"),
         "field schedule_id: expected a string of 1-128 printable characters, got bytes"),
        (sched_wire(asset_map=["ev_1"]), "field asset_map: expected a map, got array"),
        (sched_wire(asset_map={"ev_1": 1}),
         "field asset_map: asset id: expected a string of 1-128 printable characters, got int"),
        (sched_wire(asset_map={b"ev_1": "ast_1"}),
         "field asset_map: key: expected a string of 1-128 printable characters, got bytes"),
        (sched_wire(site_id=...), "missing field(s): site_id"),
        (sched_wire(version=2), "unknown field(s): 'version'"),
        (msgpack.packb({"columns": {f"c{i}": [] for i in range(MAX_COLUMNS + 1)}}),
         "too large: 20001 exceeds max_map_len(20000)"),
        (msgpack.packb({"site_id": "s" * 1025}), "too large: 1025 exceeds max_str_len(1024)"),
    ],
)
def test_schedule_structure_refusals(data, reason):
    assert reason_of(decode_schedule, data).startswith(reason)


def test_schedule_with_nil_schedule_id_is_accepted():
    assert decode_schedule(sched_wire(schedule_id=None)).schedule_id is None


def test_schedule_semantics_are_not_checked_here():
    # unsorted, duplicated index and negative power: structure is fine, coordinator.schedule judges the rest
    index = pd.DatetimeIndex(["2025-01-15 09:00", "2025-01-15 08:00", "2025-01-15 08:00"], tz="UTC")
    df = pd.DataFrame({"ev_1_kw": [-5.0, np.inf, 1.0]}, index=index)
    frame = decode_schedule(encode_schedule(df, asset_map={}, site_id="s")).frame
    assert frame["ev_1_kw"].tolist() == [-5.0, np.inf, 1.0]


@pytest.mark.parametrize(
    "df, error",
    [
        (schedule_frame().tz_localize(None), "timezone-aware DatetimeIndex"),
        (schedule_frame().reset_index(drop=True), "timezone-aware DatetimeIndex"),
        (schedule_frame().assign(flag=True), "column flag: dtype bool is not numeric"),
        (schedule_frame().assign(note="x"), "column note: dtype .* is not numeric"),
        (schedule_frame().rename(columns={"battery_charge_kw": "ev_1_kw"}), "unique strings"),
        (schedule_frame().rename(columns={"battery_charge_kw": 3}), "unique strings"),
    ],
)
def test_encode_schedule_refuses_what_the_format_cannot_carry(df, error):
    with pytest.raises(ValueError, match=error):
        encode_schedule(df, asset_map={}, site_id="s")


def test_encode_schedule_accepts_nullable_dtypes():
    df = schedule_frame().astype({"battery_charge_kw": "Int64"})
    df.iloc[1, 1] = pd.NA
    frame = decode_schedule(encode_schedule(df, asset_map={}, site_id="s")).frame
    assert frame["battery_charge_kw"].isna().tolist() == [False, True, False]


# -------------------------------------------------------------------------- properties

aware_datetimes = st.builds(
    lambda dt, minutes: dt.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    st.integers(-23 * 60, 23 * 60),
)
ids = st.text(min_size=1, max_size=128)
parameter_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), st.text(max_size=50)
)
commands = st.builds(
    Command,
    asset_id=ids,
    command_type=st.sampled_from(CommandType),
    parameters=st.dictionaries(st.text(max_size=20), parameter_values, max_size=5),
    scheduled_at=aware_datetimes,
    command_id=st.from_regex(r"cmd_[0-9a-zA-Z_-]{1,64}", fullmatch=True),
    status=st.sampled_from(CommandStatus),
    attempts=st.integers(0, 2**63 - 1),
    max_retries=st.integers(0, 100),
    timeout_seconds=st.floats(min_value=0, exclude_min=True, allow_infinity=False),
    priority=st.integers(-(2**63), 2**63 - 1),
    schedule_id=st.none() | ids,
    created_at=aware_datetimes,
    dispatched_at=st.none() | aware_datetimes,
    finished_at=st.none() | aware_datetimes,
    next_attempt_at=st.none() | aware_datetimes,
    error=st.none() | st.text(max_size=200),
)


@given(commands)
def test_property_command_round_trip(cmd):
    assert_same_command(decode_command(encode_command(cmd)), cmd)


@given(st.sampled_from(EventType), aware_datetimes)
def test_property_event_round_trip(event_type, timestamp):
    ev = Event(event_type, SAMPLES[event_type], timestamp)
    back = decode_event(encode_event(ev))
    assert (back.event_id, back.event_type, back.timestamp, back.payload) == (ev.event_id, event_type, timestamp,
                                                                             ev.payload)


NS_RANGE = (pd.Timestamp.min.value + 1, pd.Timestamp.max.value)
column_names = st.text(min_size=1, max_size=30).filter(str.isprintable)


@st.composite
def frames(draw) -> pd.DataFrame:
    rows = draw(st.integers(0, 12))
    nanos = draw(st.lists(st.integers(*NS_RANGE), min_size=rows, max_size=rows))
    tz = draw(st.sampled_from(["UTC", "Asia/Kolkata", "America/St_Johns"]))
    index = pd.DatetimeIndex(np.array(nanos, dtype="datetime64[ns]")).tz_localize("UTC").tz_convert(tz)
    names = draw(st.lists(column_names, max_size=8, unique=True))
    values = st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=rows, max_size=rows)
    return pd.DataFrame({name: draw(values) for name in names}, index=index, dtype=float)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.dictionaries(ids.filter(str.isprintable), ids.filter(str.isprintable), max_size=4),
       st.none() | ids.filter(str.isprintable))
def test_property_schedule_round_trip(df, asset_map, schedule_id):
    msg = decode_schedule(encode_schedule(df, asset_map=asset_map, site_id="sit_1", schedule_id=schedule_id))
    assert (msg.schedule_id, msg.site_id, msg.asset_map) == (schedule_id, "sit_1", asset_map)
    assert isinstance(msg.frame.index, pd.DatetimeIndex)
    assert msg.frame.index.as_unit("ns").asi8.tolist() == df.index.as_unit("ns").asi8.tolist()
    assert list(msg.frame.columns) == list(df.columns)
    np.testing.assert_array_equal(msg.frame.to_numpy(), df.to_numpy())  # NaN == NaN here


msgpack_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=10),
              st.binary(max_size=10), aware_datetimes,
              st.builds(msgpack.Timestamp, st.integers(-(2**34), 2**34), st.integers(0, 999_999_999))),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)
field_names = st.sampled_from(sorted(set(Command.__dataclass_fields__) | {
    "event_id", "event_type", "timestamp", "payload", "schedule_id", "site_id", "asset_map", "index", "columns",
}))
ALL_DECODERS = [decode_command, decode_event, decode_schedule, unpack]


def decodes_or_refuses(data: bytes) -> None:
    for decode in ALL_DECODERS:
        try:
            decode(data)
        except DecodeError as exc:
            assert exc.reason


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data):
    decodes_or_refuses(data)


@settings(deadline=None)
@given(st.dictionaries(field_names | st.text(max_size=5), msgpack_values, max_size=12))
def test_fuzz_plausible_maps(obj):
    decodes_or_refuses(pack(obj))


@settings(deadline=None)
@given(
    st.sampled_from(list(VALID.values())),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
)
def test_fuzz_mutated_valid_messages(data, flips):
    buf = bytearray(data)
    for at, byte in flips:
        buf[at % len(buf)] = byte
    decodes_or_refuses(bytes(buf))
