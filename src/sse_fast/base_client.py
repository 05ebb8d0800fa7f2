"""What the async and the sync client share above the state machine: their public face and httpx.

Both clients expose the same listener methods and observable state, all
answered by the :class:`~sse_fast.eventsource.EventSourceMachine`, and both
speak HTTP through httpx; :class:`BaseClient` and the helpers here hold that
once (as httpx's own ``BaseClient`` does for its two clients), so that
client.py and sync_client.py keep only how they read, wait and call back.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeAlias

import httpx

from .errors import ClientError, ClientStoppedError, ConnectionLostError
from .eventsource import EventCallback, EventSourceMachine
from .reconnect import DEFAULT_MAX_EVENT_SIZE, ClientState
from .tls import client_verify

__all__ = [
    "CONNECTION_ERRORS",
    "BaseClient",
    "SyncTokenProvider",
    "TokenProvider",
    "Verify",
    "connection_error",
    "request_headers",
    "token_failed",
]

Verify: TypeAlias = "ssl.SSLContext | str | bool"
"""How a client checks an ``https`` server: True (the system's CAs), a CA file (PEM), a context, or False."""
SyncTokenProvider = Callable[[], str]
"""A callable that returns the bearer token to connect with (called before every connection)."""
TokenProvider = Callable[[], "str | Awaitable[str]"]
"""The same for the async client: it may also be a coroutine function."""

#: The httpx failures that end one connection (anything else is a bug and propagates).
CONNECTION_ERRORS = (httpx.RequestError, httpx.InvalidURL)


def connection_error(exc: Exception) -> ClientError:
    """Map an httpx failure to what the machine understands: passing, or final for a bad URL."""
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.TooManyRedirects)) or (
        _certificate_refused(exc)
    ):
        stopped = ClientStoppedError(f"{type(exc).__name__}: {exc}")
        stopped.__cause__ = exc
        return stopped
    lost = ConnectionLostError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    lost.__cause__ = exc
    return lost


def _certificate_refused(exc: BaseException) -> bool:
    """The server's certificate failed verification: a retry would fail the same way, so the client stops."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def request_headers(headers: Mapping[str, str], token: str | None = None) -> httpx.Headers:
    """The machine's headers for httpx, in UTF-8 as browsers send them: a Last-Event-ID may be any text.

    ``token``, when given, goes as ``Authorization: Bearer`` (it wins over one in the headers).
    """
    out = httpx.Headers(headers, encoding="utf-8")
    if token is not None:
        out["authorization"] = f"Bearer {token}"
    return out


def token_failed(exc: Exception) -> ConnectionLostError:
    """A token provider that raised: the attempt failed, and is retried with the usual backoff."""
    lost = ConnectionLostError(f"the token provider failed: {type(exc).__name__}: {exc}")
    lost.__cause__ = exc
    return lost


def checked_token(token: object) -> str:
    """A provider's answer, which must be a non-empty string (otherwise the attempt fails)."""
    if not isinstance(token, str) or not token:
        raise TypeError(f"token: the provider must return a non-empty string, got {token!r}")
    return token


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
        verify: Verify = True,
        token: object = None,
    ) -> None:
        self.url = url
        self._verify = client_verify(verify, option="verify") if isinstance(verify, str) else verify
        self._machine = EventSourceMachine(
            url,
            headers=headers,
            last_event_id=last_event_id,
            retry=retry,
            max_retry=max_retry,
            max_attempts=max_attempts,
            max_event_size=max_event_size,
            fresh_tokens=callable(token),
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
