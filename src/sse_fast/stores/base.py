"""The Store protocol: durable history of accepted events, for resend.

A store saves each accepted event together with its recipients (``None`` for a
broadcast, otherwise the tuple of user ids) and assigns it the next id of its
sequence.  It lists, for one user, the events that user may see after a given
sequence number, in id order, one page at a time.

Ordering contract the hub relies on: ``save`` calls complete in the order they
were made (FIFO), and the ids they assign are strictly increasing in that
order.  ``save`` returns only once the events are as durable as the backend
promises (committed for SQLite, acknowledged by Redis).  A ``save`` whose
caller is cancelled may still be stored: cancellation only stops the waiting.

History is bounded by a :class:`Retention` (a count, an age, or both).  The
window a store still holds is ``first_seq() .. last_seq()``; a client that
resumes after ``after_seq`` has missed events for good when
``first_seq() > after_seq + 1`` (or when its id names another epoch), and the
hub should then tell it to reset instead of replaying a history with a hole.

An event may carry its publisher's own id (``publisher_id``), which goes on
the wire instead of the server id, live and in a replay.  The store keeps it
with the event and indexes it, so that a client resuming from it is found
again: :meth:`Store.seq_of_publisher_id` gives the seq of the latest event
saved with that id.  The index forgets an id with the events it points to, one
retention window later (:meth:`Retention.ids_kept_from`): meanwhile its seq
lies below ``first_seq()`` and the hub says ``expired`` rather than
``unknown_id``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from ..errors import SSEFastError

DEFAULT_PAGE = 100
MIN_ID_WINDOW = 1_000
"""Seqs below the first retained event whose publisher ids the index still knows, at the
least (:meth:`Retention.ids_kept_from`): a window that retention by age alone would let
shrink to nothing in a quiet spell."""


class StoreClosedError(SSEFastError):
    """The store is not open (never opened, or already closed)."""


class HistoryLostError(SSEFastError):
    """The backend's history was wiped under an open store; saving on would reuse ids.

    :meth:`Store.recover` starts the store on the backend's new history."""


class StoreUnavailableError(SSEFastError):
    """The backend cannot be reached now (down, restarting, too slow); try again shortly.

    A save that failed this way may still have been written when the backend
    timed out after executing it: the caller learns nothing either way."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history a store keeps: at most ``max_events`` newest events,
    none older than ``max_age`` seconds; ``None`` means no bound of that kind.

    Retention is applied when events are saved (and when a store opens), not
    by a timer: an idle store may keep expired events a while longer, which
    only ever means more history than promised, never less.
    """

    max_events: int | None = None
    max_age: float | None = None

    def __post_init__(self) -> None:
        if self.max_events is not None and (
            isinstance(self.max_events, bool) or not isinstance(self.max_events, int) or self.max_events < 1
        ):
            raise ValueError(f"max_events: must be a positive integer or None, not {self.max_events!r}")
        if self.max_age is not None and (
            isinstance(self.max_age, bool)
            or not isinstance(self.max_age, (int, float))
            or not self.max_age > 0
        ):
            raise ValueError(f"max_age: must be a positive number of seconds or None, not {self.max_age!r}")

    def first_kept_seq(self, last_seq: int) -> int:
        """The smallest seq the count bound keeps, given the newest (seqs are contiguous)."""
        if self.max_events is None:
            return 1
        return max(1, last_seq - self.max_events + 1)

    def oldest_kept_time(self, now: float) -> float | None:
        """Events created before this instant are expired (``None``: no age bound)."""
        return None if self.max_age is None else now - self.max_age

    def ids_kept_from(self, first: int, last: int) -> int:
        """The smallest seq whose publisher id the id index still remembers, given the
        retained seqs ``first`` .. ``last``.

        The ids of the retained events, and those of the events dropped within
        one more window below ``first``: as many seqs as retention keeps
        (``max_events``, or the retained span, whichever is more), and at least
        :data:`MIN_ID_WINDOW`.  A client resuming from one of those hears
        ``expired``, not ``unknown_id``; the index holds no more ids than that.
        """
        window = max(self.max_events or 0, last - first + 1, MIN_ID_WINDOW)
        return max(1, first - window)


Clock = Callable[[], float]
"""Stores take ``clock=time.time``: wall-clock seconds stamped on each event
(``created``) and used for age retention; tests pass a fake one."""

