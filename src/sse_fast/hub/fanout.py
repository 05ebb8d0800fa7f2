"""Fan-out: each event's frame to every subscriber that wants it, one write per wake-up.

Broadcast frames go into one shared :class:`~sse_fast._core.FanoutRing`
that every subscriber reads through its own cursor; frames for some users
wait in those users' subscribers (``private``).  A subscriber has at most one
write in flight: while its sink is busy, new frames wait, and when the sink
reports :meth:`Fanout.ready` everything pending leaves as one write.  That is
what makes the cost per delivered event fall when the load rises.

A broadcast owes every subscriber one visit.  The visits run in **slices**
of at most ``slice_seconds`` that yield to the loop in between, so requests,
new pushes, heartbeats and disconnects interleave with a long pass, and a
publisher never waits for the subscribers.  The visits go round the
subscribers like a clock hand: a pass continues where the last one stopped,
and a broadcast that arrives mid-pass extends it to one more full round from
there, so every event reaches everyone within one round of its arrival and
those not yet visited take it in the same write as the earlier ones.  When
broadcasts arrive faster than rounds complete, the backlog behind the
slowest part of the round grows; past half the ring a broadcast is refused
(:meth:`Fanout.overloaded`), instead of letting the ring overrun every
subscriber at once.

A transport that only queues a write for another thread to carry out
(granian hands it to its Rust runtime) would let a slice queue writes faster
than they leave, and everything that transport does after them — the answer
to the publisher included — would wait behind the queue.  ``write_pace``
spaces the slices for it: after a slice that made W writes, the next one
starts W * ``write_pace`` seconds later.  A transport that writes to the
socket inside the call (the native engine) needs none: the slice's time
budget already counts the writes.

This is the hot path: code that runs once per subscriber per event keeps
what it needs in locals and direct attributes, and reads the clock once per
slice (:attr:`Fanout.now`), not once per write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from time import perf_counter

from .._core import FanoutRing
from ..errors import CursorLagging
from ..event import Event
from ..stores.base import Clock
from .failures import OFFLINE, DeliveryFailures
from .registry import SubscriberRegistry
from .stats import HubStats
from .subscriber import Subscriber

SLICE_SECONDS = 0.002
"""Default time budget of one slice of a pass (the curve that chose it: benchmarks/RESULTS.md)."""
SLICE_VISITS = 256
"""Default count budget of one slice.  A visit may cost the loop more after the
slice than in it: an ASGI sink under a server whose ``send`` is a coroutine
(uvicorn) only wakes its request's task, which sends on the loop's next turn,
so the time budget alone would let one slice wake thousands of sends that
then run back to back."""
_CHECK_EVERY = 16
"""Visits between two looks at the clock: a look costs ~1 % of a write, a write ~8 µs."""


class Fanout:
    """Puts pushed frames where subscribers read them and writes each idle subscriber what it has pending.

    A push only records frames (:meth:`fan_out`) and schedules a slice on
    the loop; the slices visit the subscribers owed a write (see the module
    docstring).  Failures (a subscriber the ring left behind, a user with no
    connection) go to :class:`~sse_fast.hub.failures.DeliveryFailures`.
    """

    def __init__(
        self,
        ring: FanoutRing,
        registry: SubscriberRegistry,
        failures: DeliveryFailures,
        stats: HubStats,
        clock: Clock,
        slice_seconds: float = SLICE_SECONDS,
        slice_visits: int = SLICE_VISITS,
        write_pace: float = 0.0,
    ) -> None:
        if not slice_seconds > 0:
            raise ValueError("slice_seconds: must be a positive number of seconds")
        if slice_visits < 1:
            raise ValueError("slice_visits: must be at least 1")
        if not write_pace >= 0:
            raise ValueError("write_pace: must be zero or a positive number of seconds")
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop the slices run on, once the hub has started."""
        self.now = 0.0
        """The clock as of the latest slice, sweep or subscription (see :meth:`tick`)."""
        self._ring = ring
        self._registry = registry
        self._stats = stats
        self._clock = clock
        self._remember = failures.remember
        self._report = failures.report
        self._fell_behind = failures.fell_behind
        self.slice_seconds = slice_seconds
        self.slice_visits = slice_visits
        self.write_pace = write_pace
        self._writes = 0  # writes made by the slice under way
        self._dirty: dict[Subscriber, None] = {}  # with private frames, since the last slice
        self._slice_scheduled = False
        # The round: a snapshot of the subscribers, the hand's position in it,
        # and how many visits are still owed since the latest broadcast.
        self._order: list[Subscriber] = []
        self._hand = 0
        self._owed = 0
        # The ring's head (and bytes appended) when the current round and the one
        # before began: every idle subscriber has read at least up to the older one.
        self._appended = 0
        self._round_head = self._prev_round_head = 0
        self._round_bytes = self._prev_round_bytes = 0
        self._drained: list[asyncio.Future[None]] = []

    def tick(self) -> float:
        """Read the clock once for a whole slice; the writes that follow are stamped with it.

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
        head_before, bytes_before = ring.head, self._appended
        for ev, (_, body), seq, event_id in zip(batch, prepared, seqs, ids, strict=False):
            wire_id = ev.id if ev.id is not None else event_id
            frame = body if wire_id is None else b"id: " + wire_id.encode() + b"\n" + body
            stamped = Event(ev.event, ev.data, wire_id, raw=ev.raw)
            if targets is None:
                ring.append(frame, stamped.event, seq)
                self._appended += len(frame)
                self._remember(stamped)
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
        if targets is None:
            self._owe_round(head_before, bytes_before)
        self._schedule_slice()

    def ready(self, sub: Subscriber) -> None:
        """The sink has handed off its last write: send what is pending, if anything."""
        sub.busy = False
        if sub.inflight_private:
            sub.inflight_private = None
        if not sub.closed and (sub.private or sub.cursor != self._ring.head):
            self.flush_one(sub)

    # ---------------------------------------------------------------- rounds

    def _owe_round(self, head_before: int, bytes_before: int) -> None:
        """A broadcast: every subscriber is owed one more visit, starting from the hand."""
        if not self._owed:  # idle until now: everyone idle has read up to head_before
            self._order = self._registry.snapshot()
            self._hand = min(self._hand, len(self._order))
            self._round_head = self._prev_round_head = head_before
            self._round_bytes = self._prev_round_bytes = bytes_before
        self._owed = len(self._order)

    def joined(self, sub: Subscriber) -> None:
        """A new subscriber: the round under way visits it too (it is owed what comes next)."""
        if self._owed:
            self._order.append(sub)

    def _new_round(self) -> None:
        """The hand went round: take a fresh snapshot (joiners in, leavers out) and start over."""
        self._order = self._registry.snapshot()
        self._hand = 0
        self._prev_round_head, self._round_head = self._round_head, self._ring.head
        self._prev_round_bytes, self._round_bytes = self._round_bytes, self._appended

    def overloaded(self) -> bool:
        """Whether broadcasts outrun the rounds: the backlog behind the slowest part of the
        round passed half the ring (in frames or bytes), so another would risk overrunning
        subscribers that are only waiting for their turn."""
        if not self._owed:
            return False
        ring = self._ring
        return (
            ring.head - self._prev_round_head > ring.max_frames // 2
            or self._appended - self._prev_round_bytes > ring.max_bytes // 2
        )

    @property
    def busy(self) -> bool:
        """Visits or writes are still owed for what was pushed so far."""
        return bool(self._owed or self._dirty or self._slice_scheduled)

    async def drain(self) -> None:
        """Return once the visits owed for everything accepted so far are done.

        Every idle sink then has its write; a sink busy with an earlier write
        gets the rest with the write that follows, when it reports ready.
        """
        while self.busy:
            waiter = asyncio.get_running_loop().create_future()
            self._drained.append(waiter)
            await waiter

    def _schedule_slice(self) -> None:
        if not self._slice_scheduled:
            self._slice_scheduled = True
            loop = self.loop or asyncio.get_running_loop()
            loop.call_soon(self._slice)

    def _schedule_next_slice(self) -> None:
        """Schedule the next slice: on the loop's next turn, or once the transport carried these writes."""
        pause = self._writes * self.write_pace
        if pause <= 0:
            self._schedule_slice()
            return
        self._slice_scheduled = True
        loop = self.loop or asyncio.get_running_loop()
        loop.call_later(pause, self._slice)

    def _slice(self) -> None:
        """One slice: the subscribers with private frames, then the round, until the budget is spent."""
        self._slice_scheduled = False
        self._writes = 0
        self.tick()
        deadline = perf_counter() + self.slice_seconds
        if self._dirty:
            dirty, self._dirty = self._dirty, {}
            for sub in dirty:
                if not sub.busy and not sub.closed:  # dropped since: still listed here
                    self.flush_one(sub)
        if self._owed:
            self._visit(deadline)
        if self._owed or self._dirty:
            self._schedule_next_slice()  # the loop polls its sockets before it runs
        elif self._drained:
            waiters, self._drained = self._drained, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _visit(self, deadline: float) -> None:
        """Move the hand until the visits owed are done or the slice's time is up.

        An idle subscriber gets one write of everything pending; a busy one
        (a write in flight) is left to its next :meth:`ready`, unless the ring
        has left it behind.
        """
        order, hand, owed = self._order, self._hand, self._owed
        tail = self._ring.tail
        flush_one = self.flush_one
        fell_behind = self._fell_behind
        most = self.slice_visits
        visited = 0
        while owed:
            if hand >= len(order):
                self._new_round()
                order, hand, tail = self._order, 0, self._ring.tail
                if not order:
                    owed = 0
                    break
            sub = order[hand]
            hand += 1
            owed -= 1
            if sub.closed:
                continue
            if sub.busy:
                if sub.cursor < tail:
                    fell_behind(sub)
            else:
                flush_one(sub)
            visited += 1
            if visited >= most or (not visited % _CHECK_EVERY and perf_counter() >= deadline):
                break
        self._hand, self._owed = hand, owed

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
        self._writes += 1
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
