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
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import orjson

from .._core import HEARTBEAT, FanoutRing, encode_event
from ..errors import EmptyPushError, HubClosedError, HubFullError, InvalidEventIdError
from ..event import Event, encode_body, validate_uids
from ..ids import EventId, format_id, new_epoch
from ..stores.base import Clock, HistoryLostError, NewEvent, Store, StoredEvent, StoreUnavailableError
from .failures import DeliveryFailures, PushFailedCallback
from .fanout import Fanout
from .history import History
from .registry import SubscriberRegistry
from .stats import HubStats, snapshot
from .subscriber import Subscriber, SubscriberSink
from .sweep import HeartbeatSweep

logger = logging.getLogger("sse_fast.hub")

SHUTDOWN_EVENT = "shutdown"
"""Event type of the last frame a subscriber gets when the server goes away."""

RESET_EVENT = "reset"
"""Event type sent before a replay that cannot start right after the client's
``Last-Event-ID``; its data is ``{"reason": ..., "last_event_id": ...}``.
Connected subscribers get one too (reason ``history_lost``) when the store
loses its history under the hub."""

HISTORY_LOST = "history_lost"


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

    ready: Callable[[Subscriber], None]
    """The sink has handed off its last write: send what is pending, if anything.

    The fan-out's own method, not a wrapper around it: transports call it
    after every write, so a call more per subscriber would show in the fan-out.
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
        self.max_connections = max_connections
        self.replay_page = replay_page
        self.store_check_interval = store_check_interval
        self.stats = HubStats()
        self._clock: Clock = clock if clock is not None else self._loop_time
        self._ring = ring = FanoutRing(ring_frames, ring_bytes)
        self._registry = registry = SubscriberRegistry()
        self._failures = failures = DeliveryFailures(ring, registry, self.stats, on_push_failed)
        self._fanout = fanout = Fanout(ring, registry, failures, self.stats, self._clock)
        self._sweep = HeartbeatSweep(
            registry,
            fanout,
            failures,
            self.stats,
            heartbeat=heartbeat,
            stall_timeout=stall_timeout if stall_timeout is not None else 2 * heartbeat,
        )
        self.ready = fanout.ready
        self._history = History(new_epoch())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._store_watch: asyncio.Task[None] | None = None
        self._store_error: str | None = None
        self._history_lock: asyncio.Lock | None = None
        self._closing = False
        self._closed_event: asyncio.Event | None = None
        self._closing_event = asyncio.Event()
        self._started = False

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        """Open the store and start the heartbeat sweep (idempotent)."""
        if self._started:
            return
        self._loop = self._fanout.loop = asyncio.get_running_loop()
        if self.store is not None:
            await self.store.open()
            self._history.epoch = self.store.epoch
            self._history.seq = await self.store.last_seq()
        self._sweeper = self._loop.create_task(self._sweep.run_forever())
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
        for sub in tuple(self._registry.subs):
            self._fanout.flush_one(sub)  # what is pending goes before the goodbye
            sub.sink.write(goodbye)
            self._registry.drop(sub, close=True)
        await self._failures.wait()
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
        return len(self._registry.subs)

    @property
    def users(self) -> int:
        return len(self._registry.by_uid)

    def is_online(self, uid: str) -> bool:
        return uid in self._registry.by_uid

    @property
    def heartbeat(self) -> float:
        return self._sweep.heartbeat

    @property
    def stall_timeout(self) -> float:
        return self._sweep.stall_timeout

    @property
    def on_push_failed(self) -> PushFailedCallback | None:
        return self._failures.on_push_failed

    @on_push_failed.setter
    def on_push_failed(self, callback: PushFailedCallback | None) -> None:
        self._failures.on_push_failed = callback

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
        if len(self._registry.subs) >= self.max_connections:
            raise HubFullError(f"max_connections ({self.max_connections}) reached")
        now = self._fanout.tick()
        sub = Subscriber(uid, sink, event_type or None, self._ring.head, busy_since=now, last_write=now)
        sub.replaying = resume
        self._registry.add(sub)
        sink.write(HEARTBEAT)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a connection (the transport saw it go). Safe to call twice."""
        self._registry.drop(sub, close=False)

    def write_failed(self, sub: Subscriber, exc: BaseException | None = None) -> None:
        """The sink could not write: report the events of that write and drop the subscriber."""
        self._failures.write_failed(sub, exc)

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
                self._fanout.fan_out(batch, prepared, seqs, ids, targets)
            else:
                # Saved in a history that was found lost (and replaced) while we
                # waited: accepted, so delivered, but without an id, since one of
                # the lost history would take the client's Last-Event-ID back there.
                self._fanout.fan_out(batch, prepared, [0] * len(ids), [None] * len(ids), targets)
            return ids
        seqs, ids = self._history.number(len(batch))
        self._fanout.fan_out(batch, prepared, seqs, ids, targets)
        return ids

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
        for sub in tuple(self._registry.subs):
            sub.after_seq = 0  # seqs start again: nothing of the new history is "already replayed"
            if not sub.replaying:  # a replay in progress stops at its next page
                self._fanout.flush_one(sub)
            self.stats.resets += 1
            sub.sink.write(frame)

    # ------------------------------------------------------------ heartbeats

    def sweep(self) -> None:
        """One pass over all subscribers: heartbeat the quiet ones, drop the stalled ones."""
        self._sweep.sweep()

    def _loop_time(self) -> float:
        """The default clock: the loop's monotonic time, 0.0 before :meth:`start`."""
        loop = self._loop
        return loop.time() if loop is not None else 0.0

    # --------------------------------------------------------------- helpers

    def snapshot(self) -> dict[str, Any]:
        """Figures for ``/stats``."""
        return snapshot(
            self.stats,
            connections=len(self._registry.subs),
            users=len(self._registry.by_uid),
            store_error=self._store_error,
            ring=self._ring,
            last_id=self._history.last_id,
        )


def encode_json_string(text: str) -> str:
    return orjson.dumps(text).decode()


__all__ = ["HISTORY_LOST", "RESET_EVENT", "SHUTDOWN_EVENT", "Hub"]
