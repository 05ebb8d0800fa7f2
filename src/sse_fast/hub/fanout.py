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

A push to some users is placed with their subscribers (their ``private``
frames, or an ``offline`` report for a user without one) in slices too: a
push of many recipients would otherwise hold the loop for as long as it takes
to visit them all.  Pushes are placed, and broadcasts appended to the ring,
strictly in the order they were accepted (their seq order): while one waits to
be placed, those after it wait behind it, so no subscriber ever reads a frame
before one pushed earlier, and the resend seam (by seq) stays exact.  A push
of at most ``slice_visits`` recipients that finds nothing waiting is placed at
once, as before.  Each slice first places what waits, then writes to the
subscribers with private frames, then moves the round's hand, all within the
slice's budget; the ``offline`` reports count against the visits when an
``on_push_failed`` callback runs for each.  When more than ``max_pending``
recipients wait to be placed, a push is refused (:meth:`Fanout.overloaded`).
The writes of private frames keep up with their placing: a slice goes on
past its budgets until it has written as many private frames as were placed
on accepting since the slice before (what the slices place themselves is
already budgeted).  Pushes accepted inside a read (the native
engine takes a publisher's pipelined pushes in one turn) would otherwise
outrun their own delivery by the ratio of a turn's reads to one slice, and
the backlog, the latency with it, would grow for as long as they came.

Heartbeats are writes too: the sweep hands the subscribers that have been
quiet for a heartbeat to :meth:`Fanout.beat`, and the slices write them within
the same budgets, after the event writes (ten thousand idle connections that
opened together fall due together, and their heartbeats would otherwise take
one long turn of the loop).

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
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter

from .._core import HEARTBEAT, FanoutRing
from ..errors import CursorLagging, InvalidEventError
from ..event import Event
from ..stores.base import Clock
from .failures import OFFLINE, DeliveryFailures
from .registry import SubscriberRegistry
from .stats import HubStats
from .subscriber import Subscriber

ID_LINE_ROOM = 64
"""Bytes an ``id: <epoch>-<seq>`` line may take (an epoch and a 64-bit seq need well under this)."""

SLICE_SECONDS = 0.002
"""Default time budget of one slice of a pass (the curve that chose it: benchmarks/RESULTS.md)."""
SAVING_SLICE_SECONDS = 0.0005
"""A slice's time budget while a push waits for its store's answer (a round trip, a commit).  The
answer is only read between two slices, and the push goes on a turn after that: each turn it
waits is a slice.  Under broadcasts at 20/s to 10,000 subscribers a Redis save took 6.9 ms with
2 ms slices and 2.2 ms with these (benchmarks/RESULTS.md)."""
SLICE_VISITS = 256
"""Default count budget of one slice.  A visit may cost the loop more after the
slice than in it: an ASGI sink under a server whose ``send`` is a coroutine
(uvicorn) only wakes its request's task, which sends on the loop's next turn,
so the time budget alone would let one slice wake thousands of sends that
then run back to back."""
_CHECK_EVERY = 16
"""Visits between two looks at the clock: a look costs ~1 % of a write, a write ~8 µs."""
_PLACE_CHECK = 64
"""Recipients placed between two looks at the clock (a placement costs ~0.3 µs, a report as much)."""
MAX_PENDING = 400_000
"""Default most recipients waiting to be placed before a push is refused as overloaded."""

Entry = tuple[int, bytes, Event, int]
"""A private frame: the ring's head when it was placed, the frame, its event, its seq."""


@dataclass(eq=False, slots=True)
class PendingPush:
    """An accepted push whose frames still have to reach where its subscribers read them.

    ``targets`` is None for a broadcast (appended to the ring when its turn
    comes).  A push to users is placed user by user, each user's events in
    order; ``uid_at``/``event_at`` say how far it got.  ``joined`` is the
    registry's count of subscriptions when the push was accepted: whoever
    subscribed later was not a recipient.
    """

    frames: list[bytes]
    events: list[Event]
    seqs: list[int]
    targets: tuple[str, ...] | None
    joined: int
    left: int
    """Recipients (uid x event) not placed yet; the frames of a broadcast."""
    nbytes: int
    uid_at: int = 0
    event_at: int = 0
    entries: list[Entry] | None = None
    report_offline: bool = True
    """Whether a recipient with no subscriber here is reported ``offline``: only by the node
    that accepted the push (another node's follower of the bus fans it out too)."""


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
        max_pending: int = MAX_PENDING,
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
        self._report_many = failures.report_many
        self._fell_behind = failures.fell_behind
        self._failures = failures
        self.maybe_offline: Callable[[str, list[Event]], None] | None = None
        """When set, a recipient of this node's push with no subscriber here goes to it instead of
        being reported ``offline``: in a cluster, only once no other node has the user either."""
        self.slice_seconds = slice_seconds
        self.slice_visits = slice_visits
        self.write_pace = write_pace
        self.max_pending = max_pending
        self.saving = 0
        """Pushes waiting for their store's answer (the hub counts them): slices are shorter meanwhile."""
        self._writes = 0  # writes made by the slice under way
        self._dirty: dict[Subscriber, None] = {}  # with private frames, since the last slice
        self._dirty_backlog: list[Subscriber] = []  # taken from _dirty, not yet written to
        self._dirty_at = 0
        # Accepted pushes not yet placed, in seq order, and what they hold.
        self._pending: deque[PendingPush] = deque()
        self._pending_recipients = 0
        self._placed_since_slice = 0  # private frames placed outside the slices since the last one
        self._pending_frames = 0  # of broadcasts
        self._pending_bytes = 0
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
        # Subscribers due a heartbeat (quiet since before _beat_before), not yet written to.
        self._beats: list[Subscriber] = []
        self._beats_at = 0
        self._beat_before = 0.0

    def tick(self) -> float:
        """Read the clock once for a whole slice; the writes that follow are stamped with it.

        At 10,000 subscribers a clock call per write was a tenth of the fan-out's cost.
        """
        now = self.now = self._clock()
        return now

    def check_broadcast(self, batch: list[Event], prepared: list[tuple[str, bytes]]) -> None:
        """Refuse, before anything is stored, a broadcast event whose frame the ring could never hold."""
        room = self._ring.max_bytes
        for i, (ev, (_, body)) in enumerate(zip(batch, prepared, strict=True)):
            id_line = ID_LINE_ROOM if ev.id is None else len(ev.id.encode()) + len(b"id: \n")
            if len(body) + id_line > room:
                raise InvalidEventError(
                    f"events[{i}]",
                    f"a broadcast of {len(body)} bytes does not fit the fan-out ring ({room} bytes)",
                )

    def fan_out(
        self,
        batch: list[Event],
        prepared: list[tuple[str, bytes]],
        seqs: list[int],
        ids: Sequence[str | None],
        targets: tuple[str, ...] | None,
        report_offline: bool = True,
    ) -> None:
        """Stamp each event with its id and record its frame for ``targets`` (everyone when None).

        The frames reach the ring or the targets' subscribers at once when
        nothing waits and the push is small; otherwise the push waits its turn
        and is placed in slices (see the module docstring).  ``report_offline``
        false: a target with no subscriber here is nobody's concern on this node.
        """
        self._stats.events += len(batch)
        frames: list[bytes] = []
        stamped: list[Event] = []
        for ev, (_, body), event_id in zip(batch, prepared, ids, strict=False):
            wire_id = ev.id if ev.id is not None else event_id
            frames.append(body if wire_id is None else b"id: " + wire_id.encode() + b"\n" + body)
            stamped.append(Event(ev.event, ev.data, wire_id, raw=ev.raw))
        if (
            targets is not None
            and len(targets) == 1
            and len(frames) == 1
            and not self._pending
            and self._place_one(targets[0], frames[0], stamped[0], seqs[0])
        ):
            self._schedule_slice()
            return
        if targets is None:
            push = PendingPush(frames, stamped, seqs, None, 0, len(frames), sum(len(f) for f in frames))
        else:
            push = PendingPush(
                frames, stamped, seqs, targets, self._registry.joins, len(frames) * len(targets), 0
            )
            push.report_offline = report_offline
        if not self._pending and (targets is None or push.left <= self.slice_visits):
            if targets is None:
                self._append(push)
            else:
                self._place(push, math.inf, -1)
                self._placed_since_slice += len(frames) * len(targets)  # at most, offline ones aside
        else:
            self._pending.append(push)
            if targets is None:
                self._pending_frames += push.left
                self._pending_bytes += push.nbytes
            else:
                self._pending_recipients += push.left
        self._schedule_slice()

    def _place_one(self, uid: str, frame: bytes, event: Event, seq: int) -> bool:
        """One event for one user, nothing waiting (most notifications): :meth:`_place`'s work
        without its bookkeeping.  False when nobody here has the user: :meth:`_place` reports it."""
        subs = self._registry.by_uid.get(uid)
        if not subs:
            return False
        ring = self._ring
        entry = (ring.head, frame, event, seq)
        reached = False
        for sub in subs if len(subs) == 1 else list(subs):
            if sub.closed:
                continue
            reached = True
            if sub.event_type is not None and sub.event_type != event.event:
                continue
            private = sub.private
            if private is None:
                sub.private = [entry]
            else:
                private.append(entry)
                if len(private) > ring.max_frames:
                    self._fell_behind(sub)
                    continue
            self._dirty[sub] = None
            self._placed_since_slice += 1
        return reached

    def _append(self, push: PendingPush) -> None:
        """A broadcast's turn: its frames into the ring, and a round owed to everyone."""
        ring = self._ring
        remember = self._remember
        head_before, bytes_before = ring.head, self._appended
        for frame, event, seq in zip(push.frames, push.events, push.seqs, strict=True):
            ring.append(frame, event.event, seq)
            remember(event)
        self._appended += push.nbytes
        self._owe_round(head_before, bytes_before)

    def _place(self, push: PendingPush, deadline: float, reports: int) -> tuple[bool, int]:
        """Place ``push`` user by user until it is done or the budget is spent.

        Returns whether it is done and the callbacks' budget left: ``reports``
        (negative: no limit) is how many ``offline`` reports may still run a
        callback in this slice.
        """
        targets = push.targets
        assert targets is not None
        ring = self._ring
        by_uid = self._registry.by_uid
        dirty = self._dirty
        max_frames = ring.max_frames
        events = push.events
        count = len(events)
        entries = push.entries
        if entries is None:  # at its turn nothing appends to the ring: the head is its position
            head = ring.head
            entries = push.entries = [
                (head, frame, event, seq)
                for frame, event, seq in zip(push.frames, events, push.seqs, strict=True)
            ]
        report = push.report_offline
        deferred = self.maybe_offline if report else None
        callbacks = report and self._failures.on_push_failed is not None
        joined = push.joined
        i, k = push.uid_at, push.event_at
        placed = offline = 0
        since_look = 0
        n = len(targets)
        while i < n:
            uid = targets[i]
            subs = by_uid.get(uid)
            reached = False
            if subs:
                for sub in subs if len(subs) == 1 else list(subs):
                    if sub.serial >= joined or sub.closed:
                        continue  # subscribed after the push was accepted
                    reached = True
                    wanted = sub.event_type
                    private = sub.private
                    if private is None:
                        private = sub.private = []
                    if wanted is None:
                        private.extend(entries[k:])
                    else:
                        private.extend(e for e in entries[k:] if e[2].event == wanted)
                    if len(private) > max_frames:
                        self._fell_behind(sub)
                    else:
                        dirty[sub] = None
            if not reached and deferred is not None:
                deferred(uid, events[k:])  # asks the other nodes first
                placed += count - k
                since_look += count - k
                i, k = i + 1, 0
            elif reached or not callbacks:
                if not reached and report:
                    offline += count - k  # counted at the end: no callback to run
                placed += count - k
                since_look += count - k
                i, k = i + 1, 0
            else:
                end = count if reports < 0 else min(count, k + reports)
                if reports >= 0:
                    reports -= end - k
                self._report_many(uid, events[k:end], OFFLINE)
                placed += end - k
                since_look += end - k
                if end < count:
                    k = end
                    break
                i, k = i + 1, 0
                if reports == 0:
                    break
            if since_look >= _PLACE_CHECK:
                since_look = 0
                if perf_counter() >= deadline:
                    break
        if offline:
            self._failures.count(OFFLINE, offline)
        push.uid_at, push.event_at = i, k
        push.left -= placed
        return i >= n, reports

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

    def overloaded(self, broadcast: bool) -> bool:
        """Whether the fan-out is too far behind to take another push.

        Any push: more than ``max_pending`` recipients wait to be placed.  A
        broadcast also when broadcasts outrun the rounds: the backlog behind
        the slowest part of the round (and the broadcasts waiting their turn)
        passed half the ring, in frames or bytes, so another would risk
        overrunning subscribers that are only waiting for their turn.
        """
        if self._pending_recipients > self.max_pending:
            return True
        if not broadcast or not (self._owed or self._pending_frames):
            return False
        ring = self._ring
        frames_from, bytes_from = ring.head, self._appended
        if self._owed:
            frames_from, bytes_from = self._prev_round_head, self._prev_round_bytes
        return (
            ring.head + self._pending_frames - frames_from > ring.max_frames // 2
            or self._appended + self._pending_bytes - bytes_from > ring.max_bytes // 2
        )

    @property
    def busy(self) -> bool:
        """Placements, visits or writes are still owed for what was pushed so far."""
        return bool(
            self._pending
            or self._owed
            or self._dirty
            or self._dirty_backlog
            or self._beats
            or self._slice_scheduled
        )

    def place_all(self) -> None:
        """Place every push still waiting, now, whatever the budget (the hub closes, a history was lost)."""
        while self._pending:
            self._place_pending(math.inf, -1)

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
        """One slice: place what waits, write to the subscribers with private frames, then move the
        round's hand, until the budget is spent."""
        self._slice_scheduled = False
        self._writes = 0
        self.tick()
        budget = self.slice_seconds
        if self.saving and budget > SAVING_SLICE_SECONDS:
            budget = SAVING_SLICE_SECONDS
        deadline = perf_counter() + budget
        most = self.slice_visits
        keep_up, self._placed_since_slice = self._placed_since_slice, 0
        if self._pending:
            self._place_pending(deadline, most)
        if self._dirty or self._dirty_backlog:
            share = most // 2 if self._owed else most
            # writes past the share (keeping up) take time from the visits and beats, not their count
            most -= min(share, self._flush_dirty(deadline, max(share, keep_up), keep_up))
        if self._owed:
            most -= self._visit(deadline, most)
        if self._beats and most > 0:
            self._write_beats(deadline, most)
        if self._pending or self._owed or self._dirty or self._dirty_backlog or self._beats:
            self._schedule_next_slice()  # the loop polls its sockets before it runs
        elif self._drained:
            waiters, self._drained = self._drained, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _place_pending(self, deadline: float, reports: int) -> None:
        """Take the waiting pushes in order: broadcasts into the ring, the others placed, until the
        time is up or (``reports`` >= 0) as many offline reports with a callback ran."""
        pending = self._pending
        while pending:
            push = pending[0]
            if push.targets is None:
                self._append(push)
                self._pending_frames -= push.left
                self._pending_bytes -= push.nbytes
            else:
                before = push.left
                done, reports = self._place(push, deadline, reports)
                self._pending_recipients -= before - push.left
                if not done:
                    return
            pending.popleft()
            if perf_counter() >= deadline:
                return

    def _flush_dirty(self, deadline: float, most: int, keep_up: int = 0) -> int:
        """Write to the subscribers that got private frames, at most ``most`` writes; returns the writes.

        The deadline counts only once ``keep_up`` frames went out (see the
        module docstring; the caller lifts ``most`` to ``keep_up`` too).  What
        is left waits for the next slice (a subscriber's later frames join its
        write then)."""
        backlog, at = self._dirty_backlog, self._dirty_at
        if at >= len(backlog):
            backlog, at = list(self._dirty), 0
            self._dirty_backlog = backlog
            self._dirty = {}
        flush_one = self.flush_one
        writes_before = self._writes
        stats = self._stats
        kept_up = stats.deliveries + keep_up
        looked = 0
        while at < len(backlog):
            sub = backlog[at]
            at += 1
            if not sub.busy and not sub.closed:  # dropped since: still listed here
                flush_one(sub)
                if self._writes - writes_before >= most:
                    break
            looked += 1
            if not looked % _CHECK_EVERY and perf_counter() >= deadline and stats.deliveries >= kept_up:
                break
        if at >= len(backlog):
            self._dirty_backlog, at = [], 0
        self._dirty_at = at
        return self._writes - writes_before

    def _visit(self, deadline: float, most: int) -> int:
        """Move the hand until the visits owed are done, ``most`` visits were made or the slice's
        time is up.

        An idle subscriber gets one write of everything pending; a busy one
        (a write in flight) is left to its next :meth:`ready`, unless the ring
        has left it behind.
        """
        order, hand, owed = self._order, self._hand, self._owed
        tail = self._ring.tail
        flush_one = self.flush_one
        fell_behind = self._fell_behind
        visited = 0
        while owed and visited < most:
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
            if not visited % _CHECK_EVERY and perf_counter() >= deadline:
                break
        self._hand, self._owed = hand, owed
        return visited

    # ------------------------------------------------------------ heartbeats

    def beat(self, due: list[Subscriber], quiet_before: float) -> None:
        """Heartbeat ``due``, the subscribers quiet since before ``quiet_before``: at once when they are
        few and nothing else waits, otherwise in the slices.

        A subscriber written to in the meantime (an event, or the heartbeat of
        an earlier sweep) is skipped when its turn comes.
        """
        if not due:
            return
        idle = not self.busy
        self._beat_before = quiet_before
        if self._beats_at >= len(self._beats):
            self._beats, self._beats_at = due, 0
        else:
            self._beats.extend(due)
        if idle and len(due) <= self.slice_visits:
            self._write_beats(math.inf, -1)
        else:
            self._schedule_slice()

    def _write_beats(self, deadline: float, most: int) -> None:
        """Write the heartbeats due, at most ``most`` (negative: all) until the slice's time is up."""
        beats, at = self._beats, self._beats_at
        quiet_before = self._beat_before
        stats = self._stats
        now = self.now
        written = looked = 0
        while at < len(beats) and written != most:
            sub = beats[at]
            at += 1
            looked += 1
            if sub.busy or sub.closed or sub.last_write > quiet_before:
                continue
            sub.busy = True
            sub.busy_since = sub.last_write = now
            sub.inflight_from = sub.cursor
            stats.heartbeats += 1
            written += 1
            sub.sink.write(HEARTBEAT)
            if not looked % _CHECK_EVERY and perf_counter() >= deadline:
                break
        self._writes += written
        if at >= len(beats):
            self._beats, at = [], 0
        self._beats_at = at

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
        sub.sent += count
        sub.sink.write(data)

    def _merge_private(self, sub: Subscriber) -> tuple[bytes, int]:
        """Interleave a subscriber's own frames with the broadcast ring, in push order."""
        ring = self._ring
        cursor = sub.cursor
        private = sub.private or []
        if len(private) == 1 and cursor == ring.head:  # a notification, nothing broadcast since
            sub.private = None
            _, frame, event, seq = private[0]
            if seq > sub.after_seq or seq == 0:
                if sub.inflight_private is None:
                    sub.inflight_private = [event]
                else:
                    sub.inflight_private.append(event)
                return frame, 1
            return b"", 0
        parts: list[bytes] = []
        total = 0
        inflight = sub.inflight_private
        if inflight is None:
            inflight = sub.inflight_private = []
        for pos, frame, event, seq in private:
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
