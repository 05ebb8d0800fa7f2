"""One client connection of the native engine: HTTP/1.1 parsing, limits, keep-alive, dispatch.

Requests are parsed by httptools (llhttp), never by hand.  ``GET /events``
becomes a subscription whose bytes the hub writes straight into this
connection's transport (:mod:`.stream`); ``POST /push`` is answered here too
(:mod:`.push`); every other request is one :class:`~.asgi_bridge.ASGICycle`
through the ASGI app.  Pipelined requests are answered in order, one at a
time: the next one starts when the previous response is complete, and
reading pauses while requests wait.  Answers written while one read is
parsed leave in one write: a publisher pipelining pushes gets them in one
segment, not one system call each.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol

import httptools

from ...asgi import SSEApp
from ...deadlines import body_timed_out
from ...errors import HTTPError
from ...request import Request, decode_path
from ...responses import Response
from ...routes import PUSH, SUBSCRIBE
from .asgi_bridge import ASGICycle, http_scope
from .date_header import date_header
from .limits import Limits
from .push import PushRequest, Suspended, run_now
from .stream import NativeSink
from .wire import CONTINUE, encode_head

logger = logging.getLogger("sse_fast.native")


class HeadTooLarge(Exception):
    """The request line and headers passed the engine's limits (answered 431)."""


class SubscribeRequest:
    """A ``GET /events`` waiting for its turn (HTTP/1.0 clients get a close-delimited stream).

    ``keep_alive`` matters only when it is refused: the error answer may
    leave the connection open for the next request.
    """

    __slots__ = ("chunked", "keep_alive", "request")

    def __init__(self, request: Request, chunked: bool, keep_alive: bool) -> None:
        self.request = request
        self.chunked = chunked
        self.keep_alive = keep_alive


Item = ASGICycle | SubscribeRequest | PushRequest
"""A request of a connection, from its head until its response is complete."""


class ConnectionHost(Protocol):
    """What a connection needs of the server that accepted it (the native server is one).

    The app (its route table, endpoints and hub), the limits, the loop and the
    lifespan state; and the calls by which a connection reports where it is,
    so that the server can time it out and stop it.
    """

    app: SSEApp
    limits: Limits
    stopping: bool
    state: dict[str, Any] | None

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def connected(self, conn: HTTPConnection) -> None: ...

    def disconnected(self, conn: HTTPConnection) -> None: ...

    def wait_for_head(self, conn: HTTPConnection) -> None: ...

    def head_received(self, conn: HTTPConnection) -> None: ...

    def wait_for_request(self, conn: HTTPConnection) -> None: ...

    def wait_for_body(self, conn: HTTPConnection) -> None: ...

    def body_received(self, conn: HTTPConnection) -> None: ...

    def streaming(self, conn: HTTPConnection) -> None: ...

    def keep(self, task: asyncio.Task[Any]) -> None: ...


