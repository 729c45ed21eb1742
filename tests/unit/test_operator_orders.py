"""coordinator.operator_commands: an operator's order checked against the site."""

from datetime import UTC, datetime

import pydantic
import pytest

from coordinator.base import CommandType
from coordinator.contract.messages import OperatorCommand
from coordinator.operator_commands import OPERATOR_PRIORITY, OperatorRejection, operator_command, operator_command_id
from coordinator.site import SiteConfig

AT = datetime(2025, 1, 15, 8, tzinfo=UTC)
SITE = SiteConfig.model_validate({
    "site_id": "sit_1", "gateways": [{"gateway_id": "loopback", "protocol": "loopback"}],
    "assets": [{"asset_id": "ast_bay_1", "kind": "ev_charger", "gateway_id": "loopback", "max_power_kw": 22},
               {"asset_id": "ast_batt", "kind": "battery", "gateway_id": "loopback", "max_power_kw": 100}]})


def order(action, asset_id="ast_bay_1", **fields):
    return OperatorCommand(request_id="req_1", asset_id=asset_id, action=action, issued_at=AT, **fields)


@pytest.mark.parametrize(("made", "ctype", "parameters"), [
    (order("start_session"), CommandType.START_CHARGING, {}),
    (order("stop_session"), CommandType.STOP_CHARGING, {}),
    (order("set_availability", availability="inoperative"), CommandType.CHANGE_AVAILABILITY, {"available": False}),
    (order("set_availability", availability="operative"), CommandType.CHANGE_AVAILABILITY, {"available": True}),
    (order("reset", "ast_batt"), CommandType.RESET, {}),
    (order("power_limit", kw=7.0, duration_s=600), CommandType.SET_POWER_LIMIT, {"power_kw": 7.0, "duration_s": 600}),
    (order("soc_target", "ast_batt", percent=80), CommandType.SET_SOC_TARGET, {"soc_percent": 80}),
])
def test_each_action_is_one_command_due_now(made, ctype, parameters):
    cmd = operator_command(made, SITE, AT)
    assert not isinstance(cmd, OperatorRejection)
    assert (cmd.command_type, cmd.parameters, cmd.scheduled_at) == (ctype, parameters, AT)
    assert cmd.priority == OPERATOR_PRIORITY and cmd.schedule_id is None
    assert cmd.command_id == operator_command_id("req_1")  # a resend finds its command


@pytest.mark.parametrize(("made", "reason"), [
    (order("reset", "ast_nowhere"), "unknown_asset"),
    (order("soc_target", percent=50), "wrong_kind"),
    (order("start_session", "ast_batt"), "wrong_kind"),
    (order("set_availability"), "invalid"),
    (order("power_limit", kw=7.0), "invalid"),
    (order("power_limit", kw=23.0, duration_s=60), "out_of_range"),
    (order("soc_target", "ast_batt"), "invalid"),
])
def test_what_does_not_fit_the_site_is_rejected_with_a_reason(made, reason):
    rejected = operator_command(made, SITE, AT)
    assert isinstance(rejected, OperatorRejection) and rejected.reason == reason and rejected.message


@pytest.mark.parametrize("fields", [{"percent": 101}, {"kw": -1}, {"duration_s": 0}, {"kw": float("nan")},
                                    {"action": "explode"}, {"asset_id": "a/b"}])
def test_the_wire_model_refuses_what_is_out_of_range(fields):
    base = {"request_id": "r", "asset_id": "ast_bay_1", "action": "reset", "issued_at": AT} | fields
    with pytest.raises(pydantic.ValidationError):
        OperatorCommand(**base)


def test_an_order_delivered_late_or_from_a_clock_far_ahead_is_expired():
    from datetime import timedelta

    made = order("reset", "ast_batt")
    assert not isinstance(operator_command(made, SITE, AT + timedelta(minutes=4)), OperatorRejection)
    for now in (AT + timedelta(minutes=6), AT - timedelta(minutes=6)):
        rejected = operator_command(made, SITE, now)
        assert isinstance(rejected, OperatorRejection) and rejected.reason == "expired"


def test_request_ids_give_distinct_command_ids():
    assert operator_command_id("a") != operator_command_id("b")
    assert operator_command_id("a").startswith("cmd_op")
