"""A wake-up that a loop sleeps on with a timeout, and that a cancel always ends.

``asyncio.wait_for(event.wait(), timeout)`` on Python 3.10 and 3.11 drops a
cancel that arrives in the same turn as the event is set: ``wait_for``
returns the inner result, the task runs on with its cancel spent, and whoever
awaits it after ``cancel()`` waits forever (a hub's close did, in CI).  A bare
future and a timer handle have no such window.
"""

from __future__ import annotations

import asyncio


class Wakeup:
    """Set by anyone, waited on by one task: :meth:`wait` returns when set (at once if it was set
    since the last wait) or after ``timeout`` seconds, whichever comes first."""

    __slots__ = ("_is_set", "_waiter")

    def __init__(self) -> None:
        self._is_set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._is_set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        if not self._is_set:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        self._is_set = False


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
