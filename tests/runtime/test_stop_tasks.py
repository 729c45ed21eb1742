"""stop_tasks: a device link's tasks end on stop even when a cancellation is swallowed."""

from __future__ import annotations

import asyncio
import logging

from coordinator.runtime.device_gateway import stop_tasks


async def _swallows_cancels(times: int, ended: asyncio.Event) -> None:
    """As a loop around Python 3.11's asyncio.wait_for behaves when a cancellation arrives just
    as the awaited call completes: the CancelledError never reaches the loop."""
    swallowed = 0
    try:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == times:
                    raise
                swallowed += 1
    finally:
        ended.set()


def test_a_task_that_swallowed_its_cancellation_is_cancelled_again_until_it_ends() -> None:
    async def scenario() -> None:
        ended = asyncio.Event()
        task = asyncio.create_task(_swallows_cancels(2, ended))
        await asyncio.sleep(0)
        await stop_tasks([task], bound=5.0)
        assert ended.is_set() and task.cancelled()

    asyncio.run(scenario())


def test_a_task_that_never_ends_is_given_up_after_the_bound_and_logged(caplog) -> None:
    async def stubborn(release: asyncio.Event) -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if release.is_set():
                    raise

    async def scenario() -> float:
        release = asyncio.Event()
        task = asyncio.create_task(stubborn(release), name="stubborn")
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await stop_tasks([task], bound=0.3, what="test link")
        took = loop.time() - began
        assert not task.done()
        release.set()  # the test's own cleanup
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return took

    with caplog.at_level(logging.ERROR):
        took = asyncio.run(scenario())
    assert 0.3 <= took < 1.0
    assert "test link: 1 still running" in caplog.text and "stubborn" in caplog.text


def test_a_task_that_failed_is_logged_not_raised(caplog) -> None:
    async def fails() -> None:
        raise RuntimeError("device broke")

    async def scenario() -> None:
        task = asyncio.create_task(fails(), name="poller")
        await asyncio.sleep(0)
        await stop_tasks([task], what="test link")

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert "test link: task poller failed" in caplog.text
