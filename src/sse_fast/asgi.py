"""The ASGI transport: subscribe, push, stats, metrics and health over HTTP.

:class:`SSEApp` serves a :class:`~sse_fast.hub.Hub` to any ASGI server
(granian is the default, uvicorn works) and can be mounted inside a
Starlette/FastAPI application.  Each subscriber's request owns one small
:class:`StreamSink`, through which the hub's writes reach the server as one
``http.response.body`` message each: under granian the sink calls granian's
compiled ``send`` inside the hub's call; under a server whose ``send`` is a
coroutine, the sink wakes the request coroutine, which sends.  Either way the
hub hears when the server has taken the bytes, and everything that piled up
meanwhile leaves in the next single send.

Routes (relative to the mount point) are those of :mod:`sse_fast.routes`:
``GET /events`` to subscribe, ``POST /push`` to publish, ``GET /stats``,
``/metrics``, ``/healthz``, ``/readyz`` and ``/openapi.json`` (the API's
description); :class:`~sse_fast.endpoints.Endpoints` says what each answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import types
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from typing import Any

from .access_log import AccessLog
from .auth import UidResolver, query_uid
from .config import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY
from .deadlines import BodyDeadlines
from .endpoints import Endpoints
from .errors import HTTPError
from .hub import Hub, Subscriber
from .operations import Operation
from .request import Request
from .responses import Response
from .routes import OPENAPI, PUSH, SUBSCRIBE, Route, RouteTable

logger = logging.getLogger("sse_fast.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[Request, Scope, Receive, Send], Awaitable[None]]

DIRECT_WRITE_PACE = 16e-6
"""Seconds granian's runtime takes per write handed to it, as measured on a
2-core machine (the sweep that chose it: benchmarks/RESULTS.md, "Write pace").
The hub spaces its fan-out slices by it (:meth:`Hub.transport_write_pace`)
so that writes do not queue up in front of the answers to publishers."""


class StreamSink:
    """The hub's handle on one streaming response.

    Two ways to carry the hub's writes to the server, chosen once the stream
    is live (:meth:`send_directly`):

    - **direct**, when the server's ``send`` is compiled (granian): ``write``
      calls ``send`` inside the hub's own call, as the native engine writes to
      its socket.  granian queues the bytes and answers with an awaitable that
      is already done unless the connection's queue is full, so a visit costs
      one call and no coroutine wakes up.  Only a full queue (a client that
      reads slowly) leaves a send in flight; its completion makes the
      subscriber ready again.
    - **through the request coroutine** otherwise (uvicorn, a mounting
      framework's wrapped ``send``): ``write`` stores the bytes and wakes the
      coroutine, which sends them, since such a ``send`` is a coroutine that
      must run in the request's task.

    ``close`` ends the stream; a send stuck on a client that stopped reading
    is cancelled (in the coroutine's case by cancelling the task, since
    nothing else would free it), and such a stream ends without its last
    chunk.
    """

    __slots__ = (
        "_in_flight",
        "_loop",
        "_on_failed",
        "_on_sent",
        "_send",
        "_task",
        "_waiting",
        "abandoned",
        "closed",
        "disconnected",
        "pending",
        "sending",
        "waiter",
    )

    def __init__(self, task: asyncio.Task[Any] | None, loop: asyncio.AbstractEventLoop) -> None:
        # The loop is kept: asking for the running loop at every wait costs a
        # getpid() system call on Python 3.11, once per subscriber per push.
        self._loop = loop
        self.pending: bytes | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.disconnected = False
        self.abandoned = False
        self.sending = False
        self._task = task
        self._send: Send | None = None
        self._on_sent: Callable[[], object] | None = None
        self._on_failed: Callable[[BaseException], object] | None = None
        self._in_flight: Iterator[Any] | None = None
        self._waiting: asyncio.Future[Any] | None = None

    def write(self, data: bytes) -> None:
        if self._send is not None:  # direct
            if self.closed:
                return
            if self._in_flight is None:
                self._send_now(data)
            else:  # leaves with the next send, once the one in flight completes
                self._hold(data)
            return
        self._hold(data)
        self._wake()

    def _hold(self, data: bytes) -> None:
        if self.pending is None:
            self.pending = data
        else:
            self.pending += data

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        waiting = self._waiting
        if waiting is not None:  # a direct send stuck on a client that stopped reading
            self.abandoned = True
            self._in_flight = self._waiting = None
            # granian's future would keep the callback, out of the collector's sight
            waiting.remove_done_callback(self._resume)
            waiting.cancel()
        elif self.sending and self._task is not None:
            self._task.cancel()
        self._wake()

    def detach(self) -> None:
        """The stream is over: let go of the request's task and of the server's ``send``.

        A task the hub cancelled keeps its CancelledError, whose traceback
        holds the request's frames, which hold this sink: task -> error ->
        frame -> sink -> task would wait for the cyclic collector.
        """
        self._task = None
        self._send = self._on_sent = self._on_failed = None

    def lost(self) -> None:
        """The server told us the client went away."""
        self.disconnected = True
        self.close()

    # ------------------------------------------------------------ direct

    @staticmethod
    def can_send_directly(send: Send) -> bool:
        """Whether ``send`` may be called outside the request's task: a compiled one (granian's).

        A ``send`` written in Python (uvicorn's, or a framework's wrapper
        around the server's) is or wraps a coroutine that may rely on running
        in the request's task.
        """
        return isinstance(send, types.BuiltinFunctionType)

    def send_directly(
        self, send: Send, on_sent: Callable[[], object], on_failed: Callable[[BaseException], object]
    ) -> None:
        """From now on ``write`` calls ``send`` itself; ``on_sent`` follows each completed send."""
        self._send, self._on_sent, self._on_failed = send, on_sent, on_failed
        data, self.pending = self.pending, None
        if data:
            self._send_now(data)
        elif not self.closed:
            on_sent()

    async def wait_closed(self) -> None:
        """Wait, in the request's task, until the hub or the client ends a direct stream."""
        while not self.closed:
            self.waiter = self._loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def _send_now(self, data: bytes) -> None:
        send = self._send
        assert send is not None
        try:
            step = send({"type": "http.response.body", "body": data, "more_body": True}).__await__()
            self._step(step)
        except Exception as exc:  # the server could not write: the client is gone
            self._failed(exc)

    def _step(self, step: Iterator[Any]) -> None:
        """Drive the send's awaitable as a task would: done at once, or wait on the future it yields."""
        try:
            waiting = next(step)
        except StopIteration:
            self._in_flight = self._waiting = None
            self._sent()
            return
        self._in_flight, self._waiting = step, waiting
        waiting.add_done_callback(self._resume)

    def _resume(self, _future: object) -> None:
        step = self._in_flight
        if step is None:  # closed meanwhile: the send was abandoned
            return
        try:
            self._step(step)
        except (Exception, asyncio.CancelledError) as exc:
            self._in_flight = self._waiting = None
            self._failed(exc)

    def _sent(self) -> None:
        data, self.pending = self.pending, None
        if data and not self.closed:  # written while the send was in flight (a goodbye, a reset)
            self._send_now(data)
        elif self._on_sent is not None and not self.closed:
            self._on_sent()

    def _failed(self, exc: BaseException) -> None:
        if self._on_failed is not None and not self.closed:
            self._on_failed(exc)
        self.close()

    # --------------------------------------------------------- coroutine

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
    """An ASGI application serving a hub (see :class:`~sse_fast.endpoints.Endpoints` for the options).

    ``watch_disconnect`` keeps one waiter per subscriber on ``receive()``:
    granian and uvicorn report a client's disconnect there at once, while
    their ``send`` to a closed connection returns quietly, so without it a
    gone client would be noticed only when its socket's buffer fills.
    ``manage_hub`` lets the app start the hub (at lifespan startup or on the
    first request) and close it at shutdown; turn it off when the enclosing
    application owns the hub's life.  ``body_timeout`` is how long a
    request body may take to arrive in full (408 past it).  ``access_log``
    writes a line per push, request and subscription (:mod:`sse_fast.access_log`).
    """

    def __init__(
        self,
        hub: Hub,
        *,
        resolve_uid: UidResolver = query_uid,
        push_token: str | None = None,
        cors_origins: Sequence[str] = (),
        max_body: int = DEFAULT_MAX_BODY,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        watch_disconnect: bool = True,
        manage_hub: bool = True,
        access_log: AccessLog | None = None,
    ) -> None:
        self.hub = hub
        self._body_deadlines = BodyDeadlines(body_timeout)
        self.endpoints = Endpoints(
            hub,
            resolve_uid=resolve_uid,
            push_token=push_token,
            cors_origins=cors_origins,
            max_body=max_body,
            access_log=access_log,
        )
        self.watch_disconnect = watch_disconnect
        self.manage_hub = manage_hub
        self.route_table = RouteTable()
        endpoints = self.endpoints
        self._handlers: dict[str, Handler] = {
            SUBSCRIBE: self._subscribe,
            PUSH: self._push,
            "stats": self._answer(endpoints.stats),
            "metrics": self._answer(endpoints.metrics),
            "healthz": self._answer(endpoints.healthz),
            "readyz": self._answer(endpoints.readyz),
            OPENAPI: self._answer(self._describe),
        }
        self._start_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Future[None]] = set()

    def add_route(self, method: str, path: str, handler: Handler, operation: Operation) -> None:
        """Answer ``method path`` with ``handler`` too: how optional parts (the dashboard) plug in.

        ``operation`` says what the route takes and answers, for ``GET /openapi.json``.
        """
        route = Route(method, path, f"{method} {path}", operation)
        self.route_table.add(route)
        self._handlers[route.name] = handler

    def _describe(self, request: Request) -> Response:
        return self.endpoints.openapi(request, self.route_table)

    @property
    def resolve_uid(self) -> UidResolver:
        return self.endpoints.resolve_uid

    @property
    def push_token(self) -> str | None:
        return self.endpoints.push_token

    @property
    def cors_origins(self) -> frozenset[str]:
        return self.endpoints.cors_origins

    @property
    def max_body(self) -> int:
        return self.endpoints.max_body

    @property
    def body_timeout(self) -> float:
        return self._body_deadlines.timeout

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
                if self.endpoints.access_log is not None:
                    self.endpoints.access_log.close()  # the last lines (the subscriptions' closes) written
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
        access_log = self.endpoints.access_log
        if access_log is None:
            await self._dispatch(request, scope, receive, send)
        else:
            await self._dispatch_logged(access_log, request, scope, receive, send)

    async def _dispatch(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if request.method == "OPTIONS":
                await send_response(send, self.endpoints.preflight(request))
                return
            route = self.route_table.match(request.method, request.path)
            await self._ensure_started()
            await self._handlers[route.name](request, scope, receive, send)
        except HTTPError as exc:
            if request.log is not None:
                request.log.status = exc.status  # a subscription's send is not watched
            await send_response(send, self.endpoints.error(request, exc))
        except Exception:  # a fault of ours: still the JSON error format, as a 5xx
            logger.exception("%s %s failed", request.method, request.path)
            if request.log is not None:
                request.log.status = 500
            await send_response(send, self.endpoints.error(request, HTTPError(500, "server: internal error")))

    async def _dispatch_logged(
        self, access_log: AccessLog, request: Request, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """:meth:`_dispatch`, with the request's line in the access log once it is answered.

        The status is read off ``send``; a subscription's ``send`` is left as
        the server gave it (granian's compiled one is called directly by the
        fan-out), its refusals' statuses noted by :meth:`_dispatch` and its
        lines written when it opens and closes.
        """
        log = access_log.begin(request, scope.get("client"))
        route = self.route_table.find(request.method, request.path)
        server_send = send
        if route is None or route.name != SUBSCRIBE:

            async def noting_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    log.status = message["status"]
                await server_send(message)

            send = noting_status
        try:
            await self._dispatch(request, scope, receive, send)
        finally:
            access_log.request_done(request, log.status)

    @staticmethod
    def _answer(
        handler: Callable[[Request], Response],
    ) -> Callable[[Request, Scope, Receive, Send], Awaitable[None]]:
        async def route(request: Request, scope: Scope, receive: Receive, send: Send) -> None:
            await send_response(send, handler(request))

        return route

    # ------------------------------------------------------------ subscribe

    async def _subscribe(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        wanted = await self.endpoints.subscription(request)
        hub = self.hub
        sink = StreamSink(asyncio.current_task(), asyncio.get_running_loop())
        sub = self.endpoints.open_subscription(wanted, sink)
        watcher = self._watch(receive, sink)
        try:
            await self._stream(sub, sink, send, self.endpoints.stream_headers(request), wanted.last_event_id)
        finally:
            if watcher is not None:
                watcher.cancel()
            hub.unsubscribe(sub)
            sink.detach()

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
            if StreamSink.can_send_directly(send):
                hub.transport_write_pace(DIRECT_WRITE_PACE)
                on_sent, on_failed = (
                    functools.partial(hub.ready, sub),
                    functools.partial(hub.write_failed, sub),
                )
                sink.send_directly(send, on_sent, on_failed)
                await sink.wait_closed()
                if not (sink.disconnected or sink.abandoned):
                    with contextlib.suppress(Exception):  # the client may be gone meanwhile
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
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
            # The hub cancelled a send stuck on a client that stopped reading.
            # Python 3.11+ counts cancellations; take ours back so that
            # nothing later in this task (a timeout, a task group) sees it.
            task = asyncio.current_task()
            uncancel = getattr(task, "uncancel", None)  # absent on Python 3.10
            if uncancel is not None:
                uncancel()
        except Exception as exc:  # the server could not write: the client is gone
            hub.write_failed(sub, exc)

    # ----------------------------------------------------------------- push

    async def _push(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        self.endpoints.check_push(request)
        body = await self._read_body(receive)
        await send_response(send, await self.endpoints.push(request, body))

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole request body, within ``--max-body`` bytes and ``--body-timeout`` seconds.

        The deadline is fixed when the app starts reading (the request head has
        just ended) and covers the whole body (:mod:`sse_fast.deadlines`).
        """
        chunks: list[bytes] = []
        total = 0
        limit = self.endpoints.max_body
        deadlines = self._body_deadlines
        deadline = deadlines.start()
        while True:
            message = await deadlines.receive(receive, deadline)
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "body: client disconnected before sending it")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise self.endpoints.body_too_large()
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
    headers = [*response.headers, (b"content-length", b"%d" % len(response.body))]
    try:
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body, "more_body": False})
    except Exception:  # the client may be gone: nothing to tell it
        pass
