"""Fan-out: each event's frame to every subscriber that wants it, one write per wake-up.

Broadcast frames go into one shared :class:`~sse_fast._core.FanoutRing`
that every subscriber reads through its own cursor; frames for some users
wait in those users' subscribers (``private``).  A subscriber has at most one
write in flight: while its sink is busy, new frames wait, and when the sink
reports :meth:`Fanout.ready` everything pending leaves as one write.  That is
what makes the cost per delivered event fall when the load rises.

This is the hot path: code that runs once per subscriber per event keeps
what it needs in locals and direct attributes, and reads the clock once per
pass (:attr:`Fanout.now`), not once per write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .._core import FanoutRing
from ..errors import CursorLagging
from ..event import Event
from ..stores.base import Clock
from .failures import OFFLINE, DeliveryFailures
from .registry import SubscriberRegistry
from .stats import HubStats
from .subscriber import Subscriber


class Fanout:
    """Puts pushed frames where subscribers read them and writes each idle subscriber what it has pending.

    A push only records frames (:meth:`fan_out`) and schedules one flush on
    the loop; the flush is one pass over the subscribers with something to
    write.  Failures (a subscriber the ring left behind, a user with no
    connection) go to :class:`~sse_fast.hub.failures.DeliveryFailures`.
    """

    def __init__(
        self,
        ring: FanoutRing,
        registry: SubscriberRegistry,
        failures: DeliveryFailures,
        stats: HubStats,
        clock: Clock,
    ) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop flushes run on, once the hub has started."""
        self.now = 0.0
        """The clock as of the latest flush, sweep or subscription (see :meth:`tick`)."""
        self._ring = ring
        self._registry = registry
        self._stats = stats
        self._clock = clock
        self._remember = failures.remember
        self._report = failures.report
        self._fell_behind = failures.fell_behind
        self._dirty: dict[Subscriber, None] = {}  # with private frames, since the last flush
        self._flush_scheduled = False
        self._broadcast_pending = False

    def tick(self) -> float:
        """Read the clock once for a whole pass; the writes that follow are stamped with it.

        At 10,000 subscribers a clock call per write was a tenth of the fan-out's cost.
        """
        now = self.now = self._clock()
        return now

    def fan_out(
        self,
        batch: list[Event],
        prepared: list[tuple[str, bytes]],
        seqs: list[int],
        ids: Sequence[str | None],
        targets: tuple[str, ...] | None,
    ) -> None:
        """Stamp each event with its id and record its frame for ``targets`` (everyone when None)."""
        ring = self._ring
        by_uid = self._registry.by_uid
        self._stats.events += len(batch)
        for ev, (_, body), seq, event_id in zip(batch, prepared, seqs, ids, strict=False):
            wire_id = ev.id if ev.id is not None else event_id
            frame = body if wire_id is None else b"id: " + wire_id.encode() + b"\n" + body
            stamped = Event(ev.event, ev.data, wire_id, raw=ev.raw)
            if targets is None:
                ring.append(frame, stamped.event, seq)
                self._remember(stamped)
                self._broadcast_pending = True
            else:
                for uid in targets:
                    subs = by_uid.get(uid)
                    if not subs:
                        self._report(uid, stamped, OFFLINE)
                        continue
                    for sub in subs:
                        if sub.event_type is not None and sub.event_type != stamped.event:
                            continue
                        if sub.private is None:
                            sub.private = []
                        sub.private.append((ring.head, frame, stamped, seq))
                        if len(sub.private) > ring.max_frames:
                            self._fell_behind(sub)
                        else:
                            self._dirty[sub] = None
        self._schedule_flush()

    def ready(self, sub: Subscriber) -> None:
        """The sink has handed off its last write: send what is pending, if anything."""
        sub.busy = False
        if sub.inflight_private:
            sub.inflight_private = None
        if not sub.closed and (sub.private or sub.cursor != self._ring.head):
            self.flush_one(sub)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = self.loop or asyncio.get_running_loop()
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write pending frames to every idle subscriber that has some (one write each)."""
        self._flush_scheduled = False
        self.now = self._clock()
        if self._broadcast_pending:
            self._broadcast_pending = False
            self._dirty.clear()
            self._flush_all(tuple(self._registry.subs))
        elif self._dirty:
            dirty, self._dirty = self._dirty, {}
            for sub in dirty:
                if not sub.busy and not sub.closed:  # dropped since: still listed here
                    self.flush_one(sub)

    def _flush_all(self, subs: tuple[Subscriber, ...]) -> None:
        """After a broadcast: write to each idle subscriber, drop the busy ones the ring left behind.

        The one pass over every subscriber, kept apart so that it can be cut
        into slices that yield to the loop.
        """
        tail = self._ring.tail
        flush_one = self.flush_one
        fell_behind = self._fell_behind
        for sub in subs:
            if sub.busy:
                if sub.cursor < tail:
                    fell_behind(sub)
            else:
                flush_one(sub)

    def flush_one(self, sub: Subscriber) -> None:
        """Write everything pending for ``sub`` as one write (its sink must be idle)."""
        ring = self._ring
        start = sub.cursor
        try:
            if sub.private:
                data, count = self._merge_private(sub)
            else:
                if start == ring.head:
                    return
                data, sub.cursor, count = ring.collect(start, -1, sub.event_type, sub.after_seq)
        except CursorLagging:
            self._fell_behind(sub)
            return
        if not data:
            return
        sub.inflight_from = start
        sub.busy = True
        sub.busy_since = sub.last_write = self.now
        self._stats.deliveries += count
        sub.sink.write(data)

    def _merge_private(self, sub: Subscriber) -> tuple[bytes, int]:
        """Interleave a subscriber's own frames with the broadcast ring, in push order."""
        ring = self._ring
        parts: list[bytes] = []
        total = 0
        cursor = sub.cursor
        inflight = sub.inflight_private
        if inflight is None:
            inflight = sub.inflight_private = []
        for pos, frame, event, seq in sub.private or ():
            if pos > cursor:
                chunk, cursor, n = ring.collect(cursor, pos, sub.event_type, sub.after_seq)
                parts.append(chunk)
                total += n
            if seq > sub.after_seq or seq == 0:  # seq 0: in no history, never replayed
                parts.append(frame)
                inflight.append(event)
                total += 1
        chunk, sub.cursor, n = ring.collect(cursor, -1, sub.event_type, sub.after_seq)
        parts.append(chunk)
        sub.private = None
        return b"".join(parts), total + n
