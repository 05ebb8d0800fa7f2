"""Exceptions raised by sse_fast.

Kept in a small pure-Python module beside the compiled core (as httptools keeps
``errors.py``) so that callers can import and catch them without touching the
extension, and so that the compiled code raises ordinary Python classes.
"""

from __future__ import annotations

from .protocol import RETRYABLE_STATUSES


class SSEFastError(Exception):
    """Base class of every error sse_fast raises on purpose."""


class HTTPError(Exception):
    """A request the edge refuses: answered as ``{"code": status, "msg": reason, "data": {}}``.

    ``reason`` names the field and the rule (``"uid: required ..."``); ``headers``
    go with the answer (``Retry-After``, ``Allow``).
    """

    def __init__(self, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


class CursorLagging(SSEFastError):
    """A subscriber's cursor points at frames the fan-out ring has already dropped.

    The hub treats this subscriber as a slow consumer: it is disconnected and may
    resume from the store with ``Last-Event-ID``.
    """

    def __init__(self, cursor: int, oldest: int) -> None:
        super().__init__(f"cursor {cursor} is behind the oldest retained frame {oldest}")
        self.cursor = cursor
        self.oldest = oldest


class InvalidEventError(SSEFastError, ValueError):
    """An event cannot be put on the wire; the message names the field and the rule."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidEventIdError(SSEFastError, ValueError):
    """A ``Last-Event-ID`` (or an id given to a store) is not of the form ``<epoch>-<seq>``."""


class EmptyPushError(SSEFastError, ValueError):
    """A push with no events."""

    def __init__(self) -> None:
        super().__init__("events: must contain at least one event")


class TooManyRecipientsError(SSEFastError, ValueError):
    """A push addresses more recipients than the hub's ``max_recipients``; nothing was accepted.

    Recipients are events x uids as given (a broadcast counts one per event):
    the work a push makes the hub, the store and the fan-out do.
    """

    def __init__(self, recipients: int, limit: int) -> None:
        super().__init__(f"push: {recipients} recipients (events x uids) is over max_recipients {limit}")
        self.recipients = recipients
        self.limit = limit


class ClientError(SSEFastError):
    """Base class of the errors the SSE client reports (to ``on_error`` or to the caller)."""


class ConnectionLostError(ClientError):
    """A connection failed, broke or ended; the client reconnects, as an EventSource does.

    Passed to ``on_error`` listeners, not raised to the caller (unless the
    attempts run out, as the ``__cause__`` of :class:`RetriesExhaustedError`).
    ``going_away`` is true when the server announced a graceful shutdown;
    ``token_expired`` when it ended the stream because the token expired (the
    client reconnects at once, with a fresh token from its provider).
    """

    def __init__(self, reason: str, *, going_away: bool = False, token_expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.going_away = going_away
        self.token_expired = token_expired


class ClientStoppedError(ClientError):
    """The client stopped for good and will not reconnect; the message says why."""


class HTTPStatusError(ClientStoppedError):
    """The server answered the subscription with a status other than 200.

    ``retryable`` is true for 429/502/503/504: the client then waits (at least
    ``retry_after`` seconds when the server said so) and tries again, and this
    error only reaches ``on_error``; any other status stops the client for good.
    """

    def __init__(self, status: int, url: str, *, message: str = "", retry_after: float | None = None) -> None:
        detail = f": {message}" if message else ""
        super().__init__(f"HTTP {status} from {url}{detail}")
        self.status = status
        self.url = url
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES


class ContentTypeError(ClientStoppedError):
    """The server answered 200 with a body that is not ``text/event-stream``: not an SSE endpoint."""

    def __init__(self, content_type: str, url: str) -> None:
        shown = content_type or "(none)"
        super().__init__(f"{url} answered with content-type {shown!r}, not text/event-stream")
        self.content_type = content_type
        self.url = url


class RetriesExhaustedError(ClientStoppedError):
    """``max_attempts`` connection attempts in a row failed; ``__cause__`` is the last failure."""

    def __init__(self, attempts: int, last_error: BaseException) -> None:
        super().__init__(f"gave up after {attempts} failed connection attempts: {last_error}")
        self.attempts = attempts
        self.last_error = last_error


class EventTooLargeError(SSEFastError, ValueError):
    """A stream's event grew past the parser's ``max_event_size`` before it ended."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"event: {size} bytes without an end exceed max_event_size ({limit})")
        self.size = size
        self.limit = limit


class HubFullError(SSEFastError):
    """The hub already holds ``max_connections`` subscribers."""


class HubClosedError(SSEFastError):
    """The hub is shutting down and accepts no subscribers or pushes."""


class HubOverloadedError(SSEFastError):
    """Broadcasts arrive faster than the fan-out delivers them; nothing was accepted, try again shortly.

    Refusing here keeps the backlog within the ring: otherwise it would overrun
    every subscriber that is only waiting for its turn, and all of them would
    be dropped as slow consumers at once."""
