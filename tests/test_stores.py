"""Contract tests for the stores: one suite, run against memory, SQLite and Redis.

Redis tests use db 15 (flushed before each test; ``SSE_FAST_TEST_REDIS_URL``
overrides the URL) and a key prefix of their own; when Redis is unreachable
they fail if ``CI`` is set and are skipped otherwise.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aioredis

from conftest import reachable_redis
from sse_fast.ids import EventId
from sse_fast.stores import (
    MIN_ID_WINDOW,
    HistoryLostError,
    MemoryStore,
    NewEvent,
    RedisStore,
    Retention,
    SQLiteStore,
    Store,
    StoreClosedError,
    StoredEvent,
    open_store,
)
from sse_fast.stores.redis import OWN_TIMEOUTS
from sse_fast.stores.sqlite import SCHEMA_VERSION

REDIS_URL = os.environ.get("SSE_FAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    """Each test runs its coroutine in a fresh loop (no pytest-asyncio needed)."""

    async def main() -> T:
        return await coro

    return asyncio.run(main())


class FakeClock:
    """Wall clock the test moves by hand, for age retention without sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url() -> str:
    return reachable_redis(REDIS_URL)


@dataclass
class Backend:
    """Makes stores that share one location, so a test can close, reopen and wipe."""

    name: str
    make: Callable[..., Store]
    wipe: Callable[[], None]
    durable: bool
    made: list[Store] = field(default_factory=list)

    def new(self, **kwargs: Any) -> Store:
        store = self.make(**kwargs)
        self.made.append(store)
        return store


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        yield Backend("memory", lambda **kw: MemoryStore(**kw), lambda: None, durable=False)
    elif request.param == "sqlite":
        path = tmp_path / "events.db"

        def wipe_sqlite() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

        yield Backend("sqlite", lambda **kw: SQLiteStore(path, **kw), wipe_sqlite, durable=True)
    else:
        url = request.getfixturevalue("redis_url")
        admin = redis.Redis.from_url(url)
        admin.flushdb()
        prefix = f"test-{uuid.uuid4().hex[:8]}"

        def wipe_redis() -> None:
            admin.flushdb()

        try:
            yield Backend(
                "redis", lambda **kw: RedisStore(url, key_prefix=prefix, **kw), wipe_redis, durable=True
            )
        finally:
            admin.flushdb()
            admin.close()


S = TypeVar("S", bound=Store)


async def opened(store: S) -> S:
    await store.open()
    return store


def ev(n: int | str, uids: tuple[str, ...] | None = None, event: str = "note") -> NewEvent:
    return NewEvent(event, f'{{"n":{n}}}' if isinstance(n, int) else n, uids)


async def everything(store: Store, uid: str, after: int = 0, **kw: Any) -> list[StoredEvent]:
    """All events ``uid`` may see after ``after``, read page by page."""
    out: list[StoredEvent] = []
    while True:
        page = await store.list_after(uid, after, **kw)
        out.extend(page)
        if len(page) < kw.get("limit", 100):
            return out
        after = page[-1].seq


# ------------------------------------------------------------------ ids


def test_ids_are_epoch_dash_seq_and_strictly_increasing(backend: Backend) -> None:
    async def body() -> None:
        store = await opened(backend.new())
        assert await store.last_seq() == 0
        assert await store.first_seq() == 1
        saved: list[StoredEvent] = []
        for size in (1, 3, 1, 10):
            batch = await store.save([ev(i) for i in range(size)])
            assert len(batch) == size
            saved += batch
        assert [s.seq for s in saved] == list(range(1, 16))
        for s in saved:
            assert EventId.parse(s.id) == (store.epoch, s.seq)
            assert s.id == f"{store.epoch}-{s.seq}"
        assert await store.last_seq() == 15
        assert await store.first_seq() == 1
        await store.close()

    run(body())


def test_saved_event_round_trips(backend: Backend) -> None:
    async def body() -> None:
        store = await opened(backend.new())
        data = '{"text":"héllo, wörld \\n","x":[1,2]}'
        [saved] = await store.save([NewEvent("chat.message", data, ("ä,b", "c\nd"))])
        [listed] = await store.list_after("c\nd", 0)
        assert listed == saved
        assert listed.uids == ("ä,b", "c\nd") and listed.data == data and listed.event == "chat.message"
        assert await store.list_after("ä", 0) == []
        await store.close()

    run(body())


