"""The fan-out in slices, in-process: publishers never wait for a pass, and nothing is lost to it.

A tiny slice budget makes every pass over more than a few subscribers span
several loop turns, so pushes, joins and leaves land mid-pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_fast import Event, Hub
from sse_fast.errors import HubOverloadedError
from sse_fast.hub import RESET_EVENT, SLOW_CONSUMER
from sse_fast.stores import MemoryStore, NewEvent, StoredEvent
from test_hub import Connection, run, settle
from test_hub_history_lost import WipeableStore
from test_stores import FakeClock

TINY = 1e-9
"""A slice budget that is spent at the first look at the clock: 16 visits per slice."""


async def one_turn() -> None:
    await asyncio.sleep(0)


def test_a_long_pass_yields_to_the_loop_between_slices() -> None:
    async def main() -> None:
        hub = Hub(slice_seconds=TINY)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(100)]
        await hub.push(Event("e", 1))
        await one_turn()  # one slice ran: 16 subscribers
        reached = sum(1 for c in conns if c.events)
        assert 0 < reached < 100
        await hub.drain()
        assert all([e.data for e in c.events] == ["1"] for c in conns)
        await hub.close()

    run(main)


class GatedStore(MemoryStore):
    """A memory store whose saves wait, while ``gate`` is set and closed, as for a round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None

    async def save(self, events: Sequence[NewEvent]) -> list[StoredEvent]:
        if self.gate is not None:
            await self.gate.wait()
        return self.save_now(events)


class SlowConnection(Connection):
    """A subscriber whose every write takes ``SPIN`` seconds of the loop (a socket's send)."""

    SPIN = 0.0002

    def write(self, data: bytes) -> None:
        end = time.perf_counter() + self.SPIN
        while time.perf_counter() < end:
            pass
        super().write(data)


def test_slices_are_shorter_while_a_push_waits_for_its_store() -> None:
    """The store's answer is read between two slices and the push goes on a turn later, so each
    turn it waits costs a slice: meanwhile a slice keeps to SAVING_SLICE_SECONDS (a Redis save
    under a busy fan-out took 7 ms at 2 ms slices)."""

    async def main() -> None:
        store = GatedStore()
        hub = Hub(store=store, slice_seconds=0.008, slice_visits=100_000)
        await hub.start()
        conns = [await SlowConnection(hub, f"u{n}").open() for n in range(2000)]

        async def slices(n: int) -> list[int]:
            counts = []
            for _ in range(n):
                before = sum(len(c.events) for c in conns)
                await one_turn()
                counts.append(sum(len(c.events) for c in conns) - before)
            return counts

        await hub.push(Event("e", 1))  # no gate: saved at once
        normal = await slices(3)
        store.gate = asyncio.Event()
        waiting = asyncio.ensure_future(hub.push(Event("e", 2)))
        await one_turn()  # it waits for its save now
        hurried = await slices(3)
        store.gate.set()
        await waiting
        after = await slices(3)
        await hub.drain()
        assert all([e.data for e in c.events] == ["1", "2"] for c in conns)
        await hub.close()
        # the clock is looked at every 16 visits: 8 ms of 0.2 ms visits is 48, 0.5 ms is 16
        assert max(hurried) * 2 <= min(normal), (normal, hurried)
        assert max(hurried) * 2 <= min(after), (after, hurried)

    run(main)


def test_a_slice_visits_at_most_slice_visits_subscribers() -> None:
    """Also when the time budget is not spent: a visit may cost more after the slice (an ASGI
    sink only wakes a task that sends later), so the count bounds that work too."""

    async def main() -> None:
        hub = Hub(slice_seconds=10.0, slice_visits=10)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(35)]
        await hub.push(Event("e", 1))
        reached = []
        for _ in range(4):
            await one_turn()
            reached.append(sum(1 for c in conns if c.events))
        assert reached == [10, 20, 30, 35]
        await hub.close()

    run(main)


def test_a_broadcast_mid_pass_coalesces_for_those_not_yet_visited() -> None:
    async def main() -> None:
        hub = Hub(slice_seconds=TINY)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(100)]
        writes_before = [len(c.writes) for c in conns]
        await hub.push(Event("e", 1))
        await one_turn()
        await hub.push(Event("e", 2))  # mid-pass
        await hub.drain()
        for conn in conns:
            assert [e.data for e in conn.events] == ["1", "2"]
        coalesced = [c for c, before in zip(conns, writes_before, strict=True) if len(c.writes) == before + 1]
        separate = [c for c, before in zip(conns, writes_before, strict=True) if len(c.writes) == before + 2]
        assert coalesced and separate and len(coalesced) + len(separate) == 100
        await hub.close()

    run(main)


