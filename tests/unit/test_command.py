import re
from datetime import UTC, datetime, timedelta

import pydantic
import pytest

from coordinator import NaiveDatetimeError
from coordinator.base import COMMAND_ADAPTER, Command, CommandStatus, CommandType

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)


def test_defaults_match_the_seed():
    cmd = Command(asset_id="ast_1", command_type=CommandType.SET_CHARGE_RATE, parameters={"power_kw": 22.0},
                  scheduled_at=T0)
    assert re.fullmatch(r"cmd_[0-9a-f]{12}", cmd.command_id)
    assert (cmd.status, cmd.attempts, cmd.max_retries, cmd.timeout_seconds, cmd.priority) == (
        CommandStatus.PENDING, 0, 3, 30.0, 1
    )


def test_ids_are_unique():
    ids = {Command("a", CommandType.STOP_CHARGING, scheduled_at=T0).command_id for _ in range(10000)}
    assert len(ids) == 10000


def test_naive_scheduled_at_refused_clearly():
    with pytest.raises(NaiveDatetimeError, match="scheduled_at must be timezone-aware"):
        Command("a", CommandType.SET_CHARGE_RATE, scheduled_at=datetime(2025, 1, 15, 8))


def test_command_type_string_is_coerced_and_unknown_refused():
    # text where the type says CommandType: the run-time coercion is under test
    coerced = Command("a", "SET_POWER_LIMIT", scheduled_at=T0)  # type: ignore[arg-type]
    assert coerced.command_type is CommandType.SET_POWER_LIMIT
    with pytest.raises(ValueError):
        Command("a", "LAUNCH_ROCKET", scheduled_at=T0)  # type: ignore[arg-type]


def test_the_seeds_seven_command_types_and_reset_and_the_terminal_statuses():
    assert len(CommandType) == 8 and CommandType.RESET in CommandType  # RESET: the operator's, after the seed's seven
    assert {s for s in CommandStatus if s.is_terminal} == {
        CommandStatus.COMPLETED, CommandStatus.FAILED, CommandStatus.TIMED_OUT, CommandStatus.CANCELLED
    }


def test_wire_validation_accepts_good_and_refuses_bad():
    good = {
        "asset_id": "ast_1",
        "command_type": "SET_CHARGE_RATE",
        "parameters": {"power_kw": 11.0},
        "scheduled_at": T0 + timedelta(minutes=15),
        "command_id": "cmd_0123456789ab",
    }
    cmd = COMMAND_ADAPTER.validate_python(good)
    assert cmd.command_type is CommandType.SET_CHARGE_RATE and cmd.status is CommandStatus.PENDING
    for field, value in [
        ("scheduled_at", datetime(2025, 1, 1)),
        ("asset_id", ""),
        ("command_type", "NOPE"),
        ("command_id", "evil id"),
        ("timeout_seconds", -1),
        ("timeout_seconds", float("nan")),
        ("attempts", -1),
        ("parameters", {"power_kw": [1, 2]}),
    ]:
        with pytest.raises(pydantic.ValidationError):
            COMMAND_ADAPTER.validate_python(good | {field: value})
