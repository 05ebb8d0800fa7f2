"""The hub in-process, through sinks that behave like a transport: fan-out, failures, resend seam.

The seam's property test, across fan-out slices, is in test_hub_slices.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sse_fast import Event, EventParser, Hub, InvalidEventError, ServerSentEvent
from sse_fast.hub import OFFLINE, RESET_EVENT, SLOW_CONSUMER, WRITE_ERROR, Subscriber
from sse_fast.hub.resend import REPLAY_READS
from sse_fast.stores import MemoryStore, SQLiteStore, Store, StoredEvent
from test_stores import FakeClock

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(coro_fn(), 30))


class Connection:
    """A subscriber's connection as a transport drives it: one write in flight, then ``ready``."""

    def __init__(self, hub: Hub, uid: str, event_type: str | None = None, *, auto_ready: bool = True) -> None:
        self.hub = hub
        self.uid = uid
        self.writes: list[bytes] = []
        self.parser = EventParser()
        self.events: list[ServerSentEvent] = []
        self.closed = False
        self.auto_ready = auto_ready
        self.fail_next = False
        self.sub: Subscriber | None = None
        self.event_type = event_type

    # SubscriberSink
    def write(self, data: bytes) -> None:
        if self.fail_next:
            assert self.sub is not None  # set only after open()
            asyncio.get_running_loop().call_soon(self.hub.write_failed, self.sub, OSError("reset"))
            return
        self.writes.append(data)
        self.events += self.parser.feed(data)
        if self.auto_ready and self.sub is not None and not self.sub.replaying:
            asyncio.get_running_loop().call_soon(self.hub.ready, self.sub)

    def close(self) -> None:
        self.closed = True

    async def open(self, last_event_id: str | None = None) -> Connection:
        resume = last_event_id is not None
        self.sub = self.hub.subscribe(self.uid, self, event_type=self.event_type, resume=resume)
        if last_event_id is not None:
            async for chunk in self.hub.replay(self.sub, last_event_id):
                self.writes.append(chunk)
                self.events += self.parser.feed(chunk)
                await asyncio.sleep(0)
        self.hub.ready(self.sub)
        return self

    def drop(self) -> None:
        assert self.sub is not None
        self.hub.unsubscribe(self.sub)

    def seen(self) -> list[tuple[str, str]]:
        return [(e.event, e.data) for e in self.events]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# ------------------------------------------------------------------ fan-out


def test_each_event_is_encoded_once_and_shared_by_every_subscriber() -> None:
    async def main() -> None:
        hub = Hub()
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(50)]
        await settle()
        await hub.push(Event("tick", {"n": 1}))
        await settle()
        frames = [c.writes[-1] for c in conns]
        assert all(f is frames[0] for f in frames)  # the very same bytes object
        assert frames[0].endswith(b'event: tick\ndata: {"n":1}\n\n')
        await hub.close()

    run(main)


def test_a_busy_subscriber_gets_everything_pending_in_one_write() -> None:
    async def main() -> None:
        hub = Hub()
        await hub.start()
        conn = Connection(hub, "u", auto_ready=False)
        await conn.open()
        await settle()
        writes_before = len(conn.writes)
        await hub.push(Event("n", 0))
        await settle()
        assert len(conn.writes) == writes_before + 1  # in flight: no ready yet
        for n in range(1, 10):
            await hub.push(Event("n", n))
        await settle()
        assert len(conn.writes) == writes_before + 1  # the others wait for ready
        assert conn.sub is not None
        hub.ready(conn.sub)
        assert len(conn.writes) == writes_before + 2  # the other nine, joined
        assert [e.data for e in conn.events] == [str(n) for n in range(10)]
        assert hub.stats.deliveries == 10
        await hub.close()

    run(main)


def test_unicast_and_broadcast_keep_push_order_per_subscriber() -> None:
    async def main() -> None:
        hub = Hub()
        await hub.start()
        conn = Connection(hub, "a", auto_ready=False)
        await conn.open()
        await settle()
        await hub.push(Event("b", 0))
        await hub.push(Event("u", 1), ["a"])
        await hub.push(Event("b", 2))
        await hub.push(Event("u", 3), ["a"])
        assert conn.sub is not None
        hub.ready(conn.sub)
        await settle()
        hub.ready(conn.sub)
        assert [e.data for e in conn.events] == ["0", "1", "2", "3"]
        ids = [int(e.id.rsplit("-", 1)[1]) for e in conn.events]
        assert ids == sorted(ids)
        await hub.close()

    run(main)


