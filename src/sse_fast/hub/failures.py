"""Events that could not be delivered live, and the subscribers that cannot keep up."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._core import FanoutRing
from ..event import Event
from .registry import SubscriberRegistry
from .subscriber import Subscriber

if TYPE_CHECKING:  # stats names the reasons below, so it cannot be imported first
    from .stats import HubStats

logger = logging.getLogger("sse_fast.hub")

OFFLINE = "offline"
SLOW_CONSUMER = "slow_consumer"
WRITE_ERROR = "write_error"

PushFailedCallback = Callable[[str, Event, str], Any]


class DeliveryFailures:
    """Tells ``on_push_failed`` of each event a user will not get live, and drops who cannot keep up.

    The ring holds wire bytes, not events, so the broadcast events it holds
    are kept here too (:meth:`remember`): a subscriber dropped with a cursor
    somewhere in the ring is then told of each event from there on, once.
    ``on_push_failed`` may be a coroutine function; its tasks are kept until
    they end, and :meth:`wait` lets the hub's close wait for them.
    """

    def __init__(
        self,
        ring: FanoutRing,
        registry: SubscriberRegistry,
        stats: HubStats,
        on_push_failed: PushFailedCallback | None,
    ) -> None:
        self.on_push_failed = on_push_failed
        self._ring = ring
        self._registry = registry
        self._stats = stats
        self._recent: deque[tuple[Event, str | None]] = deque()
        self._background: set[asyncio.Future[Any]] = set()

    def remember(self, event: Event) -> None:
        """Keep a broadcast event while the ring holds its frame (and a few more)."""
        recent = self._recent
        recent.append((event, event.event))
        excess = len(recent) - len(self._ring) - 64
        for _ in range(max(0, excess)):
            recent.popleft()

    def fell_behind(self, sub: Subscriber) -> None:
        """The ring no longer holds what ``sub`` needs next.

        A replaying subscriber reads the store anyway, so it only notes the
        lag and re-reads; any other is a slow consumer.
        """
        if sub.replaying:
            sub.lagged = True
            sub.private = None
        else:
            self.drop_slow(sub)

    def drop_slow(self, sub: Subscriber) -> None:
        """Disconnect a subscriber that fell behind the ring or stalled; report what it missed."""
        if sub.closed:
            return
        self._stats.slow_consumers += 1
        pending = [event for _, _, event, _ in sub.private or ()]
        lost = self._report_lost(
            sub,
            sub.inflight_from if sub.busy else sub.cursor,
            self._ring.head,
            (sub.inflight_private or []) + pending,
            SLOW_CONSUMER,
        )
        self._stats.dropped += lost
        logger.info("dropping slow consumer %s (%d events missed)", sub.uid, lost)
        self._registry.drop(sub, close=True, reason=SLOW_CONSUMER)

    def write_failed(self, sub: Subscriber, exc: BaseException | None) -> None:
        """The sink could not write: report the events of that write and drop the subscriber."""
        if sub.closed:
            return
        logger.debug("write to %s failed: %r", sub.uid, exc)
        self._report_lost(sub, sub.inflight_from, sub.cursor, sub.inflight_private or [], WRITE_ERROR)
        sub.inflight_private = None
        self._registry.drop(sub, close=True, reason=WRITE_ERROR)

    def _report_lost(self, sub: Subscriber, start: int, end: int, private: list[Event], reason: str) -> int:
        """Report the broadcast events in positions [start, end) and ``private`` as failed."""
        lost = 0
        first_known = self._ring.head - len(self._recent)
        for pos in range(max(start, first_known), end):
            event, event_type = self._recent[pos - first_known]
            if sub.event_type is None or sub.event_type == event_type:
                self.report(sub.uid, event, reason)
                lost += 1
        for event in private:
            self.report(sub.uid, event, reason)
            lost += 1
        return lost

    def count(self, reason: str, failures: int) -> None:
        """Count failed deliveries that no callback needs to hear of (there is none)."""
        self._stats.failed += failures
        self._stats.failed_by_reason[reason] += failures

    def report_many(self, uid: str, events: Sequence[Event], reason: str) -> None:
        """:meth:`report` for each of ``events``: the counters once, the callback per event."""
        self.count(reason, len(events))
        callback = self.on_push_failed
        if callback is not None:
            for event in events:
                self._call(callback, uid, event, reason)

    def report(self, uid: str, event: Event, reason: str) -> None:
        """Count one failed delivery and tell ``on_push_failed``; its errors are logged, not raised."""
        self._stats.failed += 1
        self._stats.failed_by_reason[reason] += 1
        callback = self.on_push_failed
        if callback is not None:
            self._call(callback, uid, event, reason)

    def _call(self, callback: PushFailedCallback, uid: str, event: Event, reason: str) -> None:
        """Run the callback; its errors are logged, a coroutine's task kept until it ends."""
        try:
            result = callback(uid, event, reason)
        except Exception:
            logger.exception("on_push_failed raised")
            return
        if isinstance(result, Awaitable):
            task = asyncio.ensure_future(result)
            self._background.add(task)
            task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("on_push_failed failed", exc_info=task.exception())

    async def wait(self) -> None:
        """Wait for the ``on_push_failed`` coroutines still running."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
