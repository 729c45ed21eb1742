"""coordinator.limits: operator caps, then the site's import/export limits, shared proportionally."""

from datetime import UTC, datetime, timedelta

from coordinator.base import Command, CommandType
from coordinator.limits import OperatorLimit, cap_setpoints, requested_kw, signed_kw
from coordinator.site import SiteLimits

AT = datetime(2025, 1, 15, 8, tzinfo=UTC)


def charge(asset_id, kw, ctype=CommandType.SET_CHARGE_RATE):
    return Command(asset_id, ctype, {"power_kw": kw}, AT, command_id=f"cmd_{asset_id}")


def applied(caps):
    return {c.asset_id: c.applied for c in caps}


def test_no_limit_no_cap():
    assert cap_setpoints([charge("a", 50.0), charge("b", 50.0)], {}, {}, SiteLimits(), AT) == []
    assert cap_setpoints([charge("a", 40.0), charge("b", 50.0)], {}, {}, SiteLimits(import_kw=90), AT) == []


def test_site_import_limit_scales_the_slots_setpoints_proportionally():
    caps = cap_setpoints([charge("a", 60.0), charge("b", 30.0)], {}, {}, SiteLimits(import_kw=60), AT)
    assert applied(caps) == {"a": 40.0, "b": 20.0}
    assert {c.limit for c in caps} == {"site_import"} and all(c.limit_kw == 60 for c in caps)


def test_setpoints_in_force_elsewhere_use_up_the_headroom_first():
    caps = cap_setpoints([charge("a", 50.0)], {"b": 80.0, "batt": -30.0}, {}, SiteLimits(import_kw=100), AT)
    assert applied(caps) == {"a": 20.0}  # a discharge elsewhere does not raise the import headroom
    full = cap_setpoints([charge("a", 50.0)], {"b": 120.0}, {}, SiteLimits(import_kw=100), AT)
    assert applied(full) == {"a": 0.0}


def test_the_due_assets_own_old_value_is_not_counted_twice():
    assert cap_setpoints([charge("a", 50.0)], {"a": 90.0}, {}, SiteLimits(import_kw=60), AT) == []


def test_export_limit_caps_discharges_only():
    due = [charge("batt", 100.0, CommandType.SET_DISCHARGE_RATE), charge("a", 50.0)]
    caps = cap_setpoints(due, {}, {}, SiteLimits(import_kw=1000, export_kw=40), AT)
    assert [(c.asset_id, c.applied, c.limit) for c in caps] == [("batt", 40.0, "site_export")]
    assert applied(cap_setpoints(due[:1], {}, {}, SiteLimits(export_kw=0), AT)) == {"batt": 0.0}


def test_an_operator_limit_caps_until_it_ends_then_the_site_limit_applies():
    limit = {"a": OperatorLimit(10.0, AT + timedelta(minutes=5), "cmd_op")}
    caps = cap_setpoints([charge("a", 50.0), charge("b", 50.0)], {}, limit, SiteLimits(import_kw=40), AT)
    assert [(c.asset_id, c.limit, c.requested, c.applied) for c in caps] == [
        ("a", "operator", 50.0, 10.0), ("a", "site_import", 10.0, 6.666), ("b", "site_import", 50.0, 33.333)]
    assert sum(applied(caps).values()) <= 40
    later = AT + timedelta(minutes=5)
    assert cap_setpoints([charge("a", 50.0)], {}, limit, SiteLimits(), later) == []


def test_the_schedules_value_is_kept_in_requested_kw():
    cmd = charge("a", 20.0)
    cmd.parameters["requested_kw"] = 50.0
    assert requested_kw(cmd) == 50.0 and signed_kw(cmd) == 20.0
    assert signed_kw(charge("a", 5.0, CommandType.SET_DISCHARGE_RATE)) == -5.0
    assert requested_kw(Command("a", CommandType.RESET, {}, AT)) is None
    caps = cap_setpoints([cmd], {}, {}, SiteLimits(import_kw=30), AT)
    assert applied(caps) == {"a": 30.0}  # recomputed from the schedule's value, not from the capped one
