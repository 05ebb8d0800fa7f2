"""The EventSource state machine that the async and the sync client share (sans-IO).

A client is one loop: send a request, check the response, dispatch the events
of its body, and once the connection is over decide whether to reconnect (and
after how long) or to stop for good.  Everything in that loop that is not I/O
lives in :class:`EventSourceMachine`, with no sockets, no event loop and no
threads, as h11 keeps HTTP/1.1 apart from sockets.  So there is one copy of
the behaviour, testable with plain values, and
:class:`~sse_fast.client.Client` and :class:`~sse_fast.sync_client.SyncClient`
only do what differs between them: read, wait, and call listeners (awaiting
them, or not).

=================================  ==============================================
the face tells the machine         the machine answers
=================================  ==============================================
``begin_attempt()``                the request headers (``Last-Event-ID`` once known)
``receive_response(status, ...)``  True: read the stream; False: stop reading
``receive_data(chunk)``            the events to dispatch; then ``should_drop``
``connection_closed(error)``       :class:`Reconnect` (wait, try again) or :class:`Stop`
``close()``                        every later decision is ``Stop()``
=================================  ==============================================

Which listeners hear what is the machine's too: ``open_calls``, ``event_calls``
and ``decision_calls`` list the :class:`ListenerCall` s a face makes, in order.
Delays, response checks and the parser of each connection come from the
:class:`~sse_fast.reconnect.ReconnectPolicy` it holds.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from ._core import ServerSentEvent
from .errors import ClientError, ClientStoppedError, ConnectionLostError, HTTPStatusError
from .reconnect import DEFAULT_MAX_EVENT_SIZE, ClientState, ReconnectPolicy

__all__ = [
    "ERROR_BODY_LIMIT",
    "ERROR_BODY_SECONDS",
    "Decision",
    "EventCallback",
    "EventSourceMachine",
    "ListenerCall",
    "Reconnect",
    "Stop",
]

logger = logging.getLogger("sse_fast.client")

#: A listener: ``cb(event)``; may be a coroutine function for the async client (it is awaited, in order).
EventCallback = Callable[[ServerSentEvent], object]

#: Bytes of an error body kept for the error message, and the longest wait for them.
ERROR_BODY_LIMIT = 1024
ERROR_BODY_SECONDS = 5.0


@dataclass(frozen=True)
class Reconnect:
    """The connection failed or ended: report ``error``, wait ``delay`` seconds, try again."""

    error: ClientError
    delay: float


@dataclass(frozen=True)
class Stop:
    """The client is done; ``error`` says why (None: the server said 204, or the caller closed it)."""

    error: ClientStoppedError | None = None


#: What comes after a connection.
Decision = Reconnect | Stop


class ListenerCall(NamedTuple):
    """One listener to call and its arguments; ``event_type`` is set for event listeners.

    The machine says who is called with what; the face makes the call (and
    awaits it, in the async client) and, if it raises, :meth:`log_failure`.
    """

    callback: Callable[..., object]
    args: tuple[object, ...]
    event_type: str | None = None

    def log_failure(self) -> None:
        """Log the exception being handled: a broken listener is reported, never fatal to the client."""
        if self.event_type is None:
            logger.exception("state callback %r failed", self.callback)
        else:
            logger.exception("callback %r failed on a %r event", self.callback, self.event_type)


class EventSourceMachine:
    """State, listeners and decisions of one EventSource; see the module docstring for its inputs.

    ``state`` is ``connecting`` before and between attempts, ``open`` once a
    response opened the stream, ``closed`` after a :class:`Stop` or
    :meth:`finish`.  Misuse (data before the stream opened, an attempt after
    the end) raises :class:`RuntimeError`: it is a bug in a face, not a server's fault.
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
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        jitter: float = 0.2,
        rand: Callable[[], float] = random.random,
        fresh_tokens: bool = False,
    ) -> None:
        self.url = url
        # With a token provider, a 401 may be a token that expired on its way (a clock a little
        # ahead, a provider's cached token): one more attempt at once, with a fresh one.
        self._fresh_tokens = fresh_tokens
        self._refused_once = False
        self._headers = dict(headers or {})
        self._policy = ReconnectPolicy(
            retry,
            max_retry,
            max_attempts,
            last_event_id=last_event_id,
            jitter=jitter,
            rand=rand,
            max_event_size=max_event_size,
        )
        self._listeners: dict[str, list[EventCallback]] = {}
        self._open_listeners: list[Callable[[], object]] = []
        self._error_listeners: list[Callable[[BaseException], object]] = []
        self._reconnect_listeners: list[Callable[[float], object]] = []
        self._state = ClientState.CONNECTING
        self._error: ClientStoppedError | None = None
        self._closed_by_caller = False
        # Why the current connection ends, once known: a bad response, a going-away event, an oversized event.
        self._failure: ClientError | None = None
        self._no_content = False

    # -- observable state ---------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def attempts(self) -> int:
        return self._policy.attempts

    @property
    def last_event_id(self) -> str:
        return self._policy.last_event_id

    @property
    def retry(self) -> float:
        return self._policy.retry

    @property
    def error(self) -> ClientStoppedError | None:
        return self._error

    @property
    def closed_by_caller(self) -> bool:
        """True once :meth:`close` was called (from any thread)."""
        return self._closed_by_caller

    @property
    def should_drop(self) -> bool:
        """True once the open connection must be dropped: the server is going away, or an event is too big."""
        return self._failure is not None

    # -- one connection -----------------------------------------------------

    def begin_attempt(self) -> dict[str, str]:
        """Start a connection attempt; returns the request headers to send."""
        if self._state is ClientState.CLOSED:
            raise RuntimeError("the client has stopped: no more connection attempts")
        self._state = ClientState.CONNECTING
        self._failure = None
        self._no_content = False
        self._policy.begin_attempt()
        return self._policy.request_headers(self._headers)

    def receive_response(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> bool:
        """True if the response opens the stream; False: read no further, the decision follows on close.

        ``body`` is the start of an error body (up to :data:`ERROR_BODY_LIMIT`
        bytes, read for any status but 200); it only feeds the error message.
        """
        try:
            opened = self._policy.check_response(status, headers, self.url, body)
        except ClientError as exc:
            self._failure = exc
            return False
        if not opened:
            self._no_content = True
            return False
        self._state = ClientState.OPEN
        self._refused_once = False
        logger.info("connected to %s (attempt %d)", self.url, self._policy.attempts)
        return True

    def receive_data(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by ``chunk``, in order; check :attr:`should_drop` afterwards."""
        if self._state is not ClientState.OPEN or self._failure is not None:
            raise RuntimeError("receive_data() needs an open stream that is not being dropped")
        try:
            events = self._policy.feed(chunk)
        except ConnectionLostError as exc:  # an event too large: resume after the last whole one
            self._failure = exc
            return []
        if self._policy.token_expired:
            self._failure = ConnectionLostError("the token expired", token_expired=True)
        elif self._policy.going_away is not None:
            # Dispatch what came with it, then reconnect: a graceful shutdown means "come back", not "stop".
            reason = f"server going away: {self._policy.going_away}"
            self._failure = ConnectionLostError(reason, going_away=True)
        return events

    def connection_closed(self, error: ClientError | None = None) -> Decision:
        """The connection is over (``error``: how its I/O failed, if it did); decide what comes next.

        A failure the machine saw first (response, going away, oversized event)
        wins over ``error``; a stream that simply ended counts as lost too, as
        in a browser.  Sets ``state`` before it returns, so that listeners
        called for the decision see ``connecting`` or ``closed``.
        """
        if self._closed_by_caller:
            return Stop()
        if self._no_content:
            logger.info("%s answered 204: not reconnecting", self.url)
            return self._stop(None)
        lost = self._failure or error or ConnectionLostError("the server ended the stream")
        self._state = ClientState.CONNECTING
        if (
            isinstance(lost, HTTPStatusError)
            and lost.status == 401
            and self._fresh_tokens
            and not self._refused_once
        ):
            self._refused_once = True
            logger.info("%s: %s; once more with a fresh token", self.url, lost)
            return Reconnect(lost, 0.0)
        try:
            delay = self._policy.next_delay(lost)
        except ClientStoppedError as exc:
            logger.warning("%s: %s; not reconnecting", self.url, exc)
            return self._stop(exc)
        logger.info("%s: %s; reconnecting in %.2f s", self.url, lost, delay)
        return Reconnect(lost, delay)

    # -- the end ------------------------------------------------------------

    def close(self) -> None:
        """The caller stops the client (from any thread): every later decision is a quiet :class:`Stop`."""
        self._closed_by_caller = True

    def finish(self, error: ClientStoppedError | None = None) -> ClientStoppedError | None:
        """The face stopped (for whatever reason): ``closed``; returns the error to raise, if any.

        ``error`` is a reason the machine did not decide itself (a bug in a
        face); a client the caller closed reports no error.
        """
        self._state = ClientState.CLOSED
        if error is not None:
            self._error = error
        if self._closed_by_caller:
            self._error = None
        return self._error

    def _stop(self, error: ClientStoppedError | None) -> Stop:
        self._state = ClientState.CLOSED
        self._error = error
        return Stop(error)

    # -- listeners ----------------------------------------------------------

    def on(self, event_type: str, callback: EventCallback) -> EventCallback:
        self._listeners.setdefault(event_type, []).append(callback)
        return callback

    def off(self, event_type: str, callback: EventCallback) -> None:
        callbacks = self._listeners.get(event_type, [])
        if callback in callbacks:
            callbacks.remove(callback)

    def on_open(self, callback: Callable[[], object]) -> None:
        self._open_listeners.append(callback)

    def on_error(self, callback: Callable[[BaseException], object]) -> None:
        self._error_listeners.append(callback)

    def on_reconnect(self, callback: Callable[[float], object]) -> None:
        self._reconnect_listeners.append(callback)

    @property
    def has_event_listeners(self) -> bool:
        """True if any :meth:`on` callback is registered (the async client then buffers only for a loop)."""
        return any(self._listeners.values())

    def open_calls(self) -> list[ListenerCall]:
        """The ``on_open`` listeners, to call once :meth:`receive_response` opened the stream."""
        return [ListenerCall(callback, ()) for callback in self._open_listeners]

    def event_calls(self, event: ServerSentEvent) -> list[ListenerCall]:
        """The listeners of ``event``'s type, then the ``"*"`` ones, each in registration order."""
        callbacks = [*self._listeners.get(event.event, ()), *self._listeners.get("*", ())]
        return [ListenerCall(callback, (event,), event.event) for callback in callbacks]

    def decision_calls(self, decision: Decision) -> Iterator[ListenerCall]:
        """``on_error`` with the error, then (before the wait) ``on_reconnect`` with the delay.

        Lazy, so that a listener added by an ``on_error`` callback hears the
        ``on_reconnect`` of the same decision, as when they were called directly.
        """
        if decision.error is None:
            return
        for callback in tuple(self._error_listeners):
            yield ListenerCall(callback, (decision.error,))
        if isinstance(decision, Reconnect):
            for delay_callback in tuple(self._reconnect_listeners):
                yield ListenerCall(delay_callback, (decision.delay,))