def test_concurrent_saves_complete_fifo(backend: Backend) -> None:
    async def body() -> None:
        store = await opened(backend.new())
        completed: list[int] = []

        async def save(i: int) -> list[StoredEvent]:
            result = await store.save([ev(i)] * (1 + i % 3))
            completed.append(i)
            return result

        results = await asyncio.gather(*(save(i) for i in range(300)))
        assert completed == list(range(300))
        seqs = [s.seq for batch in results for s in batch]
        assert seqs == list(range(1, len(seqs) + 1))
        await store.close()

    run(body())


def test_group_commit(backend: Backend) -> None:
    """Many concurrent single-event saves share one commit (SQLite) / one script call (Redis;
    the first is sent from its caller's task at once, those behind it go as one)."""
    if backend.name == "memory":
        pytest.skip("MemoryStore does no I/O: nothing to group")

    async def body() -> None:
        store = await opened(backend.new())
        assert isinstance(store, (SQLiteStore, RedisStore))  # what Store leaves out: the commit count
        before = store.commits
        tasks = [asyncio.ensure_future(store.save([ev(i)])) for i in range(200)]
        if isinstance(store, SQLiteStore):
            # hold the writer between transactions so that every save is queued first
            with store._commit_gate:
                await asyncio.sleep(0)
                assert store._queue.qsize() >= 199
        results = await asyncio.gather(*tasks)
        assert [b[0].seq for b in results] == list(range(1, 201))
        # on 3.10 (no OWN_TIMEOUTS) the first waits for the writer task with the rest
        lone = isinstance(store, RedisStore) and OWN_TIMEOUTS
        assert store.commits - before == (2 if lone else 1)
        await store.close()

    run(body())


# ------------------------------------------------------------ filtering


def test_recipient_filter(backend: Backend) -> None:
    async def body() -> None:
        store = await opened(backend.new())
        await store.save(
            [
                ev("to-a", ("a",)),
                ev("all"),
                ev("to-b", ("b",)),
                ev("to-a-and-b", ("a", "b")),
                ev("to-c", ("c",)),
            ]
        )
        seen_a = [e.data for e in await store.list_after("a", 0)]
        seen_b = [e.data for e in await store.list_after("b", 0)]
        seen_z = [e.data for e in await store.list_after("z", 0)]
        assert seen_a == ["to-a", "all", "to-a-and-b"]
        assert seen_b == ["all", "to-b", "to-a-and-b"]
        assert seen_z == ["all"]
        broadcast = (await store.list_after("z", 0))[0]
        assert broadcast.uids is None
        assert [e.data for e in await store.list_after("a", 2)] == ["to-a-and-b"]
        await store.close()

    run(body())


def test_a_push_to_thousands_of_users_reaches_each_of_them_in_the_history(backend: Backend) -> None:
    """Every recipient of a large push, odd uids included (quotes, backslashes, non-ASCII: the
    SQLite store expands them from JSON, Redis takes them in several script calls), finds it."""

    async def body() -> None:
        store = await opened(backend.new())
        odd = ('qu"ote', "back\\slash", "ünï", "😀", "tab\tbed", "a,b", "[x]")
        uids = (*odd, *(f"u{n}" for n in range(5000)))
        first, second = await store.save([ev("big-1", uids), ev("big-2", uids)])
        [other] = await store.save([ev("small", ("u1",))])
        for uid in (*odd, "u0", "u4999"):
            listed = await store.list_after(uid, 0)
            assert [(e.seq, e.data) for e in listed] == [(first.seq, "big-1"), (second.seq, "big-2")], uid
            assert listed[0].uids == uids
        assert [e.seq for e in await store.list_after("u1", 0)] == [first.seq, second.seq, other.seq]
        assert await store.list_after("u5000", 0) == []
        await store.close()

    run(body())


def test_event_type_filter(backend: Backend) -> None:
    async def body() -> None:
        store = await opened(backend.new())
        await store.save(
            [
                ev(1, ("a",), "order"),
                ev(2, None, "order"),
                ev(3, ("a",), "chat"),
                ev(4, None, "chat"),
                ev(5, ("b",), "order"),
            ]
        )
        orders = await store.list_after("a", 0, event_type="order")
        assert [e.data for e in orders] == ['{"n":1}', '{"n":2}']
        chats = await store.list_after("a", 0, event_type="chat")
        assert [e.data for e in chats] == ['{"n":3}', '{"n":4}']
        assert await store.list_after("a", 0, event_type="nothing") == []
        await store.close()

    run(body())


