"""Fan-out ring: ``FanoutRing.take`` against a Python list and ``b"".join``.

A subscriber's wake-up takes everything pending from its cursor: here 1 frame
(the common case at low rates, returned without a copy) and 64 frames (a burst,
joined into one write).  The ring is full (4,096 frames) and has wrapped.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import pure_python
from sse_fast._core import FanoutRing

CAPACITY = 4096


def filled_rings(frames: list[bytes]) -> tuple[FanoutRing, pure_python.ListRing]:
    ring, list_ring = FanoutRing(CAPACITY), pure_python.ListRing(CAPACITY)
    for i in range(CAPACITY + CAPACITY // 2):  # wrap around once
        frame = frames[i % len(frames)]
        ring.append(frame)
        list_ring.append(frame)
    assert ring.head == list_ring.head and ring.tail == list_ring.tail
    return ring, list_ring


@pytest.fixture(scope="module")
def rings(stream: bytes) -> tuple[FanoutRing, pure_python.ListRing]:
    frames = [block + b"\n\n" for block in stream.split(b"\n\n")[:-1]]
    return filled_rings(frames)


@pytest.mark.parametrize("pending", [1, 64])
def test_list_ring_takes_the_same_bytes(rings: tuple[FanoutRing, Any], pending: int) -> None:
    ring, list_ring = rings
    cursor = ring.head - pending
    assert list_ring.take(cursor) == ring.take(cursor)


@pytest.mark.parametrize("pending", [1, 64])
@pytest.mark.parametrize("impl", ["compiled", "pure-python"])
def test_ring_take(benchmark: Any, rings: tuple[FanoutRing, Any], impl: str, pending: int) -> None:
    benchmark.group = f"ring-take-{pending}"
    ring = rings[0] if impl == "compiled" else rings[1]
    cursor = ring.head - pending
    out, new_cursor = benchmark(ring.take, cursor)
    assert new_cursor == ring.head
    benchmark.extra_info.update(frames=pending, bytes=len(out))


@pytest.mark.parametrize("pending", [1, 64])
def test_ring_take_speedup(speedup: Any, rings: tuple[FanoutRing, Any], pending: int) -> None:
    ring, list_ring = rings
    cursor = ring.head - pending
    speedup(
        f"ring_take_{pending}",
        compiled=lambda: ring.take(cursor),
        reference=lambda: list_ring.take(cursor),
    )
