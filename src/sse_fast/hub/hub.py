"""The hub: subscribers by user id, push, fan-out, heartbeats and failure policy.

The hub owns policy, not I/O.  A transport (the ASGI app, or any other) hands
it one :class:`SubscriberSink` per connection and the hub only ever calls
``sink.write(bytes)`` and ``sink.close()``.  Each pushed event is encoded once;
broadcast frames go into one shared :class:`~sse_fast._core.FanoutRing` that
every subscriber reads through its own cursor, frames for some users go to
those users' connections.  A subscriber has at most one write in flight: while
its sink is busy, new frames wait in the ring, and when the sink reports
``ready`` everything pending leaves as one write.  That is what makes the cost
per delivered event fall when the load rises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson

from .._core import HEARTBEAT, FanoutRing, encode_event
from ..errors import CursorLagging, EmptyPushError, HubClosedError, HubFullError, InvalidEventIdError
from ..event import Event, encode_body, validate_uids
from ..ids import EventId, format_id, new_epoch
from ..stores.base import Clock, HistoryLostError, NewEvent, Store, StoredEvent, StoreUnavailableError
from .failures import OFFLINE, SLOW_CONSUMER, WRITE_ERROR
from .history import History
from .stats import HubStats, snapshot
from .subscriber import Subscriber, SubscriberSink

logger = logging.getLogger("sse_fast.hub")

SHUTDOWN_EVENT = "shutdown"
"""Event type of the last frame a subscriber gets when the server goes away."""

RESET_EVENT = "reset"
"""Event type sent before a replay that cannot start right after the client's
``Last-Event-ID``; its data is ``{"reason": ..., "last_event_id": ...}``.
Connected subscribers get one too (reason ``history_lost``) when the store
loses its history under the hub."""

HISTORY_LOST = "history_lost"

PushFailedCallback = Callable[[str, Event, str], Any]


class Hub:
    """Holds subscriber connections keyed by user id and pushes events to them.

    ``heartbeat`` is the number of seconds without output after which a
    subscriber gets a ``: heartbeat`` comment; a subscriber whose write has not
    completed within ``stall_timeout`` (default two heartbeats) is dropped.
    ``ring_frames``/``ring_bytes`` bound the shared backlog: a subscriber that
    falls further behind is a slow consumer and is disconnected.
    ``on_push_failed(uid, event, reason)`` is told of every event that could
    not be delivered live (reasons ``offline``, ``slow_consumer``,
    ``write_error``); it may be a coroutine function.  The store is asked
    every ``store_check_interval`` seconds whether it can take saves
    (:attr:`store_error`) and whether it still holds the hub's history.
    ``clock`` (monotonic seconds; default: the running loop's ``time()``)
    times heartbeats and stalls: a test can move it by hand and call
    :meth:`sweep` instead of sleeping.
    """

    def __init__(
        self,
        *,
        store: Store | None = None,
        resend: bool = True,
        heartbeat: float = 15.0,
        stall_timeout: float | None = None,
        on_push_failed: PushFailedCallback | None = None,
        ring_frames: int = 4096,
        ring_bytes: int = 32 * 1024 * 1024,
        max_connections: int = 100_000,
        replay_page: int = 100,
        store_check_interval: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if heartbeat <= 0:
            raise ValueError("heartbeat: must be a positive number of seconds")
        if max_connections < 1:
            raise ValueError("max_connections: must be at least 1")
        self.store = store
        self.resend = resend and store is not None
        self.heartbeat = heartbeat
        self.stall_timeout = stall_timeout if stall_timeout is not None else 2 * heartbeat
        self.on_push_failed = on_push_failed
        self.max_connections = max_connections
        self.replay_page = replay_page
        self.store_check_interval = store_check_interval
        self.stats = HubStats()
        self._ring = FanoutRing(ring_frames, ring_bytes)
        self._recent: deque[tuple[Event, str | None]] = deque()
        self._subs: dict[Subscriber, None] = {}
        self._by_uid: dict[str, list[Subscriber]] = {}
        self._history = History(new_epoch())
        self._dirty: dict[Subscriber, None] = {}
        self._flush_scheduled = False
        self._broadcast_pending = False
        self._clock: Clock = clock if clock is not None else self._loop_time
        self._now = 0.0  # the clock as of the latest flush, sweep or subscription
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._store_watch: asyncio.Task[None] | None = None
        self._store_error: str | None = None
        self._history_lock: asyncio.Lock | None = None
        self._closing = False
        self._closed_event: asyncio.Event | None = None
        self._closing_event = asyncio.Event()
        self._started = False
        self._background: set[asyncio.Future[Any]] = set()

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        """Open the store and start the heartbeat sweep (idempotent)."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        if self.store is not None:
            await self.store.open()
            self._history.epoch = self.store.epoch
            self._history.seq = await self.store.last_seq()
        self._sweeper = self._loop.create_task(self._sweep_forever())
        if self.store is not None:
            self._store_watch = self._loop.create_task(self._watch_store_forever())
        self._started = True

    async def close(self, reason: str = "server shutting down", retry_ms: int | None = 1000) -> None:
        """Tell every subscriber the server is going away, end the streams, close the store.

        Safe to call more than once (a server may call it on its stop signal
        and again at lifespan shutdown).
        """
        if self._closing:
            if self._closed_event is not None:
                await self._closed_event.wait()
            return
        self._closing = True
        self._closing_event.set()
        self._closed_event = asyncio.Event()
        for task in (self._sweeper, self._store_watch):
            if task is not None:
                task.cancel()
        self._sweeper = self._store_watch = None
        goodbye = encode_event(f'{{"reason":{encode_json_string(reason)}}}', SHUTDOWN_EVENT, None, retry_ms)
        for sub in tuple(self._subs):
            self._flush_one(sub)  # what is pending goes before the goodbye
            sub.sink.write(goodbye)
            self._drop(sub, close=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.store is not None and self._started:
            await self.store.close()
        self._started = False
        self._closed_event.set()

    @property
    def started(self) -> bool:
        return self._started

    @property
    def closing(self) -> bool:
        return self._closing

    async def wait_closing(self) -> None:
        """Return once :meth:`close` has begun (for tasks that live as long as the hub)."""
        await self._closing_event.wait()

    @property
    def epoch(self) -> str:
        return self._history.epoch

    @property
    def store_error(self) -> str | None:
        """Why the store could not be used last time, while it still cannot."""
        return self._store_error

    @property
    def connections(self) -> int:
        return len(self._subs)

    @property
    def users(self) -> int:
        return len(self._by_uid)

    def is_online(self, uid: str) -> bool:
        return uid in self._by_uid

    # ----------------------------------------------------------- subscribers

    def subscribe(
        self, uid: str, sink: SubscriberSink, *, event_type: str | None = None, resume: bool = False
    ) -> Subscriber:
        """Register a connection; it gets a heartbeat at once and live events from now on.

        With ``resume=True`` the transport will first stream :meth:`replay`;
        live events wait (in the ring) until the replay is done.
        """
        if self._closing:
            raise HubClosedError("the hub is shutting down")
        if len(self._subs) >= self.max_connections:
            raise HubFullError(f"max_connections ({self.max_connections}) reached")
        now = self._now = self._clock()
        sub = Subscriber(uid, sink, event_type or None, self._ring.head, busy_since=now, last_write=now)
        sub.replaying = resume
        self._subs[sub] = None
        self._by_uid.setdefault(uid, []).append(sub)
        sink.write(HEARTBEAT)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a connection (the transport saw it go). Safe to call twice."""
        self._drop(sub, close=False)

    def ready(self, sub: Subscriber) -> None:
        """The sink has handed off its last write: send what is pending, if anything."""
        sub.busy = False
        if sub.inflight_private:
            sub.inflight_private = None
        if not sub.closed and (sub.private or sub.cursor != self._ring.head):
            self._flush_one(sub)

    def write_failed(self, sub: Subscriber, exc: BaseException | None = None) -> None:
        """The sink could not write: report the events of that write and drop the subscriber."""
        if sub.closed:
            return
        logger.debug("write to %s failed: %r", sub.uid, exc)
        self._report_lost(sub, sub.inflight_from, sub.cursor, sub.inflight_private or [], WRITE_ERROR)
        sub.inflight_private = None
        self._drop(sub, close=True)

    # ---------------------------------------------------------------- resend

    async def replay(self, sub: Subscriber, last_event_id: str) -> AsyncIterator[bytes]:
        """Stream what ``sub`` missed after ``last_event_id``, page by page, then go live.

        The subscriber was registered with ``resume=True`` before the first
        page is read, so every event is either in the store when a page is
        read or fanned out to the ring after registration; live frames whose
        sequence number was already replayed are skipped by the ring's
        ``after_seq`` filter.  That is what leaves no gap and no duplicate at
        the seam.  When the id cannot be resumed from (malformed, another
        epoch, older than retention, or no store), a ``reset`` event comes
        first, then everything retained.
        """
        history = self._history
        epoch = history.epoch  # a history lost meanwhile ends this replay: see _begin_new_history
        try:
            after, reason = await self._resume_point(last_event_id)
            if history.epoch != epoch:
                return
            if reason is not None:
                self.stats.resets += 1
                yield encode_event(
                    orjson.dumps({"reason": reason, "last_event_id": last_event_id}).decode(),
                    RESET_EVENT,
                )
            store = self.store
            while store is not None and self.resend and not sub.closed:
                page = await store.list_after(
                    sub.uid, after, event_type=sub.event_type, limit=self.replay_page
                )
                if sub.closed or history.epoch != epoch:
                    return
                if page:
                    after = page[-1].seq
                    sub.after_seq = after
                    self.stats.replayed += len(page)
                    sub.busy_since = self._clock()
                    yield b"".join([encode_event(e.data, e.event, e.id) for e in page])
                    sub.busy_since = sub.last_write = self._clock()
                    if len(page) == self.replay_page:
                        continue
                if sub.lagged:
                    # Live frames were evicted while we replayed: they are all
                    # in the store, so read on from there and rejoin at the head.
                    sub.lagged = False
                    sub.cursor = self._ring.head
                    continue
                break
            sub.after_seq = after
        finally:
            sub.replaying = False

    async def _resume_point(self, last_event_id: str) -> tuple[int, str | None]:
        """The sequence number to replay after, and why a reset is due (or None)."""
        history = self._history
        if not self.resend or self.store is None:
            return history.seq, "no_history"
        try:
            parsed = EventId.parse(last_event_id)
        except InvalidEventIdError:
            return 0, "malformed_id"
        if parsed.epoch != history.epoch:
            return 0, "unknown_epoch"
        if parsed.seq > history.seq:
            # Another process writing the same store may have got further than
            # the events this hub has seen: ask before calling the id unknown.
            history.saw(await self.store.last_seq())
            if parsed.seq > history.seq:
                return 0, "unknown_id"
        if parsed.seq + 1 < await self.store.first_seq():
            return parsed.seq, "expired"
        return parsed.seq, None

    # ------------------------------------------------------------------ push

    async def push(self, events: Event | Iterable[Event], uids: Iterable[str] | None = None) -> list[str]:
        """Deliver events to every connection of ``uids`` (everyone when empty/None).

        All events are validated before anything is stored or sent: an invalid
        one raises :class:`~sse_fast.errors.InvalidEventError` naming the field
        and nothing is delivered.  Returns the ids, in order.
        """
        if self._closing:
            raise HubClosedError("the hub is shutting down")
        batch = [events] if isinstance(events, Event) else list(events)
        if not batch:
            raise EmptyPushError()
        targets = validate_uids(uids)
        prepared = [encode_body(ev, i) for i, ev in enumerate(batch)]
        if self.store is not None:
            stored = await self._save(
                [NewEvent(ev.event, text, targets) for ev, (text, _) in zip(batch, prepared, strict=False)]
            )
            seqs = [s.seq for s in stored]
            ids = [s.id for s in stored]
            if ids[0].rpartition("-")[0] == self._history.epoch:
                self._history.saw(seqs[-1])
                self._fan_out(batch, prepared, seqs, ids, targets)
            else:
                # Saved in a history that was found lost (and replaced) while we
                # waited: accepted, so delivered, but without an id, since one of
                # the lost history would take the client's Last-Event-ID back there.
                self._fan_out(batch, prepared, [0] * len(ids), [None] * len(ids), targets)
            return ids
        seqs, ids = self._history.number(len(batch))
        self._fan_out(batch, prepared, seqs, ids, targets)
        return ids

    def _fan_out(
        self,
        batch: list[Event],
        prepared: list[tuple[str, bytes]],
        seqs: list[int],
        ids: Sequence[str | None],
        targets: tuple[str, ...] | None,
    ) -> None:
        ring = self._ring
        self.stats.events += len(batch)
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
                    subs = self._by_uid.get(uid)
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

    def _remember(self, event: Event) -> None:
        """Keep the broadcast events the ring holds, to report what a dropped subscriber missed."""
        recent = self._recent
        recent.append((event, event.event))
        excess = len(recent) - len(self._ring) - 64
        for _ in range(max(0, excess)):
            recent.popleft()

    # --------------------------------------------------------------- fan-out

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write pending frames to every idle subscriber that has some (one write each)."""
        self._flush_scheduled = False
        self._now = self._clock()
        if self._broadcast_pending:
            self._broadcast_pending = False
            self._dirty.clear()
            tail = self._ring.tail
            flush_one = self._flush_one
            for sub in tuple(self._subs):
                if sub.busy:
                    if sub.cursor < tail:
                        self._fell_behind(sub)
                else:
                    flush_one(sub)
        elif self._dirty:
            dirty, self._dirty = self._dirty, {}
            for sub in dirty:
                if not sub.busy and not sub.closed:
                    self._flush_one(sub)

    def _flush_one(self, sub: Subscriber) -> None:
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
        # The clock is read once per flush and per sweep, not once per write:
        # at 10,000 subscribers that call was a tenth of the fan-out's cost.
        sub.busy_since = sub.last_write = self._now
        self.stats.deliveries += count
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

    # -------------------------------------------------------------- failures

    def _fell_behind(self, sub: Subscriber) -> None:
        """The ring no longer holds what ``sub`` needs next.

        A replaying subscriber reads the store anyway, so it only notes the
        lag and re-reads; any other is a slow consumer.
        """
        if sub.replaying:
            sub.lagged = True
            sub.private = None
        else:
            self._drop_slow(sub)

    def _drop_slow(self, sub: Subscriber) -> None:
        """Disconnect a subscriber that fell behind the ring; report what it missed."""
        if sub.closed:
            return
        self.stats.slow_consumers += 1
        pending = [event for _, _, event, _ in sub.private or ()]
        lost = self._report_lost(
            sub,
            sub.inflight_from if sub.busy else sub.cursor,
            self._ring.head,
            (sub.inflight_private or []) + pending,
            SLOW_CONSUMER,
        )
        self.stats.dropped += lost
        logger.info("dropping slow consumer %s (%d events missed)", sub.uid, lost)
        self._drop(sub, close=True)

    def _report_lost(self, sub: Subscriber, start: int, end: int, private: list[Event], reason: str) -> int:
        """Report the broadcast events in positions [start, end) and ``private`` as failed."""
        lost = 0
        first_known = self._ring.head - len(self._recent)
        for pos in range(max(start, first_known), end):
            event, event_type = self._recent[pos - first_known]
            if sub.event_type is None or sub.event_type == event_type:
                self._report(sub.uid, event, reason)
                lost += 1
        for event in private:
            self._report(sub.uid, event, reason)
            lost += 1
        return lost

    def _report(self, uid: str, event: Event, reason: str) -> None:
        self.stats.failed += 1
        self.stats.failed_by_reason[reason] += 1
        callback = self.on_push_failed
        if callback is None:
            return
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

    def _drop(self, sub: Subscriber, *, close: bool) -> None:
        if sub.closed:
            return
        sub.closed = True
        self._subs.pop(sub, None)
        self._dirty.pop(sub, None)
        subs = self._by_uid.get(sub.uid)
        if subs is not None:
            with contextlib.suppress(ValueError):
                subs.remove(sub)
            if not subs:
                del self._by_uid[sub.uid]
        sub.private = None
        if close:
            sub.sink.close()

    # ---------------------------------------------------------- store health

    async def _save(self, events: list[NewEvent]) -> list[StoredEvent]:
        """Save through the store; a lost history is adopted once and the save tried again."""
        epoch = self._history.epoch
        try:
            return await self._save_once(events)
        except HistoryLostError:
            await self._adopt_new_history(epoch)
        return await self._save_once(events)  # lost again at once: a 500, nothing delivered

    async def _save_once(self, events: list[NewEvent]) -> list[StoredEvent]:
        assert self.store is not None
        try:
            stored = await self.store.save(events)
        except StoreUnavailableError as exc:
            self.stats.store_unavailable += 1
            self._store_failed(exc)
            raise
        self._store_recovered()
        return stored

    async def _watch_store_forever(self) -> None:
        while True:
            await asyncio.sleep(self.store_check_interval)
            try:
                await self.check_store()
            except Exception:
                logger.exception("store check failed")

    async def check_store(self) -> None:
        """Ask the store whether it can take saves, and adopt a new history if it lost ours."""
        if self.store is None:
            return
        epoch = self._history.epoch
        try:
            await self.store.check()
        except HistoryLostError:
            try:
                await self._adopt_new_history(epoch)
            except StoreUnavailableError as exc:
                self._store_failed(exc)
                return
        except StoreUnavailableError as exc:
            self._store_failed(exc)
            return
        self._store_recovered()

    def _store_failed(self, exc: StoreUnavailableError) -> None:
        if self._store_error is None:
            logger.warning("store unavailable, pushes answer 503 until it is back: %s", exc)
        self._store_error = str(exc)

    def _store_recovered(self) -> None:
        if self._store_error is not None:
            logger.warning("store available again")
            self._store_error = None

    async def _adopt_new_history(self, lost_epoch: str) -> None:
        """The store's history was wiped (Redis flushed or restarted empty): go on with the new one.

        Concurrent pushes may all find out at once; the first adopts, the
        others see the epoch has moved on.
        """
        assert self.store is not None
        if self._history_lock is None:
            self._history_lock = asyncio.Lock()
        async with self._history_lock:
            if self._history.epoch != lost_epoch:
                return
            await self.store.recover()
            seq = await self.store.last_seq()
            self._begin_new_history(self.store.epoch, seq)

    def _begin_new_history(self, epoch: str, seq: int) -> None:
        """Number from the new history and tell every connected subscriber to reset.

        The reset carries the new history's id, so a client that reconnects
        before the next event resumes in the new history, not the lost one.
        Frames already pending leave first: they were accepted before the loss.
        """
        history = self._history
        lost = history.last_id
        logger.warning("history %s lost (last id %s): continuing as %s", history.epoch, lost, epoch)
        history.epoch = epoch
        history.seq = seq
        self.stats.histories_lost += 1
        frame = encode_event(
            orjson.dumps({"reason": HISTORY_LOST, "last_event_id": lost}).decode(),
            RESET_EVENT,
            format_id(epoch, seq),  # "<epoch>-0" in a fresh history: resumes from its start
        )
        for sub in tuple(self._subs):
            sub.after_seq = 0  # seqs start again: nothing of the new history is "already replayed"
            if not sub.replaying:  # a replay in progress stops at its next page
                self._flush_one(sub)
            self.stats.resets += 1
            sub.sink.write(frame)

    # ------------------------------------------------------------ heartbeats

    async def _sweep_forever(self) -> None:
        interval = max(min(self.heartbeat / 4, 1.0), 0.02)
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception:
                logger.exception("heartbeat sweep failed")

    def sweep(self) -> None:
        """One pass over all subscribers: heartbeat the quiet ones, drop the stalled ones."""
        now = self._now = self._clock()
        quiet_before = now - self.heartbeat
        stalled_before = now - self.stall_timeout
        for sub in tuple(self._subs):
            if sub.busy:
                if sub.busy_since < stalled_before:
                    self._drop_slow(sub)
            elif sub.last_write <= quiet_before:
                sub.busy = True
                sub.busy_since = now
                sub.last_write = now
                sub.inflight_from = sub.cursor
                self.stats.heartbeats += 1
                sub.sink.write(HEARTBEAT)

    def _loop_time(self) -> float:
        """The default clock: the loop's monotonic time, 0.0 before :meth:`start`."""
        loop = self._loop
        return loop.time() if loop is not None else 0.0

    # --------------------------------------------------------------- helpers

    def snapshot(self) -> dict[str, Any]:
        """Figures for ``/stats``."""
        return snapshot(
            self.stats,
            connections=len(self._subs),
            users=len(self._by_uid),
            store_error=self._store_error,
            ring=self._ring,
            last_id=self._history.last_id,
        )


def encode_json_string(text: str) -> str:
    return orjson.dumps(text).decode()


__all__ = [
    "HISTORY_LOST",
    "OFFLINE",
    "RESET_EVENT",
    "SHUTDOWN_EVENT",
    "SLOW_CONSUMER",
    "WRITE_ERROR",
    "EventId",
    "Hub",
    "HubClosedError",
    "HubFullError",
    "HubStats",
    "Subscriber",
    "SubscriberSink",
]