def test_paging(backend: Backend) -> None:
    async def body() -> None:
        store = await opened(backend.new())
        events = []
        for i in range(260):
            uids = None if i % 3 == 0 else ("a",) if i % 3 == 1 else ("b",)
            events.append(ev(i, uids, "tick" if i % 2 else "tock"))
        saved = await store.save(events)
        expected = [s for s in saved if s.uids is None or "a" in s.uids]
        pages: list[list[StoredEvent]] = []
        after = 0
        while True:
            page = await store.list_after("a", after, limit=7)
            assert len(page) <= 7
            if not page:
                break
            pages.append(page)
            after = page[-1].seq
        assert all(len(p) == 7 for p in pages[:-1])
        assert [e for p in pages for e in p] == expected
        assert await everything(store, "a", limit=1) == expected
        ticks = [s for s in expected if s.event == "tick"]
        assert await everything(store, "a", event_type="tick", limit=5) == ticks
        assert await store.list_after("a", saved[-1].seq) == []
        with pytest.raises(ValueError, match="limit"):
            await store.list_after("a", 0, limit=0)
        await store.close()

    run(body())


# ------------------------------------------------------------ retention


def test_retention_by_count(backend: Backend) -> None:
    async def body() -> None:
        store = await opened(backend.new(max_events=50))
        for start in range(0, 1000, 10):
            await store.save([ev(i, ("a",) if i % 2 else None) for i in range(start, start + 10)])
        first, last = await store.first_seq(), await store.last_seq()
        assert last == 1000
        if backend.name == "redis":
            # MAXLEN ~ trims whole stream nodes (100 entries by default): at least 50 kept
            assert 1 < first <= 951
            assert last - first + 1 <= 50 + 200
        else:
            assert first == 951
        kept = await everything(store, "a", limit=1000)
        assert [e.seq for e in kept] == list(range(first, last + 1))
        assert await everything(store, "b", limit=1000) == [e for e in kept if e.uids is None]
        await store.close()

    run(body())


def test_memory_store_forgets_the_recipient_sets_of_the_events_it_drops() -> None:
    """The sets that answer "was this uid a recipient" for events of many users go with the events."""

    async def body() -> None:
        store = await opened(MemoryStore(max_events=5))
        many = tuple(f"u{n}" for n in range(100))
        for i in range(20):
            await store.save([ev(i, many)])
        # held no longer than their events (trimmed in batches: at most max_events more)
        assert set(store._recipients) == {e.seq for e in store._events}
        assert len(store._recipients) <= 10
        assert [e.data for e in await store.list_after("u99", 0)] == [f'{{"n":{n}}}' for n in range(15, 20)]
        assert await store.list_after("u100", 0) == []
        await store.close()

    run(body())


def test_memory_store_trims_in_batches_but_readers_see_the_exact_bound() -> None:
    async def body() -> None:
        store = await opened(MemoryStore(max_events=300))
        for i in range(1, 1001):
            await store.save([ev(i, ("a",))])
            if i in (301, 450, 556, 1000):  # past the bound, within a batch and after trims
                assert await store.first_seq() == i - 299
                shown = await store.list_after("a", 0, limit=1000)
                assert [e.seq for e in shown] == list(range(i - 299, i + 1))
        assert len(store._events) <= 300 + 256
        await store.close()

    run(body())


def test_retention_by_age(backend: Backend) -> None:
    async def body() -> None:
        clock = FakeClock()
        store = await opened(backend.new(max_events=None, max_age=60, clock=clock))
        await store.save([ev(i, ("a",)) for i in range(5)])  # seqs 1-5
        clock.now += 30
        await store.save([ev(i) for i in range(5, 10)])  # seqs 6-10
        assert await store.first_seq() == 1
        clock.now += 40  # the first five are 70 s old, the next five 40 s
        await store.save([ev(10, ("a",))])
        assert await store.first_seq() == 6
        assert [e.seq for e in await store.list_after("a", 0)] == list(range(6, 12))
        clock.now += 1000  # everything but what is saved now expires
        await store.save([ev(11)])
        assert await store.first_seq() == 12
        assert [e.seq for e in await store.list_after("a", 0)] == [12]
        assert await store.last_seq() == 12
        await store.close()

    run(body())


