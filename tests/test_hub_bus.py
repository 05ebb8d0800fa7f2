"""Hubs on the Redis bus, in one process: the library's view of a cluster.

Two hubs on one prefix of the shared Redis (a prefix per test, deleted after)
stand for two nodes: what either accepts reaches both in one order; only the
node that accepted a push tells ``on_push_failed`` of its offline recipients,
with the event as it was pushed, and only when no node has the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from conftest import reachable_redis
from sse_fast import Event
from sse_fast.bus import InProcessBus
from sse_fast.bus.redis import RedisBus
from sse_fast.hub import Hub
from sse_fast.stores import open_store
from sse_fast.stores.redis import RedisStore
from test_hub import Connection
from test_redis_failures import RedisServer

pytestmark = pytest.mark.redis

REDIS = "redis://127.0.0.1:6379/0"


class Node:
    def __init__(self, prefix: str, name: str, on_push_failed: Callable[[str, Event, str], None]) -> None:
        store = RedisStore(REDIS, key_prefix=prefix)
        self.hub = Hub(store=store, bus=RedisBus(store, name), heartbeat=30, on_push_failed=on_push_failed)


@contextlib.asynccontextmanager
async def two_nodes(failures: list[tuple[str, str, object, str]]) -> AsyncIterator[tuple[Hub, Hub]]:
    prefix = f"hubbus-{uuid.uuid4().hex[:10]}"

    def recorder(name: str) -> Callable[[str, Event, str], None]:
        return lambda uid, event, reason: failures.append((name, uid, event.data, reason))

    hubs = [Node(prefix, name, recorder(name)).hub for name in ("a", "b")]
    for hub in hubs:
        await hub.start()
    try:
        yield hubs[0], hubs[1]
    finally:
        for hub in hubs:
            await hub.close()
        admin = aioredis.Redis.from_url(REDIS)
        keys = [key async for key in admin.scan_iter(match="{" + prefix + "}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


def seq(event_id: str) -> int:
    return int(event_id.rpartition("-")[2])


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "not within the timeout"
        await asyncio.sleep(0.01)


def test_both_hubs_fan_out_every_push_in_one_order_and_offline_is_told_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sse_fast.bus.redis as redis_bus

    reachable_redis(REDIS)
    monkeypatch.setattr(redis_bus, "RENEW", 0.1)  # the nodes see each other sooner

    async def main() -> None:
        failures: list[tuple[str, str, object, str]] = []
        async with two_nodes(failures) as (a, b):
            on_a, on_b = await Connection(a, "u1").open(), await Connection(b, "u1").open()
            only_b = await Connection(b, "u2").open()
            await until(lambda: a.snapshot()["cluster"]["nodes"] == ["a", "b"])
            await asyncio.sleep(0.1)  # b's users written to Redis
            both = {"a": {"connections": 1, "users": 1}, "b": {"connections": 2, "users": 2}}
            await until(lambda: a.snapshot()["cluster"]["by_node"] == both)
            assert a.snapshot()["cluster"] == {
                "nodes": ["a", "b"],
                "connections": 3,
                "users": 3,
                "by_node": both,
            }
            ids = [
                *await a.push(Event("n", {"k": 1})),
                *await b.push(Event("n", 2), ["u1"]),
                *await a.push(Event("n", {"k": 3}), ["u2", "gone"]),
                *await b.push([Event("n", 4), Event("n", 5)]),
            ]
            await a.drain()
            await b.drain()
            await until(lambda: len(on_a.events) == len(on_b.events) == len(only_b.events) == 4)
            assert (
                [e.id for e in on_a.events] == [e.id for e in on_b.events] == [ids[i] for i in (0, 1, 3, 4)]
            )
            assert [e.id for e in only_b.events] == [ids[i] for i in (0, 2, 3, 4)]
            assert [e.json() for e in only_b.events] == [{"k": 1}, {"k": 3}, 4, 5]
            # "gone" has no connection anywhere: told once, by a, with the event as pushed;
            # u2 is on b only: nobody calls it offline
            assert failures == [("a", "gone", {"k": 3}, "offline")]
            assert a.stats.failed_by_reason["offline"] == 1
            assert b.stats.failed_by_reason["offline"] == 0

    asyncio.run(main())


def test_the_in_process_bus_is_todays_path() -> None:
    async def main() -> None:
        hub = Hub(bus=InProcessBus("solo"))
        await hub.start()
        conn = await Connection(hub, "u").open()
        [event_id] = await hub.push(Event("n", 1))
        await hub.drain()
        assert [e.id for e in conn.events] == [event_id]
        assert hub.snapshot()["node"] == {"id": "solo", "bus": "in_process", "bus_error": None}
        await hub.close()

    asyncio.run(main())


def test_the_bus_reaches_a_redis_that_wants_a_password(tmp_path: Path) -> None:
    """The follower's own client has the store's credentials (from the URL)."""
    own = RedisServer(tmp_path, password="s3cret").start()
    try:

        async def main() -> None:
            hubs = []
            for name in ("a", "b"):
                store = open_store(own.url)
                assert isinstance(store, RedisStore)
                hubs.append(Hub(store=store, bus=RedisBus(store, name)))
            a, b = hubs
            for hub in hubs:
                await hub.start()
            on_b = await Connection(b, "u").open()
            [event_id] = await a.push(Event("n", 1), ["u"])
            await until(lambda: bool(on_b.events))
            assert [e.id for e in on_b.events] == [event_id]
            assert b.bus_error is None
            for hub in hubs:
                await hub.close()

        asyncio.run(main())
    finally:
        own.kill()


def test_a_redis_store_brings_the_redis_bus_unless_told_local() -> None:
    from sse_fast.config import ServeConfig
    from sse_fast.engines.setup import build_bus

    url = "redis://127.0.0.1:6379/0?prefix=never-opened"
    store = open_store(url)
    following = build_bus(ServeConfig(store=url, node_id="n1"), store)
    assert isinstance(following, RedisBus) and following.node_id == "n1"
    assert isinstance(build_bus(ServeConfig(store=url, bus="local"), store), InProcessBus)
    assert isinstance(build_bus(ServeConfig(store="memory://"), open_store("memory://")), InProcessBus)


def test_a_dead_nodes_users_stop_counting_as_online_when_its_lease_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sse_fast.bus.redis as redis_bus

    reachable_redis(REDIS)
    monkeypatch.setattr(redis_bus, "LEASE", 0.6)
    monkeypatch.setattr(redis_bus, "RENEW", 0.1)

    async def main() -> None:
        failures: list[tuple[str, str, object, str]] = []
        async with two_nodes(failures) as (a, b):
            await Connection(b, "u").open()
            await until(lambda: a.snapshot()["cluster"]["nodes"] == ["a", "b"])
            await a.push(Event("n", 1), ["u"])
            await a.drain()
            assert failures == []  # u is on b
            bus = b._bus
            assert isinstance(bus, RedisBus)
            await bus._stop()  # b dies: no renewal, no goodbye
            await asyncio.sleep(0.7)
            await a.push(Event("n", 2), ["u"])
            await a.drain()
            assert failures == [("a", "u", 2, "offline")]
            await until(lambda: a.snapshot()["cluster"]["nodes"] == ["a"])

    asyncio.run(main())


def test_a_follower_goes_on_when_redis_has_lost_its_read_script() -> None:
    """The follower's read is a script called by its digest: after ``SCRIPT FLUSH`` (as after a
    Redis restart) it loads it again and delivers what was pushed meanwhile, nothing skipped."""
    reachable_redis(REDIS)

    async def main() -> None:
        async with two_nodes([]) as (a, b):
            on_b = await Connection(b, "u").open()
            first = await a.push(Event("n", 1))
            await until(lambda: len(on_b.events) == 1)
            admin = aioredis.Redis.from_url(REDIS)
            await admin.script_flush()
            await admin.aclose()
            later = [*await a.push(Event("n", 2)), *await a.push(Event("n", 3))]
            await until(lambda: len(on_b.events) == 3)
            assert [e.id for e in on_b.events] == [*first, *later]

    asyncio.run(main())


def test_a_push_saved_in_several_calls_goes_out_whole_and_in_order_on_the_other_node() -> None:
    """A save cut into many script calls (here: a tiny call budget) is held back by the follower
    until its last call, like a resume reader; pushes saved meanwhile follow it, in seq order."""
    reachable_redis(REDIS)

    async def main() -> None:
        async with two_nodes([]) as (a, b):
            store = a.store
            assert isinstance(store, RedisStore)
            store.call_budget = 16  # some 60 calls for 300 recipients
            on_b = [await Connection(b, f"u{i}").open() for i in (0, 150, 299)]
            big = a.push([Event("n", "big"), Event("n", "big2")], [f"u{i}" for i in range(300)])
            small = b.push(Event("n", "small"))
            ids = [*await big, *await small]
            await until(lambda: all(len(c.events) == 3 for c in on_b))
            for conn in on_b:
                seen = [(e.id, e.json()) for e in conn.events]
                order = sorted(
                    zip(ids, ["big", "big2", "small"], strict=True), key=lambda p: int(p[0].split("-")[1])
                )
                assert seen == order

    asyncio.run(main())


def test_entries_at_or_above_an_open_save_wait_until_it_is_whole() -> None:
    """What a resume reader may not see yet (an open save's mark, ``{P}:open``) does not go out live."""
    reachable_redis(REDIS)

    async def main() -> None:
        async with two_nodes([]) as (a, b):
            store = a.store
            assert isinstance(store, RedisStore)
            admin = aioredis.Redis.from_url(REDIS)
            on_b = await Connection(b, "u").open()
            [first] = await a.push(Event("n", 1))
            await until(lambda: len(on_b.events) == 1)
            deadline_ms = (time.time() + 30) * 1000
            await admin.zadd(store.open_key, {str(seq(first) + 1): deadline_ms})  # a save from seq+1 open
            [second] = await a.push(Event("n", 2))
            await asyncio.sleep(0.2)
            assert [e.id for e in on_b.events] == [first]
            await admin.zrem(store.open_key, str(seq(first) + 1))
            await until(lambda: len(on_b.events) == 2)
            assert [e.id for e in on_b.events] == [first, second]
            await admin.aclose()

    asyncio.run(main())


class SwallowsCancels:
    """A client whose pipelines swallow a cancel that lands while they run, as redis-py's can
    (redis-py #2028): the task runs on, cancelled in name only."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def pipeline(self, transaction: bool = True) -> Any:
        real = self._client.pipeline(transaction=transaction)

        class Pipeline:
            async def __aenter__(self) -> Any:
                await real.__aenter__()
                return self

            async def __aexit__(self, *exc: object) -> None:
                await real.__aexit__(*exc)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            async def execute(self) -> Any:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.2)
                return await real.execute()

        return Pipeline()


def test_a_node_closes_when_redis_swallows_the_cancel_of_its_loops() -> None:
    import sse_fast.bus.redis as redis_bus

    reachable_redis(REDIS)

    async def main() -> None:
        async with two_nodes([]) as (a, _):
            bus = a._bus
            assert isinstance(bus, RedisBus)
            bus._client = SwallowsCancels(bus._client)
            on_a = await Connection(a, "u").open()
            await asyncio.sleep(0.1)  # the presence loop writes u, in a pipeline that swallows
            loop = asyncio.get_running_loop()
            closing = loop.create_task(a.close())
            done, _ = await asyncio.wait({closing}, timeout=5 * redis_bus.CLOSE_WAIT)
            assert done == {closing}, "the node did not close"
            assert bus._task is None and bus._presence_task is None
            del on_a

    asyncio.run(main())
