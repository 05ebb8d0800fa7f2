"""The ASGI sink's direct sends: the hub's write calls a compiled ``send`` itself, no coroutine wakes.

granian's ``send`` queues the bytes and answers with an awaitable that is
already done, unless the connection's queue is full; then it yields a future.
These tests drive :class:`~sse_fast.asgi.StreamSink` with a stand-in for that
``send``, and check which servers' ``send`` is called directly.  The
end-to-end suite runs the real thing on the granian engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest

from sse_fast.asgi import StreamSink


class Done:
    """granian's ``PyEmptyAwaitable``: finished without suspending."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class Waits:
    """granian's ``PyFutureAwaitable`` when the queue is full: suspends on a future."""

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    def __await__(self) -> Generator[Any, None, None]:
        yield self.future
        self.future.result()  # a cancelled send raises here, as awaiting it would


class CompiledLikeSend:
    """Records each message; answers ``Done`` unless told to make the next sends wait or fail."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.bodies: list[bytes] = []
        self.waiting: list[asyncio.Future[None]] = []
        self.full = False
        self.fail: Exception | None = None

    def __call__(self, message: dict[str, Any]) -> Any:
        if self.fail is not None:
            raise self.fail
        self.bodies.append(message["body"])
        assert message["more_body"] is True
        if self.full:
            future = self.loop.create_future()
            self.waiting.append(future)
            return Waits(future)
        return Done()


class Events:
    def __init__(self) -> None:
        self.sent = 0
        self.failures: list[BaseException] = []

    def on_sent(self) -> None:
        self.sent += 1

    def on_failed(self, exc: BaseException) -> None:
        self.failures.append(exc)


def direct_sink(loop: asyncio.AbstractEventLoop) -> tuple[StreamSink, CompiledLikeSend, Events]:
    sink = StreamSink(None, loop)
    send = CompiledLikeSend(loop)
    events = Events()
    sink.write(b"before live\n")  # e.g. the heartbeat the hub writes while subscribing
    sink.send_directly(send, events.on_sent, events.on_failed)  # type: ignore[arg-type]
    return sink, send, events


def test_writes_leave_inside_the_call_and_the_hub_hears_ready_each_time() -> None:
    async def main() -> None:
        sink, send, events = direct_sink(asyncio.get_running_loop())
        assert send.bodies == [b"before live\n"] and events.sent == 1
        sink.write(b"a")
        sink.write(b"b")
        assert send.bodies == [b"before live\n", b"a", b"b"]
        assert events.sent == 3
        assert sink.waiter is None  # no coroutine was woken for any of it

    asyncio.run(main())


def test_a_full_queue_holds_the_subscriber_busy_until_the_send_completes() -> None:
    async def main() -> None:
        sink, send, events = direct_sink(asyncio.get_running_loop())
        send.full = True
        sink.write(b"a")
        assert events.sent == 1  # not ready: the send is in flight
        sink.write(b"goodbye")  # the hub writes while busy only to say goodbye or reset
        assert send.bodies[-1] == b"a"
        send.full = False
        send.waiting[0].set_result(None)
        await asyncio.sleep(0)
        assert send.bodies[-1] == b"goodbye"  # what came meanwhile leaves next, in one send
        assert events.sent == 2

    asyncio.run(main())


def test_closing_abandons_a_send_stuck_on_a_client_that_stopped_reading() -> None:
    async def main() -> None:
        sink, send, events = direct_sink(asyncio.get_running_loop())
        send.full = True
        sink.write(b"a")
        closed = asyncio.ensure_future(sink.wait_closed())
        await asyncio.sleep(0)
        sink.close()
        await asyncio.wait_for(closed, 1)
        assert send.waiting[0].cancelled()
        assert sink.abandoned  # the stream ends without its last chunk
        sink.write(b"late")
        assert send.bodies[-1] == b"a"
        assert events.failures == [] and events.sent == 1

    asyncio.run(main())


def test_a_send_that_raises_is_a_write_failure_and_ends_the_stream() -> None:
    async def main() -> None:
        sink, send, events = direct_sink(asyncio.get_running_loop())
        send.fail = RuntimeError("Transport closed")
        sink.write(b"a")
        assert [str(e) for e in events.failures] == ["Transport closed"]
        assert sink.closed and not sink.abandoned

    asyncio.run(main())


def test_a_send_whose_future_fails_is_a_write_failure() -> None:
    async def main() -> None:
        sink, send, events = direct_sink(asyncio.get_running_loop())
        send.full = True
        sink.write(b"a")
        send.waiting[0].set_exception(ConnectionResetError("peer"))
        await asyncio.sleep(0)
        assert [type(e) for e in events.failures] == [ConnectionResetError]
        assert sink.closed

    asyncio.run(main())


async def python_send(message: dict[str, Any]) -> None:
    """uvicorn's kind of ``send``: a coroutine, which must run in the request's task."""


class Wrapper:
    async def send(self, message: dict[str, Any]) -> None:
        """A framework's wrapper around the server's send (a bound coroutine method)."""


@pytest.mark.parametrize(
    ("send", "direct"),
    [
        (len, True),  # compiled, like granian's bound ``send``
        (python_send, False),
        (Wrapper().send, False),
        (lambda message: None, False),
        (CompiledLikeSend.__new__(CompiledLikeSend), False),  # a Python object: it might await
    ],
)
def test_only_a_compiled_send_is_called_outside_the_request_task(send: Any, direct: bool) -> None:
    assert StreamSink.can_send_directly(send) is direct
