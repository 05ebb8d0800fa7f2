"""The ASGI transport: subscribe, push, stats, metrics and health over HTTP.

:class:`SSEApp` serves a :class:`~sse_fast.hub.Hub` to any ASGI server
(granian is the default, uvicorn works) and can be mounted inside a
Starlette/FastAPI application.  Each subscriber's request coroutine owns one
small :class:`StreamSink`: the hub writes bytes into it without blocking, the
coroutine wakes, sends them with one ``http.response.body`` message and tells
the hub it is ready for more.  Everything that piled up meanwhile leaves in the
next single send.

Routes (relative to the mount point):

- ``GET /events`` — subscribe (``?uid=`` or a JWT, ``event_type``,
  ``Last-Event-ID`` header or ``?last_event_id=``).
- ``POST /push`` — ``{"uids": [...], "events": [{"id"?, "event", "data"}]}``.
- ``GET /stats`` (JSON), ``GET /metrics`` (Prometheus), ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from .auth import HTTPError, UidResolver, query_uid
from .hub import Hub, Subscriber
from .request import Request
from .routes import Response, Routes

logger = logging.getLogger("sse_fast.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class StreamSink:
    """The hub's handle on one streaming response.

    ``write`` only stores the bytes and wakes the request coroutine; the
    coroutine sends them.  ``close`` ends the stream; when the coroutine is
    stuck in a send (a client that stopped reading) it is cancelled, since
    nothing else would free it.
    """

    __slots__ = ("_loop", "_task", "closed", "disconnected", "pending", "sending", "waiter")

    def __init__(self, task: asyncio.Task[Any] | None, loop: asyncio.AbstractEventLoop) -> None:
        # The loop is kept: asking for the running loop at every wait costs a
        # getpid() system call on Python 3.11, once per subscriber per push.
        self._loop = loop
        self.pending: bytes | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.disconnected = False
        self.sending = False
        self._task = task

    def write(self, data: bytes) -> None:
        if self.pending is None:
            self.pending = data
        else:
            self.pending += data
        self._wake()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.sending and self._task is not None:
            self._task.cancel()
        self._wake()

    def lost(self) -> None:
        """The server told us the client went away."""
        self.disconnected = True
        self.close()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_chunk(self) -> bytes | None:
        """What to send next, or ``None`` once the stream is closed and drained."""
        while self.pending is None:
            if self.closed:
                return None
            self.waiter = self._loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        data, self.pending = self.pending, None
        return data


class SSEApp:
    """An ASGI application serving a hub (see :class:`~sse_fast.routes.Routes` for the options).

    ``watch_disconnect`` keeps one waiter per subscriber on ``receive()``:
    granian and uvicorn report a client's disconnect there at once, while
    their ``send`` to a closed connection returns quietly, so without it a
    gone client would be noticed only when its socket's buffer fills.
    ``manage_hub`` lets the app start the hub (at lifespan startup or on the
    first request) and close it at shutdown; turn it off when the enclosing
    application owns the hub's life.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        resolve_uid: UidResolver = query_uid,
        push_token: str | None = None,
        cors_origins: Sequence[str] = (),
        max_body: int = 1024 * 1024,
        watch_disconnect: bool = True,
        manage_hub: bool = True,
    ) -> None:
        self.hub = hub
        self.routes = Routes(
            hub, resolve_uid=resolve_uid, push_token=push_token, cors_origins=cors_origins, max_body=max_body
        )
        self.watch_disconnect = watch_disconnect
        self.manage_hub = manage_hub
        self._routes: dict[tuple[str, str], Callable[[Request, Scope, Receive, Send], Awaitable[None]]] = {
            ("GET", "/events"): self._subscribe,
            ("POST", "/push"): self._push,
            ("GET", "/stats"): self._answer(self.routes.stats),
            ("GET", "/metrics"): self._answer(self.routes.metrics),
            ("GET", "/healthz"): self._answer(self.routes.healthz),
        }
        self._start_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Future[None]] = set()

    def add_route(
        self, method: str, path: str, handler: Callable[[Request, Scope, Receive, Send], Awaitable[None]]
    ) -> None:
        """Answer ``method path`` with ``handler`` too: how optional parts (the dashboard) plug in."""
        self._routes[(method, path)] = handler

    @property
    def resolve_uid(self) -> UidResolver:
        return self.routes.resolve_uid

    @property
    def push_token(self) -> str | None:
        return self.routes.push_token

    @property
    def cors_origins(self) -> frozenset[str]:
        return self.routes.cors_origins

    @property
    def max_body(self) -> int:
        return self.routes.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websocket: not ours
            await send({"type": "websocket.close", "code": 1000})

    # ----------------------------------------------------------- lifecycle

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._ensure_started()
                except Exception as exc:
                    logger.exception("hub failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.manage_hub:
                    await self.hub.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def begin_shutdown(self, then: Callable[[], object] | None = None) -> None:
        """Say goodbye to every subscriber and refuse new work; call ``then`` when done."""

        async def close() -> None:
            try:
                if self.manage_hub:
                    await self.hub.close()
            except Exception:
                logger.exception("hub shutdown failed")
            finally:
                if then is not None:
                    then()

        task = asyncio.ensure_future(close())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _ensure_started(self) -> None:
        """Start the hub once, also when mounted where lifespan events do not arrive."""
        if self.hub.started or not self.manage_hub:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self.hub.started:
                await self.hub.start()

    # -------------------------------------------------------------- routing

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request.from_scope(scope)
        try:
            if request.method == "OPTIONS":
                await send_response(send, self.routes.preflight(request))
                return
            self.routes.check_route(request, self._routes)
            await self._ensure_started()
            await self._routes[(request.method, request.path)](request, scope, receive, send)
        except HTTPError as exc:
            await send_response(send, self.routes.error(request, exc))

    @staticmethod
    def _answer(
        handler: Callable[[Request], Response],
    ) -> Callable[[Request, Scope, Receive, Send], Awaitable[None]]:
        async def route(request: Request, scope: Scope, receive: Receive, send: Send) -> None:
            await send_response(send, handler(request))

        return route

    # ------------------------------------------------------------ subscribe

    async def _subscribe(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        wanted = await self.routes.subscription(request)
        hub = self.hub
        sink = StreamSink(asyncio.current_task(), asyncio.get_running_loop())
        sub = self.routes.open_subscription(wanted, sink)
        watcher = self._watch(receive, sink)
        try:
            await self._stream(sub, sink, send, self.routes.stream_headers(request), wanted.last_event_id)
        finally:
            if watcher is not None:
                watcher.cancel()
            hub.unsubscribe(sub)

    def _watch(self, receive: Receive, sink: StreamSink) -> DisconnectWatch | None:
        if not self.watch_disconnect:
            return None
        return DisconnectWatch(receive, sink)

    async def _stream(
        self,
        sub: Subscriber,
        sink: StreamSink,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        last_event_id: str | None,
    ) -> None:
        hub = self.hub
        try:
            sink.sending = True
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            first = sink.pending
            sink.pending = None
            if first:
                await send({"type": "http.response.body", "body": first, "more_body": True})
            if last_event_id is not None:
                async for chunk in hub.replay(sub, last_event_id):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sink.sending = False
            hub.ready(sub)
            while True:
                data = await sink.next_chunk()
                if data is None:
                    break
                sink.sending = True
                await send({"type": "http.response.body", "body": data, "more_body": True})
                sink.sending = False
                hub.ready(sub)
            if not sink.disconnected:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not sink.closed:
                raise  # the server is cancelling us, not the hub
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception as exc:  # the server could not write: the client is gone
            hub.write_failed(sub, exc)

    # ----------------------------------------------------------------- push

    async def _push(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        self.routes.check_push(request)
        body = await self._read_body(receive)
        await send_response(send, await self.routes.push(request, body))

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        total = 0
        limit = self.routes.max_body
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "body: client disconnected before sending it")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise self.routes.body_too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class DisconnectWatch:
    """Closes a sink when the server reports, through ``receive()``, that the client left.

    granian and uvicorn report a disconnect only there (a ``send`` to a closed
    connection returns quietly).  granian's ``receive()`` returns a future,
    so a done-callback watches it without a task of its own; with other
    servers ``receive()`` is a coroutine, awaited in one small task.
    """

    __slots__ = ("_pending", "_receive", "_sink")

    def __init__(self, receive: Receive, sink: StreamSink) -> None:
        self._receive = receive
        self._sink = sink
        self._pending: asyncio.Future[Any] | None = None
        self._arm()

    def _arm(self) -> None:
        awaitable: Any = self._receive()
        if asyncio.isfuture(awaitable):
            self._pending = awaitable
        else:
            self._pending = asyncio.ensure_future(awaitable)
        self._pending.add_done_callback(self._on_message)

    def _on_message(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or self._sink.closed:
            return
        if fut.exception() is not None or fut.result().get("type") == "http.disconnect":
            self._sink.lost()
        else:  # the request's (empty) body: the next message is the disconnect
            self._arm()

    def cancel(self) -> None:
        """Stop watching, and let go of the future and its callback.

        granian's future keeps its done-callback (our bound ``_on_message``)
        for as long as the future lives, done or not, and does not show that
        reference to the cyclic collector: watch -> future -> callback ->
        watch would keep the sink, the request's task and granian's protocol
        object alive for ever, ~2 KiB per finished subscription.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.remove_done_callback(self._on_message)
            pending.cancel()


async def send_response(send: Send, response: Response) -> None:
    """Send a complete response; a client that already left gets nothing, quietly."""
    headers = [*response.headers, (b"content-length", str(len(response.body)).encode())]
    with contextlib.suppress(Exception):  # the client may be gone: nothing to tell it
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body, "more_body": False})
