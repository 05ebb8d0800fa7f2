"""Framing: ``encode_event`` against a plain-Python framing function.

One benchmark call frames the whole workload (2,000 events shaped like the
push API's: compact JSON data, an event type, an id); ``ns_per_event`` in
``extra_info`` is the median divided by the event count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from benchmarks import pure_python
from sse_fast._core import encode_event

Frame = Callable[[str, str | None, str | None], bytes]
IMPLEMENTATIONS: dict[str, Frame] = {"compiled": encode_event, "pure-python": pure_python.encode_event}


def frame_all(frame: Frame, events: list[tuple[str, str, str]]) -> int:
    total = 0
    for data, event, id in events:
        total += len(frame(data, event, id))
    return total


def test_pure_python_frames_the_same_bytes(events: list[tuple[str, str, str]]) -> None:
    for data, event, id in [*events[:50], ("a\r\nb\rc\nd", "", None), ("", None, "")]:
        assert pure_python.encode_event(data, event, id) == encode_event(data, event, id)


@pytest.mark.benchmark(group="framing")
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_framing(benchmark: Any, impl: str, events: list[tuple[str, str, str]]) -> None:
    frame = IMPLEMENTATIONS[impl]
    nbytes = benchmark(frame_all, frame, events)
    if benchmark.stats is not None:  # None under --benchmark-disable
        median = benchmark.stats["median"]
        benchmark.extra_info.update(
            events=len(events), bytes=nbytes, ns_per_event=round(median / len(events) * 1e9, 1)
        )


def test_framing_speedup(speedup: Any, events: list[tuple[str, str, str]]) -> None:
    batch = events[:200]
    speedup(
        "framing",
        compiled=lambda: frame_all(encode_event, batch),
        reference=lambda: frame_all(pure_python.encode_event, batch),
    )
