"""An asyncio SSE client that reconnects as a browser's EventSource does.

Bytes come from an httpx stream and go, chunk by chunk as they arrive, into
the compiled spec-exact parser; what to do between connections is decided by
the sans-IO :class:`~sse_fast.reconnect.ReconnectPolicy` that the sync client
shares.  Events reach callbacks (``client.on(type, cb)``) and/or an
``async for`` loop, in stream order.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType

import httpx

from ._core import ServerSentEvent
from .errors import ClientError, ClientStoppedError, ConnectionLostError
from .reconnect import DEFAULT_MAX_EVENT_SIZE, ClientState, ReconnectPolicy

__all__ = ["Client", "ClientState", "EventCallback"]

logger = logging.getLogger("sse_fast.client")

#: A listener: ``cb(event)``; may be a coroutine function (it is awaited, in order).
EventCallback = Callable[[ServerSentEvent], object]

#: Bytes of an error body kept for the error message, and the longest wait for them.
_ERROR_BODY_LIMIT = 1024
_ERROR_BODY_SECONDS = 5.0


def connection_error(exc: Exception) -> ClientError:
    """Map an httpx failure to what the policy understands: passing, or final for a bad URL."""
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.TooManyRedirects)):
        stopped = ClientStoppedError(f"{type(exc).__name__}: {exc}")
        stopped.__cause__ = exc
        return stopped
    lost = ConnectionLostError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    lost.__cause__ = exc
    return lost


class _EventSourceBase:
    """Listener registry and observable state shared by :class:`Client` and ``SyncClient``."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        last_event_id: str,
        retry: float,
        max_retry: float,
        max_attempts: int | None,
        timeout: float | None,
        read_timeout: float | None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    ) -> None:
        self.url = url
        self._headers = dict(headers or {})
        self._policy = ReconnectPolicy(
            retry, max_retry, max_attempts, last_event_id=last_event_id, max_event_size=max_event_size
        )
        self._timeout = httpx.Timeout(timeout, read=read_timeout)
        self._listeners: dict[str, list[EventCallback]] = {}
        self._open_listeners: list[Callable[[], object]] = []
        self._error_listeners: list[Callable[[BaseException], object]] = []
        self._reconnect_listeners: list[Callable[[float], object]] = []
        self._state = ClientState.CONNECTING
        self._error: ClientStoppedError | None = None

    # -- listeners ----------------------------------------------------------

    def on(self, event_type: str, callback: EventCallback) -> EventCallback:
        """Call ``callback(event)`` for every event of ``event_type`` (``"*"``: every event).

        Several callbacks per type are called in registration order; returns the
        callback so it can be removed with :meth:`off`.
        """
        self._listeners.setdefault(event_type, []).append(callback)
        return callback

    def off(self, event_type: str, callback: EventCallback) -> None:
        """Remove a callback added with :meth:`on` (no error if it is not there)."""
        callbacks = self._listeners.get(event_type, [])
        if callback in callbacks:
            callbacks.remove(callback)

    def on_open(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` every time a connection opens (the stream is accepted)."""
        self._open_listeners.append(callback)

    def on_error(self, callback: Callable[[BaseException], object]) -> None:
        """Call ``callback(error)`` on every failure, passing or final (then ``state`` is ``closed``)."""
        self._error_listeners.append(callback)

    def on_reconnect(self, callback: Callable[[float], object]) -> None:
        """Call ``callback(delay)`` before waiting ``delay`` seconds to reconnect."""
        self._reconnect_listeners.append(callback)

    def _callbacks_for(self, event: ServerSentEvent) -> list[EventCallback]:
        return [*self._listeners.get(event.event, ()), *self._listeners.get("*", ())]

    # -- state --------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        """``connecting`` (also before the first attempt and between attempts), ``open`` or ``closed``."""
        return self._state

    @property
    def attempts(self) -> int:
        """Connection attempts in the current streak; back to 0 after a connection that delivered data."""
        return self._policy.attempts

    @property
    def last_event_id(self) -> str:
        """The id sent as ``Last-Event-ID`` on the next reconnect."""
        return self._policy.last_event_id

    @property
    def retry(self) -> float:
        """The current reconnection time in seconds (the server's ``retry:`` once it sent one)."""
        return self._policy.retry

    @property
    def error(self) -> ClientStoppedError | None:
        """Why the client stopped for good, or None (still running, closed by the caller, or 204)."""
        return self._error


class Client(_EventSourceBase):
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
        last_event_id: str = "",
        retry: float = 3.0,
        max_retry: float = 30.0,
        max_attempts: int | None = None,
        timeout: float | None = 10.0,
        read_timeout: float | None = None,
        max_queue: int = 1024,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        http_client: httpx.AsyncClient | None = None,
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
        )
        self._http = http_client
        self._owns_http = http_client is None
        self._channel: _EventChannel | None = None
        self._max_queue = max_queue
        self._task: asyncio.Task[None] | None = None
        self._opened: asyncio.Future[None] | None = None
        self._done: asyncio.Event | None = None
        self._closed_by_caller = False

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
            if self._channel is None and not any(self._listeners.values()):
                self._channel = _EventChannel(self._max_queue)
            self._task = loop.create_task(self._run(), name=f"sse_fast.Client({self.url})")
        assert self._opened is not None
        await asyncio.shield(self._opened)

    async def wait(self) -> None:
        """Wait until the client stops for good; raise why, unless it was closed or got a 204."""
        if self._done is None:
            raise RuntimeError("the client was never started; call connect() first")
        await self._done.wait()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Stop reading and reconnecting; pending ``async for`` loops end normally."""
        self._closed_by_caller = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            if task is not asyncio.current_task():
                await asyncio.gather(task, return_exceptions=True)
        elif task is None:
            self._done = self._done or asyncio.Event()
            self._finish(None)
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
                if self._error is not None:
                    raise self._error
                return
            yield event

    # -- the reading task ---------------------------------------------------

    async def _run(self) -> None:
        policy = self._policy
        error: ClientStoppedError | None = None
        try:
            while True:
                self._state = ClientState.CONNECTING
                policy.begin_attempt()
                try:
                    if not await self._read_stream():
                        logger.info("%s answered 204: not reconnecting", self.url)
                        return
                    lost: ClientError = ConnectionLostError("the server ended the stream")
                except (httpx.RequestError, httpx.InvalidURL) as exc:
                    lost = connection_error(exc)
                except ClientError as exc:
                    lost = exc
                self._state = ClientState.CONNECTING
                delay = policy.next_delay(lost)
                logger.info("%s: %s; reconnecting in %.2f s", self.url, lost, delay)
                await self._notify(self._error_listeners, lost)
                await self._notify(self._reconnect_listeners, delay)
                await asyncio.sleep(delay)
        except ClientStoppedError as exc:
            error = exc
            logger.warning("%s: %s; not reconnecting", self.url, exc)
            self._state = ClientState.CLOSED
            await self._notify(self._error_listeners, exc)
        except asyncio.CancelledError:
            if not self._closed_by_caller:
                raise
        except Exception as exc:  # a bug must stop the client visibly, not kill the task silently
            logger.exception("%s: unexpected error in the client", self.url)
            error = ClientStoppedError(f"unexpected error: {exc!r}")
            error.__cause__ = exc
        finally:
            self._finish(error)
            await self._close_http()

    async def _read_stream(self) -> bool:
        """One connection: read it until it ends; False if the server said 204."""
        policy = self._policy
        http = self._http_client()
        # UTF-8, as browsers send it: a Last-Event-ID may be any text but CR, LF and NUL.
        headers = httpx.Headers(policy.request_headers(self._headers), encoding="utf-8")
        async with http.stream(
            "GET", self.url, headers=headers, timeout=self._timeout, follow_redirects=True
        ) as response:
            body = b""
            if response.status_code != 200:
                with contextlib.suppress(asyncio.TimeoutError, httpx.HTTPError):
                    body = await asyncio.wait_for(_read_error_body(response), _ERROR_BODY_SECONDS)
            if not policy.check_response(response.status_code, response.headers, self.url, body):
                return False
            self._state = ClientState.OPEN
            logger.info("connected to %s (attempt %d)", self.url, policy.attempts)
            if self._opened is not None and not self._opened.done():
                self._opened.set_result(None)
            await self._notify(self._open_listeners)
            async for chunk in response.aiter_bytes():
                for event in policy.feed(chunk):
                    await self._dispatch(event)
                if policy.going_away is not None:
                    raise ConnectionLostError(f"server going away: {policy.going_away}", going_away=True)
        return True

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient()
        return self._http

    async def _close_http(self) -> None:
        if self._owns_http and self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    def _finish(self, error: ClientStoppedError | None) -> None:
        self._state = ClientState.CLOSED
        self._error = None if self._closed_by_caller else error
        if self._opened is not None and not self._opened.done():
            if self._error is not None:
                self._opened.set_exception(self._error)
                self._opened.exception()  # connect() may have been cancelled: nobody else reads it
            else:
                self._opened.set_result(None)
        if self._channel is not None:
            self._channel.close()
        if self._done is not None:
            self._done.set()

    async def _dispatch(self, event: ServerSentEvent) -> None:
        for callback in self._callbacks_for(event):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("callback %r failed on a %r event", callback, event.event)
        if self._channel is not None:
            await self._channel.put(event)

    async def _notify(self, callbacks: list[Callable[..., object]], *args: object) -> None:
        for callback in tuple(callbacks):
            try:
                result = callback(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("state callback %r failed", callback)


async def _read_error_body(response: httpx.Response) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _ERROR_BODY_LIMIT:
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
