"""The hub when its store loses the history under it (as Redis does when flushed), in-process.

A store whose history can be wiped at any moment and whose calls suspend at
random points; pushes run concurrently with wipes and with the hub's own
store check.  Connected subscribers must get every accepted event exactly
once, a ``reset`` at each lost history, and ids that follow it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_fast import Event, Hub, ServerSentEvent
from sse_fast.hub import HISTORY_LOST, RESET_EVENT
from sse_fast.ids import EventId
from sse_fast.stores import HistoryLostError, MemoryStore, NewEvent, Retention, StoredEvent
from test_hub import Connection, run, settle


class WipeableStore:
    """A MemoryStore that a test can wipe (like FLUSHALL); every call may suspend a few times."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.inner = MemoryStore(max_events=100_000)
        self.wiped = False
        self.histories = 1

    @property
    def epoch(self) -> str:
        return self.inner.epoch

    @property
    def retention(self) -> Retention:
        return self.inner.retention

    def wipe(self) -> None:
        self.wiped = True

    async def _suspend(self) -> None:
        for _ in range(self.rng.randint(0, 3)):
            await asyncio.sleep(0)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def save(self, events: Sequence[NewEvent]) -> list[StoredEvent]:
        await self._suspend()  # not after the save: saves complete in order (the Store protocol)
        if self.wiped:
            raise HistoryLostError("wiped")
        stored = await self.inner.save(events)
        # Resolved from the loop, as the real stores' writers do: in order, but
        # other tasks (a store check that finds a wipe) may run before the caller resumes.
        done: asyncio.Future[list[StoredEvent]] = asyncio.get_running_loop().create_future()

        def resolve() -> None:
            if not done.cancelled():
                done.set_result(stored)

        asyncio.get_running_loop().call_soon(resolve)
        return await done

    async def list_after(self, uid: str, after_seq: int, **kw: Any) -> list[StoredEvent]:
        await self._suspend()
        return await self.inner.list_after(uid, after_seq, **kw)

    async def first_seq(self) -> int:
        return await self.inner.first_seq()

    async def last_seq(self) -> int:
        return await self.inner.last_seq()

    async def seq_of_publisher_id(self, publisher_id: str) -> int | None:
        await self._suspend()
        return await self.inner.seq_of_publisher_id(publisher_id)

    async def check(self) -> None:
        await self._suspend()
        if self.wiped:
            raise HistoryLostError("wiped")

    async def recover(self) -> None:
        await self._suspend()
        if self.wiped:  # the first to recover starts the new history; later ones adopt it
            self.inner = MemoryStore(max_events=100_000)
            await self.inner.open()
            self.wiped = False
            self.histories += 1


def check_ids_follow_resets(events: list[ServerSentEvent], first_epoch: str) -> None:
    """Within a history ids increase strictly; after a reset they belong to the reset's history.

    An event saved just before its history was found lost comes without an id
    (the parser then repeats the last one): it must never move the id back.
    """
    epoch, seq, last = first_epoch, 0, ""
    for event in events:
        if event.id == last and event.event != RESET_EVENT:
            continue
        last = event.id
        parsed = EventId.parse(event.id)
        if event.event == RESET_EVENT:
            assert event.json()["reason"] == HISTORY_LOST
            assert parsed.epoch != epoch
            epoch, seq = parsed.epoch, parsed.seq
            continue
        assert parsed.epoch == epoch, (event, epoch)
        assert parsed.seq > seq, (event, seq)
        seq = parsed.seq


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(10, 80))
def test_connected_subscribers_get_every_accepted_event_across_lost_histories(seed: int, steps: int) -> None:
    async def main() -> None:
        rng = random.Random(seed)
        store = WipeableStore(rng)
        hub = Hub(store=store, store_check_interval=3600, ring_frames=64, replay_page=3)
        await hub.start()
        users = ["a", "b", "c"]
        first = [await hub.push(Event("e", f"init{n}")) for n in range(5)]
        # Resumed connections: their replay leaves after_seq at the last seq
        # replayed, which a new history (seqs from 1) must not be filtered by.
        conns = {u: await Connection(hub, u).open(last_event_id=first[1][0]) for u in users}
        expected: dict[str, list[str]] = {u: ["init2", "init3", "init4"] for u in users}
        pushes: list[tuple[asyncio.Task[list[str]], str, list[str]]] = []
        checks: list[asyncio.Future[None]] = []

        for n in range(steps):
            action = rng.random()
            if action < 0.6:
                targets = None if rng.random() < 0.5 else rng.sample(users, rng.randint(1, 2))
                task = asyncio.ensure_future(hub.push(Event("e", str(n)), targets))
                pushes.append((task, str(n), targets or users))
            elif action < 0.75:
                store.wipe()
            elif action < 0.85:
                checks.append(asyncio.ensure_future(hub.check_store()))
            else:
                await settle()
            if rng.random() < 0.3:
                await asyncio.sleep(0)

        await asyncio.gather(*(task for task, _, _ in pushes), *checks, return_exceptions=True)
        await hub.check_store()
        await settle()
        for task, data, targets in pushes:
            # A push fails only when the history is lost twice within it; it delivered nothing.
            if task.exception() is None:
                for uid in targets:
                    expected[uid].append(data)
            else:
                assert isinstance(task.exception(), HistoryLostError)
        for uid, conn in conns.items():
            got = [e.json() for e in conn.events if e.event != RESET_EVENT]
            assert sorted(got) == sorted(expected[uid]), uid
            assert len(got) == len(set(got))
            resets = [e for e in conn.events if e.event == RESET_EVENT]
            assert len(resets) == store.histories - 1
            check_ids_follow_resets(conn.events, EventId.parse(first[0][0]).epoch)
        assert hub.stats.histories_lost == store.histories - 1
        await hub.close()

    run(main)