def test_a_subscriber_joining_mid_pass_is_visited_in_it() -> None:
    async def main() -> None:
        hub = Hub(slice_seconds=TINY)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(100)]
        await hub.push(Event("e", 1))
        await one_turn()
        late = await Connection(hub, "late").open()  # joins while the pass is under way
        await hub.push(Event("e", 2))
        await one_turn()
        await hub.push(Event("e", 3))
        await hub.drain()
        assert [e.data for e in late.events] == ["2", "3"]
        assert all([e.data for e in c.events] == ["1", "2", "3"] for c in conns)
        await hub.close()

    run(main)


def test_the_next_pass_goes_on_where_the_last_one_stopped() -> None:
    """Round-robin: after a broadcast mid-pass, the next pass starts from the hand, not from the top."""

    async def main() -> None:
        hub = Hub(slice_seconds=TINY)
        await hub.start()
        order: list[int] = []
        conns = []
        for n in range(64):
            conn = await Connection(hub, f"u{n}").open()
            conns.append(conn)
        for n, conn in enumerate(conns):
            original = conn.write

            def write(data: bytes, n: int = n, original: Any = original) -> None:
                if b"event:" in data:
                    order.append(n)
                original(data)

            conn.write = write  # type: ignore[method-assign]
        await hub.push(Event("e", 1))
        await one_turn()
        await one_turn()  # 32 visited
        await hub.push(Event("e", 2))  # owes one more full round from subscriber 32
        await hub.drain()
        order.clear()
        await hub.push(Event("e", 3))
        await hub.drain()
        assert order[0] == 32, order[:5]  # the hand stopped at 32 and goes on from there
        assert sorted(order) == list(range(64))
        await hub.close()

    run(main)


def test_broadcasts_that_outrun_the_fan_out_are_refused_not_lost() -> None:
    async def main() -> None:
        failures: list[tuple[str, str]] = []
        hub = Hub(
            store=MemoryStore(),
            slice_seconds=TINY,
            ring_frames=8,
            on_push_failed=lambda uid, event, reason: failures.append((uid, reason)),
        )
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(200)]
        accepted: list[str] = []
        refused = 0
        for n in range(20):  # no turn of the loop in between: the pass cannot keep up
            try:
                accepted += await hub.push(Event("e", n))
            except HubOverloadedError:
                refused += 1
        assert refused > 0 and len(accepted) <= 8 // 2 + 1
        assert hub.stats.overloaded == refused
        await hub.drain()
        for conn in conns:
            assert [e.id for e in conn.events] == accepted  # every accepted one, in order
        assert not [f for f in failures if f[1] == SLOW_CONSUMER] and hub.stats.slow_consumers == 0
        assert await hub.push(Event("e", "after")) != []  # caught up: accepted again
        await hub.close()

    run(main)


def test_a_steady_stream_of_broadcasts_never_overruns_a_waiting_subscriber() -> None:
    """One broadcast per loop turn against a pass that takes many turns: the refusals keep the
    backlog within the ring across rounds, so nobody is dropped for only waiting its turn."""

    async def main() -> None:
        hub = Hub(slice_seconds=TINY, ring_frames=8)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(200)]
        accepted: list[str] = []
        for n in range(300):
            with contextlib.suppress(HubOverloadedError):
                accepted += await hub.push(Event("e", n))
            await one_turn()
        await hub.drain()
        assert hub.stats.slow_consumers == 0
        assert hub.stats.overloaded > 0 and len(accepted) > 20
        for conn in conns:
            assert [e.id for e in conn.events] == accepted
        await hub.close()

    run(main)


def test_drain_waits_for_unicasts_too() -> None:
    async def main() -> None:
        hub = Hub(slice_seconds=TINY)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(50)]
        for n in range(50):
            await hub.push(Event("e", n), uids=[f"u{n}"])
        await hub.drain()
        assert all([e.data for e in c.events] == [str(n)] for n, c in enumerate(conns))
        await hub.close()

    run(main)


