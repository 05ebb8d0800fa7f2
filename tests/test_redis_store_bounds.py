"""RedisStore: the per-user indexes stay bounded by retention, and a resume reads its indexes atomically.

A save of many recipients goes in script calls of bounded work (one call of
100,000 recipients blocked Redis for seconds).  While such a save is under
way its first call has marked it open: every reader, this process's or
another's, stops below it, so a resume never sees some of its recipients'
index entries without the others, nor anything saved after it.

These tests use db 14 with a key prefix of their own (``SSE_FAST_TEST_REDIS_URL``
overrides the URL) and delete their keys afterwards; db 14 is never flushed, so
they may run next to other suites.  When Redis is unreachable they fail if
``CI`` is set and are skipped otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from conftest import reachable_redis
from sse_fast.stores import MIN_ID_WINDOW, NewEvent, RedisStore, StoredEvent
from sse_fast.stores.redis import plan_calls
from test_stores import FakeClock, run

REDIS_URL = os.environ.get("SSE_FAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")

pytestmark = pytest.mark.redis


def ev(n: int, uids: tuple[str, ...] | None = None) -> NewEvent:
    return NewEvent("note", f'{{"n":{n}}}', uids)


@pytest.fixture(scope="module")
def redis_url() -> str:
    return reachable_redis(REDIS_URL)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards (the db is shared)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    admin = redis.Redis.from_url(redis_url)
    try:
        keys = list(admin.scan_iter(match="{" + name + "}:*", count=1000))
        if keys:
            admin.delete(*keys)
    finally:
        admin.close()


async def user_keys(store: RedisStore) -> list[str]:
    """The store's ``{P}:u:*`` keys, by SCAN over its own prefix."""
    match = store.user_key_prefix.replace("[", "\\[").replace("?", "\\?").replace("*", "\\*") + "*"
    return [k async for k in store._redis.scan_iter(match=match, count=1000)]


def users_key(store: RedisStore) -> str:
    """The save script's set of user indexes (uid -> newest seq), next to ``{P}:seq``."""
    return store.seq_key.removesuffix("seq") + "users"


def node_max_entries(url: str) -> int:
    """Entries per stream node: ``MAXLEN ~`` only drops whole nodes, so up to this many minus one
    entries beyond ``max_events`` may stay."""
    admin = redis.Redis.from_url(url, decode_responses=True)
    try:
        config = admin.config_get("stream-node-max-entries")
        return int(config["stream-node-max-entries"] or 100)
    except redis.RedisError:
        return 100  # the default, when CONFIG is not allowed
    finally:
        admin.close()


# ------------------------------------------------------ bounded user indexes


@pytest.mark.parametrize("per_save", [1, 500], ids=["one-per-save", "500-per-save"])
def test_user_indexes_are_bounded_by_max_events(redis_url: str, prefix: str, per_save: int) -> None:
    """2,000 unicasts to distinct users with max_events=50 leave only the indexes of retained events.

    Bound: every live index's newest seq is a retained entry and every user here got one event,
    so keys <= XLEN(stream).  ``XADD MAXLEN ~ 50`` removes a whole node only while at least 50
    entries stay, so XLEN < 50 + (entries of the first node) <= 50 + stream-node-max-entries
    (100 by default): at most 149 keys, where the old code kept all 2,000.
    """
    max_events = 50
    users = 2_000
    bound = max_events + node_max_entries(redis_url) - 1

    async def body() -> None:
        store = RedisStore(redis_url, key_prefix=prefix, max_events=max_events)
        await store.open()
        saved: list[StoredEvent] = []
        worst = 0
        for start in range(0, users, per_save):
            saved += await store.save([ev(i, (f"u{i}",)) for i in range(start, start + per_save)])
            if len(saved) % 500 == 0:
                worst = max(worst, len(await user_keys(store)))
        keys = await user_keys(store)
        length = await store._redis.xlen(store.stream_key)
        first = await store.first_seq()
        assert await store.last_seq() == users
        assert length <= bound
        assert len(keys) <= length, (len(keys), length)
        assert worst <= bound, worst
        # the bookkeeping set names exactly the live indexes
        assert await store._redis.zcard(users_key(store)) == len(keys)
        # exactly the users with a retained event keep an index
        assert sorted(keys) == sorted(store.user_key(f"u{e.seq - 1}") for e in saved if e.seq >= first)
        # what resumers get is unchanged: nothing once trimmed, their own event when retained
        for e in saved:
            uid = f"u{e.seq - 1}"
            if e.seq >= first:
                assert await store.list_after(uid, 0) == [e]
            elif e.seq % 97 == 0 or e.seq == first - 1:
                assert await store.list_after(uid, 0) == []
        assert await store.list_after("nobody", 0) == []
        await store.close()

    run(body())


