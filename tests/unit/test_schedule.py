import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.base import CommandType
from coordinator.schedule import ScheduleError, classify_columns, schedule_to_commands

IDX = pd.date_range("2025-01-15 08:00", periods=4, freq="h", tz="UTC")


def convert(columns, asset_map=None, index=IDX):
    df = pd.DataFrame(columns, index=index)
    if asset_map is None:
        asset_map = {"ev_001": "ast_bay_1", "ev_002": "ast_bay_2", "battery": "ast_batt_1"}
    return [(c.scheduled_at.hour, c.asset_id, c.command_type, c.parameters["power_kw"])
            for c in schedule_to_commands(df, asset_map)]


def test_seed_change_detection():
    assert convert({"ev_001_kw": [22.0, 22.0, 22.0, 0.0]}) == [
        (8, "ast_bay_1", CommandType.SET_CHARGE_RATE, 22.0),
        (11, "ast_bay_1", CommandType.SET_CHARGE_RATE, 0.0),
    ]


def test_non_setpoint_columns_ignored():
    other = {name: [1.0, 2.0, 3.0, 4.0] for name in (
        "total_ev_kw", "background_load_kw", "solar_generation_kw", "net_load_kw", "price_per_kwh",
        "slot_cost", "battery_soc_kwh", "battery_soc_percent", "net_load_after_kw", "peak_target_kw",
    )}
    assert convert(other | {"ev_001_kw": [5.0] * 4}) == [(8, "ast_bay_1", CommandType.SET_CHARGE_RATE, 5.0)]
    # and a non-setpoint column may hold anything, negative or text
    assert convert({"net_load_kw": [-3.0] * 4, "note": ["x"] * 4}) == []


def test_nan_holds_previous_setpoint_and_leading_nan_waits():
    assert convert({"ev_001_kw": [np.nan, 7.0, np.nan, 7.0], "ev_002_kw": [3.0, np.nan, np.nan, 4.0]}) == [
        (8, "ast_bay_2", CommandType.SET_CHARGE_RATE, 3.0),
        (9, "ast_bay_1", CommandType.SET_CHARGE_RATE, 7.0),
        (11, "ast_bay_2", CommandType.SET_CHARGE_RATE, 4.0),
    ]


def test_all_nan_column_emits_nothing():
    assert convert({"ev_001_kw": [np.nan] * 4}) == []


@pytest.mark.parametrize(
    "values, reason",
    [
        ([1.0, -2.0, 0.0, 0.0], "negative_power"),
        ([1.0, math.inf, 0.0, 0.0], "infinite_power"),
        ([1.0, -math.inf, 0.0, 0.0], "infinite_power"),
        (["1", "2", "3", "4"], "non_numeric"),
        ([True, False, True, False], "non_numeric"),
        ([1.0, "fast", 3.0, 4.0], "non_numeric"),
    ],
)
def test_bad_power_refused(values, reason):
    with pytest.raises(ScheduleError) as info:
        convert({"ev_001_kw": values})
    assert info.value.reason == reason
    assert info.value.columns == ["ev_001_kw"]


@pytest.mark.parametrize(
    "index, reason",
    [
        (pd.date_range("2025-01-15 08:00", periods=4, freq="h"), "naive_index"),
        (IDX[[1, 0, 2, 3]], "unsorted_index"),
        (IDX[[0, 1, 1, 2]], "duplicate_index"),
        (pd.RangeIndex(4), "bad_index"),
    ],
)
def test_bad_index_refused(index, reason):
    with pytest.raises(ScheduleError) as info:
        convert({"ev_001_kw": [1.0] * 4}, index=index)
    assert info.value.reason == reason


def test_unmapped_setpoint_column_is_reported_not_dropped():
    with pytest.raises(ScheduleError) as info:
        convert({"ev_001_kw": [1.0] * 4, "ev_999_kw": [2.0] * 4, "battery_01_charge_kw": [1.0] * 4})
    assert info.value.reason == "unmapped_columns"
    assert info.value.columns == ["ev_999_kw", "battery_01_charge_kw"]
    assert "ev_999" in str(info.value)


def test_battery_charge_and_discharge_in_one_slot_refused():
    with pytest.raises(ScheduleError) as info:
        convert({"battery_charge_kw": [5.0, 5.0, 0, 0], "battery_discharge_kw": [0, 3.0, 0, 0]})
    assert info.value.reason == "charge_and_discharge"
    assert "2025-01-15T09:00:00+00:00" in str(info.value)


def test_battery_switch_is_one_discharge_command():
    got = convert({"battery_charge_kw": [5.0, 5.0, 0.0, 0.0], "battery_discharge_kw": [0.0, 0.0, 3.0, 0.0]})
    assert got == [
        (8, "ast_batt_1", CommandType.SET_CHARGE_RATE, 5.0),
        (10, "ast_batt_1", CommandType.SET_DISCHARGE_RATE, 3.0),
        (11, "ast_batt_1", CommandType.SET_DISCHARGE_RATE, 0.0),  # zero said on the register in use
    ]


def test_battery_half_missing_slot_counts_missing_as_zero():
    got = convert({"battery_charge_kw": [5.0, np.nan, np.nan, 0.0], "battery_discharge_kw": [0.0, np.nan, 2.0, 0.0]})
    assert got == [
        (8, "ast_batt_1", CommandType.SET_CHARGE_RATE, 5.0),
        (10, "ast_batt_1", CommandType.SET_DISCHARGE_RATE, 2.0),
        (11, "ast_batt_1", CommandType.SET_DISCHARGE_RATE, 0.0),
    ]