@pytest.mark.parametrize("slice_seconds", [TINY, 0.002])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(20, 100))
def test_seam_property_with_passes_in_slices(slice_seconds: float, seed: int, steps: int) -> None:
    """Pushes, joins, leaves and resumes mid-pass, with a store that suspends at random points:
    each user still gets exactly its events, once, in order, each with the id it went live with.
    Half the pushes carry publisher ids of their own, so resumes start from those too.  Some
    pushes go to hundreds of users (the three among them), one to three events each: more than
    a slice places, so they are placed over several slices while the others wait behind them."""

    async def main() -> None:
        rng = random.Random(seed)
        store = WipeableStore(rng)  # never wiped here: it only suspends
        hub = Hub(store=store, ring_frames=32, replay_page=5, slice_seconds=slice_seconds)
        await hub.start()
        bystanders = [await Connection(hub, f"by{n}").open() for n in range(40)]  # long passes
        users = ["a", "b", "c"]
        expected: dict[str, list[tuple[str, str]]] = {u: [] for u in users}  # (data, wire id)
        received: dict[str, list[Any]] = {u: [] for u in users}
        live: dict[str, Connection | None] = {u: None for u in users}
        last_id: dict[str, str | None] = {u: None for u in users}
        tasks: list[asyncio.Future[Any]] = []

        def harvest(uid: str) -> None:
            conn = live[uid]
            if conn is not None:
                received[uid] += [e for e in conn.events if e.event != RESET_EVENT]
                if conn.events:
                    last_id[uid] = conn.parser.last_event_id
                conn.events = []

        offline = [f"gone{k}" for k in range(300)]
        pushes: list[tuple[asyncio.Future[list[str]], list[str], list[str], list[str | None]]] = []
        for n in range(steps):
            action = rng.random()
            uid = rng.choice(users)
            if action < 0.55:
                kind = rng.random()
                targets: list[str] | None = None
                if kind < 0.35:
                    targets = rng.sample(users, rng.randint(1, 2))
                elif kind < 0.7:  # a big push: its users anywhere in a long list
                    targets = offline[:]
                    for u in rng.sample(users, rng.randint(1, 3)):
                        targets.insert(rng.randint(0, len(targets)), u)
                datas = [str(n * 10 + k) for k in range(rng.randint(1, 3))]
                with_pid = rng.random() < 0.5
                pids: list[str | None] = [f"pub:{d}" if with_pid else None for d in datas]
                batch = [Event("e", int(d), id=pid) for d, pid in zip(datas, pids, strict=True)]
                task = asyncio.ensure_future(hub.push(batch, targets))
                pushes.append((task, datas, [u for u in targets or users if u in users], pids))
                tasks.append(task)
            elif action < 0.75 and (conn := live[uid]) is not None and conn.sub is not None:
                harvest(uid)
                conn.drop()
                live[uid] = None
            elif live[uid] is None:
                conn = Connection(hub, uid)
                live[uid] = conn
                tasks.append(asyncio.ensure_future(conn.open(last_event_id=last_id[uid] or "")))
            for _ in range(rng.randint(0, 2)):
                await one_turn()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Concurrent pushes are numbered in the order the store took them, and
        # delivered in that order: expect them by id, not by when they were made.
        by_seq: list[tuple[int, list[tuple[str, str]], list[str]]] = []
        for pushed, datas, targets, pids in pushes:
            if pushed.exception() is None:
                server_ids = pushed.result()
                seq = int(server_ids[0].rpartition("-")[2])
                wire_ids = [s if p is None else p for s, p in zip(server_ids, pids, strict=True)]
                by_seq.append((seq, list(zip(datas, wire_ids, strict=True)), targets))
            else:  # refused as overloaded: nothing of it may arrive
                assert isinstance(pushed.exception(), HubOverloadedError)
        for _, sent, targets in sorted(by_seq):
            for u in targets:
                expected[u] += sent
        await hub.drain()
        for uid in users:  # everyone reconnects at the end and catches up from the store
            if live[uid] is not None:
                harvest(uid)
                conn = live[uid]
                assert conn is not None
                conn.drop()
            conn = Connection(hub, uid)
            live[uid] = conn
            await conn.open(last_event_id=last_id[uid] or "")
            await hub.drain()
            await settle()
            harvest(uid)
        for uid in users:
            got = [(e.data, e.id) for e in received[uid]]
            ids = [e.id for e in received[uid]]
            assert len(set(ids)) == len(ids), f"{uid}: duplicates {ids}"
            assert got == expected[uid], f"{uid}: got {got}, expected {expected[uid]}"
        assert all(not c.closed for c in bystanders)
        await hub.close()

    run(main)


