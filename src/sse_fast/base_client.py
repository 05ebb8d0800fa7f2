"""What the async and the sync client share above the state machine: their public face and httpx.

Both clients expose the same listener methods and observable state, all
answered by the :class:`~sse_fast.eventsource.EventSourceMachine`, and both
speak HTTP through httpx; :class:`BaseClient` and the helpers here hold that
once (as httpx's own ``BaseClient`` does for its two clients), so that
client.py and sync_client.py keep only how they read, wait and call back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from .errors import ClientError, ClientStoppedError, ConnectionLostError
from .eventsource import EventCallback, EventSourceMachine
from .reconnect import DEFAULT_MAX_EVENT_SIZE, ClientState

__all__ = ["CONNECTION_ERRORS", "BaseClient", "connection_error", "request_headers"]

#: The httpx failures that end one connection (anything else is a bug and propagates).
CONNECTION_ERRORS = (httpx.RequestError, httpx.InvalidURL)


def connection_error(exc: Exception) -> ClientError:
    """Map an httpx failure to what the machine understands: passing, or final for a bad URL."""
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.TooManyRedirects)):
        stopped = ClientStoppedError(f"{type(exc).__name__}: {exc}")
        stopped.__cause__ = exc
        return stopped
    lost = ConnectionLostError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    lost.__cause__ = exc
    return lost


def request_headers(headers: Mapping[str, str]) -> httpx.Headers:
    """The machine's headers for httpx, in UTF-8 as browsers send them: a Last-Event-ID may be any text."""
    return httpx.Headers(headers, encoding="utf-8")


class BaseClient:
    """The listener API and observable state that :class:`~sse_fast.Client` and ``SyncClient`` share."""

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
        self._machine = EventSourceMachine(
            url,
            headers=headers,
            last_event_id=last_event_id,
            retry=retry,
            max_retry=max_retry,
            max_attempts=max_attempts,
            max_event_size=max_event_size,
        )
        self._timeout = httpx.Timeout(timeout, read=read_timeout)

    # -- listeners ----------------------------------------------------------

    def on(self, event_type: str, callback: EventCallback) -> EventCallback:
        """Call ``callback(event)`` for every event of ``event_type`` (``"*"``: every event).

        Several callbacks per type are called in registration order; returns the
        callback so it can be removed with :meth:`off`.
        """
        return self._machine.on(event_type, callback)

    def off(self, event_type: str, callback: EventCallback) -> None:
        """Remove a callback added with :meth:`on` (no error if it is not there)."""
        self._machine.off(event_type, callback)

    def on_open(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` every time a connection opens (the stream is accepted)."""
        self._machine.on_open(callback)

    def on_error(self, callback: Callable[[BaseException], object]) -> None:
        """Call ``callback(error)`` on every failure, passing or final (then ``state`` is ``closed``)."""
        self._machine.on_error(callback)

    def on_reconnect(self, callback: Callable[[float], object]) -> None:
        """Call ``callback(delay)`` before waiting ``delay`` seconds to reconnect."""
        self._machine.on_reconnect(callback)

    # -- state --------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        """``connecting`` (also before the first attempt and between attempts), ``open`` or ``closed``."""
        return self._machine.state

    @property
    def attempts(self) -> int:
        """Connection attempts in the current streak; back to 0 after a connection that delivered data."""
        return self._machine.attempts

    @property
    def last_event_id(self) -> str:
        """The id sent as ``Last-Event-ID`` on the next reconnect."""
        return self._machine.last_event_id

    @property
    def retry(self) -> float:
        """The current reconnection time in seconds (the server's ``retry:`` once it sent one)."""
        return self._machine.retry

    @property
    def error(self) -> ClientStoppedError | None:
        """Why the client stopped for good, or None (still running, closed by the caller, or 204)."""
        return self._machine.error