def test_invalid_events_are_rejected_naming_the_field_and_nothing_is_sent() -> None:
    async def main() -> None:
        hub = Hub()
        await hub.start()
        conn = await Connection(hub, "a").open()
        with pytest.raises(InvalidEventError, match=r"^events\[1\]\.event"):
            await hub.push([Event("ok", 1), Event("bad\ntype", 2)])
        with pytest.raises(InvalidEventError, match=r"^uids\[0\]"):
            await hub.push(Event("ok", 1), [3])  # type: ignore[list-item]  # the wrong type is the test
        with pytest.raises(InvalidEventError, match=r"^events\[0\]\.data"):
            await hub.push(Event("ok", object()))
        with pytest.raises(ValueError, match=r"^events"):
            await hub.push([])
        await settle()
        assert conn.events == [] and hub.stats.events == 0
        await hub.close()

    run(main)


def test_a_broadcast_that_cannot_fit_the_ring_is_refused_before_it_is_stored() -> None:
    async def main() -> None:
        store = MemoryStore()
        hub = Hub(store=store, ring_bytes=1024)
        await hub.start()
        conn = await Connection(hub, "a").open()
        with pytest.raises(InvalidEventError, match=r"^events\[1\]: a broadcast of \d+ bytes"):
            await hub.push([Event("small", 1), Event("big", "x" * 1000)])
        assert await store.last_seq() == 0 and hub.stats.events == 0
        assert await hub.push(Event("big", "x" * 1000), ["a"])  # unicast frames are not in the ring
        await settle()
        assert [e.event for e in conn.events] == ["big"]
        await hub.close()

    run(main)


# ----------------------------------------------------------------- failures


def test_push_failed_callback_reasons() -> None:
    async def main() -> None:
        failures: list[tuple[str, str, str]] = []

        async def on_failed(uid: str, event: Event, reason: str) -> None:
            failures.append((uid, event.event, reason))

        hub = Hub(on_push_failed=on_failed, ring_frames=4)
        await hub.start()
        await hub.push(Event("to-nobody", 1), ["ghost"])
        slow = Connection(hub, "slow", auto_ready=False)
        await slow.open()
        broken = await Connection(hub, "broken").open()
        await settle()
        broken.fail_next = True
        for n in range(6):
            await hub.push(Event(f"e{n}", n))
            await settle()
        await hub.close()
        reasons = {(uid, reason) for uid, _, reason in failures}
        assert ("ghost", OFFLINE) in reasons
        assert ("slow", SLOW_CONSUMER) in reasons
        assert ("broken", WRITE_ERROR) in reasons
        assert slow.closed and hub.stats.slow_consumers == 1
        # Its one write never completed (no ready), so every event from that
        # write on is reported, each exactly once.
        missed = [ev for uid, ev, reason in failures if uid == "slow"]
        assert missed == [f"e{n}" for n in range(6)]

    run(main)


def test_heartbeat_sweep_writes_to_quiet_subscribers_and_drops_stalled_ones() -> None:
    async def main() -> None:
        clock = FakeClock()
        hub = Hub(heartbeat=15, stall_timeout=60, clock=clock)
        await hub.start()
        quiet = await Connection(hub, "q").open()
        stalled = Connection(hub, "s", auto_ready=False)
        await stalled.open()
        for _ in range(3):  # each sweep finds both quiet for a heartbeat; "s" never completes its write
            clock.now += 15
            hub.sweep()
            await settle()
        assert quiet.parser.comments == 4  # the one on subscribing, then one per heartbeat
        assert not stalled.closed  # busy since the first sweep's heartbeat: 30 s, not yet stalled
        clock.now += 31
        hub.sweep()
        assert stalled.closed
        assert hub.connections == 1
        await hub.close()
        assert quiet.closed

    run(main)


# ------------------------------------------------------------------ resend


