"""``POST /push`` on the native engine without the ASGI bridge: the request path of a notification.

A notification edge mostly answers one push per notification, so a push gets
the path ``GET /events`` has: the connection collects the body itself and
hands it to :meth:`Endpoints.push <sse_fast.endpoints.Endpoints.push>` — the
very code that answers the push under granian (``SSEApp._push``), so rules,
limits, auth, CORS and error bodies are the same — and writes the answer
itself.  No ASGI scope, no messages, no task: the push coroutine is driven in
place (:func:`run_now`), and with a store that answers without suspending
(memory) the whole push, answer included, runs inside ``data_received``.
Only a push that has to wait (a store round trip) continues in a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from ...request import Request

T = TypeVar("T")


class PushRequest:
    """A ``POST /push`` being read: its request, its body so far, and how the connection goes on.

    ``too_large`` is set once the body passed ``--max-body``: what follows is
    not kept, and the answer is 413 with the connection closed after it.
    """

    __slots__ = (
        "body",
        "chunked",
        "complete",
        "expect_continue",
        "keep_alive",
        "request",
        "size",
        "too_large",
    )

    def __init__(self, request: Request, chunked: bool, keep_alive: bool, expect_continue: bool) -> None:
        self.request = request
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False
        self.too_large = False

    def feed(self, data: bytes, max_body: int) -> None:
        if self.too_large:
            return
        self.size += len(data)
        if self.size > max_body:
            self.too_large = True
            self.body = []
        else:
            self.body.append(data)

    def take_body(self) -> bytes:
        body = self.body
        self.body = []
        return body[0] if len(body) == 1 else b"".join(body)


class Suspended(Exception):
    """:func:`run_now` could not finish: ``task`` carries the coroutine on from where it stopped."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        super().__init__("the coroutine suspended")
        self.task = task


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` in place until it returns or raises; if it suspends, raise :class:`Suspended`.

    What asyncio's eager tasks do (Python 3.12+), for every Python we
    support: a push that never waits costs no task and no loop turn.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise Suspended(asyncio.get_running_loop().create_task(_carry_on(coro, yielded)))


async def _carry_on(coro: Coroutine[Any, Any, T], yielded: Any) -> T:
    """Go on driving a coroutine that suspended on ``yielded`` (a future, or None for one loop turn).

    The task's first step comes a turn after the suspension: that is the turn
    a bare yield asked for, so it is not waited for a second time.
    """
    first = True
    while True:
        if yielded is None:
            if not first:
                await asyncio.sleep(0)
        else:
            # The future marked itself awaited when it was yielded; a task clears that
            # mark when it takes the future over, and so must we before awaiting it.
            yielded._asyncio_future_blocking = False
            try:
                await yielded
            except asyncio.CancelledError:
                if not yielded.cancelled():  # this task was cancelled, not what it waited for
                    coro.close()
                    raise
            except Exception:
                pass  # the coroutine reads the outcome from the future itself
        first = False
        try:
            yielded = coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
