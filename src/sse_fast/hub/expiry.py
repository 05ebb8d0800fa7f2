"""Streams whose credentials expire: each ends at its deadline with a last ``token_expired`` frame.

A subscriber's JWT says until when it holds (``exp``); without this a stream
opened a minute before ``exp`` would go on receiving events for as long as
the connection lives.  Each such subscriber gets one loop timer
(``call_later``), armed when it subscribes and cancelled when it leaves
(:meth:`SubscriberRegistry.drop`), so a connection costs nothing per
heartbeat and the heartbeat sweep is not involved.  The deadline is wall-clock
time (``exp`` is Unix time), checked again when the timer fires: a loop timer
may fire a little early, and a reconnect with the same token must then be
refused, not accepted for the last few milliseconds of its leeway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .._core import encode_event
from ..json_text import dumps
from ..protocol import TOKEN_EXPIRED_EVENT
from .fanout import Fanout
from .registry import SubscriberRegistry
from .stats import HubStats
from .subscriber import Subscriber

TOKEN_EXPIRED = "token_expired"
"""The close reason of a stream whose credentials expired."""

_GOODBYE = encode_event(dumps({"reason": TOKEN_EXPIRED}), TOKEN_EXPIRED_EVENT, None, None)


class CredentialExpiry:
    """Ends each watched subscriber's stream once the wall clock passes its ``expires_at``."""

    def __init__(
        self,
        registry: SubscriberRegistry,
        fanout: Fanout,
        stats: HubStats,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._fanout = fanout
        self._stats = stats
        self._wall_clock = wall_clock

    def watch(self, sub: Subscriber, expires_at: float, loop: asyncio.AbstractEventLoop) -> None:
        """End ``sub``'s stream at ``expires_at`` (Unix seconds) unless it has left by then."""
        delay = max(0.0, expires_at - self._wall_clock())
        sub.expiry = loop.call_later(delay, self._due, sub, expires_at, loop)

    def _due(self, sub: Subscriber, expires_at: float, loop: asyncio.AbstractEventLoop) -> None:
        sub.expiry = None
        if sub.closed:
            return
        if self._wall_clock() < expires_at:  # fired early (timer resolution): not yet
            self.watch(sub, expires_at, loop)
            return
        self.expire(sub)

    def expire(self, sub: Subscriber) -> None:
        """Send what is pending (pushed while the token held), then ``token_expired``, and close."""
        if sub.closed:
            return
        self._stats.tokens_expired += 1
        if not sub.replaying:  # a replay writes on its own; the close ends it
            self._fanout.flush_one(sub)
        sub.sink.write(_GOODBYE)
        sub.close_reason = TOKEN_EXPIRED
        self._registry.drop(sub, close=True)
