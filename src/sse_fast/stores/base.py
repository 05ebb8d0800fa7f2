"""The Store protocol: durable history of accepted events, for resend.

A store saves each accepted event together with its recipients (``None`` for a
broadcast, otherwise the tuple of user ids) and assigns it the next id of its
sequence.  It lists, for one user, the events that user may see after a given
sequence number, in id order, one page at a time.

Ordering contract the hub relies on: ``save`` calls complete in the order they
were made (FIFO), and the ids they assign are strictly increasing in that
order.  ``save`` returns only once the events are as durable as the backend
promises (committed for SQLite, acknowledged by Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

DEFAULT_PAGE = 100


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An accepted event before it has an id.

    ``data`` is the wire text (already JSON-encoded when it came as JSON);
    ``uids`` is ``None`` for a broadcast.
    """

    event: str
    data: str
    uids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the store keeps it: ``id`` is ``f"{epoch}-{seq}"``."""

    seq: int
    id: str
    event: str
    data: str
    uids: tuple[str, ...] | None
    created: float


@runtime_checkable
class Store(Protocol):
    """What the hub needs of a persistence backend."""

    @property
    def epoch(self) -> str:
        """The token that names this store's history (stable across restarts)."""
        ...

    async def open(self) -> None:
        """Create the schema if needed; load the epoch and the last sequence number."""
        ...

    async def close(self) -> None: ...

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
        addressed to it), optionally of one type, in id order, at most ``limit``."""
        ...

    async def first_seq(self) -> int:
        """The smallest sequence number still retained (``last_seq() + 1`` when empty)."""
        ...

    async def last_seq(self) -> int:
        """The largest sequence number ever assigned in this epoch (0 when none)."""
        ...