def test_user_indexes_expire_with_max_age_and_are_swept_at_once(redis_url: str, prefix: str) -> None:
    """With max_age the indexes keep their TTL, and those of expired events go at the next save."""

    async def body() -> None:
        clock = FakeClock()
        store = RedisStore(redis_url, key_prefix=prefix, max_events=None, max_age=60, clock=clock)
        await store.open()
        old = await store.save([ev(i, (f"old{i}",)) for i in range(100)])
        assert len(await user_keys(store)) == 100
        clock.now += 61  # all 100 expire; Redis's own TTL (61 s of real time) has not run out
        [new] = await store.save([ev(100, ("new",))])
        assert await store.first_seq() == new.seq
        assert await user_keys(store) == [store.user_key("new")]
        assert 0 < await store._redis.ttl(store.user_key("new")) <= 61
        assert await store._redis.zrange(users_key(store), 0, -1, withscores=True) == [("new", new.seq)]
        assert await store.list_after("old0", 0) == []
        assert await store.list_after("new", old[-1].seq) == [new]
        await store.close()

    run(body())


# ------------------------------------------------- bounded publisher id index


@pytest.mark.parametrize("per_save", [1, 500], ids=["one-per-save", "500-per-save"])
def test_publisher_id_index_is_bounded_by_retention(redis_url: str, prefix: str, per_save: int) -> None:
    """5,000 events with distinct publisher ids and max_events=50: ``{P}:ids`` keeps the ids of
    the retained entries and of one window below them (MIN_ID_WINDOW), never all 5,000."""
    max_events = 50
    total = 5_000
    node = node_max_entries(redis_url)
    bound = MIN_ID_WINDOW + max_events + node - 1  # the window, and XLEN at most (see above)

    async def body() -> None:
        store = RedisStore(redis_url, key_prefix=prefix, max_events=max_events)
        await store.open()
        worst = 0
        for start in range(0, total, per_save):
            await store.save([NewEvent("n", "1", None, f"pub:{i}") for i in range(start, start + per_save)])
            if (start + per_save) % 500 == 0:
                worst = max(worst, await store._redis.zcard(store.ids_key))
        first, last = await store.first_seq(), await store.last_seq()
        cut = store.retention.ids_kept_from(first, last)
        members = await store._redis.zrange(store.ids_key, 0, -1, withscores=True)
        assert len(members) == last - cut + 1 <= bound, (len(members), first, cut)
        assert worst <= bound, worst
        assert members == [(f"pub:{seq - 1}", seq) for seq in range(cut, last + 1)]
        entries = await store._redis.xrange(store.stream_key, f"{last}-0", f"{last}-0")
        assert entries is not None and entries[0][1] is not None
        assert entries[0][1]["i"] == f"pub:{total - 1}"
        await store.close()

    run(body())


def test_publisher_id_index_is_trimmed_with_max_age(redis_url: str, prefix: str) -> None:
    async def body() -> None:
        clock = FakeClock()
        store = RedisStore(redis_url, key_prefix=prefix, max_events=None, max_age=60, clock=clock)
        await store.open()
        await store.save([NewEvent("n", "1", None, f"old{i}") for i in range(3 * MIN_ID_WINDOW)])
        assert await store._redis.zcard(store.ids_key) == 3 * MIN_ID_WINDOW
        clock.now += 61
        [new] = await store.save([NewEvent("n", "1", None, "new")])
        assert await store.first_seq() == new.seq
        assert await store._redis.zcard(store.ids_key) == MIN_ID_WINDOW + 1
        assert await store._redis.zscore(store.ids_key, "new") == new.seq
        await store.close()

    run(body())


# --------------------------------------------- list_after reads atomically


def _parse_resp(buf: bytes, pos: int) -> int | None:
    """End offset of the RESP2/RESP3 value at ``pos`` (redis-py 8 speaks RESP3 after HELLO 3),
    or None if ``buf`` does not hold it whole yet."""
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        return None
    kind, head = buf[pos : pos + 1], buf[pos + 1 : eol]
    end = eol + 2
    if kind in b"+-:_,#(":  # simple string, error, integer, null, double, boolean, big number
        return end
    if kind in b"$!=":  # bulk string, bulk error, verbatim string
        size = int(head)
        if size < 0:
            return end
        return end + size + 2 if len(buf) >= end + size + 2 else None
    if kind in b"*~>%|":  # array, set, push; map and attribute hold pairs
        count = max(int(head), 0) * (2 if kind in b"%|" else 1)
        for _ in range(count):
            nxt = _parse_resp(buf, end)
            if nxt is None:
                return None
            end = nxt
        return _parse_resp(buf, end) if kind == b"|" else end  # an attribute precedes its value
    raise AssertionError(f"not RESP: {buf[pos : pos + 20]!r}")


