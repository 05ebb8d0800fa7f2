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

import orjson

from .auth import HTTPError, UidResolver, check_push_token, query_uid
from .errors import InvalidEventError, SSEFastError
from .event import Event
from .hub import Hub, HubClosedError, HubFullError, Subscriber
from .metrics import render_metrics
from .request import Request

logger = logging.getLogger("sse_fast.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"Authorization, Content-Type, Last-Event-ID, Event-Type"),
    (b"access-control-max-age", b"600"),
]
MAX_PUSH_EVENTS = 10_000


class StreamSink:
    """The hub's handle on one streaming response.

    ``write`` only stores the bytes and wakes the request coroutine; the
    coroutine sends them.  ``close`` ends the stream; when the coroutine is
    stuck in a send (a client that stopped reading) it is cancelled, since
    nothing else would free it.
    """

    __slots__ = ("_task", "closed", "disconnected", "pending", "sending", "waiter")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
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
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        data, self.pending = self.pending, None
        return data


class SSEApp:
    """An ASGI application serving a hub.

    ``resolve_uid`` maps a request to a user id (default :func:`query_uid`;
    use :class:`~sse_fast.auth.JWTAuth` for tokens).  ``push_token``, when
    set, is required as ``Authorization: Bearer`` on ``/push``, ``/stats``
    and ``/metrics``.  ``cors_origins`` lists the origins allowed to
    subscribe and push from a browser (``"*"`` for any).  ``watch_disconnect``
    keeps one waiter per subscriber on ``receive()``: granian and uvicorn
    report a client's disconnect there at once, while their ``send`` to a
    closed connection returns quietly, so without it a gone client would be
    noticed only when its socket's buffer fills.
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
        self.resolve_uid = resolve_uid
        self.push_token = push_token
        self.cors_origins = frozenset(cors_origins)
        self.max_body = max_body
        self.watch_disconnect = watch_disconnect
        self.manage_hub = manage_hub
        self._routes: dict[tuple[str, str], Callable[[Request, Scope, Receive, Send], Awaitable[None]]] = {
            ("GET", "/events"): self._subscribe,
            ("POST", "/push"): self._push,
            ("GET", "/stats"): self._stats,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/healthz"): self._healthz,
        }
        self._start_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Future[None]] = set()

    def add_route(
        self, method: str, path: str, handler: Callable[[Request, Scope, Receive, Send], Awaitable[None]]
    ) -> None:
        """Answer ``method path`` with ``handler`` too: how optional parts (the dashboard) plug in."""
        self._routes[(method, path)] = handler

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
        cors = self._cors_headers(request)
        try:
            if request.method == "OPTIONS":
                await _respond(send, 204, b"", self._preflight_headers(request, cors))
                return
            route = self._routes.get((request.method, request.path))
            if route is None:
                if request.method == "HEAD" and (("GET", request.path) in self._routes):
                    raise HTTPError(405, "method: HEAD is not supported, use GET", [(b"allow", b"GET")])
                allowed = [m for (m, p) in self._routes if p == request.path]
                if allowed:
                    raise HTTPError(
                        405, f"method: {request.method} not allowed, use {allowed[0]}",
                        [(b"allow", ", ".join(allowed).encode())],
                    )
                raise HTTPError(404, f"path: no route for {request.path}")
            await self._ensure_started()
            await route(request, scope, receive, send)
        except HTTPError as exc:
            await _respond_json(send, exc.status, _error_body(exc.status, exc.reason), exc.headers + cors)

    def _cors_headers(self, request: Request) -> list[tuple[bytes, bytes]]:
        origin = request.header(b"origin")
        if not origin or not self.cors_origins:
            return []
        if origin in self.cors_origins:
            return [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-credentials", b"true"),
                (b"vary", b"Origin"),
            ]
        if "*" in self.cors_origins:
            return [(b"access-control-allow-origin", b"*")]
        return []

    def _preflight_headers(
        self, request: Request, cors: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        if not cors:
            return []
        return [*cors, *PREFLIGHT_HEADERS]

    # ------------------------------------------------------------ subscribe

    async def _subscribe(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        resolved = self.resolve_uid(request)
        uid = resolved if isinstance(resolved, str) else await resolved
        event_type = request.query("event_type") or request.header(b"event-type") or None
        last_event_id = request.header(b"last-event-id")
        if last_event_id is None:
            last_event_id = request.query("last_event_id")
        hub = self.hub
        sink = StreamSink(asyncio.current_task())
        try:
            sub = hub.subscribe(uid, sink, event_type=event_type, resume=last_event_id is not None)
        except HubFullError as exc:
            raise HTTPError(503, f"connections: {exc}", [(b"retry-after", b"5")]) from None
        except HubClosedError:
            raise HTTPError(503, "server: shutting down", [(b"retry-after", b"1")]) from None
        watcher = self._watch(scope, receive, sink)
        try:
            await self._stream(sub, sink, send, self._cors_headers(request), last_event_id)
        finally:
            if watcher is not None:
                watcher.cancel()
            hub.unsubscribe(sub)

    def _watch(self, scope: Scope, receive: Receive, sink: StreamSink) -> asyncio.Future[Any] | None:
        if not self.watch_disconnect:
            return None
        waiter = asyncio.ensure_future(_await_disconnect(receive))
        waiter.add_done_callback(lambda fut: None if fut.cancelled() else sink.lost())
        return waiter

    async def _stream(
        self,
        sub: Subscriber,
        sink: StreamSink,
        send: Send,
        cors: list[tuple[bytes, bytes]],
        last_event_id: str | None,
    ) -> None:
        hub = self.hub
        try:
            sink.sending = True
            await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS + cors})
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
        check_push_token(request, self.push_token)
        body = await self._read_body(request, receive)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, f"body: invalid JSON ({exc})") from None
        if not isinstance(payload, dict):
            raise HTTPError(400, "body: must be a JSON object")
        unknown = set(payload) - {"uids", "events"}
        if unknown:
            raise HTTPError(400, f"{sorted(unknown)[0]}: unknown field")
        raw_events = payload.get("events")
        if not isinstance(raw_events, list):
            raise HTTPError(400, "events: required, a list of events")
        if not raw_events:
            raise HTTPError(400, "events: must contain at least one event")
        if len(raw_events) > MAX_PUSH_EVENTS:
            raise HTTPError(400, f"events: at most {MAX_PUSH_EVENTS} per push")
        uids = payload.get("uids")
        if uids is not None and not isinstance(uids, list):
            raise HTTPError(400, "uids: must be a list of strings")
        try:
            events = [Event.from_json(obj, i) for i, obj in enumerate(raw_events)]
            ids = await self.hub.push(events, uids)
        except InvalidEventError as exc:
            raise HTTPError(400, str(exc)) from None
        except HubClosedError:
            raise HTTPError(503, "server: shutting down", [(b"retry-after", b"1")]) from None
        except SSEFastError as exc:
            raise HTTPError(400, str(exc)) from None
        await _respond_json(
            send, 200, {"code": 0, "msg": "ok", "data": {"ids": ids}}, self._cors_headers(request)
        )

    async def _read_body(self, request: Request, receive: Receive) -> bytes:
        declared = request.header(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise HTTPError(400, "content-length: not an integer") from None
            if size > self.max_body:
                raise HTTPError(413, f"body: larger than {self.max_body} bytes")
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "body: client disconnected before sending it")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body:
                raise HTTPError(413, f"body: larger than {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # ------------------------------------------------------------- figures

    async def _stats(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        check_push_token(request, self.push_token)
        await _respond_json(send, 200, self.hub.snapshot(), self._cors_headers(request))

    async def _metrics(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        check_push_token(request, self.push_token)
        await _respond(
            send,
            200,
            render_metrics(self.hub.snapshot()).encode(),
            [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
        )

    async def _healthz(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hub.closing:
            raise HTTPError(503, "server: shutting down")
        await _respond_json(send, 200, {"status": "ok", "connections": self.hub.connections}, [])


async def _await_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _error_body(status: int, reason: str) -> dict[str, Any]:
    return {"code": status, "msg": reason, "data": {}}


async def _respond_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    await _respond(send, status, orjson.dumps(body), [(b"content-type", b"application/json"), *headers])


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    with contextlib.suppress(Exception):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