class RecordingLoop:
    """The running loop, with the delays of ``call_later`` noted (the pace between slices)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.delays: list[float] = []

    def call_soon(self, callback: Any, *args: Any) -> asyncio.Handle:
        return self._loop.call_soon(callback, *args)

    def call_later(self, delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        self.delays.append(delay)
        return self._loop.call_later(delay, callback, *args)


@pytest.mark.parametrize("pace", [0.0, 0.001])
def test_write_pace_spaces_the_slices_by_the_writes_each_made(pace: float) -> None:
    """A transport that queues writes for another thread gets W x pace seconds after a slice of
    W writes before the next slice; without a pace the next slice runs on the loop's next turn."""

    async def main() -> None:
        hub = Hub(slice_seconds=10.0, slice_visits=10, write_pace=pace)
        await hub.start()
        conns = [await Connection(hub, f"u{n}").open() for n in range(35)]
        conns[3].drop()  # gone before the push: not in the round
        loop = RecordingLoop(asyncio.get_running_loop())
        hub._fanout.loop = loop  # type: ignore[assignment]
        await hub.push(Event("e", 1))
        await hub.drain()
        assert all([e.data for e in c.events] == ["1"] for c in conns if c is not conns[3])
        if pace:
            assert loop.delays == pytest.approx([0.010, 0.010, 0.010])  # 10, 10, 10, then the last 4
        else:
            assert loop.delays == []
        await hub.close()

    run(main)


def test_a_transport_says_its_write_pace_unless_the_hub_was_given_one() -> None:
    hub = Hub()
    assert hub.write_pace == 0.0
    hub.transport_write_pace(16e-6)
    assert hub.write_pace == 16e-6
    pinned = Hub(write_pace=0.0)
    pinned.transport_write_pace(16e-6)
    assert pinned.write_pace == 0.0
    with pytest.raises(ValueError, match="write_pace"):
        Hub(write_pace=-1.0)


async def all_due_a_heartbeat() -> tuple[Hub, list[Connection], list[int]]:
    """35 subscribers quiet for a heartbeat and one sweep that found them (10 writes per slice);
    returns the hub, the connections and each one's heartbeats before the sweep."""
    clock = FakeClock()
    hub = Hub(heartbeat=15, slice_seconds=10.0, slice_visits=10, clock=clock)
    await hub.start()
    conns = [await Connection(hub, f"u{n}").open() for n in range(35)]
    await settle()
    before = [c.parser.comments for c in conns]
    clock.now += 15
    hub.sweep()
    return hub, conns, before


def test_heartbeats_of_many_quiet_subscribers_go_out_in_slices() -> None:
    """Idle connections that opened together fall due together: their heartbeats take slices of
    at most ``slice_visits`` writes, not one long turn, and each gets exactly one."""

    async def main() -> None:
        hub, conns, before = await all_due_a_heartbeat()
        reached = []
        for _ in range(4):
            await one_turn()
            reached.append(sum(1 for c, b in zip(conns, before, strict=True) if c.parser.comments > b))
        assert reached[0] == 10 and reached[-1] == 35
        assert reached == sorted(reached)
        hub.sweep()  # nobody is quiet any more: no second heartbeat
        await hub.drain()
        assert [c.parser.comments for c in conns] == [b + 1 for b in before]
        assert hub.stats.heartbeats == 35
        await hub.close()

    run(main)


def test_a_subscriber_written_to_before_its_heartbeat_is_not_beaten() -> None:
    """An event that reaches a subscriber while its heartbeat waits for a slice makes the
    heartbeat unnecessary: it is skipped, and the event leaves first."""

    async def main() -> None:
        hub, conns, before = await all_due_a_heartbeat()  # 35 due: queued for the slices
        await hub.push(Event("e", 1), uids=["u34"])
        await hub.drain()
        assert [e.data for e in conns[34].events] == ["1"]
        assert conns[34].parser.comments == before[34]
        assert [c.parser.comments - b for c, b in zip(conns[:34], before[:34], strict=True)] == [1] * 34
        await hub.close()

    run(main)
