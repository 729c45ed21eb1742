"""The long form of the fault-injection suite: ``make chaos`` (``SEEDS=1,2,3,4,5``).

Per seed: the loopback site plus OCPP chargers (charge point simulator) and Modbus batteries
(battery simulator), every fault type at seeded moments, then the verdict (tests/chaos/verdict.py
defines each count). Prints one table row per seed; exits 1 if any count that must be 0 is not.

    python -m tests.chaos.run --seeds 1,2,3,4,5 [--workdir DIR] [--ocpp-version 2.0.1]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from tests.chaos.faults import DEVICE_FAULTS, LOOPBACK_FAULTS
from tests.chaos.harness import ChaosConfig, describe, run_once
from tests.chaos.plan import SiteSpec
from tests.chaos.verdict import Verdict

COLUMNS = (("seed", 5), ("commands", 9), ("applied", 8), ("superseded", 11), ("failed", 7), ("lost", 6),
           ("twice", 6), ("out of order", 13), ("no terminal", 12), ("terminal events missing", 24),
           ("repeated", 9), ("unexpected", 11), ("faults", 7))


def row(seed: int | str, v: Verdict | None) -> str:
    values: list[object] = [seed] if v is None else [
        seed, v.commands, v.applied, v.superseded, v.failed, v.lost, v.twice, v.out_of_order, v.no_terminal,
        v.terminal_events_missing, v.repeated_writes, v.unexpected, v.faults]
    return " ".join(f"{value!s:>{width}}" for value, (_, width) in zip(values, COLUMNS, strict=False))


def long_form(seed: int, ocpp_version: str) -> ChaosConfig:
    spec = SiteSpec(loopback_chargers=30, loopback_batteries=3, ocpp_chargers=4, ocpp_version=ocpp_version,
                    modbus_batteries=2, command_timeout_seconds=5.0)
    return ChaosConfig(seed=seed, spec=spec, slots=22, slot_seconds=1.8, faults=LOOPBACK_FAULTS + DEVICE_FAULTS,
                       fault_window=(0.1, 0.75), settle_seconds=40.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated seeds (default 1,2,3,4,5)")
    parser.add_argument("--workdir", type=Path, help="keep each run's files here (default: a temporary directory)")
    parser.add_argument("--ocpp-version", default="1.6", choices=("1.6", "2.0.1"))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="qubit-chaos-"))
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    verdicts: list[tuple[int, Verdict]] = []
    for seed in seeds:
        verdict, run = run_once(long_form(seed, args.ocpp_version), root / f"seed-{seed}")
        print(describe(verdict, run), flush=True)
        verdicts.append((seed, verdict))
    print()
    print(" ".join(f"{name:>{width}}" for name, width in COLUMNS))
    for seed, verdict in verdicts:
        print(row(seed, verdict))
    failed = [seed for seed, v in verdicts if not v.ok]
    print(f"\n{len(seeds) - len(failed)}/{len(seeds)} seeds passed" + (f"; failed: {failed}" if failed else "")
          + f" (files: {root})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
