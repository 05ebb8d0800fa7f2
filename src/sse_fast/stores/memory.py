"""MemoryStore: bounded history in this process, for tests and ephemeral deployments.

Nothing survives the process, so every instance draws a new epoch: a client
that resumes with an id from a previous run is recognised as coming from
another history.  ``save`` does no I/O, which makes FIFO completion trivial.
Publisher ids are indexed in a dict (id -> latest seq) and a deque of
``(seq, id)`` in seq order, from which retention trims them.  An event for
many users also keeps its recipients as a set: a resuming subscriber's page
asks of every event kept whether it was one of them, and a scan of a tuple of
100,000 uids per event held the loop for milliseconds per subscriber.

The count bound is exact for readers but trimmed in batches: the deque may
hold up to ``PRUNE_BATCH`` events past ``max_events``, which ``first_seq``
and ``list_after`` do not show, so a save pays for a trim once a batch
instead of on every save.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Sequence
from itertools import islice

from ..ids import format_id, new_epoch
from .base import (
    DEFAULT_PAGE,
    Clock,
    NewEvent,
    Retention,
    StoreClosedError,
    StoredEvent,
    check_limit,
    only_calls_save_now,
    wall_clock,
)

DEFAULT_MAX_EVENTS = 10_000
PRUNE_BATCH = 256
"""Events past the count bound kept (unseen) until one trim drops them all."""
MANY_RECIPIENTS = 32
"""Recipients from which an event's are also kept as a set (a tuple scan is faster below)."""


class MemoryStore:
    """A deque of the newest events; seqs are contiguous, so a seq is an index."""

    def __init__(
        self,
        max_events: int | None = DEFAULT_MAX_EVENTS,
        max_age: float | None = None,
        *,
        clock: Clock = wall_clock,
    ) -> None:
        self._retention = Retention(max_events, max_age)
        self._prune_past = None if max_events is None else max_events + min(PRUNE_BATCH, max_events)
        self._clock = clock
        self._epoch = new_epoch()
        self._events: deque[StoredEvent] = deque()
        self._ids: dict[str, int] = {}  # publisher id -> seq of the latest event saved with it
        self._id_seqs: deque[tuple[int, str]] = deque()  # (seq, publisher id), in seq order
        self._recipients: dict[int, frozenset[str]] = {}  # seq -> uids, for events of many
        self._last_seq = 0
        self._last_created = 0.0
        self._open = False

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def retention(self) -> Retention:
        return self._retention

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    @only_calls_save_now
    async def save(self, events: Sequence[NewEvent]) -> list[StoredEvent]:
        return self.save_now(events)

    def save_now(self, events: Sequence[NewEvent]) -> list[StoredEvent]:
        """:meth:`save` without a coroutine: it does no I/O, and the hub's push path takes it so."""
        if not self._open:
            raise StoreClosedError("MemoryStore: save before open() or after close()")
        # created never goes backwards, so age pruning can stop at the first young event.
        now = self._last_created = max(self._clock(), self._last_created)
        out: list[StoredEvent] = []
        # Locals, not attributes, in the loop: what this saves pays for the publisher id.
        seq, epoch, ids, id_seqs = self._last_seq, self._epoch, self._ids, self._id_seqs
        for ev in events:
            seq += 1
            pid, uids = ev.publisher_id, ev.uids
            out.append(StoredEvent(seq, format_id(epoch, seq), ev.event, ev.data, uids, now, pid))
            if uids is not None and len(uids) >= MANY_RECIPIENTS:
                self._recipients[seq] = frozenset(uids)
            if pid is not None:
                ids[pid] = seq
                id_seqs.append((seq, pid))
        self._last_seq = seq
        kept = self._events
        kept.extend(out)
        # Prune only when something is due to go: a look at the count and the oldest event.
        retention = self._retention
        prune_past = self._prune_past
        if (prune_past is not None and len(kept) > prune_past) or (
            retention.max_age is not None and kept[0].created < now - retention.max_age
        ):
            self._prune(now)
        return out

    def _prune(self, now: float) -> None:
        kept = self._events
        first = self._retention.first_kept_seq(self._last_seq)
        oldest = self._retention.oldest_kept_time(now)
        dropped = False
        recipients = self._recipients
        if kept and not recipients and kept[0].seq < first:  # the count's batch, without a test each
            popleft = kept.popleft
            for _ in range(min(len(kept), first - kept[0].seq)):
                popleft()
            dropped = True
        while kept and (kept[0].seq < first or (oldest is not None and kept[0].created < oldest)):
            gone = kept.popleft()
            if recipients:
                recipients.pop(gone.seq, None)
            dropped = True
        if dropped and self._id_seqs:
            first = kept[0].seq if kept else self._last_seq + 1
            cut = self._retention.ids_kept_from(first, self._last_seq)
            id_seqs, ids = self._id_seqs, self._ids
            while id_seqs and id_seqs[0][0] < cut:
                seq, pid = id_seqs.popleft()
                if ids.get(pid) == seq:  # not saved again since
                    del ids[pid]

    async def list_after(
        self,
        uid: str,
        after_seq: int,
        *,
        event_type: str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> list[StoredEvent]:
        check_limit(limit)
        kept = self._events
        if not kept:
            return []
        out: list[StoredEvent] = []
        first = kept[0].seq
        start = max(0, after_seq + 1 - first, self._retention.first_kept_seq(self._last_seq) - first)
        many = self._recipients
        for ev in islice(kept, start, None):
            uids: Collection[str] | None = ev.uids
            if uids is not None and len(uids) >= MANY_RECIPIENTS:
                uids = many[ev.seq]
            if (uids is None or uid in uids) and (event_type is None or ev.event == event_type):
                out.append(ev)
                if len(out) >= limit:
                    break
        return out

    async def check(self) -> None:
        """Memory is always there (and never loses history while the process lives)."""

    async def recover(self) -> None:
        """Nothing to recover: :meth:`check` never reports a lost history."""

    async def first_seq(self) -> int:
        if not self._events:
            return self._last_seq + 1
        return max(self._events[0].seq, self._retention.first_kept_seq(self._last_seq))

    async def last_seq(self) -> int:
        return self._last_seq

    async def seq_of_publisher_id(self, publisher_id: str) -> int | None:
        return self._ids.get(publisher_id)
