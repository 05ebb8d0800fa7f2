"""The heartbeat sweep: one timer for every connection, not a task per connection."""

from __future__ import annotations

import asyncio
import logging

from .failures import DeliveryFailures
from .fanout import Fanout
from .registry import SubscriberRegistry
from .subscriber import Subscriber

logger = logging.getLogger("sse_fast.hub")


class HeartbeatSweep:
    """Heartbeats the subscribers that have been quiet for ``heartbeat`` seconds, drops the stalled ones.

    A heartbeat is a write like any other (the subscriber is busy until its
    sink is ready again), which is also how a transport finds a client gone
    that never said so.  The sweep only finds who is due; the fan-out's
    slices write the heartbeats (:meth:`Fanout.beat`), so that thousands of
    connections falling due together do not hold the loop for one long turn.
    A write that has not completed within ``stall_timeout`` seconds makes its
    subscriber a slow consumer.
    """

    def __init__(
        self,
        registry: SubscriberRegistry,
        fanout: Fanout,
        failures: DeliveryFailures,
        *,
        heartbeat: float,
        stall_timeout: float,
    ) -> None:
        self.heartbeat = heartbeat
        self.stall_timeout = stall_timeout
        self._registry = registry
        self._fanout = fanout
        self._failures = failures

    async def run_forever(self) -> None:
        """Sweep every quarter heartbeat, 20 ms to 1 s apart: no heartbeat is later than that."""
        interval = max(min(self.heartbeat / 4, 1.0), 0.02)
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception:
                logger.exception("heartbeat sweep failed")

    def sweep(self) -> None:
        """One look at all subscribers: drop the stalled ones, hand the quiet ones to the fan-out."""
        now = self._fanout.tick()
        quiet_before = now - self.heartbeat
        stalled_before = now - self.stall_timeout
        due: list[Subscriber] = []
        for sub in self._registry.snapshot():
            if sub.busy:
                if sub.busy_since < stalled_before:
                    self._failures.drop_slow(sub)
            elif sub.last_write <= quiet_before:
                due.append(sub)
        self._fanout.beat(due, quiet_before)
