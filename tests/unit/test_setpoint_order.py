"""The ordering rules of setpoints, pure: which delivery a gateway applies."""

from datetime import UTC, datetime, timedelta

import pytest

from coordinator.base import Command, CommandType
from coordinator.setpoint_order import Applied, Verdict, channel_of, decide, order_key, ordering

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def cmd(created=T0, slot=T0, ctype=CommandType.SET_CHARGE_RATE, asset="ast_1", attempts=1):
    return Command(asset, ctype, {"power_kw": 7.0}, slot, created_at=created, attempts=attempts)


def in_force(c: Command) -> Applied:
    channel = channel_of(c.command_type)
    assert channel is not None
    return Applied.of(c, channel)


def test_channels_as_dispatch_has_them():
    assert channel_of(CommandType.SET_CHARGE_RATE) == channel_of(CommandType.SET_DISCHARGE_RATE) == "power"
    assert channel_of(CommandType.SET_POWER_LIMIT) == "limit"
    assert channel_of(CommandType.SET_SOC_TARGET) == "soc"
    assert channel_of(CommandType.START_CHARGING) is None and channel_of(CommandType.STOP_CHARGING) is None


def test_created_at_orders_before_the_slot():
    newer_schedule_earlier_slot = cmd(created=T0 + MIN, slot=T0)
    older_schedule_later_slot = cmd(created=T0, slot=T0 + 10 * MIN)
    assert order_key(newer_schedule_earlier_slot) > order_key(older_schedule_later_slot)
    assert order_key(cmd(slot=T0 + MIN)) > order_key(cmd(slot=T0))


def test_an_older_setpoint_than_the_one_in_force_is_superseded_naming_the_newer():
    newer = cmd(created=T0 + MIN)
    decision = ordering(cmd(), in_force(newer))
    assert decision.verdict is Verdict.SUPERSEDED and newer.command_id in (decision.reason or "")


def test_a_discharge_is_ordered_against_a_charge_of_the_same_channel():
    newer_charge = cmd(created=T0 + MIN)
    assert ordering(cmd(ctype=CommandType.SET_DISCHARGE_RATE), in_force(newer_charge)).verdict is Verdict.SUPERSEDED


@pytest.mark.parametrize("later", [timedelta(0), MIN])
def test_a_newer_or_equal_key_is_applied(later):
    applied = cmd()
    assert ordering(cmd(created=T0 + later), in_force(applied)).verdict is Verdict.APPLY


def test_commands_without_a_channel_and_first_setpoints_are_applied():
    assert ordering(cmd(ctype=CommandType.STOP_CHARGING), None).verdict is Verdict.APPLY
    assert ordering(cmd(), None).verdict is Verdict.APPLY


def test_in_force_of_another_channel_is_a_caller_bug():
    with pytest.raises(ValueError):
        ordering(cmd(ctype=CommandType.SET_POWER_LIMIT), in_force(cmd()))


def test_decide_a_repeat_then_an_earlier_attempt_then_the_order():
    c = cmd(attempts=2)
    newer = in_force(cmd(created=T0 + MIN))
    assert decide(c, seen=True, applied_attempt=1, in_force=newer).verdict is Verdict.ANSWER_FROM_RECORD
    earlier = decide(c, seen=False, applied_attempt=1, in_force=newer)
    assert earlier.verdict is Verdict.ALREADY_APPLIED and earlier.reason == "already applied by attempt 1"
    assert decide(c, seen=False, applied_attempt=None, in_force=newer).verdict is Verdict.SUPERSEDED
    assert decide(c, seen=False, applied_attempt=None, in_force=None).verdict is Verdict.APPLY
