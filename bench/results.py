"""One figure of a benchmark, beside its floor: what every benchmark reports and `make bench` collects.

A benchmark prints its figures for a reader and, when ``QUBIT_BENCH_RESULTS`` names a file (as
bench/report.py sets it), appends each one there as a JSON line; docs/benchmarks.md is written
from those lines. The floor is measured in the same run as the figure, so that the machine's
noise hits both alike; the ratio is always figure / floor.

    record(Figure("Modbus gateway p99, 100 batteries", 23.1, 14.0, "ms", goal=1.5,
                  floor_is="raw pymodbus round trip p99", command="make bench-modbus"))
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS_ENV = "QUBIT_BENCH_RESULTS"


@dataclass(frozen=True)
class Figure:
    """``value`` measured beside ``floor`` (same unit).

    ``goal`` is the issue's bound on value / floor: at most ``goal`` when lower is better
    (latency, memory), at least ``goal`` when higher is better (throughput). ``absolute`` is
    a bound on the value itself where the issue names one (a 2 s plan, 120 MB), None otherwise.
    """

    name: str
    value: float
    floor: float | None
    unit: str
    floor_is: str
    command: str
    goal: float | None = None
    higher_is_better: bool = False
    absolute: float | None = None
    detail: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.floor if self.floor else None

    @property
    def met(self) -> bool | None:
        """Whether every bound given (ratio goal, absolute bound) holds; None when none is given."""
        checks: list[bool] = []
        if self.goal is not None and self.ratio is not None:
            checks.append(self.ratio >= self.goal if self.higher_is_better else self.ratio <= self.goal)
        if self.absolute is not None:
            checks.append(self.value >= self.absolute if self.higher_is_better else self.value <= self.absolute)
        return all(checks) if checks else None


def record(figure: Figure) -> Figure:
    """Print ``figure`` on one line and, under bench/report.py, append it to the results file."""
    ratio = f"{figure.ratio:.2f} x the floor" if figure.ratio is not None else "no floor"
    floor = f"{figure.floor:.4g} {figure.unit}" if figure.floor is not None else "-"
    verdict = {True: "goal met", False: "GOAL MISSED", None: ""}[figure.met]
    print(f"FIGURE {figure.name}: {figure.value:.4g} {figure.unit} (floor {floor}, {ratio}) {verdict}".rstrip(),
          flush=True)
    path = os.environ.get(RESULTS_ENV)
    if path:
        with Path(path).open("a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(figure)) + "\n")
    return figure


def p99(samples: list[float]) -> float:
    """The 99th percentile by nearest rank (the largest sample below 100 samples)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def median(samples: list[float]) -> float:
    return statistics.median(samples)
