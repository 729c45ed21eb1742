"""`make bench`: run every benchmark one after another and write docs/benchmarks.md.

Each benchmark is a make target of its own (the command a reader runs to check one figure);
this runs them in turn on an otherwise idle machine, collects the figures they record
(bench/results.py), and writes a table: figure, floor, ratio, goal, the machine and the command.
docs/benchmarks.json keeps the raw figures; a run of some targets only (TARGETS="bench-modbus"
make bench) replaces those targets' rows and keeps the rest, each row dated.

    make bench                                  (all, about 10 minutes)
    make bench TARGETS="bench-ocpp bench-estop"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from results import RESULTS_ENV, Figure

# In the order the issue names them; each is a Makefile target.
TARGETS = (
    "bench-conversion",
    "bench-plan",
    "bench-first-slot",
    "bench-site",
    "bench-pipeline",
    "bench-processes",
    "bench-modbus",
    "bench-ocpp",
    "bench-estop",
    "bench-fallback",
    "bench-fleet",
)
ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[:1]
    return {"cpu": f"{os.cpu_count()} x {cpu}", "memory": f"{mem_kb / 2**20:.0f} GiB",
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "broker": mosquitto[0] if mosquitto else "mosquitto"}


def run_target(target: str) -> tuple[list[dict[str, object]], int, float]:
    with tempfile.NamedTemporaryFile(prefix="qubit-bench-", suffix=".jsonl", delete=False) as f:
        path = Path(f.name)
    env = dict(os.environ, **{RESULTS_ENV: str(path)})
    print(f"\n=== make {target}", flush=True)
    start = time.monotonic()
    status = subprocess.run(["make", "-s", "--no-print-directory", target], cwd=ROOT, env=env).returncode
    took = time.monotonic() - start
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.unlink()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for row in rows:
        row["measured"] = stamp
    return rows, status, took


def cell(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def table_row(row: dict[str, object]) -> str:
    fields = {k: v for k, v in row.items() if k in Figure.__dataclass_fields__}
    f = Figure(**fields)  # type: ignore[arg-type]
    ratio = f"{f.ratio:.2f}" if f.ratio is not None else "-"
    bounds = []
    if f.goal is not None:
        bounds.append(f"ratio {'≥' if f.higher_is_better else '≤'} {f.goal:g}")
    if f.absolute is not None:
        bounds.append(f"{'≥' if f.higher_is_better else '≤'} {f.absolute:g} {f.unit}")
    verdict = {True: "met", False: "**missed**", None: "-"}[f.met]
    detail = f"<br>{f.detail}" if f.detail else ""
    floor = f"{cell(f.floor, f.unit)} ({f.floor_is})" if f.floor is not None else "-"
    return (f"| {f.name}{detail} | {cell(f.value, f.unit)} | {floor} | {ratio} "
            f"| {', '.join(bounds) or '-'} | {verdict} | `{f.command}` | {row.get('measured', '')} |")


def write(rows: list[dict[str, object]], status: dict[str, object], docs: Path) -> None:
    info = machine()
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/report.py); do not edit by hand. Every figure is measured beside its",
        "floor in the same run, so that the machine's noise hits both alike; the ratio is figure / floor.",
        "The goals are issue 14's. docs/scale.md reads capacity from these figures.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        "| figure | value | floor | ratio | goal | verdict | command | measured |",
        "|---|---|---|---|---|---|---|---|",
        *[table_row(r) for r in rows],
        "",
        "## Runs",
        "",
        "| target | exit status | seconds |",
        "|---|---|---|",
        *[f"| `make {t}` | {s['status']} | {s['seconds']:.0f} |" for t, s in status.items()
          if isinstance(s, dict)],
        "",
    ]
    (docs / "benchmarks.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--rewrite", action="store_true", help="only write benchmarks.md again from benchmarks.json")
    args = parser.parse_args(argv)
    if args.rewrite:
        args.targets = []
    store = args.docs / "benchmarks.json"
    saved = json.loads(store.read_text()) if store.exists() else {"rows": [], "runs": {}}
    rows: list[dict[str, object]] = saved["rows"]
    runs: dict[str, object] = saved["runs"]
    failed = []
    for target in args.targets:
        new, code, took = run_target(target)
        rows = [r for r in rows if r.get("target") != target] + [dict(r, target=target) for r in new]
        runs[target] = {"status": code, "seconds": took}
        if code != 0:
            failed.append(target)
    order = {t: i for i, t in enumerate(TARGETS)}
    rows.sort(key=lambda r: order.get(str(r.get("target")), len(order)))
    store.write_text(json.dumps({"rows": rows, "runs": runs}, indent=1) + "\n", encoding="utf-8")
    write(rows, {t: runs[t] for t in sorted(runs, key=lambda t: order.get(t, len(order)))}, args.docs)
    print(f"\nwrote {args.docs / 'benchmarks.md'}" + (f"; failed: {' '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
