"""The reconnect policy of an EventSource (sans-IO).

The rules of one connection and of the wait between connections, with no
sockets and no event loop; the :class:`~sse_fast.eventsource.EventSourceMachine`
that both clients drive applies them (and adds state and listeners):

- which responses open a stream, which stop the client for good (204, other
  content types, most statuses) and which are retried (429/502/503/504, with
  ``Retry-After``);
- the delay before the next attempt: the server's ``retry:`` (or the default),
  doubled for every failed attempt in a row up to a cap, plus jitter so that a
  restarted server is not hit by all its clients at the same instant;
- the ``Last-Event-ID`` to resume from, and a fresh parser per connection (a
  half-received event must not survive a reconnect, as in a browser);
- the server's going-away event, which means "reconnect", not "stop";
- the server's ``token_expired`` event, which means "reconnect now, with a fresh token".
"""

from __future__ import annotations

import email.utils
import enum
import logging
import random
import time
from collections.abc import Callable, Mapping

import orjson

from ._core import EventParser, ServerSentEvent
from .errors import (
    ClientError,
    ClientStoppedError,
    ConnectionLostError,
    ContentTypeError,
    EventTooLargeError,
    HTTPStatusError,
    RetriesExhaustedError,
)
from .protocol import RETRYABLE_STATUSES, TOKEN_EXPIRED_EVENT
from .protocol import SHUTDOWN_EVENT as SHUTDOWN_EVENT_TYPE

__all__ = [
    "RETRYABLE_STATUSES",
    "SHUTDOWN_EVENT_TYPE",
    "ClientState",
    "ReconnectPolicy",
    "is_event_stream",
    "parse_retry_after",
]

logger = logging.getLogger("sse_fast.client")

# 2 ** 30 times any sane base delay is far past any cap; stops float overflow.
_MAX_EXPONENT = 30


class ClientState(str, enum.Enum):
    """Where a client stands; compares equal to the plain strings (``state == "open"``)."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


def is_event_stream(content_type: str | None) -> bool:
    """True for ``text/event-stream`` with any parameters, in any case."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; be lenient with ones that do not say so
        return None
    seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)


DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024
"""Bytes one event may hold in memory before the client drops the connection."""


class ReconnectPolicy:
    """Connection bookkeeping of one client: attempts, delays, resume point, response checks.

    ``attempts`` counts connection attempts in the current streak: it is 1
    during the first attempt and goes back to 0 once a connection has delivered
    data (then the next delay is the plain ``retry`` again, as a browser's).
    ``max_attempts`` bounds that streak (None: never give up).
    """

    def __init__(
        self,
        retry: float = 3.0,
        max_retry: float = 30.0,
        max_attempts: int | None = None,
        *,
        last_event_id: str = "",
        jitter: float = 0.2,
        rand: Callable[[], float] = random.random,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    ) -> None:
        if retry < 0:
            raise ValueError("retry: must be >= 0 seconds")
        if max_retry < 0:
            raise ValueError("max_retry: must be >= 0 seconds")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts: must be >= 1 or None")
        if jitter < 0:
            raise ValueError("jitter: must be >= 0")
        self.retry = float(retry)
        self.max_retry = float(max_retry)
        self.max_attempts = max_attempts
        self.jitter = jitter
        self.attempts = 0
        self.last_event_id = last_event_id
        #: Set when the server sent its going-away event on the current connection.
        self.going_away: str | None = None
        #: Set when the server ended the current connection because the token expired.
        self.token_expired = False
        self._rand = rand
        self.max_event_size = max_event_size
        self._parser = EventParser(last_event_id, max_event_size)
        self._delivered = False

    # -- one connection -----------------------------------------------------

    def begin_attempt(self) -> None:
        """Start a connection attempt: count it, and parse its body from scratch."""
        self.attempts += 1
        self.going_away = None
        self.token_expired = False
        self._delivered = False
        self._parser = EventParser(self.last_event_id, self.max_event_size)

    def request_headers(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """The caller's headers plus what an EventSource sends (``Last-Event-ID`` when known)."""
        out = dict(headers or {})
        out["Accept"] = "text/event-stream"
        out["Cache-Control"] = "no-cache"
        if self.last_event_id:
            out["Last-Event-ID"] = self.last_event_id
        return out

    def check_response(self, status: int, headers: Mapping[str, str], url: str, body: bytes = b"") -> bool:
        """True if the response opens the stream, False for 204 (stop quietly, as the spec asks).

        Raises :class:`HTTPStatusError` for any other status (``retryable`` for
        429/502/503/504) and :class:`ContentTypeError` for a 200 that is not an
        event stream.  ``body`` (the start of an error body) only feeds the message.
        """
        if status == 204:
            return False
        if status != 200:
            raise HTTPStatusError(
                status,
                url,
                message=_error_message(body),
                retry_after=parse_retry_after(headers.get("retry-after")),
            )
        content_type = headers.get("content-type", "")
        if not is_event_stream(content_type):
            raise ContentTypeError(content_type, url)
        return True

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse body bytes; track ``retry:``, the last event id and the going-away event."""
        if chunk:
            self._delivered = True
        try:
            events = self._parser.feed(chunk)
        except EventTooLargeError as exc:
            # Drop this connection and resume after the last complete event.
            raise ConnectionLostError(str(exc)) from exc
        retry_ms = self._parser.retry
        if retry_ms is not None and retry_ms / 1000.0 != self.retry:
            self.retry = retry_ms / 1000.0
            logger.debug("server set the reconnection time to %s ms", retry_ms)
        self.last_event_id = self._parser.last_event_id
        for event in events:
            if event.event == SHUTDOWN_EVENT_TYPE:
                self.going_away = _shutdown_reason(event)
            elif event.event == TOKEN_EXPIRED_EVENT:
                self.token_expired = True
        return events

    # -- between connections ------------------------------------------------

    def next_delay(self, error: ClientError) -> float:
        """Seconds to wait before reconnecting after ``error``; raises if the client must stop.

        A non-retryable :class:`ClientStoppedError` is raised as it is;
        :class:`RetriesExhaustedError` when ``max_attempts`` attempts in a row failed.
        """
        if isinstance(error, ClientStoppedError) and not (
            isinstance(error, HTTPStatusError) and error.retryable
        ):
            raise error
        if self._delivered:
            self.attempts = 0
            self._delivered = False
        if self.max_attempts is not None and self.attempts >= self.max_attempts:
            raise RetriesExhaustedError(self.attempts, error) from error
        if isinstance(error, ConnectionLostError) and error.token_expired:
            return 0.0  # a fresh token fixes it: no reason to wait (the same token gets 401, final)
        exponent = min(max(0, self.attempts - 1), _MAX_EXPONENT)
        delay = min(max(self.retry, self.max_retry), self.retry * 2.0**exponent)
        if isinstance(error, HTTPStatusError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay * (1.0 + self.jitter * self._rand())


def _error_message(body: bytes) -> str:
    """A one-line message from an error body: the push API's ``msg`` if JSON, else its text."""
    if not body:
        return ""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("msg"), str):
        text: str = obj["msg"]
    else:
        text = body.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def _shutdown_reason(event: ServerSentEvent) -> str:
    try:
        obj = event.json()
    except (orjson.JSONDecodeError, ValueError):
        return event.data or "server shutting down"
    if isinstance(obj, dict) and isinstance(obj.get("reason"), str):
        return str(obj["reason"])
    return event.data or "server shutting down"
