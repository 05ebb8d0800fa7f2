"""A blocking SSE client for scripts without an event loop.

Same reconnect policy as the async :class:`~sse_fast.client.Client` (the
shared sans-IO :class:`~sse_fast.reconnect.ReconnectPolicy`), same listener
API; the I/O is a plain ``httpx.Client`` stream.  :meth:`SyncClient.close` may
be called from any thread (or a callback): it shuts the socket down so a read
blocked in another thread returns at once.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import socket
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from types import TracebackType

import httpx

from ._core import ServerSentEvent
from .client import (
    _ERROR_BODY_LIMIT,
    _ERROR_BODY_SECONDS,
    EventCallback,
    _EventSourceBase,
    connection_error,
)
from .errors import ClientError, ClientStoppedError, ConnectionLostError
from .reconnect import DEFAULT_MAX_EVENT_SIZE, ClientState

__all__ = ["SyncClient"]

logger = logging.getLogger("sse_fast.client")


class SyncClient(_EventSourceBase):
    """Iterate (``for event in SyncClient(url)``) or register callbacks and :meth:`run`.

    Arguments and reconnect behaviour are those of :class:`~sse_fast.client.Client`;
    callbacks must be plain functions.  Iteration ends quietly after :meth:`close`
    or a 204 and raises the :class:`~sse_fast.errors.ClientStoppedError` otherwise.
    A client runs once: iterate it or run it, not both, and not twice.
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
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        http_client: httpx.Client | None = None,
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
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None
        self._started = False

    def on(self, event_type: str, callback: EventCallback) -> EventCallback:
        """As :meth:`Client.on`, but coroutine functions are refused: nothing would await them."""
        if inspect.iscoroutinefunction(callback):
            raise TypeError("SyncClient callbacks must be plain functions; sse_fast.Client takes async ones")
        return super().on(event_type, callback)

    def run(self) -> None:
        """Dispatch events to the callbacks until the client stops; raise why, unless closed or 204."""
        for _ in self:
            pass

    #: Same as :meth:`run`: it already runs until the client stops for good.
    run_forever = run

    def close(self) -> None:
        """Stop for good, from any thread: wakes a blocked read and a reconnect wait."""
        self._closing.set()
        with self._lock:
            response = self._response
        if response is not None:
            _shutdown_socket(response)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[ServerSentEvent]:
        if self._started:
            raise ClientStoppedError("a SyncClient runs once; create a new one")
        self._started = True
        return self._events()

    # -- the loop -----------------------------------------------------------

    def _events(self) -> Iterator[ServerSentEvent]:
        policy = self._policy
        error: ClientStoppedError | None = None
        try:
            while not self._closing.is_set():
                self._state = ClientState.CONNECTING
                policy.begin_attempt()
                try:
                    opened = yield from self._read_stream()
                    if self._closing.is_set():
                        return
                    if not opened:
                        logger.info("%s answered 204: not reconnecting", self.url)
                        return
                    lost: ClientError = ConnectionLostError("the server ended the stream")
                except (httpx.RequestError, httpx.InvalidURL) as exc:
                    if self._closing.is_set():
                        return
                    lost = connection_error(exc)
                except ClientError as exc:
                    lost = exc
                self._state = ClientState.CONNECTING
                delay = policy.next_delay(lost)
                logger.info("%s: %s; reconnecting in %.2f s", self.url, lost, delay)
                self._notify(self._error_listeners, lost)
                self._notify(self._reconnect_listeners, delay)
                if self._closing.wait(delay):
                    return
        except ClientStoppedError as exc:
            error = exc
            logger.warning("%s: %s; not reconnecting", self.url, exc)
            self._state = ClientState.CLOSED
            self._notify(self._error_listeners, exc)
        finally:
            self._state = ClientState.CLOSED
            self._error = None if self._closing.is_set() else error
            self._closing.set()
            if self._owns_http and self._http is not None:
                self._http.close()
                self._http = None
        if self._error is not None:
            raise self._error

    def _read_stream(self) -> Generator[ServerSentEvent, None, bool]:
        """One connection, yielding its events; returns False if the server said 204."""
        policy = self._policy
        if self._http is None:
            self._http = httpx.Client()
        # UTF-8, as browsers send it: a Last-Event-ID may be any text but CR, LF and NUL.
        headers = httpx.Headers(policy.request_headers(self._headers), encoding="utf-8")
        with self._http.stream(
            "GET", self.url, headers=headers, timeout=self._timeout, follow_redirects=True
        ) as response:
            with self._lock:
                self._response = response
            try:
                if self._closing.is_set():
                    return True
                body = b""
                if response.status_code != 200:
                    body = _read_error_body(response)
                if not policy.check_response(response.status_code, response.headers, self.url, body):
                    return False
                self._state = ClientState.OPEN
                logger.info("connected to %s (attempt %d)", self.url, policy.attempts)
                self._notify(self._open_listeners)
                for chunk in response.iter_bytes():
                    for event in policy.feed(chunk):
                        self._dispatch(event)
                        yield event
                        if self._closing.is_set():
                            return True
                    if policy.going_away is not None:
                        raise ConnectionLostError(f"server going away: {policy.going_away}", going_away=True)
            finally:
                with self._lock:
                    self._response = None
        return True

    def _dispatch(self, event: ServerSentEvent) -> None:
        for callback in self._callbacks_for(event):
            try:
                callback(event)
            except Exception:
                logger.exception("callback %r failed on a %r event", callback, event.event)

    def _notify(self, callbacks: list[Callable[..., object]], *args: object) -> None:
        for callback in tuple(callbacks):
            try:
                callback(*args)
            except Exception:
                logger.exception("state callback %r failed", callback)


def _read_error_body(response: httpx.Response) -> bytes:
    """The start of an error body, for the message; a server that never ends it gets cut off."""
    body = b""
    timer = threading.Timer(_ERROR_BODY_SECONDS, _shutdown_socket, (response,))
    timer.daemon = True
    timer.start()
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= _ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass
    finally:
        timer.cancel()
    return body


def _shutdown_socket(response: httpx.Response) -> None:
    """Wake a thread blocked reading this response: closing the fd alone does not, shutdown does."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
