"""A fleet of two sites, end to end (the small version of `make fleet`): real brokers bridged
over TLS, real processes. The check itself (tools/fleet/check.py) asserts each behaviour; this
test holds its verdicts and a few of its figures."""

from __future__ import annotations

import pytest

from tools.fleet.check import run
from tools.fleet.stack import Fleet

pytestmark = pytest.mark.timeout(120)


def test_two_bridged_sites_isolation_operator_command_cut_and_catch_up(tmp_path, capsys):
    with Fleet(tmp_path, 2) as fleet:
        story = run(fleet, burst=1500)
    out = capsys.readouterr().out
    assert story.passed, out
    # what the story checked, so that a check dropped from it fails here
    for line in ("sit_fleet_01: 3/3 asset states, 4/4 services",
                 "bridge-sit_fleet_01 read nothing outside sit_fleet_01's tree",
                 "its forged operator command never reached sit_fleet_02",
                 "only sit_fleet_01's broker carried it", "only sit_fleet_02's broker carried it",
                 "sit_fleet_02 ran it alone", "every one of the 1500 messages of the burst arrived"):
        assert f"ok   {line}" in out, out
    measured = story.measured
    assert measured.cut_events > 0 and measured.burst == 1500
    assert measured.reconnect_s > 0 and measured.catch_up_s > 0