def _command_name(command: bytes) -> bytes:
    """The first bulk string of a RESP command array, upper-cased."""
    lines = command.split(b"\r\n")
    return lines[2].upper() if len(lines) > 2 else b""


class InterleavingProxy:
    """A TCP proxy in front of Redis that makes ``between`` run between two index reads.

    It forwards whole commands; the first time one write (a pipeline) carries two
    ZRANGEBYSCORE commands, it forwards everything before the second one, waits until
    Redis has answered all of that, awaits ``between()`` (which talks to Redis on its
    own connection) and only then forwards the rest.
    """

    def __init__(self, target_port: int, between: Callable[[], Awaitable[Any]]) -> None:
        self.target_port = target_port
        self.between = between
        self.armed = False
        self.split: tuple[list[bytes], list[bytes]] | None = None
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _client(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        sent = 0  # commands forwarded to Redis on this connection
        answered = 0  # replies forwarded back
        progress = asyncio.Condition()

        async def replies() -> None:
            nonlocal answered
            pending = b""
            while data := await sreader.read(65536):
                cwriter.write(data)
                await cwriter.drain()
                pending += data
                pos = 0
                while (end := _parse_resp(pending, pos)) is not None:
                    pos = end
                    answered += 1
                pending = pending[pos:]
                async with progress:
                    progress.notify_all()
            cwriter.close()

        back = asyncio.get_running_loop().create_task(replies())
        pending = b""
        try:
            while data := await creader.read(65536):
                pending += data
                commands: list[bytes] = []
                pos = 0
                while (end := _parse_resp(pending, pos)) is not None:
                    commands.append(pending[pos:end])
                    pos = end
                pending = pending[pos:]
                names = [_command_name(c) for c in commands]
                if self.armed and names.count(b"ZRANGEBYSCORE") >= 2:
                    self.armed = False
                    cut = [i for i, name in enumerate(names) if name == b"ZRANGEBYSCORE"][1]
                    self.split = (names[:cut], names[cut:])
                    swriter.write(b"".join(commands[:cut]))
                    await swriter.drain()
                    sent += cut

                    def caught_up(want: int = sent) -> bool:
                        return answered >= want

                    async with progress:
                        await progress.wait_for(caught_up)
                    await self.between()
                    commands = commands[cut:]
                swriter.write(b"".join(commands))
                await swriter.drain()
                sent += len(commands)
        finally:
            swriter.close()
            with contextlib.suppress(Exception):
                await back


def test_list_after_reads_both_indexes_atomically(redis_url: str, prefix: str) -> None:
    """A save landing between the user-index read and the broadcast-index read must not hide
    its unicast: list_after returns the unicast and the broadcast, or neither."""
    target = redis.connection.parse_url(redis_url)  # type: ignore[no-untyped-call]  # unannotated in redis-py
    port, db = int(target.get("port", 6379)), int(target.get("db", 0))
    assert target.get("host", "127.0.0.1") in ("127.0.0.1", "localhost"), "the proxy targets loopback"

    async def body() -> None:
        writer = RedisStore(redis_url, key_prefix=prefix, max_events=None)
        await writer.open()
        before = await writer.save([ev(0, ("a",)), ev(1)])
        landed: list[StoredEvent] = []

        async def concurrent_save() -> None:
            landed.extend(await writer.save([ev(2, ("a",)), ev(3)]))

        proxy = InterleavingProxy(port, concurrent_save)
        await proxy.start()
        client = aioredis.Redis(host="127.0.0.1", port=proxy.port, db=db, decode_responses=True)
        reader = RedisStore(client, key_prefix=prefix, max_events=None)
        await reader.open()
        try:
            assert await reader.list_after("a", 0) == before
            proxy.armed = True
            page = await reader.list_after("a", before[-1].seq)
            assert proxy.split is not None, "the proxy never saw the two index reads"
            assert b"ZRANGEBYSCORE" in proxy.split[0] and proxy.split[1][0] == b"ZRANGEBYSCORE"
            assert [e.seq for e in landed] == [before[-1].seq + 1, before[-1].seq + 2]
            # atomic: both reads see the save (or neither did, and a later call finds both)
            rest = await reader.list_after("a", page[-1].seq) if page else []
            assert page + rest == landed
            assert page == landed  # MULTI/EXEC: both reads ran at EXEC, after the save
        finally:
            await reader.close()
            await client.aclose()
            await writer.close()
            await proxy.stop()

    run(body())


# ------------------------------------------------------------- large saves


def to(uids: int, n: int = 0) -> NewEvent:
    return NewEvent("big", f'{{"n":{n}}}', tuple(f"u{k}" for k in range(uids)))


class CallLog:
    """Wraps a store's script: counts the calls, and can hold the save after a given call."""

    def __init__(self, store: RedisStore, hold_after: int | None = None) -> None:
        self.calls = 0
        self.hold_after = hold_after
        self.holding = asyncio.Event()
        self.go_on = asyncio.Event()
        self._script = store._save_script
        store._save_script = self  # type: ignore[assignment]

    async def __call__(self, **kwargs: Any) -> Any:
        result = await self._script(**kwargs)
        self.calls += 1
        if self.calls == self.hold_after:
            self.holding.set()
            await self.go_on.wait()
        return result


def test_a_large_save_goes_in_several_bounded_calls(redis_url: str, prefix: str) -> None:
    async def body() -> None:
        store = RedisStore(redis_url, key_prefix=prefix)
        store.call_budget = 64
        await store.open()
        log = CallLog(store)
        [saved] = await store.save([to(500)])
        assert log.calls >= 500 * 3 // 64  # each uid's index entry and its upkeep: ~3 units
        for uid in ("u0", "u250", "u499"):
            assert [e.seq for e in await store.list_after(uid, 0)] == [saved.seq]
        assert await store.list_after("u500", 0) == []
        admin = redis.Redis.from_url(redis_url)
        try:
            assert admin.zcard(store.open_key) == 0  # the last call closed it
        finally:
            admin.close()
        await store.close()

    run(body())


def test_a_save_under_way_is_seen_by_no_reader_nor_what_came_after_it(redis_url: str, prefix: str) -> None:
    async def body() -> None:
        writer = RedisStore(redis_url, key_prefix=prefix)
        other = RedisStore(redis_url, key_prefix=prefix)  # another process on the same history
        writer.call_budget = 64
        await writer.open()
        await other.open()
        [before] = await writer.save([NewEvent("small", "0", ("u0", "u2", "u399"))])
        log = CallLog(writer, hold_after=2)
        saving = asyncio.ensure_future(writer.save([to(400, 1), to(400, 2)]))
        await asyncio.wait_for(log.holding.wait(), 10)
        [broadcast] = await other.save([NewEvent("all", "3")])  # lands between the calls
        for reader in (writer, other):
            for uid in ("u0", "u2", "u399"):  # written by the first calls, or not yet
                assert [e.seq for e in await reader.list_after(uid, 0)] == [before.seq]
        log.go_on.set()
        saved = await saving
        assert log.calls > 2
        for reader in (writer, other):
            for uid in ("u0", "u2", "u399"):
                got = [e.seq for e in await reader.list_after(uid, 0)]
                assert got == [before.seq, saved[0].seq, saved[1].seq, broadcast.seq]
        await writer.close()
        await other.close()

    run(body())


def test_a_writer_that_stopped_midway_holds_readers_back_only_until_its_deadline(
    redis_url: str, prefix: str
) -> None:
    async def body() -> None:
        store = RedisStore(redis_url, key_prefix=prefix)
        await store.open()
        first, second = await store.save([to(1, 1), to(1, 2)])
        admin = redis.Redis.from_url(redis_url)
        try:
            now_ms = time.time() * 1000
            admin.zadd(store.open_key, {str(second.seq): now_ms + 60_000})  # a writer still at it
            assert [e.seq for e in await store.list_after("u0", 0)] == [first.seq]
            admin.zadd(store.open_key, {str(second.seq): now_ms - 1})  # gone past its deadline
            assert [e.seq for e in await store.list_after("u0", 0)] == [first.seq, second.seq]
            await store.save([to(1, 3)])
            assert admin.zcard(store.open_key) == 0  # the next save cleared it
        finally:
            admin.close()
        await store.close()

    run(body())


@pytest.mark.parametrize(("events", "uids"), [(1, 1000), (10, 100), (300, 3), (200, 0), (3, 1)])
def test_a_plan_covers_every_recipient_once_within_the_budget_in_order(events: int, uids: int) -> None:
    budget = 64
    batch = [NewEvent("e", str(n), tuple(f"u{k}" for k in range(uids)) or None) for n in range(events)]
    added: set[int] = set()
    pairs: list[tuple[str, int]] = []
    for call in plan_calls(batch, budget):
        assert call.cost <= budget or (len(call.new) + len(call.groups) == 1)
        added.update(call.new)
        for uid, block in call.groups:
            assert set(block) <= added  # an event's entry is added before its index entries
            pairs += [(uid, k) for k in block]
    assert added == set(range(events))
    assert sorted(pairs) == sorted((f"u{k}", n) for n in range(events) for k in range(uids))
