"""Pushes of many recipients, in-process: bounded by ``max_recipients``, placed in slices, in order.

A push to many users is placed with their subscribers over several loop
turns; these tests pin what that must not change (order, who gets what, the
``offline`` reports) and what it bounds (the work of one turn).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sse_fast import Event, Hub
from sse_fast.errors import HubOverloadedError, InvalidEventError, TooManyRecipientsError
from sse_fast.hub import OFFLINE
from sse_fast.stores import MemoryStore
from test_hub import Connection, run, settle

TINY = 1e-9
"""A slice budget that is spent at the first look at the clock."""


async def one_turn() -> None:
    await asyncio.sleep(0)


# ------------------------------------------------------------ the limit


def test_a_push_over_max_recipients_is_refused_and_nothing_is_accepted() -> None:
    async def main() -> None:
        store = MemoryStore()
        hub = Hub(store=store, max_recipients=100)
        await hub.start()
        conn = await Connection(hub, "u0").open()
        uids = [f"u{n}" for n in range(51)]
        with pytest.raises(TooManyRecipientsError, match=r"push: 102 recipients .* over max_recipients 100"):
            await hub.push([Event("e", 1), Event("e", 2)], uids)
        with pytest.raises(TooManyRecipientsError, match="101 recipients"):
            await hub.push([Event("e", n) for n in range(101)])  # a broadcast: one per event
        with pytest.raises(TooManyRecipientsError, match="101 recipients"):
            await hub.push([Event("e", n) for n in range(101)], [])  # empty uids: a broadcast
        with pytest.raises(TooManyRecipientsError, match="102 recipients"):
            await hub.push([Event("e", 1), Event("e", 2)], iter(uids))  # any iterable, counted as given
        await hub.drain()
        assert await store.last_seq() == 0 and hub.stats.events == 0
        assert conn.events == []
        ids = await hub.push([Event("e", 1), Event("e", 2)], uids[:50])  # at the limit: accepted
        ids += await hub.push([Event("b", n) for n in range(100)])
        await hub.drain()
        assert [e.id for e in conn.events] == ids
        await hub.close()

    run(main)


def test_max_recipients_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_recipients"):
        Hub(max_recipients=0)


def test_a_bad_uid_far_down_a_long_list_is_named() -> None:
    """Long lists are checked a chunk per loop turn: the index named is still the list's."""

    async def main() -> None:
        hub = Hub()
        await hub.start()
        uids: list[Any] = [f"u{n}" for n in range(20_000)]
        uids[17_001] = 5
        with pytest.raises(InvalidEventError, match=r"uids\[17001\]: must be a string, not int"):
            await hub.push(Event("e", 1), uids)
        uids[17_001] = ""
        with pytest.raises(InvalidEventError, match=r"uids\[17001\]: must not be empty"):
            await hub.push(Event("e", 1), uids)
        uids[17_001] = "u0"  # a duplicate: delivered once
        conn = await Connection(hub, "u0").open()
        await hub.push(Event("e", 1), uids)
        await hub.drain()
        assert len(conn.events) == 1
        await hub.close()

    run(main)


# ------------------------------------------------------- placed in slices


def test_a_push_to_many_users_is_placed_over_several_loop_turns() -> None:
    async def main() -> None:
        hub = Hub(slice_seconds=TINY)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(300)]
        await hub.push(Event("e", 1), [f"u{n}" for n in range(3000)])  # 300 online, 2,700 offline
        await one_turn()
        reached = sum(1 for c in conns if c.events)
        assert 0 < reached < 300
        await hub.drain()
        assert all([e.data for e in c.events] == ["1"] for c in conns)
        assert hub.stats.failed_by_reason[OFFLINE] == 2700
        await hub.close()

    run(main)


def test_the_writes_to_subscribers_with_their_own_frames_are_budgeted_per_slice() -> None:
    """Also without a time limit: a slice writes to at most slice_visits subscribers."""

    async def main() -> None:
        hub = Hub(slice_seconds=10.0, slice_visits=10)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(35)]
        await hub.push(Event("e", 1), [c.uid for c in conns])
        reached = []
        for _ in range(4):
            await one_turn()
            reached.append(sum(1 for c in conns if c.events))
        assert reached == [10, 20, 30, 35]
        await hub.close()

    run(main)


def test_the_writes_keep_up_with_the_pushes_accepted_in_one_turn() -> None:
    """Unicasts accepted within one turn of the loop (the native engine takes a read of pipelined
    pushes at once) all go out in the next slice, past its budgets: at one slice's worth per turn,
    accepting would outrun delivering and the backlog grow for as long as pushes came."""

    async def main() -> None:
        hub = Hub(slice_seconds=TINY, slice_visits=10)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(300)]
        for conn in conns:  # no turn of the loop in between: a memory-less hub does not wait
            await hub.push(Event("e", conn.uid), [conn.uid])
        await one_turn()
        assert [len(c.events) for c in conns] == [1] * 300
        await hub.close()

    run(main)


