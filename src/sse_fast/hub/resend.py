"""Resend: what a reconnecting subscriber missed, from the store, and a reset when it cannot be had."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from .._core import FanoutRing, check_single_line, encode_event
from ..errors import InvalidEventError, InvalidEventIdError
from ..ids import EventId, format_id, publisher_id_rule
from ..json_text import dumps, escape_line_separators
from ..protocol import HISTORY_LOST, RESET_EVENT
from ..stores.base import Clock, Store, StoredEvent
from .fanout import Fanout
from .history import History
from .registry import SubscriberRegistry
from .stats import HubStats
from .subscriber import Subscriber

logger = logging.getLogger("sse_fast.hub")

REPLAY_READS = 4
"""Store reads that replays make at once, at most: a thousand clients resuming together (the
subscribers of a node that died) queue here, and pushes keep finding the store free to save.
Measured (benchmarks/failover.py, 10,000 resumes on one node): 1 -> 7.1 s until the last
resumed, 4 -> 5.0 s, 8 -> 8.4 s, 16 -> 20 s, 48 -> 40 s: more reads at once only make each
slower."""


def reset_frame(reason: str, last_event_id: str | None, event_id: str | None = None) -> bytes:
    """A ``reset`` event: the client cannot go on from ``last_event_id``, and why.

    The id is echoed as text: bytes that were not UTF-8 (kept as lone
    surrogates) as U+FFFD, line separators escaped as all data is.
    """
    if last_event_id is not None and not last_event_id.isascii():
        last_event_id = last_event_id.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    data = dumps({"reason": reason, "last_event_id": last_event_id})
    return encode_event(data, RESET_EVENT, event_id)


def may_be_an_id(text: str) -> bool:
    """Whether any event could carry ``text`` as its id (the rule ``encode_event`` applies).

    A ``Last-Event-ID`` that breaks it (bytes that were not UTF-8, a control
    character) is malformed whatever the store holds.
    """
    try:
        check_single_line(text, "id")
    except InvalidEventError:
        return False
    return True


def replay_frames(page: list[StoredEvent]) -> bytes:
    """One page of stored events as wire bytes, for one write."""
    try:
        return b"".join([encode_event(e.data, e.event, e.wire_id) for e in page])
    except InvalidEventError:
        return b"".join([_stored_frame(e) for e in page])


def _stored_frame(event: StoredEvent) -> bytes:
    """An event stored before its characters were refused: data with U+2028 and
    the like escaped (exact for JSON data), and left out with a warning when
    that is not enough, rather than ending every replay that reaches it."""
    try:
        return encode_event(event.data, event.event, event.wire_id)
    except InvalidEventError:
        pass
    try:
        return encode_event(escape_line_separators(event.data.encode()).decode(), event.event, event.wire_id)
    except InvalidEventError as exc:
        logger.warning(
            "event %s is not replayed: it was stored before such events were refused (%s)", event.id, exc
        )
        return b""


class Resend:
    """Replays from the store what a subscriber missed after its ``Last-Event-ID``, then lets it go live.

    ``enabled`` is false without a store (or with resend turned off): every
    resuming subscriber then gets a ``reset`` (``no_history``) and live
    events only.  ``replay_page`` bounds one read from the store and so one
    write.
    """

    def __init__(
        self,
        store: Store | None,
        history: History,
        registry: SubscriberRegistry,
        fanout: Fanout,
        ring: FanoutRing,
        stats: HubStats,
        clock: Clock,
        *,
        enabled: bool,
        replay_page: int,
    ) -> None:
        self.enabled = enabled
        self.replay_page = replay_page
        self._store = store
        self._history = history
        self._registry = registry
        self._fanout = fanout
        self._ring = ring
        self._stats = stats
        self._clock = clock
        self._reads = asyncio.Semaphore(REPLAY_READS)

    async def replay(self, sub: Subscriber, last_event_id: str) -> AsyncIterator[bytes]:
        """Stream what ``sub`` missed after ``last_event_id``, page by page, then go live.

        The subscriber was registered with ``resume=True`` before the first
        page is read, so every event is either in the store when a page is
        read or fanned out to the ring after registration; live frames whose
        sequence number was already replayed are skipped by the ring's
        ``after_seq`` filter.  That is what leaves no gap and no duplicate at
        the seam.  A publisher's own id resumes after the latest event saved
        with it, and a replayed event carries the id it carried live.  When
        the id cannot be resumed from (malformed, another epoch, unknown,
        older than retention, or no store), a ``reset`` event comes first,
        then everything retained.
        """
        history = self._history
        epoch = history.epoch  # a history lost meanwhile ends this replay: see begin_new_history
        try:
            async with self._reads:
                after, reason = await self._resume_point(last_event_id)
            if history.epoch != epoch:
                return
            if reason is not None:
                self._stats.resets += 1
                yield reset_frame(reason, last_event_id)
            store = self._store
            while store is not None and self.enabled and not sub.closed:
                async with self._reads:  # held for the read only, never while a page is written
                    if sub.closed:
                        return
                    page = await store.list_after(
                        sub.uid, after, event_type=sub.event_type, limit=self.replay_page
                    )
                if sub.closed or history.epoch != epoch:
                    return
                if page:
                    after = page[-1].seq
                    sub.after_seq = after
                    self._stats.replayed += len(page)
                    sub.sent += len(page)
                    sub.busy_since = self._clock()
                    yield replay_frames(page)
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
        store = self._store
        if not self.enabled or store is None:
            return history.seq, "no_history"
        if not may_be_an_id(last_event_id):
            return 0, "malformed_id"
        try:
            parsed = EventId.parse(last_event_id)
        except InvalidEventIdError:
            return await self._publisher_resume_point(store, last_event_id)
        if parsed.epoch != history.epoch:
            return 0, "unknown_epoch"
        if parsed.seq > history.seq:
            # Another process writing the same store may have got further than
            # the events this hub has seen: ask before calling the id unknown.
            history.saw(await store.last_seq())
            if parsed.seq > history.seq:
                return 0, "unknown_id"
        if parsed.seq + 1 < await store.first_seq():
            return parsed.seq, "expired"
        return parsed.seq, None

    @staticmethod
    async def _publisher_resume_point(store: Store, last_event_id: str) -> tuple[int, str | None]:
        """A publisher's own id: after the latest event saved with it, as the store's index knows it."""
        if publisher_id_rule(last_event_id) is not None:
            return 0, "malformed_id"  # could be no id of ours: neither the server's nor a publisher's
        seq = await store.seq_of_publisher_id(last_event_id)
        if seq is None:
            return 0, "unknown_id"
        if seq + 1 < await store.first_seq():
            return seq, "expired"
        return seq, None

    def begin_new_history(self, epoch: str, seq: int) -> None:
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
        self._stats.histories_lost += 1
        # "<epoch>-0" in a fresh history: a client resumes from its start.
        self.reset_everyone(reset_frame(HISTORY_LOST, lost, format_id(epoch, seq)), new_history=True)

    def reset_everyone(self, frame: bytes, *, new_history: bool = False) -> None:
        """Write a ``reset`` to every subscriber, after what is pending for it.

        ``new_history``: seqs start again, so nothing of the new history
        counts as "already replayed".
        """
        self._fanout.place_all()
        flush_one = self._fanout.flush_one
        for sub in self._registry.snapshot():
            if new_history:
                sub.after_seq = 0
            if not sub.replaying:  # a replay in progress stops at its next page
                flush_one(sub)
            self._stats.resets += 1
            sub.sink.write(frame)