def test_retention_validates() -> None:
    with pytest.raises(ValueError, match="max_events"):
        Retention(max_events=0)
    with pytest.raises(ValueError, match="max_age"):
        Retention(max_age=-1)
    assert Retention(10).first_kept_seq(25) == 16
    assert Retention(10).first_kept_seq(3) == 1


# ------------------------------------------------------------ publisher ids


def pev(n: int, pid: str | None, uids: tuple[str, ...] | None = None) -> NewEvent:
    return NewEvent("note", f'{{"n":{n}}}', uids, pid)


def test_publisher_ids_are_kept_with_their_events(backend: Backend) -> None:
    """Listed back with the event (the replay's wire id), found by name; events without one unchanged."""

    async def body() -> None:
        store = await opened(backend.new())
        saved = await store.save([pev(0, "order:17"), pev(1, None), pev(2, "é/日本 #1", ("a",))])
        assert [s.publisher_id for s in saved] == ["order:17", None, "é/日本 #1"]
        assert [s.wire_id for s in saved] == ["order:17", saved[1].id, "é/日本 #1"]
        assert await store.list_after("a", 0) == saved
        assert await store.seq_of_publisher_id("order:17") == saved[0].seq
        assert await store.seq_of_publisher_id("é/日本 #1") == saved[2].seq
        assert await store.seq_of_publisher_id("order:18") is None
        assert await store.seq_of_publisher_id(saved[1].id) is None  # server ids are not in the index
        await store.close()
        if backend.durable:
            store = await opened(backend.new())
            assert await store.list_after("a", 0) == saved
            assert await store.seq_of_publisher_id("order:17") == saved[0].seq
            await store.close()

    run(body())


def test_an_id_saved_again_resolves_to_its_latest_event(backend: Backend) -> None:
    """Within one save and across saves: the latest seq wins."""

    async def body() -> None:
        store = await opened(backend.new())
        first = await store.save([pev(0, "x"), pev(1, "y"), pev(2, "x", ("a",))])
        assert await store.seq_of_publisher_id("x") == first[2].seq
        [again] = await store.save([pev(3, "x", ("b",))])
        assert await store.seq_of_publisher_id("x") == again.seq
        assert await store.seq_of_publisher_id("y") == first[1].seq
        await store.close()

    run(body())


def test_the_id_index_is_trimmed_with_retention_by_count(backend: Backend) -> None:
    """An id is remembered while its event is retained, and for one window (MIN_ID_WINDOW here)
    below the first retained seq so that a resume hears expired; below that it is forgotten."""

    async def body() -> None:
        store = await opened(backend.new(max_events=50))
        saved: list[StoredEvent] = []
        for start in range(0, 3000, 100):
            saved += await store.save([pev(i, f"p{i}") for i in range(start, start + 100)])
        first, last = await store.first_seq(), await store.last_seq()
        assert last == 3000 and first > 1
        cut = store.retention.ids_kept_from(first, last)
        assert cut == first - max(MIN_ID_WINDOW, last - first + 1) > 1
        for e in saved:
            found = await store.seq_of_publisher_id(f"p{e.seq - 1}")
            assert found == (e.seq if e.seq >= cut else None), (e.seq, first, cut)
        await store.close()

    run(body())


def test_the_id_index_is_trimmed_with_retention_by_age(backend: Backend) -> None:
    async def body() -> None:
        clock = FakeClock()
        store = await opened(backend.new(max_events=None, max_age=60, clock=clock))
        old = await store.save([pev(i, f"old{i}") for i in range(MIN_ID_WINDOW + 10)])
        clock.now += 61  # all of them expire at the next save
        [new] = await store.save([pev(-1, "new")])
        assert await store.first_seq() == new.seq
        cut = new.seq - MIN_ID_WINDOW
        for e in old:  # the newest MIN_ID_WINDOW are remembered (below first_seq: expired)
            assert await store.seq_of_publisher_id(f"old{e.seq - 1}") == (e.seq if e.seq >= cut else None)
        assert await store.seq_of_publisher_id("new") == new.seq
        await store.close()

    run(body())


# ------------------------------------------------------------ epoch & life