def _stores(tmp_path: Path) -> dict[str, Callable[[], Store]]:
    return {
        "memory": lambda: MemoryStore(),
        "sqlite": lambda: SQLiteStore(str(tmp_path / "hub.db")),
    }


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_replay_sends_what_a_user_may_see_after_its_id(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        hub = Hub(store=_stores(tmp_path)[kind]())
        await hub.start()
        first = (await hub.push(Event("b", 0)))[0]
        await hub.push(Event("for-a", 1), ["a"])
        await hub.push(Event("for-b", 2), ["b"])
        await hub.push(Event("b", 3))
        conn = await Connection(hub, "a").open(last_event_id=first)
        await settle()
        assert conn.seen() == [("for-a", "1"), ("b", "3")]
        await hub.push(Event("live", 4))
        await settle()
        assert conn.seen()[-1] == ("live", "4")
        await hub.close()

    run(main)


@pytest.mark.parametrize(
    ("last_id", "reason"),
    [
        ("garbage", "unknown_id"),  # could be a publisher's own id: none was saved
        ("x" * 257, "malformed_id"),  # longer than any publisher id may be
        ("zzzzzzzz-1", "unknown_epoch"),
        ("", "malformed_id"),
    ],
)
def test_unresumable_ids_get_a_reset_event_then_everything_retained(last_id: str, reason: str) -> None:
    async def main() -> None:
        hub = Hub(store=MemoryStore())
        await hub.start()
        await hub.push(Event("x", 1))
        await hub.push(Event("x", 2), ["other"])
        conn = await Connection(hub, "a").open(last_event_id=last_id)
        assert conn.events[0].event == RESET_EVENT
        assert conn.events[0].json() == {"reason": reason, "last_event_id": last_id}
        assert conn.seen()[1:] == [("x", "1")]
        await hub.close()

    run(main)


def test_an_id_older_than_retention_gets_reset_expired() -> None:
    async def main() -> None:
        hub = Hub(store=MemoryStore(max_events=3))
        await hub.start()
        ids = [(await hub.push(Event("x", n)))[0] for n in range(6)]
        conn = await Connection(hub, "a").open(last_event_id=ids[0])
        assert conn.events[0].event == RESET_EVENT
        assert conn.events[0].json()["reason"] == "expired"
        assert [e.data for e in conn.events[1:]] == ["3", "4", "5"]
        await hub.close()

    run(main)


def test_replay_streams_page_by_page_and_survives_ring_overflow() -> None:
    async def main() -> None:
        hub = Hub(store=MemoryStore(max_events=100_000), ring_frames=8, replay_page=10)
        await hub.start()
        first = (await hub.push(Event("x", 0)))[0]
        for n in range(1, 200):
            await hub.push(Event("x", n))
        conn = Connection(hub, "a")
        opening = asyncio.ensure_future(conn.open(last_event_id=first))
        # Live pushes overflow the 8-frame ring while the replay is running.
        for n in range(200, 260):
            await hub.push(Event("x", n))
            await asyncio.sleep(0)
        await opening
        await settle()
        assert [int(e.data) for e in conn.events] == list(range(1, 260))
        assert len(conn.writes) > 200 // 10  # paged, not one huge write
        assert not conn.closed
        await hub.close()

    run(main)


def test_one_process_alone_is_a_cluster_of_one_in_its_figures() -> None:
    async def main() -> None:
        hub = Hub()
        await hub.start()
        for uid in ("a", "a", "b"):
            await Connection(hub, uid).open()
        assert hub.snapshot()["cluster"] == {
            "nodes": [hub.node_id],
            "connections": 3,
            "users": 2,
            "by_node": {hub.node_id: {"connections": 3, "users": 2}},
        }
        await hub.close()

    run(main)


class SlowReadsStore(MemoryStore):
    """A memory store whose reads take a moment, counting how many are under way at once."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = 0
        self.most = 0

    async def _read(self, result: Awaitable[T]) -> T:
        self.reading += 1
        self.most = max(self.most, self.reading)
        try:
            await asyncio.sleep(0.001)
            return await result
        finally:
            self.reading -= 1

    async def list_after(self, uid: str, after_seq: int, **kw: Any) -> list[StoredEvent]:
        return await self._read(super().list_after(uid, after_seq, **kw))

    async def first_seq(self) -> int:
        return await self._read(super().first_seq())


def test_many_resumes_at_once_queue_for_the_store_and_each_gets_everything() -> None:
    """The subscribers of a node that died come back together: their replays read the store
    REPLAY_READS at a time (a Redis pool of its own size would otherwise run out and refuse
    them), every one of them gets what it missed, and a push meanwhile is accepted."""

    async def main() -> None:
        store = SlowReadsStore()
        hub = Hub(store=store)
        await hub.start()
        ids = [(await hub.push(Event("n", n)))[0] for n in range(5)]
        connections = [Connection(hub, f"u{n}") for n in range(REPLAY_READS * 8)]
        opening = [asyncio.ensure_future(c.open(last_event_id=ids[0])) for c in connections]
        [during] = await hub.push(Event("n", 5))
        await asyncio.gather(*opening)
        await hub.drain()
        assert store.most == REPLAY_READS
        for connection in connections:
            assert [e.id for e in connection.events] == [*ids[1:], during]
        await hub.close()

    asyncio.run(main())
