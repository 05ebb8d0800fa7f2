"""RedisStore: who sends a save.  A lone save goes from its caller's task; the ones behind it wait
for the writer task, which sends them as one save.  Completion stays FIFO either way.

A save sent through the writer task waited for that task's wake-up and for
its answer's hand-back, each a turn of the loop; under fan-out slices of 2 ms
a turn costs a slice.  The turn counts below are compared with a bare PING's
in the same run (Redis's answer time moves them both), never with a clock.

These tests use db 14 with a key prefix of their own, as ``test_redis_store_bounds`` does;
the frozen-Redis test runs a ``redis-server`` of its own.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sse_fast.engines.native.push import Suspended, run_now
from sse_fast.stores import NewEvent, RedisStore, StoredEvent, StoreUnavailableError
from sse_fast.stores.redis import OWN_TIMEOUTS, SAVE_TIMEOUT
from test_redis_failures import RedisServer
from test_redis_store_bounds import ev, prefix, redis_url  # noqa: F401  (fixtures)
from test_stores import run

pytestmark = pytest.mark.redis

needs_timeout = pytest.mark.skipif(
    not OWN_TIMEOUTS, reason="without asyncio.timeout (3.10) every save goes through the writer task"
)


class Ticker:
    """A loop kept busy the way fan-out slices keep it: a callback that re-schedules itself, counted."""

    def __init__(self, spin: float = 0.0005) -> None:
        self.turns = 0
        self._spin = spin
        self._stopped = False

    def start(self) -> None:
        asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._stopped = True

    def _tick(self) -> None:
        if self._stopped:
            return
        self.turns += 1
        end = time.perf_counter() + self._spin
        while time.perf_counter() < end:
            pass
        asyncio.get_running_loop().call_soon(self._tick)


async def turns_of(ticker: Ticker, make: Any, times: int = 15) -> float:
    taken = []
    for _ in range(times):
        before = ticker.turns
        await make()
        taken.append(ticker.turns - before)
    return statistics.median(taken)


@needs_timeout
def test_a_lone_save_takes_the_turns_of_one_command(redis_url: str, prefix: str) -> None:  # noqa: F811
    async def body() -> tuple[float, float]:
        store = RedisStore(redis_url, key_prefix=prefix)
        await store.open()
        client = aioredis.Redis.from_url(redis_url)
        await client.ping()
        ticker = Ticker()
        ticker.start()
        try:
            ping = await turns_of(ticker, client.ping)
            save = await turns_of(ticker, lambda: store.save([ev(1)]))
        finally:
            ticker.stop()
            await client.aclose()
            await store.close()
        return ping, save

    ping, save = run(body())
    assert save <= ping + 1, f"a lone save took {save} turns, a PING {ping}"  # was PING + 4


@needs_timeout
def test_a_lone_save_driven_outside_a_task_gets_into_one(redis_url: str, prefix: str) -> None:  # noqa: F811
    """The native engine starts a push's coroutine in place, from a protocol callback, with no task
    until it suspends (``run_now``); asyncio's timeout and redis-py's pool need one."""

    def start(coro: Coroutine[Any, Any, list[StoredEvent]], out: asyncio.Future[list[StoredEvent]]) -> None:
        assert asyncio.current_task() is None
        try:
            out.set_result(run_now(coro))
        except Suspended as suspended:
            suspended.task.add_done_callback(
                lambda task: (
                    out.set_exception(exc) if (exc := task.exception()) else out.set_result(task.result())
                )
            )
        except Exception as exc:
            out.set_exception(exc)

    async def body() -> list[int]:
        store = RedisStore(redis_url, key_prefix=prefix)
        await store.open()
        loop = asyncio.get_running_loop()
        try:
            first: asyncio.Future[list[StoredEvent]] = loop.create_future()
            loop.call_soon(start, store.save([ev(1)]), first)
            await asyncio.sleep(0)  # started: it holds the store's turn while it gets into a task
            second = await store.save([ev(2)])  # so this one waits behind it
            return [s.seq for s in await first + second]
        finally:
            await store.close()

    assert run(body()) == [1, 2]


def test_saves_behind_a_lone_one_go_as_one_and_complete_in_order(redis_url: str, prefix: str) -> None:  # noqa: F811
    async def body() -> None:
        store = RedisStore(redis_url, key_prefix=prefix)
        await store.open()
        done: list[int] = []

        async def save(i: int) -> int:
            [stored] = await store.save([ev(i)])
            done.append(i)
            return stored.seq

        try:
            lone = asyncio.ensure_future(save(0))
            await asyncio.sleep(0)  # in flight now
            behind = [asyncio.ensure_future(save(i)) for i in range(1, 101)]
            seqs = [await lone, *await asyncio.gather(*behind)]
        finally:
            await store.close()
        assert done == list(range(101))
        assert seqs == list(range(1, 102))
        assert store.commits == 2  # the lone one, then the hundred behind it

    run(body())


def test_a_cancelled_lone_save_leaves_the_store_usable(redis_url: str, prefix: str) -> None:  # noqa: F811
    async def body() -> tuple[list[int], list[int]]:
        store = RedisStore(redis_url, key_prefix=prefix)
        await store.open()
        try:
            gone = asyncio.ensure_future(store.save([ev(1)]))
            await asyncio.sleep(0)
            gone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gone
            after = [s.seq for s in await store.save([ev(2)])]
            more = await asyncio.gather(*(store.save([ev(3 + i)]) for i in range(5)))
        finally:
            await store.close()
        return after, [batch[0].seq for batch in more]

    after, more = run(body())
    # the cancelled call may have run in Redis or not: the seqs after it only go up, in order
    assert after[0] in (1, 2)
    assert more == list(range(after[0] + 1, after[0] + 6))


def test_close_waits_for_a_lone_save_in_flight(redis_url: str, prefix: str) -> None:  # noqa: F811
    async def body() -> list[StoredEvent]:
        store = RedisStore(redis_url, key_prefix=prefix)
        await store.open()
        saving = asyncio.ensure_future(store.save([ev(1)]))
        await asyncio.sleep(0)
        await store.close()
        assert saving.done()
        return saving.result()

    [stored] = run(body())
    assert stored.seq == 1


def test_a_lone_save_to_a_hung_redis_is_unavailable_within_its_timeout(tmp_path: Path) -> None:
    own = RedisServer(tmp_path).start()
    try:

        async def body() -> float:
            store = RedisStore(own.store_url().partition("?")[0], key_prefix="sends")
            await store.open()
            await store.save([NewEvent("n", "1", None)])
            own.freeze()
            started = time.monotonic()
            try:
                with pytest.raises(StoreUnavailableError, match="RedisStore: save"):
                    await store.save([NewEvent("n", "2", None)])
            finally:
                own.thaw()
            elapsed = time.monotonic() - started
            [after] = await store.save([NewEvent("n", "3", None)])
            assert after.seq >= 2
            await store.close()
            return elapsed

        elapsed = run(body())
        assert elapsed < SAVE_TIMEOUT + 5  # bounded by the store's timeouts, not by Redis
    finally:
        own.kill()
