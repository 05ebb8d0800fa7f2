"""An asyncio SSE client that reconnects as a browser's EventSource does.

Bytes come from an httpx stream and go, chunk by chunk as they arrive, into
the shared sans-IO :class:`~sse_fast.eventsource.EventSourceMachine`, which
decides everything else (as it does for the sync client): this module only
reads in a background task, awaits listeners and sleeps.  Events reach
callbacks (``client.on(type, cb)``) and/or an ``async for`` loop, in stream order.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType

import httpx

from ._core import ServerSentEvent
from .base_client import (
    CONNECTION_ERRORS,
    BaseClient,
    TokenProvider,
    Verify,
    checked_token,
    connection_error,
    request_headers,
    token_failed,
)
from .errors import ClientStoppedError
from .eventsource import ERROR_BODY_LIMIT, ERROR_BODY_SECONDS, Decision, EventCallback, ListenerCall, Stop
from .reconnect import DEFAULT_MAX_EVENT_SIZE, ClientState

__all__ = ["Client", "ClientState", "EventCallback"]

logger = logging.getLogger("sse_fast.client")


class Client(BaseClient):
    """Subscribe to an SSE endpoint and keep the subscription alive.

    ``retry`` is the reconnection time (seconds) until the server sends
    ``retry:``; after failed attempts in a row it doubles up to ``max_retry``
    (a larger server ``retry:`` still wins), plus up to 20 % jitter.  The client
    stops for good on 204 (quietly), on a 200 that is not ``text/event-stream``,
    on any status but 200/429/502/503/504, when ``max_attempts`` attempts in a
    row failed, or on :meth:`close`.  ``timeout`` bounds connecting and sending
    the request; ``read_timeout`` (None: wait forever) is the longest silence
    tolerated on an open stream: set it above the server's heartbeat interval
    to notice dead connections.  An ``http_client`` you pass is not closed.
    ``verify`` is how an ``https`` server is checked: True (the system's CAs),
    the path of a PEM file of CA certificates (e.g. a self-signed server's own
    certificate), an ``ssl.SSLContext``, or False (no check); it applies to the
    client's own httpx client (configure an ``http_client`` you pass yourself).

    ``token`` is sent as ``Authorization: Bearer``: a string, or a token
    provider (a function or coroutine function returning the token) called
    before every connection, so that a stream the server ended with
    ``token_expired`` resumes at once, with a fresh token and
    ``Last-Event-ID``: nothing missed, nothing twice.  A provider that raises
    fails that attempt, which is retried as a dropped connection is.

    Iterating (``async for event in client``) buffers up to ``max_queue``
    events, then stops reading the socket until the loop catches up (callbacks
    wait too).  If no ``on()`` callback is registered at :meth:`connect`, events
    are kept for a loop from then on (only the latest ``max_queue`` until one
    starts iterating); otherwise from the moment iteration starts.  One loop at a time.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        token: str | TokenProvider | None = None,
        last_event_id: str = "",
        retry: float = 3.0,
        max_retry: float = 30.0,
        max_attempts: int | None = None,
        timeout: float | None = 10.0,
        read_timeout: float | None = None,
        max_queue: int = 1024,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        http_client: httpx.AsyncClient | None = None,
        verify: Verify = True,
    ) -> None:
        super().__init__(
            url,
            headers=headers,
            last_event_id=last_event_id,
            retry=retry,
            max_retry=max_retry,
            max_attempts=max_attempts,
            timeout=timeout,
            read_timeout=read_timeout,
            max_event_size=max_event_size,
            verify=verify,
            token=token,
        )
        self._http = http_client
        self._owns_http = http_client is None
        self._token = token
        self._channel: _EventChannel | None = None
        self._max_queue = max_queue
        self._task: asyncio.Task[None] | None = None
        self._opened: asyncio.Future[None] | None = None
        self._done: asyncio.Event | None = None

    # -- lifecycle ----------------------------------------------------------

    async def connect(self) -> None:
        """Start reading in the background; return once a connection is open.

        Passing failures are retried; raises the :class:`ClientStoppedError`
        if the client stops for good before any connection opened, and returns
        (with ``state == "closed"``) if the server answered 204.
        """
        if self._task is None:
            if self._done is not None:
                raise ClientStoppedError("the client is closed; create a new one")
            loop = asyncio.get_running_loop()
            self._opened = loop.create_future()
            self._done = asyncio.Event()
            if self._channel is None and not self._machine.has_event_listeners:
                self._channel = _EventChannel(self._max_queue)
            self._task = loop.create_task(self._run(), name=f"sse_fast.Client({self.url})")
        assert self._opened is not None
        await asyncio.shield(self._opened)

    async def wait(self) -> None:
        """Wait until the client stops for good; raise why, unless it was closed or got a 204."""
        if self._done is None:
            raise RuntimeError("the client was never started; call connect() first")
        await self._done.wait()
        if self.error is not None:
            raise self.error

    async def close(self) -> None:
        """Stop reading and reconnecting; pending ``async for`` loops end normally."""
        self._machine.close()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            if task is not asyncio.current_task():
                await asyncio.gather(task, return_exceptions=True)
        elif task is None:
            self._done = self._done or asyncio.Event()
            self._finish()
            await self._close_http()

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[ServerSentEvent]:
        if self._channel is None:
            self._channel = _EventChannel(self._max_queue)
        self._channel.attached = True
        return self._iterate(self._channel)

    async def _iterate(self, channel: _EventChannel) -> AsyncIterator[ServerSentEvent]:
        if self._task is None and self._done is None:
            await self.connect()
        elif self._done is not None and self._done.is_set():
            channel.close()
        while True:
            event = await channel.get()
            if event is None:
                if self.error is not None:
                    raise self.error
                return
            yield event

    # -- the reading task ---------------------------------------------------

    async def _run(self) -> None:
        """Connect, and again after each connection for as long as the machine says."""
        error: ClientStoppedError | None = None
        try:
            while True:
                decision = await self._connect_once()
                await self._call(self._machine.decision_calls(decision))
                if isinstance(decision, Stop):
                    return
                await asyncio.sleep(decision.delay)
        except asyncio.CancelledError:
            if not self._machine.closed_by_caller:
                raise
        except Exception as exc:  # a bug must stop the client visibly, not kill the task silently
            logger.exception("%s: unexpected error in the client", self.url)
            error = ClientStoppedError(f"unexpected error: {exc!r}")
            error.__cause__ = exc
        finally:
            self._finish(error)
            await self._close_http()

    async def _connect_once(self) -> Decision:
        """One connection, from the request to its end; returns what the machine decided next."""
        machine = self._machine
        sent = machine.begin_attempt()
        try:
            token = await self._fresh_token()
        except Exception as exc:
            return machine.connection_closed(token_failed(exc))
        http = self._http_client()
        try:
            async with http.stream(
                "GET",
                self.url,
                headers=request_headers(sent, token),
                timeout=self._timeout,
                follow_redirects=True,
            ) as response:
                if await self._open(response):
                    async for chunk in response.aiter_bytes():
                        for event in machine.receive_data(chunk):
                            await self._call(machine.event_calls(event))
                            if self._channel is not None:
                                await self._channel.put(event)
                        if machine.should_drop:
                            break
        except CONNECTION_ERRORS as exc:
            return machine.connection_closed(connection_error(exc))
        return machine.connection_closed()

    async def _fresh_token(self) -> str | None:
        """The token for this attempt: the string given, or the provider's answer now."""
        token = self._token
        if token is None or isinstance(token, str):
            return token
        answer = token()
        if inspect.isawaitable(answer):
            answer = await answer
        return checked_token(answer)

    async def _open(self, response: httpx.Response) -> bool:
        """Hand the response to the machine; True if it opened the stream (``connect()`` then returns)."""
        body = b""
        if response.status_code != 200:
            with contextlib.suppress(asyncio.TimeoutError, httpx.HTTPError):
                body = await asyncio.wait_for(_read_error_body(response), ERROR_BODY_SECONDS)
        if not self._machine.receive_response(response.status_code, response.headers, body):
            return False
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(None)
        await self._call(self._machine.open_calls())
        return True

    async def _call(self, calls: Iterable[ListenerCall]) -> None:
        """Call listeners in order, awaiting those that return an awaitable; a failing one is logged."""
        for call in calls:
            try:
                result = call.callback(*call.args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                call.log_failure()

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(verify=self._verify)
        return self._http

    async def _close_http(self) -> None:
        if self._owns_http and self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    def _finish(self, error: ClientStoppedError | None = None) -> None:
        error = self._machine.finish(error)
        if self._opened is not None and not self._opened.done():
            if error is not None:
                self._opened.set_exception(error)
                self._opened.exception()  # connect() may have been cancelled: nobody else reads it
            else:
                self._opened.set_result(None)
        if self._channel is not None:
            self._channel.close()
        if self._done is not None:
            self._done.set()


async def _read_error_body(response: httpx.Response) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= ERROR_BODY_LIMIT:
            break
    return body


class _EventChannel:
    """A bounded event buffer for ``async for``: a full buffer pauses the reader (backpressure).

    Until a loop is ``attached`` it only keeps the latest events instead, so
    that callback-only use never stalls on a buffer nobody reads.  Unlike
    ``asyncio.Queue`` it can be closed, which ends the loop once drained.
    """

    def __init__(self, maxsize: int) -> None:
        self._items: deque[ServerSentEvent] = deque()
        self._maxsize = max(1, maxsize)
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._closed = False
        self.attached = False

    async def put(self, event: ServerSentEvent) -> None:
        if not self.attached and len(self._items) >= self._maxsize:
            self._items.popleft()
        while len(self._items) >= self._maxsize and not self._closed:
            self._writable.clear()
            await self._writable.wait()
        self._items.append(event)
        self._readable.set()

    async def get(self) -> ServerSentEvent | None:
        """The next event, or None once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        self._writable.set()
        return self._items.popleft()

    def close(self) -> None:
        self._closed = True
        self._readable.set()
        self._writable.set()
