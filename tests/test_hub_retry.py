"""The ``retry:`` a stream opens with, spread per connection, and repeated by its goodbye."""

from __future__ import annotations

import asyncio

import pytest

from conftest import HEARTBEAT, RecordingSink, split_opening
from sse_fast import EventParser, Hub
from sse_fast.hub.retry import RetryAdvice


def test_the_library_hub_sends_no_retry_unless_told() -> None:
    async def main() -> None:
        hub = Hub()
        await hub.start()
        sink = RecordingSink()
        hub.subscribe("u", sink)
        assert sink.data == HEARTBEAT
        await hub.close()
        [goodbye] = EventParser().feed(sink.data)
        assert goodbye.event == "shutdown" and goodbye.retry == 1000

    asyncio.run(main())


def test_each_stream_gets_its_own_retry_and_its_goodbye_repeats_it() -> None:
    async def main() -> None:
        hub = Hub(retry_ms=3000, retry_jitter=0.5)
        await hub.start()
        sinks = [RecordingSink() for _ in range(200)]
        for n, sink in enumerate(sinks):
            hub.subscribe(f"u{n}", sink)
        opened = [split_opening(sink.data) for sink in sinks]
        assert all(rest == b"" for _, rest in opened)
        retries = [retry for retry, _ in opened]
        assert all(retry is not None and 1500 <= retry <= 4500 for retry in retries)
        # Uniform over 1500-4500: each third of the range holds some of 200 streams.
        assert {((retry or 0) - 1500) * 3 // 3001 for retry in retries} == {0, 1, 2}
        await hub.close()
        for sink, retry in zip(sinks, retries, strict=True):
            [goodbye] = EventParser().feed(split_opening(sink.data)[1])
            assert goodbye.event == "shutdown" and goodbye.retry == retry

    asyncio.run(main())


def test_an_explicit_retry_for_the_goodbye_wins() -> None:
    async def main() -> None:
        hub = Hub(retry_ms=3000, retry_jitter=0)
        await hub.start()
        sink = RecordingSink()
        hub.subscribe("u", sink)
        assert split_opening(sink.data) == (3000, b"")
        await hub.close("deploy", retry_ms=250)
        [goodbye] = EventParser().feed(split_opening(sink.data)[1])
        assert goodbye.json() == {"reason": "deploy"} and goodbye.retry == 250

    asyncio.run(main())


def test_without_jitter_every_stream_gets_retry_ms_exactly() -> None:
    advice = RetryAdvice(1234, 0.0)
    assert {advice.pick() for _ in range(50)} == {1234}
    assert RetryAdvice(None, 0.5).pick() is None
    assert RetryAdvice(0, 0.5).pick() == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"retry_ms": -1}, "retry_ms"),
        ({"retry_ms": 1.5}, "retry_ms"),
        ({"retry_ms": True}, "retry_ms"),
        ({"retry_jitter": 1.5}, "retry_jitter"),
        ({"retry_jitter": -0.1}, "retry_jitter"),
    ],
)
def test_bad_retry_settings_are_refused_naming_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        Hub(**options)  # type: ignore[arg-type]
