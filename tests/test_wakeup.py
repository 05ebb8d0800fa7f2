"""Wakeup: the presence loop's sleep, which a cancel must end even in the turn it is set.

``asyncio.wait_for(event.wait(), t)`` loses that cancel on Python 3.10 and
3.11 (the loop then never ends and a hub's close waited for it forever).
"""

from __future__ import annotations

import asyncio

from sse_fast.wakeup import Wakeup


async def sleeper(wake: Wakeup) -> None:
    while True:
        await wake.wait(0.05)


def test_a_cancel_in_the_turn_it_is_set_ends_the_sleeper() -> None:
    async def main() -> None:
        wake = Wakeup()
        task = asyncio.get_running_loop().create_task(sleeper(wake))
        await asyncio.sleep(0.01)
        wake.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        assert done == {task} and task.cancelled()

    asyncio.run(main())


def test_it_wakes_at_the_timeout_at_once_if_set_before_and_when_set_while_waiting() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wake = Wakeup()
        start = loop.time()
        await wake.wait(0.05)  # nobody sets it: the timeout
        assert loop.time() - start >= 0.04
        wake.set()
        start = loop.time()
        await wake.wait(10)  # set since the last wait: at once
        assert loop.time() - start < 5
        loop.call_later(0.01, wake.set)
        start = loop.time()
        await wake.wait(10)  # set while waiting
        assert loop.time() - start < 5

    asyncio.run(main())