def test_several_batteries_by_column_convention():
    got = convert(
        {
            "battery_north_charge_kw": [5.0, 5.0, 5.0, 5.0],
            "battery_south_discharge_kw": [0.0, 4.0, 4.0, 4.0],
            "battery_south_charge_kw": [1.0, 0.0, 0.0, 0.0],
        },
        {"battery_north": "ast_batt_n", "battery_south": "ast_batt_s"},
    )
    assert got == [
        (8, "ast_batt_n", CommandType.SET_CHARGE_RATE, 5.0),
        (8, "ast_batt_s", CommandType.SET_CHARGE_RATE, 1.0),
        (9, "ast_batt_s", CommandType.SET_DISCHARGE_RATE, 4.0),
    ]


def test_classify_columns():
    cols = classify_columns(
        ["ev_a_kw", "battery_charge_kw", "battery_x_discharge_kw", "battery_soc_kwh", "total_ev_kw"])
    assert cols.ev == {"ev_a": "ev_a_kw"}
    assert cols.battery == {"battery": ("battery_charge_kw", None), "battery_x": (None, "battery_x_discharge_kw")}


def test_commands_carry_schedule_id_and_are_in_slot_order():
    df = pd.DataFrame({"ev_002_kw": [1.0, 2.0, 2.0, 3.0], "ev_001_kw": [4.0, 4.0, 5.0, 5.0]}, index=IDX)
    cmds = schedule_to_commands(df, {"ev_001": "a", "ev_002": "b"}, schedule_id="sch_1", timeout_seconds=9.0)
    assert [c.scheduled_at for c in cmds] == sorted(c.scheduled_at for c in cmds)
    assert {c.schedule_id for c in cmds} == {"sch_1"} and {c.timeout_seconds for c in cmds} == {9.0}
    assert len({c.command_id for c in cmds}) == len(cmds)


def test_empty_schedule_gives_no_commands():
    assert convert({"ev_001_kw": []}, index=IDX[:0]) == []


def test_index_in_other_zone_converted_to_utc():
    idx = pd.date_range("2025-01-15 09:00", periods=2, freq="h", tz="Europe/Berlin")
    cmds = schedule_to_commands(pd.DataFrame({"ev_001_kw": [1.0, 2.0]}, index=idx), {"ev_001": "a"})
    assert [c.scheduled_at.isoformat() for c in cmds] == ["2025-01-15T08:00:00+00:00", "2025-01-15T09:00:00+00:00"]


# Reference: the rules spelled out cell by cell, to check the vectorised version against.
def reference(df, asset_map):
    out = []
    for col in df.columns:
        if not col.startswith("ev_") or not col.endswith("_kw"):
            continue
        current = None
        for t, v in df[col].items():
            if not math.isnan(v) and v != current:
                out.append((t, asset_map[col[:-3]], "SET_CHARGE_RATE", v))
                current = v
    c = df.get("battery_charge_kw")
    d = df.get("battery_discharge_kw")
    if c is not None:
        current, mode = None, 1
        for t, cv, dv in zip(df.index, c, d, strict=True):
            if math.isnan(cv) and math.isnan(dv):
                continue
            net = (0 if math.isnan(cv) else cv) - (0 if math.isnan(dv) else dv)
            if net != current:
                if net != 0:
                    mode = 1 if net > 0 else -1
                out.append((t, asset_map["battery"], "SET_CHARGE_RATE" if mode > 0 else "SET_DISCHARGE_RATE", abs(net)))
                current = net
    return sorted(out, key=lambda r: r[0])


power = st.one_of(st.just(math.nan), st.sampled_from([0.0, 3.5, 7.0, 11.0, 22.0]))


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 8),
    n_ev=st.integers(0, 4),
    data=st.data(),
)
def test_vectorised_matches_reference(n, n_ev, data):
    idx = pd.date_range("2025-01-15", periods=n, freq="15min", tz="UTC")
    cols = {f"ev_{i}_kw": data.draw(st.lists(power, min_size=n, max_size=n)) for i in range(n_ev)}
    charge = data.draw(st.lists(power, min_size=n, max_size=n))
    # never both non-zero in one slot: discharge only where charge is 0 or missing
    discharge = [data.draw(power) if (math.isnan(cv) or cv == 0) else 0.0 for cv in charge]
    cols |= {"battery_charge_kw": charge, "battery_discharge_kw": discharge}
    df = pd.DataFrame(cols, index=idx, dtype=float)
    asset_map = {f"ev_{i}": f"ast_ev_{i}" for i in range(n_ev)} | {"battery": "ast_batt"}
    got = [(c.scheduled_at, c.asset_id, c.command_type.value, c.parameters["power_kw"])
           for c in schedule_to_commands(df, asset_map)]
    want = reference(df, asset_map)
    assert sorted(got, key=repr) == sorted([(t.to_pydatetime(), a, ty, p) for t, a, ty, p in want], key=repr)


def test_two_keys_for_one_asset_refused():
    with pytest.raises(ScheduleError) as info:
        convert({"ev_001_kw": [1.0] * 4, "ev_002_kw": [0.0] * 4}, {"ev_001": "ast_bay_1", "ev_002": "ast_bay_1"})
    assert info.value.reason == "duplicate_asset"
    assert info.value.columns == ["ev_001_kw", "ev_002_kw"]
