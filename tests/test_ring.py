"""FanoutRing: positions, joined takes, eviction, lagging cursors and filters.

Vectors first, then a model-based property test against a plain list that
keeps the same frames by the same rules.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_fast._core import FanoutRing, encode_event
from sse_fast.errors import CursorLagging, SSEFastError


def frames(n: int, start: int = 0) -> list[bytes]:
    return [encode_event(str(i)) for i in range(start, start + n)]


def test_empty_ring() -> None:
    ring = FanoutRing(8)
    assert (ring.head, ring.tail, len(ring), ring.nbytes) == (0, 0, 0, 0)
    assert ring.max_frames == 8
    assert ring.max_bytes == 32 * 1024 * 1024
    assert ring.take(0) == (b"", 0)
    assert ring.collect(0) == (b"", 0, 0)


def test_append_returns_consecutive_positions() -> None:
    ring = FanoutRing(8)
    assert [ring.append(f) for f in frames(3)] == [0, 1, 2]
    assert (ring.head, ring.tail, len(ring)) == (3, 0, 3)
    assert ring.nbytes == sum(map(len, frames(3)))


def test_take_joins_everything_pending() -> None:
    ring = FanoutRing(8)
    for f in frames(3):
        ring.append(f)
    assert ring.take(0) == (b"data: 0\n\ndata: 1\n\ndata: 2\n\n", 3)
    assert ring.take(1) == (b"data: 1\n\ndata: 2\n\n", 3)
    assert ring.take(3) == (b"", 3)


def test_take_does_not_consume() -> None:
    ring = FanoutRing(8)
    for f in frames(2):
        ring.append(f)
    assert ring.take(0) == ring.take(0)
    assert len(ring) == 2


def test_cursor_follows_the_head() -> None:
    ring = FanoutRing(8)
    cursor = ring.head
    ring.append(b"a")
    out, cursor = ring.take(cursor)
    assert (out, cursor) == (b"a", 1)
    ring.append(b"b")
    ring.append(b"c")
    assert ring.take(cursor) == (b"bc", 3)


def test_single_frame_is_returned_without_copy() -> None:
    ring = FanoutRing(8)
    frame = encode_event("only one")
    ring.append(frame)
    out, _ = ring.take(0)
    assert out is frame
    ring.append(encode_event("second"))
    assert ring.take(1)[0] is not frame
    assert ring.take(0, until=1)[0] is frame


def test_single_frame_after_filtering_is_returned_without_copy() -> None:
    ring = FanoutRing(8)
    wanted = encode_event("w", "a")
    ring.append(encode_event("x", "b"), "b")
    ring.append(wanted, "a")
    ring.append(encode_event("y", "b"), "b")
    assert ring.take(0, event_type="a")[0] is wanted


def test_wrap_around_past_capacity() -> None:
    ring = FanoutRing(4)
    for f in frames(10):
        ring.append(f)
    assert (ring.head, ring.tail, len(ring)) == (10, 6, 4)
    assert ring.take(6) == (b"".join(frames(4, 6)), 10)
    assert ring.take(8) == (b"".join(frames(2, 8)), 10)
    assert ring.nbytes == sum(map(len, frames(4, 6)))


def test_capacity_of_one() -> None:
    ring = FanoutRing(1)
    ring.append(b"a")
    ring.append(b"b")
    assert (ring.tail, ring.head) == (1, 2)
    assert ring.take(1) == (b"b", 2)
    with pytest.raises(CursorLagging):
        ring.take(0)


def test_max_bytes_evicts_oldest() -> None:
    ring = FanoutRing(100, max_bytes=10)
    ring.append(b"aaaa")
    ring.append(b"bbbb")
    assert (ring.tail, ring.nbytes) == (0, 8)
    ring.append(b"cc")  # exactly at the limit: nothing evicted
    assert (ring.tail, ring.nbytes) == (0, 10)
    ring.append(b"d")
    assert (ring.tail, ring.nbytes) == (1, 7)
    assert ring.take(1) == (b"bbbbccd", 4)


def test_frame_of_max_bytes_evicts_everything_else() -> None:
    ring = FanoutRing(100, max_bytes=10)
    ring.append(b"abc")
    ring.append(b"0123456789")
    assert (ring.tail, ring.head, ring.nbytes) == (1, 2, 10)


def test_frame_larger_than_max_bytes_is_rejected() -> None:
    ring = FanoutRing(100, max_bytes=10)
    ring.append(b"abc")
    with pytest.raises(ValueError, match=r"^frame: 11 bytes exceed the ring's max_bytes \(10\)"):
        ring.append(b"x" * 11)
    assert (ring.tail, ring.head, ring.nbytes) == (0, 1, 3)


@pytest.mark.parametrize("kwargs", [{"max_frames": 0}, {"max_frames": -1}, {"max_bytes": 0}])
def test_bad_limits_are_rejected_naming_the_argument(kwargs: dict[str, int]) -> None:
    (name,) = kwargs
    with pytest.raises(ValueError, match=rf"^{name}: must be at least 1"):
        FanoutRing(**kwargs)


def test_append_rejects_non_bytes() -> None:
    ring = FanoutRing(4)
    with pytest.raises(TypeError):
        ring.append("text")  # type: ignore[arg-type]  # the wrong type is the test
    with pytest.raises(TypeError):
        ring.append(bytearray(b"x"))  # type: ignore[arg-type]  # the wrong type is the test
    assert ring.head == 0


def test_lagging_cursor_raises() -> None:
    ring = FanoutRing(4)
    for f in frames(6):
        ring.append(f)
    assert ring.is_lagging(1)
    assert not ring.is_lagging(2)
    with pytest.raises(CursorLagging) as info:
        ring.take(1)
    assert isinstance(info.value, SSEFastError)
    assert (info.value.cursor, info.value.oldest) == (1, 2)
    assert str(info.value) == "cursor 1 is behind the oldest retained frame 2"
    with pytest.raises(CursorLagging):
        ring.collect(0)


def test_lagging_after_max_bytes_eviction() -> None:
    ring = FanoutRing(100, max_bytes=4)
    ring.append(b"ab")
    ring.append(b"cd")
    ring.append(b"e")
    assert ring.is_lagging(0)
    with pytest.raises(CursorLagging):
        ring.take(0)


def test_until_stops_early() -> None:
    ring = FanoutRing(8)
    for f in frames(5):
        ring.append(f)
    assert ring.take(1, until=3) == (b"".join(frames(2, 1)), 3)
    assert ring.take(0, until=4) == (b"".join(frames(4)), 4)
    assert ring.collect(3, until=4) == (frames(1, 3)[0], 4, 1)
    assert ring.take(1, until=1) == (b"", 1)
    assert ring.take(0, until=100) == (b"".join(frames(5)), 5)
    assert ring.take(2, until=-1) == (b"".join(frames(3, 2)), 5)


def test_cursor_at_or_past_head_is_returned_unchanged() -> None:
    ring = FanoutRing(8)
    ring.append(b"a")
    assert ring.take(1) == (b"", 1)
    assert ring.collect(5) == (b"", 5, 0)


def test_event_type_filter() -> None:
    ring = FanoutRing(8)
    ring.append(b"A1", "a")
    ring.append(b"B1", "b")
    ring.append(b"A2", "a")
    ring.append(b"N1")
    assert ring.take(0, event_type="a") == (b"A1A2", 4)
    assert ring.take(0, event_type="b") == (b"B1", 4)
    assert ring.take(0, event_type="zzz") == (b"", 4)
    assert ring.take(0) == (b"A1B1A2N1", 4)


def test_after_seq_filter_skips_replayed_frames() -> None:
    ring = FanoutRing(8)
    for seq in (5, 6, 7, 8):
        ring.append(f"s{seq}".encode(), None, seq)
    assert ring.take(0, after_seq=6) == (b"s7s8", 4)
    assert ring.take(0, after_seq=8) == (b"", 4)
    assert ring.take(0, after_seq=0) == (b"s5s6s7s8", 4)
    ring.append(b"none", None, 0)  # in no history: never skipped as replayed
    assert ring.take(0, after_seq=8) == (b"none", 5)


def test_filters_combine() -> None:
    ring = FanoutRing(8)
    ring.append(b"a1", "a", 1)
    ring.append(b"b2", "b", 2)
    ring.append(b"a3", "a", 3)
    ring.append(b"a4", "a", 4)
    assert ring.collect(0, event_type="a", after_seq=1) == (b"a3a4", 4, 2)
    assert ring.collect(0, until=3, event_type="a", after_seq=1) == (b"a3", 3, 1)


def test_collect_counts_frames_joined() -> None:
    ring = FanoutRing(8)
    for f in frames(5):
        ring.append(f, "t" if f != frames(1, 2)[0] else "u")
    assert ring.collect(0) == (b"".join(frames(5)), 5, 5)
    assert ring.collect(0, event_type="t") == (b"".join(frames(2) + frames(2, 3)), 5, 4)
    assert ring.collect(0, event_type="u")[2] == 1
    assert ring.collect(5) == (b"", 5, 0)


def test_evicted_frames_are_released() -> None:
    ring = FanoutRing(2)
    first = bytes(bytearray(b"first frame"))  # a fresh object nobody else holds
    alone = sys.getrefcount(first)
    ring.append(first)
    assert sys.getrefcount(first) == alone + 1
    ring.append(b"b")
    ring.append(b"c")
    assert sys.getrefcount(first) == alone


# --------------------------------------------------------------------------
# Model-based property test
# --------------------------------------------------------------------------


@dataclass
class Model:
    max_frames: int
    max_bytes: int
    head: int = 0

    def __post_init__(self) -> None:
        self.kept: list[tuple[int, bytes, str | None, int]] = []

    @property
    def tail(self) -> int:
        return self.kept[0][0] if self.kept else self.head

    def append(self, frame: bytes, event_type: str | None, seq: int) -> int:
        while self.kept and (
            len(self.kept) >= self.max_frames
            or sum(len(k[1]) for k in self.kept) + len(frame) > self.max_bytes
        ):
            self.kept.pop(0)
        self.kept.append((self.head, frame, event_type, seq))
        self.head += 1
        return self.head - 1

    def collect(
        self, cursor: int, until: int, event_type: str | None, after_seq: int
    ) -> tuple[bytes, int, int]:
        if cursor < self.tail:
            raise CursorLagging(cursor, self.tail)
        end = self.head if until < 0 or until > self.head else until
        if cursor >= end:
            return (b"", cursor, 0)
        chosen = [
            f
            for pos, f, t, s in self.kept
            if cursor <= pos < end
            and (event_type is None or t == event_type)
            and (after_seq <= 0 or s == 0 or s > after_seq)
        ]
        return (b"".join(chosen), end, len(chosen))


_append = st.tuples(st.binary(min_size=0, max_size=8), st.sampled_from([None, "a", "b"]), st.integers(0, 20))


@settings(max_examples=300, deadline=None)
@given(
    max_frames=st.integers(1, 8),
    max_bytes=st.integers(8, 60),
    appends=st.lists(_append, min_size=1, max_size=40),
)
def test_ring_matches_model(
    max_frames: int, max_bytes: int, appends: list[tuple[bytes, str | None, int]]
) -> None:
    """After every append, every take the ring can be asked for equals the model's."""
    ring = FanoutRing(max_frames, max_bytes)
    model = Model(max_frames, max_bytes)
    for frame, event_type, seq in appends:
        assert ring.append(frame, event_type, seq) == model.append(frame, event_type, seq)
        assert (ring.head, ring.tail, len(ring)) == (model.head, model.tail, len(model.kept))
        assert ring.nbytes == sum(len(k[1]) for k in model.kept)
        positions = range(model.tail - 1, model.head + 2)
        for cursor in positions:
            for until in [-1, *positions]:
                for type_filter in (None, "a"):
                    for after_seq in (0, 10):
                        args = (cursor, until, type_filter, after_seq)
                        try:
                            expected = model.collect(*args)
                        except CursorLagging:
                            assert ring.is_lagging(cursor)
                            with pytest.raises(CursorLagging):
                                ring.collect(*args)
                            continue
                        assert not ring.is_lagging(cursor)
                        assert ring.collect(*args) == expected, args
                        assert ring.take(*args) == expected[:2], args