class HTTPConnection(asyncio.Protocol):
    """An ``asyncio.Protocol`` serving one client (see the module docstring)."""

    __slots__ = (
        "_corked",
        "_drain",
        "_expect_continue",
        "_head_bytes",
        "_headers",
        "_in_head",
        "_raw_head",
        "_reading",
        "_url",
        "active",
        "cycle",
        "parser",
        "queue",
        "server",
        "sink",
        "transport",
        "write_paused",
    )

    def __init__(self, server: ConnectionHost) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.sink: NativeSink | None = None
        self.cycle: Item | None = None
        self.active: Item | None = None
        self.queue: deque[Item] | None = None  # pipelined requests, rarely any
        self._corked: list[bytes] | None = None  # answers written while a read is parsed
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._expect_continue = False  # the head asked for "100 Continue"
        self._head_bytes = 0
        self._raw_head = 0
        self._in_head = True
        self._reading = True

    # ------------------------------------------------------------ transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connected(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.parser = None
        sink = self.sink
        if sink is not None:
            sink.lost()
        for cycle in (self.active, self.cycle, *(self.queue or ())):
            if isinstance(cycle, ASGICycle):
                cycle.lost()
        self.queue = None
        self._wake_drain()
        self.server.disconnected(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.sink is not None:
            self.sink.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()
        if self.sink is not None:
            self.sink.resume()

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:
            return  # a subscriber, or a connection being closed: what it sends does not matter
        if self._in_head:
            self._raw_head += len(data)
        self._corked = []
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_parsing()  # no protocol switch here: answer the request, then close
        except httptools.HttpParserError as exc:
            if self.parser is None:
                return  # answered and closing: the rest of this read does not matter
            if isinstance(exc.__context__, HeadTooLarge):
                self.reject(431, str(exc.__context__))
            else:
                self.reject(400, f"request: malformed HTTP ({exc})")
            return
        finally:
            self._uncork()
        if self._in_head and self._raw_head > self.server.limits.max_head:
            self.reject(431, f"headers: larger than {self.server.limits.max_head} bytes")

    def _write(self, data: bytes) -> None:
        """Write an answer: now, or with the others of this read (see the module docstring)."""
        corked = self._corked
        if corked is not None:
            corked.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def _uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked and self.transport is not None:
            self.transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

    # ------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self.parser is None:
            return  # a pipelined request after an answer that closes the connection
        self._url = b""
        self._headers = []
        self._expect_continue = False
        self._head_bytes = 0
        self._in_head = True
        self.server.wait_for_head(self)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._headers.append((name, value))
        if name == b"expect":
            self._expect_continue = value.lower() == b"100-continue"
        self._count_head(len(name) + len(value) + 4)
        if len(self._headers) > self.server.limits.max_headers:
            raise HeadTooLarge(f"headers: more than {self.server.limits.max_headers}")

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.server.limits.max_head:
            raise HeadTooLarge(f"headers: larger than {self.server.limits.max_head} bytes")

    def on_headers_complete(self) -> None:
        parser = self.parser
        transport = self.transport
        if parser is None or transport is None:
            return  # closing (see on_message_begin)
        self._in_head = False
        self._raw_head = 0
        self.server.head_received(self)
        method = parser.get_method().decode("ascii", "replace")
        raw_path, query = _split_target(self._url)
        headers = self._headers
        keep_alive = parser.should_keep_alive() and not self.server.stopping
        if parser.should_upgrade():
            keep_alive = False
        version = parser.get_http_version()
        item: Item
        path = decode_path(raw_path)
        route = self.server.app.route_table.find(method, path)
        name = None if route is None else route.name
        if name == SUBSCRIBE:  # streamed here, without the ASGI bridge
            item = SubscribeRequest(Request(method, path, query, headers), version == "1.1", keep_alive)
        else:
            expect = self._expect_continue
            if name == PUSH:  # answered here too
                item = PushRequest(
                    Request(method, path, query, headers), version == "1.1", keep_alive, expect
                )
            else:
                scope = http_scope(method, raw_path, query, headers, version, transport, self.server.state)
                item = ASGICycle(self, scope, keep_alive, expect)
        self.cycle = item
        if self.active is None:
            self._start(item)
        else:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(item)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if isinstance(cycle, PushRequest):
            cycle.feed(body, self.server.app.endpoints.max_body)
            if cycle.too_large and self.active is cycle:
                self._answer_push_error(cycle, self.server.app.endpoints.body_too_large())
        elif isinstance(cycle, ASGICycle):
            cycle.feed_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        self.cycle = None
        if isinstance(cycle, PushRequest):
            cycle.complete = True
            if self.active is cycle:
                self._run_push(cycle)
        elif isinstance(cycle, ASGICycle):
            cycle.end_body()

    # ------------------------------------------------------------- dispatch

    def _start(self, item: Item) -> None:
        self.active = item
        loop = self.server.loop
        if isinstance(item, ASGICycle):
            item.task = loop.create_task(item.run(self.server.app))
        elif isinstance(item, PushRequest):
            self._begin_push(item)
        else:
            self.server.keep(loop.create_task(self._subscribe(item)))

    def response_done(self, cycle: ASGICycle) -> None:
        """A response is complete: go on with the next request, wait for one, or close."""
        if self.active is cycle:
            self.active = None
        transport = self.transport
        if transport is None:
            return
        if not cycle.keep_alive or not cycle.body_complete or self.server.stopping:
            self._stop_parsing()
            transport.close()
            return
        self._next_request()

    def _next_request(self) -> None:
        """Start the next pipelined request, read on, and time the wait for one if idle."""
        if self.queue:
            self._start(self.queue.popleft())
        if not self.queue:
            self.resume_reading()
        if self.active is None and self.cycle is None:
            self.server.wait_for_request(self)

    async def _subscribe(self, item: SubscribeRequest) -> None:
        """``GET /events`` without a coroutine per subscriber: subscribe, hand the hub a sink, return."""
        app = self.server.app
        endpoints = app.endpoints
        hub = app.hub
        request = item.request
        chunked = item.chunked
        access_log = endpoints.access_log
        if access_log is not None and self.transport is not None:
            access_log.begin(request, self.transport.get_extra_info("peername"))
        try:
            wanted = await endpoints.subscription(request)
            transport = self.transport
            if transport is None:
                return
            headers = endpoints.stream_headers(request)
            headers = [*headers, (b"transfer-encoding", b"chunked")] if chunked else list(headers)
            headers.append((b"connection", b"close"))
            sink = NativeSink(hub, transport, encode_head(200, headers, date_header()), chunked)
            sub = endpoints.open_subscription(wanted, sink)
        except HTTPError as exc:
            self._answer(item, endpoints.refuse(request, exc))
            return
        except Exception:
            logger.exception("subscribe failed")
            self._answer(item, endpoints.refuse(request, HTTPError(500, "server: internal error")))
            return
        # The connection now carries the stream only: drop what parsing needs.
        self.sink = sink
        self._stop_parsing()
        self.active = None
        self.queue = None
        self._headers = []
        self._url = b""
        self.server.streaming(self)
        if self.write_paused:
            sink.pause()
        if self.transport is None:  # gone while subscribing
            sink.lost()
            hub.unsubscribe(sub)
            return
        if wanted.last_event_id is not None:
            await sink.replay(sub, wanted.last_event_id)
        else:
            sink.start(sub)

    # ----------------------------------------------------------------- push

    def _begin_push(self, item: PushRequest) -> None:
        """A push's turn: what can be refused before the body (token, declared size), then its body."""
        endpoints = self.server.app.endpoints
        if endpoints.access_log is not None and self.transport is not None:
            endpoints.access_log.begin(item.request, self.transport.get_extra_info("peername"))
        try:
            endpoints.check_push(item.request)
        except HTTPError as exc:
            self._answer_push_error(item, exc)
            return
        if item.too_large:
            self._answer_push_error(item, endpoints.body_too_large())
        elif item.complete:
            self._run_push(item)
        else:
            if item.expect_continue:
                self._write(CONTINUE)
            self.server.wait_for_body(self)

    def _run_push(self, item: PushRequest) -> None:
        """The whole body is here: push it and answer, in place unless the push has to wait."""
        self.server.body_received(self)
        endpoints = self.server.app.endpoints
        try:
            response = run_now(endpoints.push(item.request, item.take_body()))
        except Suspended as suspended:
            suspended.task.add_done_callback(lambda task: self._pushed(item, task))
            self.server.keep(suspended.task)
            return
        except HTTPError as exc:
            self._answer_push_error(item, exc)
            return
        except Exception:
            logger.exception("POST /push failed")
            self._answer_push_error(item, HTTPError(500, "server: internal error"))
            return
        self._answer(item, response)

    def _pushed(self, item: PushRequest, task: asyncio.Task[Response]) -> None:
        """A push that had to wait is done: answer it (if the client is still there)."""
        if task.cancelled():
            self._answer_push_error(item, HTTPError(503, "server: shutting down", [(b"retry-after", b"1")]))
            return
        exc = task.exception()
        if exc is None:
            self._answer(item, task.result())
        elif isinstance(exc, HTTPError):
            self._answer_push_error(item, exc)
        else:
            logger.error("POST /push failed", exc_info=exc)
            self._answer_push_error(item, HTTPError(500, "server: internal error"))

    def _answer_push_error(self, item: PushRequest, exc: HTTPError) -> None:
        self.server.body_received(self)
        self._answer(item, self.server.app.endpoints.error(item.request, exc))

    def body_timed_out(self) -> None:
        """The push's body did not arrive within ``--body-timeout``: 408, then close."""
        item = self.active
        if isinstance(item, PushRequest) and not item.complete:
            self._answer_push_error(item, body_timed_out(self.server.app.body_timeout))

    # ------------------------------------------------------------- answers

    def _answer(self, item: SubscribeRequest | PushRequest, response: Response) -> None:
        """A complete response (to a push, or a refused subscribe), then the next request or a close."""
        transport = self.transport
        if self.active is not item:
            return  # answered already (a body cut short, then its push's end)
        self.active = None
        self.server.app.endpoints.request_done(item.request, response.status)  # the access log's line
        if transport is None:
            return
        keep_alive = item.keep_alive and self.cycle is not item and not self.server.stopping
        headers = [*response.headers, (b"content-length", str(len(response.body)).encode())]
        if not keep_alive:
            headers.append((b"connection", b"close"))
        elif not item.chunked:  # HTTP/1.0 keeps the connection only when told so
            headers.append((b"connection", b"keep-alive"))
        self._write(encode_head(response.status, headers, date_header()) + response.body)
        if not keep_alive:
            self._stop_parsing()
            self._uncork()
            transport.close()
            return
        self._next_request()

    # ---------------------------------------------------------------- helpers

    def reject(self, status: int, reason: str) -> None:
        """Answer a request the engine refuses before the app sees it, and close."""
        transport = self.transport
        self._stop_parsing()
        self._uncork()
        if transport is None:
            return
        if self.active is None:
            empty = Request("GET", "/", b"", self._headers)
            response = self.server.app.endpoints.error(empty, HTTPError(status, reason))
            headers = [
                *response.headers,
                (b"content-length", str(len(response.body)).encode()),
                (b"connection", b"close"),
            ]
            transport.write(encode_head(status, headers, date_header()) + response.body)
        transport.close()

    def close_idle(self) -> None:
        """Timed out waiting for a request, or the server is stopping: hang up."""
        self._stop_parsing()
        if self.transport is not None:
            self.transport.close()

    def stop_keep_alive(self) -> None:
        """The server is stopping: close now if nothing is in flight (else after the response)."""
        if self.sink is None and self.active is None:
            self.close_idle()

    def _stop_parsing(self) -> None:
        self.parser = None
        self.cycle = None
        self._in_head = False
        self.server.head_received(self)

    def pause_reading(self) -> None:
        if self._reading and self.transport is not None:
            self._reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading and self.transport is not None:
            self._reading = True
            self.transport.resume_reading()

    async def drain(self) -> None:
        if not self.write_paused or self.transport is None:
            return
        if self._drain is None:
            self._drain = self.server.loop.create_future()
        await self._drain

    def _wake_drain(self) -> None:
        waiter = self._drain
        self._drain = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _split_target(url: bytes) -> tuple[bytes, bytes]:
    """Path and query of a request target (origin form, or the path of an absolute URL)."""
    if url[:1] != b"/" and url != b"*":
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            return url, b""
        path = parsed.path or b"/"
        return path, parsed.query or b""
    path, _, query = url.partition(b"?")
    return path, query
