"""The hub's fan-out in-process: one broadcast to N connections, against a per-client-queue hub.

The reference is the usual plain-Python design (sse-starlette's docs suggest
it): every connection owns a queue, a broadcast appends the frame to each,
and each connection's wake-up joins its queue into one write.  Our hub
instead appends the frame once to the shared ring and each idle connection
takes its cursor's worth.  Sinks here do no I/O: they count bytes and hand
``ready`` back, as a transport does once its write has left.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator

import pytest

from sse_fast import Event, Hub
from sse_fast.hub import Subscriber

SUBSCRIBERS = 1000


class CountingSink:
    __slots__ = ("bytes", "sub", "writes")

    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0
        self.sub: Subscriber | None = None

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.writes += 1

    def close(self) -> None:
        pass


class HubRound:
    """One broadcast through a real :class:`Hub` to ``n`` connections, all of them ready again after."""

    def __init__(self, n: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.hub = Hub(heartbeat=3600)
        self.loop.run_until_complete(self.hub.start())
        self.sinks = [CountingSink() for _ in range(n)]
        for i, sink in enumerate(self.sinks):
            sink.sub = self.hub.subscribe(f"u{i}", sink)
        self.subs = [sink.sub for sink in self.sinks]
        self._ready_all()
        self.event = Event("tick", {"t": 1732500000.123456, "n": 1, "note": "x" * 40})

    def _ready_all(self) -> None:
        ready = self.hub.ready
        for sub in self.subs:
            ready(sub)  # type: ignore[arg-type]

    async def _round(self) -> None:
        await self.hub.push(self.event)
        await asyncio.sleep(0)  # the hub's flush runs here
        self._ready_all()

    def __call__(self) -> None:
        self.loop.run_until_complete(self._round())

    def close(self) -> None:
        self.loop.run_until_complete(self.hub.close())
        self.loop.close()


class QueueRound:
    """The same broadcast through per-client queues (the plain-Python design)."""

    def __init__(self, n: int) -> None:
        self.queues: list[deque[bytes]] = [deque() for _ in range(n)]
        self.sinks = [CountingSink() for _ in range(n)]
        self.seq = 0

    def __call__(self) -> None:
        self.seq += 1
        frame = (
            f'id: abc-{self.seq}\nevent: tick\ndata: {{"t":1732500000.123456,"n":1,"note":"'
            + "x" * 40
            + '"}\n\n'
        ).encode()
        for queue in self.queues:
            queue.append(frame)
        for queue, sink in zip(self.queues, self.sinks, strict=True):
            data = b"".join(queue)
            queue.clear()
            sink.write(data)


@pytest.fixture
def rounds() -> Iterator[Callable[[str], Callable[[], None]]]:
    made: list[HubRound] = []

    def make(kind: str) -> Callable[[], None]:
        if kind == "queues":
            return QueueRound(SUBSCRIBERS)
        hub_round = HubRound(SUBSCRIBERS)
        made.append(hub_round)
        return hub_round

    yield make
    for hub_round in made:
        hub_round.close()


@pytest.mark.benchmark(group="hub-fanout-1000")
@pytest.mark.parametrize("kind", ["hub", "queues"])
def test_broadcast_to_1000(benchmark, rounds, kind):
    one_round = rounds(kind)
    benchmark(one_round)
    per_delivery_ns = benchmark.stats.stats.median / SUBSCRIBERS * 1e9
    benchmark.extra_info["ns_per_delivery"] = round(per_delivery_ns, 1)
    if isinstance(one_round, HubRound):
        assert all(sink.writes >= 1 for sink in one_round.sinks)


def test_hub_fanout_speedup(speedup, rounds):
    """Guard: the hub's cost per delivery, relative to per-client queues, must not regress."""
    speedup("hub_fanout_1000", compiled=rounds("hub"), reference=rounds("queues"), rounds=31)