wall_clock: Clock = time.time


class NewEvent(NamedTuple):
    """An accepted event before it has an id.

    ``data`` is the wire text (already JSON-encoded when it came as JSON);
    ``uids`` is ``None`` for a broadcast; ``publisher_id`` the publisher's own
    id, when it gave one (the wire id instead of the server's).

    This and :class:`StoredEvent` are built once per event on every save (and
    every page read), so they are named tuples: built in a third of the time
    of a frozen dataclass, and as immutable.
    """

    event: str
    data: str
    uids: tuple[str, ...] | None = None
    publisher_id: str | None = None


class StoredEvent(NamedTuple):
    """An event as the store keeps it: ``id`` is ``f"{epoch}-{seq}"``; ``publisher_id``
    the publisher's own, which went on the wire instead (see :attr:`wire_id`)."""

    seq: int
    id: str
    event: str
    data: str
    uids: tuple[str, ...] | None
    created: float
    publisher_id: str | None = None

    @property
    def wire_id(self) -> str:
        """The id a subscriber saw live, and so gets in a replay."""
        return self.id if self.publisher_id is None else self.publisher_id


SaveNow = Callable[[Sequence["NewEvent"]], list["StoredEvent"]]
_F = TypeVar("_F", bound=Callable[..., Any])


def only_calls_save_now(save: _F) -> _F:
    """Mark a store's ``save`` as nothing but a call of its ``save_now`` (see :func:`save_without_io`)."""
    save.only_calls_save_now = True  # type: ignore[attr-defined]
    return save


def save_without_io(store: object) -> SaveNow | None:
    """The store's ``save_now`` when its ``save`` is marked as only calling it: a save with no I/O
    that the push path takes without a coroutine.  A subclass that replaces ``save`` (to suspend,
    to count) loses the mark, so it is awaited as usual."""
    save_now = getattr(store, "save_now", None)
    save = getattr(type(store), "save", None)
    if save_now is None or getattr(save, "only_calls_save_now", False) is not True:
        return None
    return save_now  # type: ignore[no-any-return]


@runtime_checkable
class Store(Protocol):
    """What the hub needs of a persistence backend."""

    @property
    def epoch(self) -> str:
        """The token that names this store's history (stable across restarts;
        a new one when the data is wiped).  Durable stores read it in :meth:`open`
        and return ``""`` before."""
        ...

    @property
    def retention(self) -> Retention:
        """The bounds this store keeps its history within."""
        ...

    async def open(self) -> None:
        """Create the schema if needed; load the epoch and the last sequence number."""
        ...

    async def close(self) -> None:
        """Finish pending saves and release the backend; the store may be opened again."""
        ...

    async def save(self, events: Sequence[NewEvent]) -> list[StoredEvent]:
        """Assign ids in order, persist, and return the stored events (same order)."""
        ...

    async def list_after(
        self,
        uid: str,
        after_seq: int,
        *,
        event_type: str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> list[StoredEvent]:
        """Events with ``seq > after_seq`` that ``uid`` may see (broadcasts and those
        addressed to it), optionally of one type, in id order, at most ``limit``.

        A page shorter than ``limit`` means there is nothing more right now;
        continue from the last returned ``seq`` to get the next page."""
        ...

    async def first_seq(self) -> int:
        """The smallest sequence number still retained (``last_seq() + 1`` when empty)."""
        ...

    async def seq_of_publisher_id(self, publisher_id: str) -> int | None:
        """The seq of the latest event saved with this publisher id, while the index
        remembers it (:meth:`Retention.ids_kept_from`: below :meth:`first_seq` once
        that event was dropped); None for an id it does not know."""
        ...

    async def check(self) -> None:
        """Ask the backend whether saves can succeed now (cheap: the hub calls it every second).

        Raises :class:`StoreUnavailableError` when it cannot be reached and
        :class:`HistoryLostError` when its history was wiped under us."""
        ...

    async def recover(self) -> None:
        """After :class:`HistoryLostError`: go on with the backend's new history (a new
        epoch, seqs from 1).  ``epoch`` and ``last_seq()`` then describe it."""
        ...

    async def last_seq(self) -> int:
        """The largest sequence number ever assigned in this epoch (0 when none)."""
        ...


def check_limit(limit: int) -> None:
    """Reject page sizes that would make paging loop forever or read everything."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit: must be a positive integer, not {limit!r}")
