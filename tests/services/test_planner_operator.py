"""The planner's operator commands and limits, without a broker."""

from datetime import UTC, datetime, timedelta

from coordinator.base import CommandType
from coordinator.contract.codec import command_from_wire
from coordinator.contract.messages import AssetStateMessage, CommandBatch, OperatorCommand, decode
from coordinator.contract.topics import OPERATOR_COMMANDS
from coordinator.events import EventType
from services.planner import Planner

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)


def order(action, asset_id="ast_bay_1", request_id="req_1", **fields):
    return OperatorCommand(request_id=request_id, asset_id=asset_id, action=action, issued_at=T0, **fields).encode()


def sent(recorder):
    return [command_from_wire(c) for _, p in recorder.on("qubit/commands/") for c in decode(CommandBatch, p).commands]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_an_operator_command_is_accepted_dispatched_at_once_and_a_resend_is_not_queued_twice(site, recorder):
    planner = Planner(site, recorder, clock=lambda: T0)
    planner.on_operator_command(OPERATOR_COMMANDS, order("start_session"))
    planner.on_operator_command(OPERATOR_COMMANDS, order("start_session"))
    accepted = recorder.events(EventType.OPERATOR_COMMAND_ACCEPTED)
    assert len(accepted) == 2 and accepted[0].payload.command_id == accepted[1].payload.command_id
    assert len(recorder.events(EventType.COMMAND_CREATED)) == 1
    planner.tick(T0)
    (cmd,) = sent(recorder)
    assert (cmd.command_type, cmd.command_id) == (CommandType.START_CHARGING, accepted[0].payload.command_id)
    assert planner.ledger.command_record(cmd.command_id) is not None


def test_a_rejected_command_is_an_answer_and_a_refusal_and_queues_nothing(site, recorder):
    planner = Planner(site, recorder, clock=lambda: T0)
    refused = []
    planner.refusals.bus.subscribe(EventType.MESSAGE_REFUSED, lambda e: refused.append(e.payload))
    planner.on_operator_command(OPERATOR_COMMANDS, order("soc_target", percent=50))
    (rejected,) = recorder.events(EventType.OPERATOR_COMMAND_REJECTED)
    assert rejected.payload.reason == "wrong_kind" and rejected.payload.request_id == "req_1"
    assert [(r["topic"], r["message_id"]) for r in refused] == [(OPERATOR_COMMANDS, "req_1")]
    planner.tick(T0)
    assert sent(recorder) == [] and recorder.events(EventType.COMMAND_CREATED) == []


def test_a_reset_reaches_a_faulted_asset_whose_setpoints_are_held(site, recorder):
    planner = Planner(site, recorder, clock=lambda: T0)
    state = AssetStateMessage(asset_id="ast_batt_001", kind="battery", state="FAULTED", since=T0)
    planner.on_asset_state("qubit/state/ast_batt_001", state.encode())
    planner.on_operator_command(OPERATOR_COMMANDS, order("soc_target", "ast_batt_001", "req_soc", percent=80))
    planner.tick(T0)
    assert sent(recorder) == []  # held: the battery is FAULTED
    planner.on_operator_command(OPERATOR_COMMANDS, order("reset", "ast_batt_001", "req_reset"))
    planner.tick(T0)
    assert [c.command_type for c in sent(recorder)] == [CommandType.RESET]


def test_a_faulted_asset_frees_its_share_of_the_site_limit(site, recorder):
    planner = Planner(site, recorder, clock=lambda: T0)
    planner.in_force["ast_batt_001"] = 80.0
    state = AssetStateMessage(asset_id="ast_batt_001", kind="battery", state="FAULTED", since=T0)
    planner.on_asset_state("qubit/state/ast_batt_001", state.encode())
    assert planner.in_force["ast_batt_001"] == 0.0


def test_an_operator_limit_caps_setpoints_and_is_lifted_when_it_ends(site, recorder):
    clock = Clock()
    planner = Planner(site, recorder, clock=clock)
    planner.on_operator_command(OPERATOR_COMMANDS, order("power_limit", kw=7.0, duration_s=60))
    assert planner.operator_limits["ast_bay_1"].kw == 7.0
    restarted = Planner(site, recorder, clock=clock, ledger=planner.ledger)  # the limit is in the ledger
    assert restarted.operator_limits["ast_bay_1"].kw == 7.0
    clock.now = T0 + timedelta(seconds=61)
    planner.tick(clock.now)
    assert "ast_bay_1" not in planner.operator_limits
    lifted = [c for c in planner.engine.commands if c.command_type is CommandType.SET_POWER_LIMIT
              and c.parameters == {"power_kw": site.asset("ast_bay_1").max_power_kw}]
    assert len(lifted) == 1


def test_an_unreadable_order_is_refused_and_changes_nothing(site, recorder):
    import msgpack

    planner = Planner(site, recorder, clock=lambda: T0)
    refused = []
    planner.refusals.bus.subscribe(EventType.MESSAGE_REFUSED, lambda e: refused.append(e.payload))
    for data in (b"\xc1 not msgpack", msgpack.packb({"request_id": "r", "asset_id": "ast_bay_1", "action": "reset"}),
                 msgpack.packb({"request_id": "r", "asset_id": "ast_bay_1", "action": "reset", "issued_at": 1,
                                "kw": float("inf")})):
        planner.on_operator_command(OPERATOR_COMMANDS, data)
    assert [r["reason"] for r in refused] == ["unreadable"] * 3
    planner.tick(T0)
    assert sent(recorder) == [] and planner.engine.commands == []
