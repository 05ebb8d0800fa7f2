"""A finished subscription must be freed by reference counting, not left to the cyclic collector.

granian's ``receive()`` returns its own future (``PyFutureAwaitable``), which
keeps its done-callback for as long as it lives and does not show that
reference to Python's cyclic garbage collector.  The ASGI transport's
:class:`~sse_fast.asgi.DisconnectWatch` holds that future and hands it its
own bound method as the callback: unless the watch lets go when the stream
ends, watch -> future -> callback -> watch is a cycle no collection can free,
and it keeps the sink, the request's task and granian's protocol object alive
(measured: ~2.2 KiB per connection, for ever; ``benchmarks/churn.py``).

Both tests run with the collector disabled and look at a weak reference to
the request's task: it must die by reference counting once the stream is
over.  The first drives :class:`~sse_fast.asgi.SSEApp` with a stand-in for
granian's future; the second runs the real granian, embedded in the test's
loop, with real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sse_fast import Event, Hub
from sse_fast.asgi import SSEApp

_CALLBACKS: dict[int, Callable[[Any], object]] = {}
"""The stand-in futures' done-callbacks, keyed by the future's id: reachable
from a module, as granian's are from Rust, so the collector takes them for
live and only reference counting can free them."""


class GranianLikeFuture:
    """What granian's ``receive()`` returns, as far as the watch is concerned.

    Like ``PyFutureAwaitable``: one done-callback, kept (out of the
    collector's sight) until the future dies or ``remove_done_callback``
    clears it, also after the future is done; ``cancel`` schedules it.
    """

    _asyncio_future_blocking = False  # what asyncio.isfuture() looks for

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._state = "pending"
        self._result: Any = None

    def __del__(self, _callbacks: dict[int, Any] = _CALLBACKS) -> None:
        _callbacks.pop(id(self), None)

    def add_done_callback(self, cb: Callable[[Any], object], *, context: object = None) -> None:
        if self._state == "pending":
            _CALLBACKS[id(self)] = cb
        else:
            self._loop.call_soon(cb, self)

    def remove_done_callback(self, cb: Callable[[Any], object]) -> int:
        _CALLBACKS.pop(id(self), None)
        return 1

    def set_result(self, result: Any) -> None:
        if self._state != "pending":
            return
        self._state, self._result = "done", result
        cb = _CALLBACKS.get(id(self))  # run, and kept
        if cb is not None:
            self._loop.call_soon(cb, self)

    def cancel(self, msg: object = None) -> bool:
        if self._state != "pending":
            return False
        self._state = "cancelled"
        cb = _CALLBACKS.get(id(self))
        if cb is not None:
            self._loop.call_soon(cb, self)
        return True

    def done(self) -> bool:
        return self._state != "pending"

    def cancelled(self) -> bool:
        return self._state == "cancelled"

    def result(self) -> Any:
        if self._state == "cancelled":
            raise asyncio.CancelledError()
        if self._state == "pending":
            raise asyncio.InvalidStateError("Result is not ready.")
        return self._result

    def exception(self) -> BaseException | None:
        self.result()
        return None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop


class Client:
    """One subscriber as the app sees it through granian: ``receive`` futures and a ``send``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.asked = 0
        self.disconnect: GranianLikeFuture | None = None
        self.streaming = asyncio.Event()
        self.fail_sends = False

    def receive(self) -> GranianLikeFuture:
        fut = GranianLikeFuture(self.loop)
        self.asked += 1
        if self.asked == 1:  # a GET's (empty) body comes at once
            fut.set_result({"type": "http.request", "body": b"", "more_body": False})
        else:  # then the disconnect, when the client leaves
            self.disconnect = fut
        return fut

    async def send(self, message: dict[str, Any]) -> None:
        if self.fail_sends:
            raise OSError("connection reset by peer")
        if message["type"] == "http.response.body":
            self.streaming.set()

    def leave(self) -> None:
        fut, self.disconnect = self.disconnect, None
        assert fut is not None
        fut.set_result({"type": "http.disconnect"})


SCOPE = {
    "type": "http",
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/events",
    "raw_path": b"/events",
    "query_string": b"uid=alice",
    "root_path": "",
    "headers": [(b"host", b"test")],
    "client": ("127.0.0.1", 40000),
    "server": ("127.0.0.1", 8080),
}


@contextlib.contextmanager
def collector_disabled() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def subscribe_and_end(ending: str) -> weakref.ref[asyncio.Task[None]]:
    loop = asyncio.get_running_loop()
    hub = Hub(heartbeat=60)
    app = SSEApp(hub)
    client = Client(loop)
    task = loop.create_task(app(dict(SCOPE), client.receive, client.send))  # type: ignore[arg-type]
    await asyncio.wait_for(client.streaming.wait(), 5)
    await turns()
    assert hub.connections == 1 and client.disconnect is not None
    if ending == "client_left":
        client.leave()
    elif ending == "hub_closed":
        await hub.close()
    else:  # the next write fails
        client.fail_sends = True
        await hub.push(Event("news", {"n": 1}))
    await asyncio.wait([task], timeout=5)
    assert task.done() and hub.connections == 0
    ref = weakref.ref(task)
    del task
    client.disconnect = None  # granian lets go of a future once it is resolved or cancelled
    await turns()
    await hub.close()
    return ref


@pytest.mark.parametrize("ending", ["client_left", "hub_closed", "write_failed"])
def test_a_finished_subscription_is_freed_without_the_cyclic_collector(ending: str) -> None:
    with collector_disabled():
        ref = asyncio.run(subscribe_and_end(ending))
        assert ref() is None, "the request's task outlived its subscription (a reference cycle holds it)"
    assert not _CALLBACKS


# ------------------------------------------------------------------ real granian


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` on the loop; whether it came true within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


async def churn_on_embedded_granian(subscribers: int) -> tuple[int, int]:
    """Subscribers come and go on a real granian; how many request tasks lived, how many still do."""
    embed = pytest.importorskip("granian.server.embed")
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels

    hub = Hub(heartbeat=60)
    app = SSEApp(hub)
    tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
        await app(scope, receive, send)

    port = free_port()
    server = embed.Server(
        recording,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=False,
        log_level=LogLevels.warning,
    )
    serving = asyncio.get_running_loop().create_task(server.serve())
    try:
        streams = []
        for i in range(subscribers):
            for _ in range(200):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    break
                except OSError:  # not listening yet
                    await asyncio.sleep(0.02)
            writer.write(f"GET /events?uid=u{i} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            streams.append(writer)
        assert await wait_for(lambda: hub.connections == subscribers, 5)
        lived = len(tasks)
        for writer in streams:
            writer.close()
        del streams, writer, reader
        assert await wait_for(lambda: hub.connections == 0, 10), "the hub kept gone clients"
        await wait_for(lambda: not tasks, 5)
        return lived, len(tasks)
    finally:
        server.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
        await hub.close()


def test_subscribers_that_left_a_real_granian_are_freed_without_the_cyclic_collector() -> None:
    with collector_disabled():
        lived, alive = asyncio.run(churn_on_embedded_granian(20))
    assert lived == 20
    assert alive == 0, f"{alive} of {lived} finished subscriptions are still in memory"