def test_epoch_stable_across_close_and_reopen(backend: Backend) -> None:
    async def body() -> None:
        store = await opened(backend.new())
        epoch = store.epoch
        first = await store.save([ev(1, ("a",)), ev(2)])
        await store.close()
        if backend.durable:
            store = backend.new()
        await store.open()
        assert store.epoch == epoch
        assert await store.last_seq() == 2
        assert await store.list_after("a", 0) == first
        [third] = await store.save([ev(3)])
        assert third.id == f"{epoch}-3"
        await store.close()

    run(body())


def test_new_epoch_after_wipe(backend: Backend) -> None:
    async def body() -> None:
        store = await opened(backend.new())
        epoch = store.epoch
        await store.save([ev(1), ev(2)])
        await store.close()
        backend.wipe()
        store = await opened(backend.new())
        assert store.epoch != epoch
        assert await store.last_seq() == 0
        assert await store.first_seq() == 1
        assert await store.list_after("a", 0) == []
        [again] = await store.save([ev(1)])
        assert again.id == f"{store.epoch}-1"
        await store.close()

    run(body())


def test_save_needs_open_store(backend: Backend) -> None:
    async def body() -> None:
        store = backend.new()
        with pytest.raises(StoreClosedError):
            await store.save([ev(1)])
        await store.open()
        await store.save([ev(1)])
        await store.close()
        with pytest.raises(StoreClosedError):
            await store.save([ev(2)])

    run(body())


def test_close_commits_queued_saves(backend: Backend) -> None:
    async def body() -> None:
        store = await opened(backend.new())
        tasks = [asyncio.ensure_future(store.save([ev(i)])) for i in range(50)]
        await asyncio.sleep(0)  # all queued
        await store.close()
        # Each was answered by the close (its caller resumes at the loop's next turns).
        saved = await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
        assert [stored[0].seq for stored in saved] == list(range(1, 51))

    run(body())


# ------------------------------------------------------------ SQLite specifics

CHILD = r"""
import asyncio, sys
from sse_fast.stores.base import NewEvent
from sse_fast.stores.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1], synchronous=sys.argv[2])
    await store.open()
    print("ready", flush=True)

    async def one(i):
        [saved] = await store.save([NewEvent("n", str(i), ("u",) if i % 2 else None)])
        print(saved.id, flush=True)

    i = 0
    while True:
        await asyncio.gather(*(one(i + k) for k in range(8)))
        i += 8

asyncio.run(main())
"""


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_sqlite_saved_events_survive_sigkill(tmp_path: Path, synchronous: str) -> None:
    """Every id the child printed (its save had returned) is there after kill -9."""
    path = tmp_path / "events.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    printed: list[str] = []
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        while len(printed) < 300:
            line = proc.stdout.readline()
            assert line, f"child died: {proc.stderr.read() if proc.stderr else ''}"
            printed.append(line.strip())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
    printed += [line for line in rest.splitlines() if line.strip()]
    assert proc.returncode == -signal.SIGKILL

    async def body() -> None:
        store = await opened(SQLiteStore(path))
        stored = {e.id for e in await everything(store, "u", limit=1000)}
        assert set(printed) <= stored
        assert await store.last_seq() >= max(EventId.parse(i).seq for i in printed)
        await store.close()

    run(body())


def test_sqlite_last_seq_survives_pruning_everything(tmp_path: Path) -> None:
    """Seqs are never reused, even when retention removed every row before a restart."""

    async def body() -> None:
        clock = FakeClock()
        store = await opened(SQLiteStore(tmp_path / "e.db", max_age=10, clock=clock))
        await store.save([ev(1), ev(2)])
        clock.now += 100
        await store.close()
        store = await opened(SQLiteStore(tmp_path / "e.db", max_age=10, clock=clock))
        assert await store.first_seq() == 3  # retention applied at open
        assert await store.last_seq() == 2
        [next_one] = await store.save([ev(3)])
        assert next_one.seq == 3
        await store.close()

    run(body())


def test_sqlite_bad_save_fails_alone_in_its_group(tmp_path: Path) -> None:
    """A save the database rejects does not take the rest of its group commit with it."""

    async def body() -> None:
        store = await opened(SQLiteStore(tmp_path / "e.db"))
        bad = NewEvent("note", object(), None)  # type: ignore[arg-type]  # the wrong type is the test
        with store._commit_gate:
            tasks = [asyncio.ensure_future(store.save(batch)) for batch in ([ev(1)], [bad], [ev(3)])]
            await asyncio.sleep(0)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[1], Exception)
        good = [r for r in results if isinstance(r, list)]
        assert [b[0].seq for b in good] == [1, 2]
        assert [e.seq for e in await store.list_after("a", 0)] == [1, 2]
        await store.close()

    run(body())