def test_offline_reports_of_a_big_push_run_a_slice_at_a_time() -> None:
    """Each report runs the callback: a slice runs at most slice_visits of them."""

    async def main() -> None:
        reported: list[tuple[str, str, str]] = []
        hub = Hub(
            slice_visits=10,
            on_push_failed=lambda uid, event, reason: reported.append((uid, str(event.data), reason)),
        )
        await hub.start()
        uids = [f"gone{n}" for n in range(200)]
        await hub.push([Event("e", 1), Event("e", 2)], uids)
        assert reported == []  # nothing ran inside the push
        await one_turn()
        assert 0 < len(reported) <= 10
        await hub.drain()
        assert sorted(reported) == sorted((u, d, OFFLINE) for u in uids for d in ("1", "2"))
        assert hub.stats.failed_by_reason[OFFLINE] == 400
        await hub.close()

    run(main)


def test_a_small_push_is_placed_at_once_as_before() -> None:
    """A push of at most slice_visits recipients that finds nothing waiting: its offline reports
    have run when push returns."""

    async def main() -> None:
        reported: list[str] = []
        hub = Hub(on_push_failed=lambda uid, event, reason: reported.append(uid))
        await hub.start()
        await hub.push(Event("e", 1), ["a", "b"])
        assert reported == ["a", "b"]
        await hub.close()

    run(main)


def test_pushes_behind_a_push_still_being_placed_arrive_after_it_in_order() -> None:
    """Broadcasts and unicasts accepted while a big push is placed wait their turn: every
    subscriber sees the ids in the order they were given, each once."""

    async def main() -> None:
        hub = Hub(store=MemoryStore(), slice_seconds=TINY)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(200)]
        everyone = [c.uid for c in conns]
        ids = await hub.push([Event("big", 1), Event("big", 2)], [*everyone, *(f"x{n}" for n in range(500))])
        ids += await hub.push(Event("all", 3))
        ids += await hub.push(Event("one", 4), ["u199"])
        ids += await hub.push(Event("big", 5), everyone[::-1])
        ids += await hub.push(Event("all", 6))
        await hub.drain()
        for conn in conns:
            wanted = [i for n, i in enumerate(ids) if n != 3 or conn.uid == "u199"]
            assert [e.id for e in conn.events] == wanted, conn.uid
        await hub.close()

    run(main)


def test_who_subscribes_while_a_push_waits_gets_it_from_the_store_not_live() -> None:
    async def main() -> None:
        hub = Hub(store=MemoryStore(), slice_seconds=TINY)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(100)]
        offline = [f"x{n}" for n in range(300)]  # more than a slice places at once: it waits
        ids = await hub.push(Event("big", 1), [*(c.uid for c in conns), *offline])
        before = await hub.push(Event("first", 0), ["late", "resumed"])
        late = await Connection(hub, "late").open()  # accepted before it came: not its event
        resumed = await Connection(hub, "resumed").open(last_event_id=before[0])
        ids += await hub.push(Event("next", 2), ["late", "resumed", "u0"])
        await hub.drain()
        await settle()
        assert [e.data for e in late.events] == ["2"]
        assert [e.data for e in resumed.events] == ["2"]
        assert [e.id for e in conns[0].events] == ids
        await hub.close()

    run(main)


def test_close_delivers_every_accepted_push_before_the_goodbye() -> None:
    async def main() -> None:
        hub = Hub(slice_seconds=TINY)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(100)]
        await hub.push(Event("big", 1), [*(c.uid for c in conns), *(f"x{n}" for n in range(300))])
        await hub.push(Event("all", 2))
        await hub.close()
        for conn in conns:
            assert [e.event for e in conn.events] == ["big", "all", "shutdown"]

    run(main)


def test_pushes_are_refused_while_too_many_recipients_wait_to_be_placed() -> None:
    async def main() -> None:
        hub = Hub(max_recipients=1000, slice_seconds=TINY)  # at most 4,000 waiting
        await hub.start()
        accepted = 0
        with pytest.raises(HubOverloadedError):
            for n in range(10):  # no loop turn in between: nothing is placed meanwhile
                await hub.push(Event("e", n), [f"x{k}" for k in range(1000)])
                accepted += 1
        assert accepted == 5 and hub.stats.overloaded == 1
        await hub.drain()
        await hub.push(Event("e", "after"), ["x1"])  # placed: accepted again
        await hub.close()

    run(main)
