"""The hub's record of one connection, and what a transport hands the hub for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..event import Event

CLIENT_GONE = "client_gone"
"""Close reason: the transport saw the client go (:meth:`Hub.unsubscribe`)."""
SHUTDOWN = "shutdown"
"""Close reason: the hub closed (the server is stopping)."""


class Cancellable(Protocol):
    """A pending timer (``asyncio.TimerHandle``): the hub only ever cancels it."""

    def cancel(self) -> None: ...


class SubscriberSink(Protocol):
    """What a transport gives the hub for one connection.

    ``write`` hands bytes to the peer without blocking; once they are handed
    off the transport calls :meth:`Hub.ready` so the hub can write what came
    meanwhile.  ``close`` ends the stream (the hub has dropped the subscriber).
    """

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(eq=False, slots=True)
class Subscriber:
    """The hub's record of one connection."""

    uid: str
    sink: SubscriberSink
    event_type: str | None
    cursor: int
    busy: bool = True
    busy_since: float = 0.0
    last_write: float = 0.0
    after_seq: int = 0
    closed: bool = False
    # Frames for this subscriber alone, and the events of its write in flight:
    # made on first use, since most subscribers of a broadcast-heavy edge
    # never need them and an idle connection should cost as little as it can.
    private: list[tuple[int, bytes, Event, int]] | None = None
    inflight_from: int = 0
    inflight_private: list[Event] | None = None
    replaying: bool = False
    lagged: bool = False
    serial: int = 0
    """Its place in the order of subscriptions (set by the registry): a push placed with
    subscribers after it was accepted skips those who subscribed since."""
    expiry: Cancellable | None = None
    """The timer that ends the stream when its credentials expire (:mod:`.expiry`), if they do."""
    retry_ms: int | None = None
    """The ``retry:`` its stream opened with (and its goodbye repeats), if the hub sends one."""
    sent: int = 0
    """Events written to it (live and replayed), for the access log's close line."""
    close_reason: str | None = None
    """Why it ended, once it has: ``client_gone``, ``slow_consumer``, ``write_error``, ``shutdown``,
    ``token_expired``..."""
