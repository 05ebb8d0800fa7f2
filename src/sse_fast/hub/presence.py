"""Offline across nodes: a recipient of this node's push is ``offline`` only if no node has it."""

from __future__ import annotations

import asyncio
import logging

from ..bus.base import Bus
from ..event import Event
from .failures import OFFLINE, DeliveryFailures

logger = logging.getLogger("sse_fast.hub")


class OfflineCheck:
    """Collects the recipients of this node's pushes that have no connection here, asks the bus
    which of them another node holds, and reports the others ``offline``.

    One question to the bus per batch of such recipients, however many pushes
    they came from; recipients found meanwhile wait for the next.  When the
    bus cannot answer, they are reported offline (the push was accepted a
    moment ago, so the cluster's presence is what is unknown, not the push).
    """

    def __init__(self, bus: Bus, failures: DeliveryFailures) -> None:
        self._bus = bus
        self._failures = failures
        self._pending: dict[str, list[Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, uid: str, events: list[Event]) -> None:
        pending = self._pending.get(uid)
        if pending is None:
            self._pending[uid] = list(events)
        else:
            pending.extend(events)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                try:
                    online = await self._bus.online_elsewhere(list(batch))
                except Exception as exc:
                    logger.warning("presence unknown (%s): %d users reported offline", exc, len(batch))
                    online = set()
                for uid, events in batch.items():
                    if uid not in online:
                        self._failures.report_many(uid, events, OFFLINE)
        finally:
            self._task = None

    async def wait(self) -> None:
        """Return once every recipient collected so far was decided."""
        while self._task is not None:
            await asyncio.shield(self._task)
