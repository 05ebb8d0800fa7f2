"""Everything but the subscribe fast path goes through the ASGI app: one request, one cycle.

:class:`ASGICycle` is the ASGI server side of one HTTP request on a native
connection: the ``http`` scope, ``receive`` (the request body as the parser
decodes it, then ``http.disconnect``) and ``send`` (``http.response.start``,
``http.response.body`` with ``more_body`` streaming).  Serving these routes
through the very :class:`~sse_fast.asgi.SSEApp` that granian runs keeps auth,
CORS, limits and error bodies identical by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import orjson

from ...request import decode_path
from .date_header import date_header
from .wire import CONTINUE, LAST_CHUNK, Headers, chunk, encode_head, has_header, header_value

logger = logging.getLogger("sse_fast.native")

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
BODY_HIGH_WATER = 64 * 1024
"""Request body bytes buffered ahead of the app before the engine stops reading the socket."""


class ClientDisconnected(OSError):
    """``send`` after the client went away (what the ASGI spec asks a server to raise)."""


class CycleOwner(Protocol):
    """What a cycle needs from its connection."""

    transport: asyncio.Transport | None

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def drain(self) -> None: ...

    def response_done(self, cycle: ASGICycle) -> None: ...


class ASGICycle:
    """One request through the ASGI app, and its response onto the connection."""

    __slots__ = (
        "_body",
        "_body_size",
        "_chunked",
        "_expect_continue",
        "_final_sent",
        "_headers_out",
        "_started",
        "_status",
        "_waiter",
        "body_complete",
        "conn",
        "disconnected",
        "keep_alive",
        "response_complete",
        "scope",
        "task",
    )

    def __init__(
        self, conn: CycleOwner, scope: dict[str, Any], keep_alive: bool, expect_continue: bool
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self._expect_continue = expect_continue
        self._body: list[bytes] = []
        self._body_size = 0
        self.body_complete = False
        self._final_sent = False
        self.disconnected = False
        self.response_complete = False
        self._waiter: asyncio.Future[None] | None = None
        self._status = 0
        self._headers_out: Headers = []
        self._started = False
        self._chunked = False
        self.task: asyncio.Task[None] | None = None

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    # ------------------------------------------------- the parser's side

    def feed_body(self, data: bytes) -> None:
        self._body.append(data)
        self._body_size += len(data)
        if self._body_size > BODY_HIGH_WATER:
            self.conn.pause_reading()
        self._wake()

    def end_body(self) -> None:
        self.body_complete = True
        self._wake()

    def lost(self) -> None:
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --------------------------------------------------- the app's side

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except Exception:
            logger.exception("ASGI app failed on %s %s", self.method, self.path)
            self.keep_alive = False
            if not self._started and not self.disconnected:
                body = orjson.dumps({"code": 500, "msg": "server: internal error", "data": {}})
                with contextlib.suppress(Exception):
                    await self._send_whole(500, [(b"content-type", b"application/json")], body)
        finally:
            if not self.response_complete:
                self.keep_alive = False  # the app ended without finishing its response
                self.response_complete = True
            self.conn.response_done(self)

    async def receive(self) -> Message:
        while True:
            if self._body:
                body = b"".join(self._body) if len(self._body) > 1 else self._body[0]
                self._body = []
                self._body_size = 0
                self._final_sent = self.body_complete
                self.conn.resume_reading()
                return {"type": "http.request", "body": body, "more_body": not self.body_complete}
            if self.body_complete and not self._final_sent:
                self._final_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.disconnected or self.response_complete:
                return {"type": "http.disconnect"}
            if self._expect_continue and not self._started:
                self._expect_continue = False
                transport = self.conn.transport
                if transport is not None:
                    transport.write(CONTINUE)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.disconnected:
            raise ClientDisconnected("the client went away")
        if kind == "http.response.start":
            if self._status:
                raise RuntimeError("http.response.start sent twice")
            self._status = int(message["status"])
            self._headers_out = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers") or ()]
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self._status:
            raise RuntimeError("http.response.body before http.response.start")
        if self.response_complete:
            raise RuntimeError("http.response.body after the response ended")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        transport = self.conn.transport
        if transport is None:
            raise ClientDisconnected("the client went away")
        out: list[bytes] = []
        if not self._started:
            self._started = True
            out.append(self._head(body, more))
        if self.method != "HEAD":
            if self._chunked:
                if body:
                    out.append(chunk(body))
                if not more:
                    out.append(LAST_CHUNK)
            elif body:
                out.append(body)
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])
        if not more:
            self.response_complete = True
            self._wake()
        else:
            await self.conn.drain()

    async def _send_whole(self, status: int, headers: Headers, body: bytes) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    def _head(self, body: bytes, more: bool) -> bytes:
        """The response head: the body's framing, ``Date`` and what becomes of the connection.

        An HTTP/1.0 client keeps a connection only when the answer says
        ``Connection: keep-alive`` (and its length is known); without that
        it would wait for a close that the server, keeping the connection,
        never makes.  An app's ``Connection: close`` is obeyed.
        """
        headers = self._headers_out
        length = header_value(headers, b"content-length")
        version = self.scope["http_version"]
        if length is None:
            if not more:
                headers.append((b"content-length", str(len(body)).encode()))
            elif version == "1.1":
                headers.append((b"transfer-encoding", b"chunked"))
                self._chunked = True
            else:
                self.keep_alive = False  # HTTP/1.0: the body ends with the connection
        connection = header_value(headers, b"connection")
        if connection is not None and connection.lower() == b"close":
            self.keep_alive = False
        elif connection is None:
            if not self.keep_alive:
                headers.append((b"connection", b"close"))
            elif version == "1.0":
                headers.append((b"connection", b"keep-alive"))
        date = None if has_header(headers, b"date") else date_header()
        return encode_head(self._status, headers, date)


def http_scope(
    method: str,
    raw_path: bytes,
    query_string: bytes,
    headers: Headers,
    http_version: str,
    transport: asyncio.Transport,
    state: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ASGI ``http`` scope of one request."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": http_version,
        "server": _address(transport.get_extra_info("sockname")),
        "client": _address(transport.get_extra_info("peername")),
        "scheme": "https" if transport.get_extra_info("sslcontext") is not None else "http",
        "method": method,
        "root_path": "",
        "path": decode_path(raw_path),
        "raw_path": raw_path,
        "query_string": query_string,
        "headers": headers,
    }
    if state is not None:
        scope["state"] = dict(state)
    return scope


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