# A file as SQLiteStore wrote it before publisher ids were kept (user_version 0).
SQLITE_V0_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE events (seq INTEGER PRIMARY KEY, event TEXT NOT NULL, data TEXT NOT NULL,
                     created REAL NOT NULL, uids TEXT);
CREATE INDEX events_broadcast ON events(seq) WHERE uids IS NULL;
CREATE TABLE recipients (seq INTEGER NOT NULL, uid TEXT NOT NULL, PRIMARY KEY (seq, uid)) WITHOUT ROWID;
CREATE INDEX recipients_uid ON recipients(uid, seq);
INSERT INTO meta VALUES ('epoch', 'v0epoch1'), ('last_seq', '3');
INSERT INTO events VALUES (1, 'note', '{"n":1}', 1000000.0, NULL),
                          (2, 'note', '{"n":2}', 1000000.0, '["a"]'),
                          (3, 'note', '{"n":3}', 1000000.0, '["b"]');
INSERT INTO recipients VALUES (2, 'a'), (3, 'b');
"""


def write_v0_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SQLITE_V0_SCHEMA)
    conn.close()


def test_sqlite_migrates_a_file_from_before_publisher_ids(tmp_path: Path) -> None:
    """An old file opens, keeps its history and epoch, and takes publisher ids from then on."""
    path = tmp_path / "old.db"
    write_v0_file(path)

    async def body() -> None:
        store = await opened(SQLiteStore(path, clock=FakeClock()))
        assert store.epoch == "v0epoch1" and await store.last_seq() == 3
        old = await store.list_after("a", 0)
        assert [(e.id, e.data, e.publisher_id) for e in old] == [
            ("v0epoch1-1", '{"n":1}', None),
            ("v0epoch1-2", '{"n":2}', None),
        ]
        [new] = await store.save([pev(4, "pub:4", ("a",))])
        assert new.id == "v0epoch1-4"
        assert await store.list_after("a", 2) == [new]
        assert await store.seq_of_publisher_id("pub:4") == 4
        await store.close()
        store = await opened(SQLiteStore(path, clock=FakeClock()))  # migrated once: opens as it is
        assert [e.publisher_id for e in await store.list_after("a", 0)] == [None, None, "pub:4"]
        await store.close()

    run(body())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def test_sqlite_prunes_publisher_ids_another_process_saved(tmp_path: Path) -> None:
    """A store that saved no publisher id itself skips pruning them, until it sees another
    process write the file: then the other's ids go with their events too."""

    async def body() -> None:
        path = tmp_path / "shared.db"
        mine = await opened(SQLiteStore(path, max_events=5))
        other = await opened(SQLiteStore(path, max_events=5))
        [theirs] = await other.save([pev(0, "theirs")])
        await other.close()
        for start in range(0, MIN_ID_WINDOW + 100, 100):
            await mine.save([pev(i, None) for i in range(start, start + 100)])
        assert await mine.first_seq() > theirs.seq + MIN_ID_WINDOW
        assert await mine.seq_of_publisher_id("theirs") is None
        await mine.close()

    run(body())


def test_sqlite_refuses_a_file_of_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()

    async def body() -> None:
        with pytest.raises(sqlite3.OperationalError, match=f"{path}.*schema version {SCHEMA_VERSION + 1}"):
            await SQLiteStore(path).open()

    run(body())


# ------------------------------------------------------------ Redis specifics


@pytest.mark.redis
def test_redis_entries_are_self_contained(redis_url: str) -> None:
    """Another process fanning out from the stream finds everything in the entry."""

    async def body() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        store = await opened(RedisStore(redis_url, key_prefix=prefix))
        await store._redis.flushdb()
        await store.close()
        store = await opened(RedisStore(redis_url, key_prefix=prefix))
        saved = await store.save([ev(1, ("a", "b"), "order"), ev(2)])
        entries = await store._redis.xrange("{" + prefix + "}:stream")
        assert entries is not None
        assert [entry_id for entry_id, _ in entries] == [f"{s.seq}-0" for s in saved]
        unicast, broadcast = (fields for _, fields in entries)
        assert unicast == {"t": repr(saved[0].created), "e": "order", "d": '{"n":1}', "u": '["a","b"]'}
        assert broadcast is not None and "u" not in broadcast
        assert await store._redis.get("{" + prefix + "}:epoch") == store.epoch
        await store.close()

    run(body())


