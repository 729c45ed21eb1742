"""GroupCommit: the marks many device tasks ask for in one loop turn, one transaction."""

import asyncio
from datetime import UTC, datetime

import pytest

from coordinator.base import Command, CommandType
from coordinator.runtime.device_gateway import GroupCommit


def command(asset: str) -> Command:
    return Command(asset, CommandType.SET_CHARGE_RATE, {"power_kw": 1.0}, datetime.now(UTC))


def test_marks_of_one_turn_share_one_commit() -> None:
    commits: list[list[str]] = []
    group = GroupCommit(lambda cmds: commits.append([c.asset_id for c in cmds]))

    async def main() -> None:
        await asyncio.gather(*(group.mark(command(f"ast_{i}")) for i in range(5)))
        await group.mark(command("ast_late"))

    asyncio.run(main())
    assert commits == [[f"ast_{i}" for i in range(5)], ["ast_late"]]


def test_nothing_returns_before_its_commit() -> None:
    committed: list[str] = []
    group = GroupCommit(lambda cmds: committed.extend(c.asset_id for c in cmds))

    async def one(asset: str) -> bool:
        await group.mark(command(asset))
        return asset in committed

    async def main() -> list[bool]:
        return list(await asyncio.gather(one("ast_a"), one("ast_b")))

    assert asyncio.run(main()) == [True, True]


def test_a_failed_commit_raises_in_every_task_it_held() -> None:
    def fail(cmds: list[Command]) -> None:
        raise OSError("disk full")

    group = GroupCommit(fail)

    async def main() -> list[object]:
        return list(await asyncio.gather(group.mark(command("ast_a")), group.mark(command("ast_b")),
                                         return_exceptions=True))

    outcomes = asyncio.run(main())
    assert all(isinstance(o, OSError) for o in outcomes) and len(outcomes) == 2


def test_a_cancelled_waiter_does_not_stop_the_others() -> None:
    committed: list[str] = []
    group = GroupCommit(lambda cmds: committed.extend(c.asset_id for c in cmds))

    async def main() -> None:
        a = asyncio.ensure_future(group.mark(command("ast_a")))
        b = asyncio.ensure_future(group.mark(command("ast_b")))
        await asyncio.sleep(0)
        a.cancel()
        await b
        with pytest.raises(asyncio.CancelledError):
            await a

    asyncio.run(main())
    assert committed == ["ast_a", "ast_b"]
