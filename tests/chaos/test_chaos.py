"""The short form of the fault-injection suite (``make chaos`` runs the long form: tests/chaos/run.py).

One seed, the loopback site (30 chargers, 3 batteries, 18 slots of 1.5 s: 594 commands), a
kill -9 of the planner mid-schedule with no republish of the schedule, and one of the gateway.
The verdict's counts are defined in tests/chaos/verdict.py.
"""

from __future__ import annotations

import pytest

from tests.chaos.faults import SHORT_FORM
from tests.chaos.harness import ChaosConfig, describe, run_once

pytestmark = pytest.mark.timeout(150)


def test_kill_9_of_the_planner_and_the_gateway_mid_schedule_loses_nothing(tmp_path):
    verdict, run = run_once(ChaosConfig(seed=11, faults=SHORT_FORM), tmp_path)
    report = describe(verdict, run)
    print(report)
    assert {f.kind for _, f in run.injected} == set(SHORT_FORM), report
    assert verdict.lost == 0, report
    assert verdict.twice == 0, report
    assert verdict.out_of_order == 0, report
    assert verdict.no_terminal == 0, report
    assert verdict.terminal_events_missing == 0, report
    assert verdict.applied + verdict.superseded + verdict.failed == verdict.commands, report
