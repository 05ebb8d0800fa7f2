"""Several processes on one SQLite file (an overlapping restart): one shared, strictly increasing history.

The store-level tests open two ``SQLiteStore`` on one file in one process:
each has its own writer thread and connection, as two processes would.  The
end-to-end tests run two ``sse-fast serve`` on one file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from conftest import Serve, Subscribe, wait_until
from sse_fast.ids import EventId
from sse_fast.stores import NewEvent, SQLiteStore, StoredEvent

T = TypeVar("T")
LOGGER = "sse_fast.stores.sqlite"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def ev(tag: str, uids: tuple[str, ...] | None = None) -> NewEvent:
    return NewEvent("note", f'"{tag}"', uids)


async def opened(path: Path, **kwargs: Any) -> SQLiteStore:
    store = SQLiteStore(path, **kwargs)
    await store.open()
    return store


async def everything(store: SQLiteStore, uid: str) -> list[StoredEvent]:
    out: list[StoredEvent] = []
    after = 0
    while page := await store.list_after(uid, after, limit=100):
        out += page
        after = page[-1].seq
    return out


def foreign_warnings(caplog: pytest.LogCaptureFixture, path: Path) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.WARNING and str(path) in r.getMessage()
    ]


# ------------------------------------------------------------------ store level


def test_interleaved_saves_from_two_stores_share_one_strictly_increasing_history(tmp_path: Path) -> None:
    async def body() -> None:
        path = tmp_path / "shared.db"
        one, two = await opened(path), await opened(path)
        assert one.epoch == two.epoch
        saved: list[StoredEvent] = []
        for i in range(20):  # strictly alternating: every save follows one of the other store
            saved += await one.save([ev(f"one{i}"), ev(f"one{i}+", ("u",))])
            saved += await two.save([ev(f"two{i}", ("u",))])
        assert [s.seq for s in saved] == list(range(1, 61))
        assert all(EventId.parse(s.id) == (one.epoch, s.seq) for s in saved)

        # concurrently, both writers racing for the file, group commit on each side
        async def pushes(store: SQLiteStore, tag: str) -> list[int]:
            results = await asyncio.gather(*(store.save([ev(f"{tag}{i}")] * (1 + i % 3)) for i in range(150)))
            return [s.seq for batch in results for s in batch]

        a, b = await asyncio.gather(pushes(one, "a"), pushes(two, "b"))
        assert a == sorted(a) and b == sorted(b)  # FIFO on each store
        assert sorted(a + b) == list(range(61, 61 + len(a) + len(b)))  # no id twice, no hole

        last = 60 + len(a) + len(b)
        for store in (one, two):  # each lists the other's events
            assert [e.seq for e in await everything(store, "u")] == list(range(1, last + 1))
            assert [e for e in await everything(store, "v") if e.seq <= 60] == [
                s for s in saved if s.uids is None
            ]
            assert await store.last_seq() == last
            assert await store.first_seq() == 1
        await one.close()
        await two.close()

    run(body())


def test_last_and_first_seq_follow_the_other_store_writes_and_pruning(tmp_path: Path) -> None:
    async def body() -> None:
        path = tmp_path / "shared.db"
        idle = await opened(path, max_events=None)  # never saves, never prunes
        busy = await opened(path, max_events=5)
        assert (await idle.first_seq(), await idle.last_seq()) == (1, 0)
        await busy.save([ev(str(i)) for i in range(3)])
        assert (await idle.first_seq(), await idle.last_seq()) == (1, 3)
        await busy.save([ev(str(i)) for i in range(9)])  # 12 saved, the newest 5 kept
        assert (await idle.first_seq(), await idle.last_seq()) == (8, 12)
        assert [e.seq for e in await everything(idle, "u")] == list(range(8, 13))
        # the idle store now saves: from the file's last seq, and its own view follows
        [mine] = await idle.save([ev("idle")])
        assert mine.seq == 13
        assert (await busy.first_seq(), await busy.last_seq()) == (8, 13)
        await busy.save([ev("busy")])  # prunes from the file's first seq, counting idle's event
        assert (await idle.first_seq(), await idle.last_seq()) == (10, 14)
        assert [e.seq for e in await everything(busy, "u")] == list(range(10, 15))
        await idle.close()
        await busy.close()

    run(body())


def test_warning_names_the_file_once_not_per_save(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def body() -> None:
        path = tmp_path / "shared.db"
        one, two = await opened(path), await opened(path)
        for i in range(2):  # a store alone on the file says nothing
            await one.save([ev(str(i))])
        assert foreign_warnings(caplog, path) == []
        for i in range(30):
            await two.save([ev(f"two{i}")])
            await one.save([ev(f"one{i}")])
        # each store noticed the other once: 60 commits after a foreign write, 2 warnings
        warned = foreign_warnings(caplog, path)
        assert len(warned) == 2, [r.getMessage() for r in warned]
        assert "another process" in warned[0].getMessage()
        # a minute later the next foreign write is reported again, once
        one._warned_at = (one._warned_at or 0.0) - 61
        for i in range(5):
            await two.save([ev(f"later{i}")])
            await one.save([ev(f"later{i}")])
        assert len(foreign_warnings(caplog, path)) == 3
        await one.close()
        await two.close()

    run(body())


# ------------------------------------------------------------------ two servers


def pushed_ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    ids: list[str] = answer.json()["data"]["ids"]
    return ids


def seq_of(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


def test_overlapping_restart_two_servers_on_one_sqlite_file(
    serve: Serve, subscribe: Subscribe, tmp_path: Path
) -> None:
    path = tmp_path / "shared.db"
    store = f"sqlite:///{path}"  # tmp_path is absolute: sqlite:////...
    old = serve("--store", store)
    new = serve("--store", store)  # the new process starts before the old one exits
    pushed: list[str] = []
    for n in range(10):
        pushed += pushed_ids(old.push([{"event": "n", "data": f"old{n}"}]))
        pushed += pushed_ids(new.push([{"event": "n", "data": f"new{n}"}], uids=["a"]))
    assert len({i.rsplit("-", 1)[0] for i in pushed}) == 1  # one epoch
    seqs = [seq_of(i) for i in pushed]
    assert seqs == sorted(set(seqs)), seqs  # strictly increasing across both servers
    resume_from = pushed[8]  # an event pushed to the old server, older than the new one's last push

    assert old.stop() == 0  # SIGTERM: the old process exits cleanly
    for n in range(3):  # the new one keeps accepting pushes
        pushed += pushed_ids(new.push([{"event": "n", "data": f"after{n}"}]))
    assert [seq_of(i) for i in pushed[-3:]] == list(range(seqs[-1] + 1, seqs[-1] + 4))
    assert "another process" in new.output() and str(path) in new.output()

    reader = subscribe(f"{new.url}/events?uid=a", last_event_id=resume_from)
    expected = pushed[9:]
    events = reader.wait_events(len(expected))
    assert [e.event for e in events] == ["n"] * len(expected)  # no reset
    assert [e.id for e in events] == expected
    live = pushed_ids(new.push([{"event": "live", "data": 1}]))
    wait_until(lambda: len(reader.events) > len(expected))
    assert reader.events[-1].id == live[0]


def test_resume_on_a_server_that_has_not_seen_the_id(
    serve: Serve, subscribe: Subscribe, tmp_path: Path
) -> None:
    """The id was pushed to the other server after this one's last push: the store has it."""
    store = f"sqlite:///{tmp_path}/shared.db"
    old = serve("--store", store)
    new = serve("--store", store)
    [first] = pushed_ids(old.push([{"event": "n", "data": 0}]))
    rest = pushed_ids(old.push([{"event": "n", "data": n} for n in range(1, 4)]))
    reader = subscribe(f"{new.url}/events?uid=a", last_event_id=first)
    events = reader.wait_events(3)
    assert [e.id for e in events] == rest  # no reset: replayed from the shared file
