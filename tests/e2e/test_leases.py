"""Leases end to end: the whole coordinator and the broker die (kill -9); every simulated
device, OCPP 1.6 and 2.0.1 chargers and a Modbus battery with a watchdog, is at its safe value
within the lease by itself, and back at its setpoint once the coordinator is. While the
coordinator lived, renewals and heartbeats kept every setpoint in force. The run is
bench/fallback.py's, with a 3 s lease."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench scripts import by their directory (`python bench/x.py`; mypy_path has "bench" too)
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from fallback import measure

pytestmark = pytest.mark.timeout(180)

LEASE = 3.0
SLACK = 0.5
"""Timer and log-writing latency on a loaded 2-core machine, beyond the lease itself."""


def test_a_dead_coordinator_leaves_every_device_at_its_safe_value_within_the_lease(tmp_path):
    figures = measure(tmp_path, LEASE, chargers=2, batteries=1, recover=True)

    assert figures["fell_back_while_alive"] == 0  # renewed and heartbeated while it lived
    assert set(figures["per_device"]) == {"ast_cp_0", "ast_cp_1", "ast_batt_0"}
    assert figures["all_safe_after_seconds"] <= LEASE + SLACK, figures
    # one rule for both protocols once the coordinator is back: the setpoint last applied, again
    # (a charger on its boot, a battery when its link comes up), from the gateways' records
    assert figures["all_restored_after_seconds"] is not None, figures
