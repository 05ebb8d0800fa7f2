"""The hub: subscribers by user id, push, fan-out, heartbeats and failure policy.

The hub owns policy, not I/O.  A transport (the ASGI app, or any other) hands
it one :class:`~sse_fast.hub.SubscriberSink` per connection and the hub only
ever calls ``sink.write(bytes)`` and ``sink.close()``; of the store it knows
only the :class:`~sse_fast.stores.base.Store` protocol.  :class:`Hub` is the
one class callers use: it validates, numbers and saves pushes, runs the
hub's life (start, the goodbye at close) and composes the pieces that each
own one concern:

* :mod:`.registry` -- the connections, by user id;
* :mod:`.fanout` -- frames to subscribers, one write per wake-up, in slices
  that yield to the loop (the hot path);
* :mod:`.failures` -- ``on_push_failed``, slow consumers, write errors;
* :mod:`.sweep` -- heartbeats and stalled writes, one timer for all;
* :mod:`.expiry` -- streams ended when their credentials expire;
* :mod:`.resend` -- replay after ``Last-Event-ID``, resets;
* :mod:`.store_health` -- store checks, a lost history adopted;
* :mod:`.history`, :mod:`.stats` -- the epoch and sequence, the counters;
* :mod:`.delivery`, :mod:`.presence` -- how accepted events reach the
  fan-out (:mod:`sse_fast.bus`): at once (one process), or as a following bus
  reads them back from the store (a cluster: every node fans out the same
  sequence); offline only where no node has the user.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from .._core import FanoutRing, encode_event
from ..bus.base import Bus, InProcessBus, NodeFigures, default_node_id
from ..config import DEFAULT_MAX_RECIPIENTS
from ..errors import (
    EmptyPushError,
    HubClosedError,
    HubFullError,
    HubOverloadedError,
    TooManyRecipientsError,
)
from ..event import Event, collect_uids, encode_body, validate_uids
from ..ids import new_epoch
from ..json_text import dumps
from ..protocol import SHUTDOWN_EVENT
from ..stores.base import Clock, NewEvent, Store
from .delivery import BusDelivery
from .expiry import CredentialExpiry
from .failures import DeliveryFailures, PushFailedCallback
from .fanout import SLICE_SECONDS, SLICE_VISITS, Fanout
from .history import History
from .presence import OfflineCheck
from .registry import ClosedCallback, SubscriberRegistry
from .resend import Resend
from .retry import RetryAdvice, opening_frame
from .stats import HubStats, snapshot
from .store_health import StoreHealth
from .subscriber import CLIENT_GONE, SHUTDOWN, Subscriber, SubscriberSink
from .sweep import HeartbeatSweep

CHUNK_UIDS = 8192
"""Uids a push checks per loop turn (~1 ms): the loop serves other requests in between."""
CHUNK_EVENTS = 512
"""Events a push encodes per loop turn (~1 ms)."""


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
    :meth:`sweep` instead of sleeping.  ``slice_seconds``, ``slice_visits``
    and ``write_pace`` shape the fan-out's slices (:mod:`sse_fast.hub.fanout`);
    ``write_pace`` defaults to what the transport says it needs.
    ``max_recipients`` bounds one push: events x uids as given (a broadcast
    counts one per event); a push over it raises
    :class:`~sse_fast.errors.TooManyRecipientsError` and nothing is accepted.
    ``bus`` is how accepted events reach the fan-out (:mod:`sse_fast.bus`):
    by default at once, in this process; a following bus (several processes
    on one Redis prefix) delivers every process's pushes, this one's included.
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
        max_recipients: int = DEFAULT_MAX_RECIPIENTS,
        replay_page: int = 100,
        store_check_interval: float = 1.0,
        clock: Clock | None = None,
        slice_seconds: float = SLICE_SECONDS,
        slice_visits: int = SLICE_VISITS,
        write_pace: float | None = None,
        bus: Bus | None = None,
        retry_ms: int | None = None,
        retry_jitter: float = 0.5,
    ) -> None:
        if heartbeat <= 0:
            raise ValueError("heartbeat: must be a positive number of seconds")
        if retry_ms is not None and (
            isinstance(retry_ms, bool) or not isinstance(retry_ms, int) or retry_ms < 0
        ):
            raise ValueError("retry_ms: must be a non-negative integer (milliseconds) or None")
        if not 0 <= retry_jitter <= 1:
            raise ValueError("retry_jitter: must be between 0 and 1")
        if max_connections < 1:
            raise ValueError("max_connections: must be at least 1")
        if max_recipients < 1:
            raise ValueError("max_recipients: must be at least 1")
        self.max_connections = max_connections
        self.max_recipients = max_recipients
        self.stats = stats = HubStats()
        self._store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        clock = clock if clock is not None else self._loop_time
        self._history = history = History(new_epoch())
        self._ring = ring = FanoutRing(ring_frames, ring_bytes)
        self._registry = registry = SubscriberRegistry()
        self._failures = failures = DeliveryFailures(ring, registry, stats, on_push_failed)
        self._fanout = fanout = Fanout(
            ring,
            registry,
            failures,
            stats,
            clock,
            slice_seconds,
            slice_visits,
            write_pace or 0.0,
            max_pending=4 * max_recipients,
        )
        self._write_pace_given = write_pace is not None
        self.ready = fanout.ready
        self._sweep = HeartbeatSweep(
            registry,
            fanout,
            failures,
            heartbeat=heartbeat,
            stall_timeout=stall_timeout if stall_timeout is not None else 2 * heartbeat,
        )
        self._expiry = CredentialExpiry(registry, fanout, stats)
        self._resend = Resend(
            store,
            history,
            registry,
            fanout,
            ring,
            stats,
            clock,
            enabled=resend and store is not None,
            replay_page=replay_page,
        )
        self._bus = bus if bus is not None else InProcessBus(default_node_id())
        self._follows = self._bus.follows
        self._delivery = BusDelivery(
            self._bus.node_id, history, fanout, self._resend, self._bus_history_changed, self._node_figures
        )
        self._bus_check: asyncio.Task[None] | None = None
        self._offline_check: OfflineCheck | None = None
        if self._follows:  # presence across nodes: offline only where no node has the user
            registry.first_seen = self._bus.present
            registry.last_gone = self._bus.absent
            self._offline_check = OfflineCheck(self._bus, failures)
            fanout.maybe_offline = self._offline_check.add
        self._store_health = StoreHealth(
            store, history, stats, self._new_history, check_interval=store_check_interval
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._store_watch: asyncio.Task[None] | None = None
        self._closing = False
        self._closed_event: asyncio.Event | None = None
        self._closing_event = asyncio.Event()
        self._started = False
        self._retry = RetryAdvice(retry_ms, retry_jitter)

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        """Open the store and start the heartbeat sweep (idempotent)."""
        if self._started:
            return
        self._loop = self._fanout.loop = asyncio.get_running_loop()
        if self._store is not None:
            await self._store.open()
            self._history.epoch = self._store.epoch
            self._history.seq = await self._store.last_seq()
        await self._bus.start(self._delivery, self._history.epoch, self._history.seq)
        self._sweeper = self._loop.create_task(self._sweep.run_forever())
        if self._store is not None:
            self._store_watch = self._loop.create_task(self._store_health.watch_forever())
        self._started = True

    async def close(self, reason: str = "server shutting down", retry_ms: int | None = None) -> None:
        """Tell every subscriber the server is going away, end the streams, close the store.

        The goodbye (``event: shutdown``) carries ``retry: retry_ms``; by
        default each stream's own, the one it opened with (spread by
        ``retry_jitter``, so the clients of a draining node do not all come
        back in the same second), or 1000 when the hub sends none.  Safe to
        call more than once (a server may call it on its stop signal and again
        at lifespan shutdown).
        """
        if self._closing:
            if self._closed_event is not None:
                await self._closed_event.wait()
            return
        self._closing = True
        self._closing_event.set()
        self._closed_event = asyncio.Event()
        self._store_health.stop()
        for task in (self._sweeper, self._store_watch):
            if task is not None:
                task.cancel()
        self._sweeper = self._store_watch = None
        if self._follows and self._started:  # this node's last pushes, as the bus brings them
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._delivery.wait_delivered(), 1.0)
        if self._offline_check is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._offline_check.wait(), 1.0)
        await self._bus.close()
        goodbyes: dict[int, bytes] = {}
        data = dumps({"reason": reason})
        self._fanout.place_all()  # every accepted push is delivered before the goodbye
        for sub in self._registry.snapshot():
            self._fanout.flush_one(sub)  # what is pending goes before the goodbye
            retry = retry_ms if retry_ms is not None else sub.retry_ms if sub.retry_ms is not None else 1000
            goodbye = goodbyes.get(retry)
            if goodbye is None:
                goodbye = goodbyes[retry] = encode_event(data, SHUTDOWN_EVENT, None, retry)
            sub.sink.write(goodbye)
            self._registry.drop(sub, close=True, reason=SHUTDOWN)
        await self._failures.wait()
        if self._store is not None and self._started:
            await self._store.close()
        self._started = False
        self._closed_event.set()

    def _new_history(self, epoch: str, seq: int) -> None:
        """The store's history was replaced: reset the subscribers; a following bus delivers the
        new history from its start (other nodes may have pushed in it already)."""
        if self._follows:
            self._delivery.new_history()
            self._resend.begin_new_history(epoch, 0)
            self._bus.follow(epoch, 0)
        else:
            self._resend.begin_new_history(epoch, seq)

    def _bus_history_changed(self) -> None:
        """The bus saw the store's history replaced: check the store now, not at the next tick."""
        if self._loop is None or self._closing or (self._bus_check and not self._bus_check.done()):
            return
        self._bus_check = self._loop.create_task(self._store_health.check())

    def _loop_time(self) -> float:
        """The default clock: the loop's monotonic time, 0.0 before :meth:`start`."""
        loop = self._loop
        return loop.time() if loop is not None else 0.0

    @property
    def started(self) -> bool:
        return self._started

    @property
    def closing(self) -> bool:
        return self._closing

    async def wait_closing(self) -> None:
        """Return once :meth:`close` has begun (for tasks that live as long as the hub)."""
        await self._closing_event.wait()

    # ------------------------------------------------------------ the state

    @property
    def epoch(self) -> str:
        return self._history.epoch

    @property
    def store_error(self) -> str | None:
        """Why the store could not be used last time, while it still cannot."""
        return self._store_health.error

    @property
    def connections(self) -> int:
        return len(self._registry.subs)

    @property
    def users(self) -> int:
        return len(self._registry.by_uid)

    @property
    def node_id(self) -> str:
        """This process's name in a cluster (``--node-id``)."""
        return self._bus.node_id

    @property
    def bus_error(self) -> str | None:
        """Why a following bus cannot read the store now (live events wait meanwhile)."""
        return self._delivery.error if self._follows else None

    def is_online(self, uid: str) -> bool:
        return uid in self._registry.by_uid

    def snapshot(self) -> dict[str, Any]:
        """Figures for ``/stats``."""
        figures = snapshot(
            self.stats,
            connections=len(self._registry.subs),
            users=len(self._registry.by_uid),
            store_error=self._store_health.error,
            ring=self._ring,
            last_id=self._history.last_id,
        )
        figures["node"] = {
            "id": self._bus.node_id,
            "bus": "following" if self._follows else "in_process",
            "bus_error": self.bus_error,
        }
        figures["cluster"] = self._cluster_figures()
        return figures

    def _node_figures(self) -> NodeFigures:
        return NodeFigures(len(self._registry.subs), len(self._registry.by_uid))

    def _cluster_figures(self) -> dict[str, Any]:
        """The nodes alive and what they hold: each other node as it last published (one lease
        renewal old at most), this one as it is now.  A user connected to two nodes counts on both."""
        nodes = sorted(self._bus.nodes_alive)
        by_node = {node: figures for node, figures in self._bus.cluster_figures.items() if node in nodes}
        by_node[self._bus.node_id] = self._node_figures()
        return {
            "nodes": nodes,
            "connections": sum(figures.connections for figures in by_node.values()),
            "users": sum(figures.users for figures in by_node.values()),
            "by_node": {node: figures._asdict() for node, figures in sorted(by_node.items())},
        }

    # The settings as given, each read from the piece that uses it (one copy).

    @property
    def store(self) -> Store | None:
        return self._store

    @property
    def resend(self) -> bool:
        """Whether resuming subscribers get what they missed (a store is needed)."""
        return self._resend.enabled

    @property
    def write_pace(self) -> float:
        """Seconds the fan-out leaves per write it handed to the transport before its next slice."""
        return self._fanout.write_pace

    def transport_write_pace(self, seconds: float) -> None:
        """A transport that carries writes on another thread says how long each takes.

        It applies unless the hub was given ``write_pace`` explicitly (see
        :mod:`sse_fast.hub.fanout`).
        """
        if not self._write_pace_given:
            self._fanout.write_pace = seconds

    @property
    def replay_page(self) -> int:
        return self._resend.replay_page

    @property
    def heartbeat(self) -> float:
        return self._sweep.heartbeat

    @property
    def stall_timeout(self) -> float:
        return self._sweep.stall_timeout

    @property
    def store_check_interval(self) -> float:
        return self._store_health.check_interval

    @property
    def on_push_failed(self) -> PushFailedCallback | None:
        return self._failures.on_push_failed

    @on_push_failed.setter
    def on_push_failed(self, callback: PushFailedCallback | None) -> None:
        self._failures.on_push_failed = callback

    @property
    def on_subscriber_closed(self) -> ClosedCallback | None:
        """Called with each subscriber as it ends, its ``close_reason`` and ``sent`` set (or None)."""
        return self._registry.on_closed

    @on_subscriber_closed.setter
    def on_subscriber_closed(self, callback: ClosedCallback | None) -> None:
        self._registry.on_closed = callback

    # ----------------------------------------------------------- subscribers

    def subscribe(
        self,
        uid: str,
        sink: SubscriberSink,
        *,
        event_type: str | None = None,
        resume: bool = False,
        expires_at: float | None = None,
    ) -> Subscriber:
        """Register a connection; it gets a heartbeat at once (with its ``retry:``, when the hub
        sends one) and live events from now on.

        With ``resume=True`` the transport will first stream :meth:`replay`;
        live events wait (in the ring) until the replay is done.  With
        ``expires_at`` (Unix seconds: a token's ``exp`` plus the leeway) the
        stream gets a last ``token_expired`` event then and is closed.
        """
        if self._closing:
            raise HubClosedError("the hub is shutting down")
        if len(self._registry.subs) >= self.max_connections:
            raise HubFullError(f"max_connections ({self.max_connections}) reached")
        now = self._fanout.tick()
        sub = Subscriber(uid, sink, event_type or None, self._ring.head, busy_since=now, last_write=now)
        sub.replaying = resume
        sub.retry_ms = self._retry.pick()
        self._registry.add(sub)
        self._fanout.joined(sub)
        sink.write(opening_frame(sub.retry_ms))
        if expires_at is not None:
            self._expiry.watch(sub, expires_at, self._loop or asyncio.get_running_loop())
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a connection (the transport saw it go). Safe to call twice."""
        self._registry.drop(sub, close=False, reason=CLIENT_GONE)

    def write_failed(self, sub: Subscriber, exc: BaseException | None = None) -> None:
        """The sink could not write: report the events of that write and drop the subscriber."""
        self._failures.write_failed(sub, exc)

    def replay(self, sub: Subscriber, last_event_id: str) -> AsyncIterator[bytes]:
        """Stream what ``sub`` missed after ``last_event_id``, page by page, then go live.

        See :meth:`~sse_fast.hub.resend.Resend.replay` for how the seam with
        live events leaves no gap and no duplicate, and when a ``reset`` comes first.
        """
        return self._resend.replay(sub, last_event_id)

    # ------------------------------------------------------------------ push

    async def push(self, events: Event | Iterable[Event], uids: Iterable[str] | None = None) -> list[str]:
        """Deliver events to every connection of ``uids`` (everyone when empty/None).

        All events are validated before anything is stored or sent: an invalid
        one raises :class:`~sse_fast.errors.InvalidEventError` naming the field
        and nothing is delivered.  Returns the ids, in order, once the events
        are accepted (stored, and in the fan-out), *before* they are delivered:
        the fan-out runs in slices between other work, so ``on_push_failed``
        may fire later, and :meth:`drain` waits for the delivery.  A push of
        more than ``max_recipients`` (events x uids as given, a broadcast
        counting one per event) raises
        :class:`~sse_fast.errors.TooManyRecipientsError`.  A broadcast while
        the fan-out is more than half the ring behind, or any push while more
        than four pushes' worth of recipients wait to be placed, raises
        :class:`~sse_fast.errors.HubOverloadedError`.  Nothing is accepted then.
        """
        if self._closing:
            raise HubClosedError("the hub is shutting down")
        batch = [events] if isinstance(events, Event) else list(events)
        if not batch:
            raise EmptyPushError()
        if uids is not None and not isinstance(uids, (list, tuple)):
            if isinstance(uids, (str, bytes)):
                validate_uids(uids)  # raises, naming the rule
            uids = list(uids)
        recipients = len(batch) * (len(uids) if uids else 1)
        if recipients > self.max_recipients:
            raise TooManyRecipientsError(recipients, self.max_recipients)
        # A push of a few uids and events (most of them: a notification) is checked and
        # encoded in place; only long lists are awaited a chunk per loop turn.
        if uids is None or len(uids) <= CHUNK_UIDS:
            targets = validate_uids(uids)
        else:
            targets = await self._targets(uids)
        if len(batch) == 1:  # most pushes: none of the comprehensions' frames on this path
            prepared = [encode_body(batch[0], 0)]
        elif len(batch) <= CHUNK_EVENTS:
            prepared = [encode_body(ev, i) for i, ev in enumerate(batch)]
        else:
            prepared = await self._encoded(batch)
        if self._closing:  # while a long push was checked
            raise HubClosedError("the hub is shutting down")
        if self._fanout.overloaded(broadcast=targets is None):
            self.stats.overloaded += 1
            raise HubOverloadedError("push: pushes arrive faster than they are delivered")
        if targets is None:
            self._fanout.check_broadcast(batch, prepared)
        if self._store is not None:
            if len(batch) == 1:
                one = batch[0]
                new = [NewEvent(one.event, prepared[0][0], targets, one.id)]
            else:
                new = [
                    NewEvent(ev.event, text, targets, ev.id)
                    for ev, (text, _) in zip(batch, prepared, strict=True)
                ]
            save_now = self._store_health.save_now
            if save_now is not None:
                stored = save_now(new)
            else:
                self._fanout.saving += 1  # its answer is read between two slices: shorter ones
                try:
                    stored = await self._store_health.save(new)
                finally:
                    self._fanout.saving -= 1
            if len(stored) == 1:
                seqs, ids = [stored[0].seq], [stored[0].id]
            else:
                seqs = [s.seq for s in stored]
                ids = [s.id for s in stored]
            if ids[0].rpartition("-")[0] == self._history.epoch:
                self._history.saw(seqs[-1])
                if self._follows:  # the bus brings it back, in the cluster's order
                    self._delivery.accepted(batch, prepared, stored)
                else:
                    self._fanout.fan_out(batch, prepared, seqs, ids, targets)
            elif not self._follows:
                # Saved in a history that was found lost (and replaced) while we
                # waited: accepted, so delivered, but without an id, since one of
                # the lost history would take the client's Last-Event-ID back there.
                self._fanout.fan_out(batch, prepared, [0] * len(ids), [None] * len(ids), targets)
            return ids
        seqs, ids = self._history.number(len(batch))
        self._fanout.fan_out(batch, prepared, seqs, ids, targets)
        return ids

    async def _targets(self, uids: list[Any] | tuple[Any, ...]) -> tuple[str, ...] | None:
        """A long list of uids checked and de-duplicated (as :func:`~sse_fast.event.validate_uids`
        does a short one) a chunk per loop turn, so that other requests are served in between."""
        named: dict[str, None] = {}
        for start in range(0, len(uids), CHUNK_UIDS):
            await asyncio.sleep(0)  # the first too: decoding the body took a turn's worth already
            collect_uids(named, uids[start : start + CHUNK_UIDS], start)
        return tuple(named) or None

    async def _encoded(self, batch: list[Event]) -> list[tuple[str, bytes]]:
        """Each event checked and encoded (:func:`~sse_fast.event.encode_body`); many events a
        chunk per loop turn."""
        prepared: list[tuple[str, bytes]] = []
        for start in range(0, len(batch), CHUNK_EVENTS):
            if start:
                await asyncio.sleep(0)
            chunk = batch[start : start + CHUNK_EVENTS]
            prepared += [encode_body(ev, i) for i, ev in enumerate(chunk, start)]
        return prepared

    async def drain(self) -> None:
        """Return once everything accepted so far has been handed to the subscribers' sinks
        (a sink busy with an earlier write gets it with its next one).  With a following bus,
        this node's pushes first have to come back from the bus."""
        if self._follows:
            await self._delivery.wait_delivered()
        await self._fanout.drain()
        if self._offline_check is not None:
            await self._offline_check.wait()

    # ------------------------------------------------------- timed passes

    def sweep(self) -> None:
        """One pass over all subscribers: heartbeat the quiet ones, drop the stalled ones."""
        self._sweep.sweep()

    async def check_store(self) -> None:
        """Ask the store whether it can take saves, and adopt a new history if it lost ours."""
        await self._store_health.check()


__all__ = ["SHUTDOWN_EVENT", "Hub"]
