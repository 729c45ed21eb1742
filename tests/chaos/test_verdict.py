"""The chaos suite's own logic, without a broker: the plan, the fault plan, the evidence and the verdict."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.chaos.evidence import Application, from_device_lines, from_results
from tests.chaos.faults import LOOPBACK_FAULTS, FaultKind, plan_faults
from tests.chaos.plan import SiteSpec, expected_commands, schedule_frame, site_toml
from tests.chaos.verdict import judge

START = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)


def site(chargers=2, slots=3):
    assets = SiteSpec(loopback_chargers=chargers, loopback_batteries=1).assets()
    frame = schedule_frame(assets, slots, 1.5, START)
    return assets, expected_commands(frame, assets)


def ev(event_type, asset_id, kw, command_id="cmd_x"):
    return {"event_type": event_type, "asset_id": asset_id, "power_kw": kw, "command_id": command_id}


def test_every_asset_and_slot_gets_one_command_with_a_value_of_its_own():
    _, expected = site(chargers=30, slots=20)
    assert len(expected) == 31 * 20
    assert len({e.key for e in expected}) == len(expected)
    assert len({e.power_kw for e in expected}) == len(expected)  # unique across assets too
    assert "max_power_kw = 100.0" in site_toml(SiteSpec(loopback_chargers=1, loopback_batteries=0))


def test_fault_plans_replay_from_the_seed_and_fall_in_the_window():
    first = plan_faults(3, LOOPBACK_FAULTS, (5.0, 20.0), silent_assets=["a", "b", "c", "d"])
    assert first == plan_faults(3, LOOPBACK_FAULTS, (5.0, 20.0), silent_assets=["a", "b", "c", "d"])
    assert first != plan_faults(4, LOOPBACK_FAULTS, (5.0, 20.0), silent_assets=["a", "b", "c", "d"])
    assert {f.kind for f in first} == set(LOOPBACK_FAULTS)
    assert all(5.0 <= f.at <= 20.0 for f in first) and [f.at for f in first] == sorted(f.at for f in first)
    (silent,) = [f for f in first if f.kind is FaultKind.DEVICE_SILENT]
    assert len(silent.targets) == 3


def test_a_clean_run_counts_nothing_wrong():
    _, expected = site()
    apps = [Application(e.asset_id, e.power_kw, True) for e in expected]
    events = [ev("COMMAND_COMPLETED", e.asset_id, e.power_kw) for e in expected]
    v = judge(expected, apps, events)
    assert v.ok and v.applied == v.commands == 9 and v.lost == v.twice == v.out_of_order == 0


def test_stranded_commands_are_lost_and_their_terminal_events_missing():
    _, expected = site()
    done = expected[:3]
    v = judge(expected, [Application(e.asset_id, e.power_kw, True) for e in done],
              [ev("COMMAND_COMPLETED", e.asset_id, e.power_kw) for e in done])
    assert (v.lost, v.no_terminal, v.terminal_events_missing) == (6, 6, 6)
    assert not v.ok and set(v.failures) == {"lost", "no_terminal", "terminal_events_missing"}


def test_a_status_answer_is_a_terminal_state_but_not_a_seen_event():
    _, expected = site(chargers=1, slots=1)
    (exp,) = [e for e in expected if e.asset_id.startswith("ast_lb_ev")]
    v = judge([exp], [Application(exp.asset_id, exp.power_kw, True)], [], {exp.key: "COMPLETED"})
    assert (v.no_terminal, v.terminal_events_missing) == (0, 1)


def test_completed_without_a_device_application_is_lost():
    _, expected = site(chargers=1, slots=1)
    v = judge(expected, [], [ev("COMMAND_COMPLETED", e.asset_id, e.power_kw) for e in expected])
    assert v.lost == len(expected)


def test_superseded_and_failed_commands_are_not_lost():
    _, expected = site(chargers=1, slots=2)
    a, b = expected[0], expected[2]
    rest = [e for e in expected if e not in (a, b)]
    events = ([ev("COMMAND_CANCELLED", a.asset_id, a.power_kw), ev("COMMAND_TIMED_OUT", b.asset_id, b.power_kw)]
              + [ev("COMMAND_COMPLETED", e.asset_id, e.power_kw) for e in rest])
    v = judge(expected, [Application(e.asset_id, e.power_kw, True) for e in rest], events)
    assert (v.superseded, v.failed, v.lost) == (1, 1, 0) and v.ok


def test_twice_repeated_out_of_order_and_a_restore_after_reboot():
    _, expected = site(chargers=1, slots=3)
    s0, s1, s2 = sorted((e for e in expected if e.asset_id == "ast_lb_ev_000"), key=lambda e: e.slot)
    aid = s0.asset_id
    lines = [
        {"asset_id": aid, "power_kw": s0.power_kw, "changed": True},
        {"asset_id": aid, "power_kw": s0.power_kw, "changed": False},  # repeated write
        {"asset_id": aid, "power_kw": s2.power_kw, "changed": True},
        {"asset_id": aid, "boot": True},
        {"asset_id": aid, "power_kw": s2.power_kw, "changed": True},  # restored after the reboot: fine
        {"asset_id": aid, "power_kw": s1.power_kw, "changed": True},  # older after newer
        {"asset_id": aid, "power_kw": s2.power_kw, "changed": True},  # s2 a second time, no reboot
        {"asset_id": aid, "power_kw": 99.5, "changed": True},
    ]
    apps = from_device_lines(lines)
    assert [a.after_boot for a in apps] == [False, False, False, True, False, False, False]
    v = judge([s0, s1, s2], apps, [ev("COMMAND_COMPLETED", e.asset_id, e.power_kw) for e in (s0, s1, s2)])
    assert (v.repeated_writes, v.out_of_order, v.twice, v.unexpected) == (1, 1, 1, 1)


def test_a_restore_after_a_fallback_is_not_twice_but_a_second_one_without_it_is():
    _, expected = site(chargers=1, slots=2)
    s0, s1 = sorted((e for e in expected if e.asset_id == "ast_lb_ev_000"), key=lambda e: e.slot)
    aid = s0.asset_id
    lines = [
        {"asset_id": aid, "power_kw": s1.power_kw, "changed": True},
        {"asset_id": aid, "boot": True},
        {"asset_id": aid, "power_kw": 0.0, "changed": True},  # the fallback profile installed after boot
        {"asset_id": aid, "power_kw": s1.power_kw, "changed": True},  # restored: fine
        {"asset_id": aid, "power_kw": 0.0, "changed": True},  # the lease ran out
        {"asset_id": aid, "power_kw": s1.power_kw, "changed": True},  # restored again: fine
        {"asset_id": aid, "power_kw": s0.power_kw, "changed": True},  # older after newer
        {"asset_id": aid, "power_kw": s1.power_kw, "changed": True},  # s1 once more, nothing displaced it
    ]
    v = judge([s0, s1], from_device_lines(lines), [ev("COMMAND_COMPLETED", e.asset_id, e.power_kw) for e in (s0, s1)])
    assert (v.twice, v.out_of_order, v.unexpected) == (1, 1, 2)


def test_gateway_results_stand_in_for_a_device_log():
    events = [ev("COMMAND_CREATED", "ast_a", 2.0, "cmd_1"), ev("COMMAND_CREATED", "ast_a", 3.0, "cmd_2")]
    results = [{"command_id": c, "asset_id": "ast_a", "outcome": o}
               for c, o in (("cmd_1", "acknowledged"), ("cmd_1", "completed"), ("cmd_1", "completed"),
                            ("cmd_2", "completed"))]
    assert [(a.power_kw, a.changed) for a in from_results(results, events)] == [(2.0, True), (2.0, False), (3.0, True)]
