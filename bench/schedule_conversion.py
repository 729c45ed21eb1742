"""Benchmark: DispatchEngine.schedule_to_commands on a large depot's schedule.

1,000 assets x 96 fifteen-minute slots, about 30 % of the cells changing from one slot to
the next. Printed beside the floor any implementation pays: msgpack-decoding the same
schedule's bytes in columnar form. Each figure is the median of several runs, measured
alternately in the same process so that machine noise hits both alike.

    make bench-conversion        (or: .venv/bin/python bench/schedule_conversion.py)
"""

from __future__ import annotations

import functools
import statistics
import time

import msgpack
import numpy as np
import pandas as pd
from results import Figure, record

from coordinator import DispatchEngine, EventBus

ASSETS, SLOTS, CHANGE_RATE, RUNS = 1000, 96, 0.30, 15


def make_schedule(seed: int = 7) -> tuple[pd.DataFrame, dict[str, str]]:
    rng = np.random.default_rng(seed)
    values = np.empty((SLOTS, ASSETS))
    values[0] = np.round(rng.uniform(0, 22, ASSETS), 1)
    for slot in range(1, SLOTS):
        changes = rng.random(ASSETS) < CHANGE_RATE
        values[slot] = np.where(changes, np.round(rng.uniform(0, 22, ASSETS), 1), values[slot - 1])
    index = pd.date_range("2025-01-15", periods=SLOTS, freq="15min", tz="UTC")
    columns = [f"ev_{i:04d}_kw" for i in range(ASSETS)]
    asset_map = {f"ev_{i:04d}": f"ast_charger_{i:04d}" for i in range(ASSETS)}
    return pd.DataFrame(values, index=index, columns=columns), asset_map


def columnar_bytes(df: pd.DataFrame) -> bytes:
    assert isinstance(df.index, pd.DatetimeIndex)
    return msgpack.packb(
        {"index": list(df.index.to_pydatetime()), "columns": {c: df[c].tolist() for c in df.columns}},
        datetime=True,
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    df, asset_map = make_schedule()
    data = columnar_bytes(df)
    floor_runs, convert_runs = [], []
    count = 0
    for _ in range(RUNS):
        floor_runs.append(timed(lambda: msgpack.unpackb(data, timestamp=3, raw=False)))
        engine = DispatchEngine(event_bus=EventBus())
        convert_runs.append(timed(functools.partial(engine.schedule_to_commands, df, asset_map)))
        count = len(engine.commands)
    floor = statistics.median(floor_runs)
    convert = statistics.median(convert_runs)
    cells = ASSETS * SLOTS
    print(f"schedule: {ASSETS} assets x {SLOTS} slots = {cells} cells, {len(data) / 1e6:.2f} MB msgpack")
    print(f"commands created: {count} ({count / cells:.0%} of cells)")
    print(f"floor   msgpack decode of the columnar bytes : {floor * 1e3:7.1f} ms (median of {RUNS})")
    print(f"engine  schedule_to_commands                 : {convert * 1e3:7.1f} ms (median of {RUNS})")
    record(Figure(f"schedule_to_commands, {ASSETS:,} assets x {SLOTS} slots ({count:,} commands)", convert * 1e3,
                  floor * 1e3, "ms", floor_is="msgpack decode of the same schedule", goal=10.0,
                  command="make bench-conversion"))


if __name__ == "__main__":
    main()