@pytest.mark.redis
def test_redis_two_writers_share_one_strictly_ordered_history(redis_url: str) -> None:
    """Two stores on the same keys (as two processes would be) never reuse or reorder seqs."""

    async def body() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        one = await opened(RedisStore(redis_url, key_prefix=prefix))
        two = await opened(RedisStore(redis_url, key_prefix=prefix))
        assert one.epoch == two.epoch

        async def pushes(store: RedisStore, tag: str) -> list[int]:
            seqs: list[int] = []
            for i in range(100):
                saved = await store.save([ev(f"{tag}{i}"), ev(f"{tag}{i}+")])
                seqs += [s.seq for s in saved]
            return seqs

        a, b = await asyncio.gather(pushes(one, "a"), pushes(two, "b"))
        assert a == sorted(a) and b == sorted(b)
        assert sorted(a + b) == list(range(1, 401))
        merged = await everything(one, "anyone", limit=1000)
        assert [e.seq for e in merged] == list(range(1, 401))
        await one.close()
        await two.close()

    run(body())


@pytest.mark.redis
def test_redis_refuses_to_save_into_a_flushed_history(redis_url: str) -> None:
    """A FLUSHDB under a running store must not restart seqs under the old epoch."""

    async def body() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        store = await opened(RedisStore(redis_url, key_prefix=prefix))
        old = store.epoch
        await store.save([ev(1)])
        await store._redis.flushdb()
        with pytest.raises(HistoryLostError, match="epoch"):
            await store.save([ev(2)])
        await store.close()
        await store.open()
        assert store.epoch != old
        [saved] = await store.save([ev(2)])
        assert saved.id == f"{store.epoch}-1"
        await store.close()

    run(body())


@pytest.mark.redis
def test_redis_store_accepts_a_bytes_client(redis_url: str) -> None:
    """A caller's own client (without decode_responses) works and is not closed by the store."""

    async def body() -> None:
        client = aioredis.Redis.from_url(redis_url)
        store = await opened(RedisStore(client, key_prefix=f"test-{uuid.uuid4().hex[:8]}"))
        saved = await store.save([ev(1, ("a",)), ev(2)])
        assert await store.list_after("a", 0) == saved
        assert await store.first_seq() == 1 and await store.last_seq() == 2
        await store.close()
        assert await client.ping()
        await client.aclose()

    run(body())


# ------------------------------------------------------------ open_store


def test_open_store_urls(tmp_path: Path) -> None:
    memory = open_store("memory://?max_events=5")
    assert isinstance(memory, MemoryStore) and memory.retention == Retention(5, None)
    assert isinstance(open_store("memory://"), MemoryStore)
    rel = open_store("sqlite:///data/events.db?max_age=3600&synchronous=normal")
    assert isinstance(rel, SQLiteStore)
    assert rel.path == "data/events.db" and rel.synchronous == "NORMAL"
    assert rel.retention.max_age == 3600
    absolute = open_store(f"sqlite:///{tmp_path}/e.db?max_events=none")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == f"{tmp_path}/e.db" and absolute.retention.max_events is None
    red = open_store("redis://127.0.0.1:6379/15?prefix=app&max_events=1000")
    assert isinstance(red, RedisStore)
    assert red.stream_key == "{app}:stream" and red.retention.max_events == 1000
    assert isinstance(red, Store)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("events.db", "must be a URL"),
        ("ftp://host/x", "unknown scheme"),
        ("sqlite://", "needs a file path"),
        ("sqlite://host/x.db", "three slashes"),
        ("sqlite:///x.db?synchronous=OFF", "synchronous"),
        ("memory://?max_events=-1", "max_events"),
        ("memory://?max_age=soon", "max_age"),
        ("memory://?colour=red", "unknown query parameter"),
        ("memory://somewhere", "no host"),
        ("redis://", "needs a host"),
        ("redis://localhost:99999/0", "port"),
        ("redis://localhost/zero", "database number"),
        ("redis://localhost/0?prefix=", "prefix"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule) as info:
        open_store(url)
    assert str(info.value).startswith("store: ")
