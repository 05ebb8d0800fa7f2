"""Store health: whether the store can take saves, and a new history when it lost the hub's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..stores.base import (
    HistoryLostError,
    NewEvent,
    SaveNow,
    Store,
    StoredEvent,
    StoreUnavailableError,
    save_without_io,
)
from .history import History
from .stats import HubStats

logger = logging.getLogger("sse_fast.hub")


class StoreHealth:
    """Saves through the store, checks it every ``check_interval`` seconds, and adopts a wiped history.

    While the store cannot be reached, :attr:`error` says why (pushes answer
    503 meanwhile); the first save or check that succeeds clears it.  When the
    store has lost the hub's history (Redis flushed, or restarted empty), the
    hub goes on in the store's new one: ``on_new_history(epoch, seq)`` is
    called once per loss, however many pushes find out at the same time.
    """

    def __init__(
        self,
        store: Store | None,
        history: History,
        stats: HubStats,
        on_new_history: Callable[[str, int], None],
        *,
        check_interval: float,
    ) -> None:
        self.check_interval = check_interval
        self._store = store
        self._history = history
        self._stats = stats
        self._on_new_history = on_new_history
        self._error: str | None = None
        self._history_lock: asyncio.Lock | None = None
        self._stopped = False
        self.save_now: SaveNow | None = save_without_io(store)
        """The store's save as a plain call, when it has no I/O (memory): nothing to fail or adopt."""

    @property
    def error(self) -> str | None:
        """Why the store could not be used last time, while it still cannot."""
        return self._error

    async def save(self, events: list[NewEvent]) -> list[StoredEvent]:
        """Save through the store; a lost history is adopted once and the save tried again."""
        epoch = self._history.epoch
        try:
            return await self._save_once(events)
        except HistoryLostError:
            await self._adopt_new_history(epoch)
        return await self._save_once(events)  # lost again at once: a 500, nothing delivered

    async def _save_once(self, events: list[NewEvent]) -> list[StoredEvent]:
        assert self._store is not None
        try:
            stored = await self._store.save(events)
        except StoreUnavailableError as exc:
            self._stats.store_unavailable += 1
            self._failed(exc)
            raise
        self._recovered()
        return stored

    async def watch_forever(self) -> None:
        """Check the store every ``check_interval`` until :meth:`stop` (which a cancel alone may not
        do: redis-py can swallow one inside a command)."""
        while not self._stopped:
            await asyncio.sleep(self.check_interval)
            if self._stopped:
                return
            try:
                await self.check()
            except Exception:
                logger.exception("store check failed")

    def stop(self) -> None:
        self._stopped = True

    async def check(self) -> None:
        """Ask the store whether it can take saves, and adopt a new history if it lost ours."""
        if self._store is None:
            return
        epoch = self._history.epoch
        try:
            await self._store.check()
        except HistoryLostError:
            try:
                await self._adopt_new_history(epoch)
            except StoreUnavailableError as exc:
                self._failed(exc)
                return
        except StoreUnavailableError as exc:
            self._failed(exc)
            return
        self._recovered()

    def _failed(self, exc: StoreUnavailableError) -> None:
        if self._error is None:
            logger.warning("store unavailable, pushes answer 503 until it is back: %s", exc)
        self._error = str(exc)

    def _recovered(self) -> None:
        if self._error is not None:
            logger.warning("store available again")
            self._error = None

    async def _adopt_new_history(self, lost_epoch: str) -> None:
        """The store's history was wiped: go on with the new one.

        Concurrent pushes may all find out at once; the first adopts, the
        others see the epoch has moved on.
        """
        assert self._store is not None
        if self._history_lock is None:
            self._history_lock = asyncio.Lock()
        async with self._history_lock:
            if self._history.epoch != lost_epoch:
                return
            await self._store.recover()
            seq = await self._store.last_seq()
            self._on_new_history(self._store.epoch, seq)
