"""The async client against exact byte streams from an independent raw-socket server.

Expected events are what a browser's EventSource dispatches for the same bytes
(HTML Living Standard, "Server-sent events", parsing and reconnection).  Only
generous lower bounds are asserted on timings (the reconnect delay must be at
least what the server asked for); every await is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from _raw_sse_server import HOLD, RawServer, Reply
from sse_fast import ServerSentEvent
from sse_fast.client import Client
from sse_fast.errors import (
    ClientStoppedError,
    ConnectionLostError,
    ContentTypeError,
    HTTPStatusError,
    RetriesExhaustedError,
)

T = TypeVar("T")
LIMIT = 15.0  # seconds any single step may take before the test fails instead of hanging

# The awkward stream: BOM split in two, CR-only and CRLF line ends split across
# packets, a comment, a field without colon, an id with NUL (ignored), invalid
# and valid retry, "data:" without space, and a last event with no blank line.
AWKWARD = [
    b"\xef\xbb",
    b"\xbf: a comment\r",
    b"\ndata: one\r",
    b"\n\r",
    b"\nevent: two\rdata: a\rdata\rdata:b\r\r",
    b"id: 7\x00x\nid: 5\ndata: x\n",
    b"\n",
    b"retry: abc\nretry: 1.5\nretry: 150\ndata:  spaced\n\n",
    b"fieldnocolon\nevent\ndata: z\n\nid\n",
    b"data: tail-not-dispatched\n",
]
AWKWARD_EVENTS = [
    ServerSentEvent("one"),
    ServerSentEvent("a\n\nb", event="two"),
    ServerSentEvent("x", id="5"),
    ServerSentEvent(" spaced", id="5", retry=150),
    ServerSentEvent("z", id="5"),
]
# The same, for a client that started with last_event_id="start" (the id persists until one is sent).
AWKWARD_EVENTS_FROM_START = [
    ServerSentEvent("one", id="start"),
    ServerSentEvent("a\n\nb", event="two", id="start"),
    ServerSentEvent("x", id="5"),
    ServerSentEvent(" spaced", id="5", retry=150),
    ServerSentEvent("z", id="5"),
]
NO_CONTENT = Reply("204 No Content", headers=[])


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, LIMIT)

    return asyncio.run(bounded())


def test_dispatches_what_eventsource_would_then_resumes_with_last_event_id() -> None:
    async def main(server: RawServer) -> None:
        got: list[ServerSentEvent] = []
        every: list[str] = []
        twos: list[str] = []

        async def on_two(event: ServerSentEvent) -> None:
            await asyncio.sleep(0)
            twos.append(event.data)

        client = Client(server.url, retry=5.0, last_event_id="start")
        client.on("message", got.append)
        client.on("two", got.append)
        client.on("two", on_two)
        client.on("*", lambda e: every.append(e.event))
        await asyncio.wait_for(client.connect(), LIMIT)
        await asyncio.wait_for(client.wait(), LIMIT)
        assert got == AWKWARD_EVENTS_FROM_START
        assert twos == ["a\n\nb"]
        assert every == ["message", "two", "message", "message", "message"]
        assert client.state == "closed"
        assert client.error is None
        assert client.last_event_id == "5"  # the trailing "id" line was never followed by a blank line
        assert client.retry == 0.15

    with RawServer([Reply(body=AWKWARD), NO_CONTENT]) as server:
        run(main(server))
        first, second = server.wait_for_requests(2)
    assert first.headers["last-event-id"] == "start"
    assert first.headers["accept"] == "text/event-stream"
    assert first.headers["cache-control"] == "no-cache"
    assert second.headers["last-event-id"] == "5"
    assert first.finished is not None
    gap = second.arrived - first.finished
    assert gap >= 0.15, gap  # the server's retry: 150 ms
    assert gap < 4.0, gap  # ...and not the client's default of 5 s


def test_async_iteration_receives_events_until_204() -> None:
    async def main(server: RawServer) -> list[ServerSentEvent]:
        out = []
        async with Client(server.url, retry=0.05) as client:
            async for event in client:
                out.append(event)
        return out

    with RawServer([Reply(body=AWKWARD), NO_CONTENT]) as server:
        assert run(main(server)) == AWKWARD_EVENTS


def test_no_content_stops_for_good() -> None:
    async def main(server: RawServer) -> Client:
        client = Client(server.url, retry=0.01)
        await asyncio.wait_for(client.connect(), LIMIT)  # returns: the server said stop
        assert client.state == "closed"
        await asyncio.wait_for(client.wait(), LIMIT)
        await asyncio.sleep(0.2)
        return client

    with RawServer([NO_CONTENT]) as server:
        client = run(main(server))
        assert len(server.requests) == 1
    assert client.error is None


def test_503_with_retry_after_delays_the_next_attempt() -> None:
    errors: list[BaseException] = []
    delays: list[float] = []

    async def main(server: RawServer) -> list[ServerSentEvent]:
        client = Client(server.url, retry=0.05)
        client.on_error(errors.append)
        client.on_reconnect(delays.append)
        events: list[ServerSentEvent] = []
        client.on("message", events.append)
        await asyncio.wait_for(client.connect(), LIMIT)
        await asyncio.wait_for(client.wait(), LIMIT)
        return events

    busy = Reply("503 Service Unavailable", headers=[("Retry-After", "1")], body=[b"busy"])
    with RawServer([busy, Reply(body=[b"data: hi\n\n"]), NO_CONTENT]) as server:
        events = run(main(server))
        first, second, _ = server.wait_for_requests(3)
    assert events == [ServerSentEvent("hi")]
    assert isinstance(errors[0], HTTPStatusError) and errors[0].status == 503 and errors[0].retryable
    assert errors[0].retry_after == 1.0
    assert delays[0] >= 1.0
    assert first.finished is not None
    assert second.arrived - first.finished >= 1.0


def test_500_stops_for_good_with_the_status() -> None:
    async def main(server: RawServer) -> None:
        client = Client(server.url, retry=0.01)
        with pytest.raises(HTTPStatusError) as info:
            await asyncio.wait_for(client.connect(), LIMIT)
        assert info.value.status == 500
        assert info.value.message == "boom"
        assert not info.value.retryable
        with pytest.raises(HTTPStatusError):
            await asyncio.wait_for(client.wait(), LIMIT)
        assert client.state == "closed"
        await asyncio.sleep(0.2)

    error = Reply(
        "500 Internal Server Error",
        headers=[("Content-Type", "application/json")],
        body=[b'{"code":500,"msg":"boom","data":{}}'],
    )
    with RawServer([error]) as server:
        run(main(server))
        assert len(server.requests) == 1


def test_200_with_html_stops_for_good() -> None:
    async def main(server: RawServer) -> None:
        client = Client(server.url, retry=0.01)
        with pytest.raises(ContentTypeError) as info:
            await asyncio.wait_for(client.connect(), LIMIT)
        assert info.value.content_type.startswith("text/html")
        assert isinstance(info.value, ClientStoppedError)
        await asyncio.sleep(0.2)

    html = Reply(headers=[("Content-Type", "text/html; charset=utf-8")], body=[b"data: no\n\n"])
    with RawServer([html]) as server:
        run(main(server))
        assert len(server.requests) == 1


def test_shutdown_event_triggers_a_reconnect_even_if_the_server_keeps_the_socket() -> None:
    errors: list[BaseException] = []

    async def main(server: RawServer) -> list[ServerSentEvent]:
        client = Client(server.url, retry=5.0)
        client.on_error(errors.append)
        events: list[ServerSentEvent] = []
        client.on("*", events.append)
        await asyncio.wait_for(client.connect(), LIMIT)
        await asyncio.wait_for(client.wait(), LIMIT)
        return events

    going_away = b'id: 9\nevent: shutdown\ndata: {"reason":"deploy"}\nretry: 300\n\n'
    replies = [
        Reply(body=[b"id: 8\ndata: before\n\n", going_away, HOLD]),
        Reply(body=[b"data: after\n\n"]),
        NO_CONTENT,
    ]
    with RawServer(replies) as server:
        events = run(main(server))
        first, second, _ = server.wait_for_requests(3)
    assert events == [
        ServerSentEvent("before", id="8"),
        ServerSentEvent('{"reason":"deploy"}', event="shutdown", id="9", retry=300),
        ServerSentEvent("after", id="9"),
    ]
    assert second.headers["last-event-id"] == "9"
    assert isinstance(errors[0], ConnectionLostError) and errors[0].going_away
    assert "deploy" in str(errors[0])
    assert first.last_send is not None
    assert second.arrived - first.last_send >= 0.3


def test_backoff_doubles_and_max_attempts_gives_up() -> None:
    async def main(server: RawServer) -> BaseException:
        client = Client(server.url, retry=0.1, max_retry=10.0, max_attempts=3)
        await asyncio.wait_for(client.connect(), LIMIT)  # the first attempt opens, then ends at once
        with pytest.raises(RetriesExhaustedError) as info:
            await asyncio.wait_for(client.wait(), LIMIT)
        assert client.attempts == 3
        return info.value

    # An event stream that ends at once, without a byte: each attempt fails.
    with RawServer([Reply(body=[])]) as server:
        error = run(main(server))
        first, second, third = server.wait_for_requests(3)
        assert len(server.requests) == 3
    assert isinstance(error.__cause__, ConnectionLostError)
    assert first.finished is not None and second.finished is not None
    assert second.arrived - first.finished >= 0.1
    assert third.arrived - second.finished >= 0.2  # doubled


def test_close_ends_iteration_and_stops_reconnecting() -> None:
    async def main(server: RawServer) -> list[str]:
        client = Client(server.url, retry=0.01)
        seen: list[str] = []
        async for event in client:
            seen.append(event.data)
            await client.close()
        assert client.state == "closed"
        assert client.error is None
        await asyncio.wait_for(client.wait(), LIMIT)
        return seen

    with RawServer([Reply(body=[b"data: 1\n\ndata: 2\n\n", HOLD])]) as server:
        seen = run(main(server))
        assert len(server.requests) == 1
    assert seen[0] == "1"


def test_callback_errors_are_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    async def main(server: RawServer) -> list[str]:
        seen: list[str] = []

        def broken(event: ServerSentEvent) -> None:
            raise RuntimeError("listener bug")

        client = Client(server.url, retry=0.01)
        client.on("message", broken)
        client.on("message", lambda e: seen.append(e.data))
        await asyncio.wait_for(client.connect(), LIMIT)
        await asyncio.wait_for(client.wait(), LIMIT)
        return seen

    with RawServer([Reply(body=[b"data: 1\n\ndata: 2\n\n"]), NO_CONTENT]) as server:
        assert run(main(server)) == ["1", "2"]
    assert "listener bug" in caplog.text


def test_unreachable_server_is_retried_then_given_up() -> None:
    errors: list[Any] = []

    async def main(url: str) -> None:
        client = Client(url, retry=0.01, max_attempts=2)
        client.on_error(lambda e: errors.append((type(e), str(client.state))))
        with pytest.raises(RetriesExhaustedError):
            await asyncio.wait_for(client.connect(), LIMIT)

    with RawServer([NO_CONTENT]) as server:
        url = server.url  # the port is free again once the server is gone
    run(main(url))
    # As with EventSource's onerror, the state says whether the client is retrying or done.
    assert errors == [(ConnectionLostError, "connecting"), (RetriesExhaustedError, "closed")]


def test_callbacks_added_after_connect_never_stall_on_the_unread_buffer() -> None:
    async def main(server: RawServer) -> list[str]:
        seen: list[str] = []
        async with Client(server.url, retry=0.01, max_queue=2) as client:
            client.on("message", lambda e: seen.append(e.data))
            await asyncio.wait_for(client.wait(), LIMIT)
        return seen

    body = [b"".join(b"data: %d\n\n" % n for n in range(5))]
    with RawServer([Reply(body=body), NO_CONTENT]) as server:
        assert run(main(server)) == ["0", "1", "2", "3", "4"]


def test_an_error_body_that_never_ends_does_not_hang_the_client() -> None:
    async def main(server: RawServer) -> None:
        client = Client(server.url, retry=0.01)
        with pytest.raises(HTTPStatusError) as info:
            await asyncio.wait_for(client.connect(), LIMIT)
        assert info.value.status == 500

    with RawServer([Reply("500 Internal Server Error", headers=[], body=[b"partial", HOLD])]) as server:
        run(main(server))


def test_a_non_ascii_last_event_id_is_sent_as_utf8() -> None:
    async def main(server: RawServer) -> list[ServerSentEvent]:
        got: list[ServerSentEvent] = []
        client = Client(server.url, retry=0.01)
        client.on("message", got.append)
        await asyncio.wait_for(client.connect(), LIMIT)
        await asyncio.wait_for(client.wait(), LIMIT)
        return got

    with RawServer([Reply(body=["id: é-日本\ndata: x\n\n".encode()]), NO_CONTENT]) as server:
        assert run(main(server)) == [ServerSentEvent("x", id="é-日本")]
        second = server.wait_for_requests(2)[1]
    assert second.headers["last-event-id"].encode("latin-1").decode() == "é-日本"


def test_an_endless_event_drops_the_connection_and_resumes_after_the_last_whole_one() -> None:
    async def main(server: RawServer) -> list[ServerSentEvent]:
        out = []
        async with Client(server.url, retry=0.05, max_event_size=4096) as client:
            async for event in client:
                out.append(event)
        return out

    flood = [b"id: 1\ndata: fine\n\n", b"data: " + b"x" * 3000, b"x" * 3000, HOLD]
    with RawServer([Reply(body=flood), Reply(body=[b"id: 2\ndata: next\n\n"]), NO_CONTENT]) as server:
        events = run(main(server))
        assert [(e.id, e.data) for e in events] == [("1", "fine"), ("2", "next")]
        assert server.requests[1].headers.get("last-event-id") == "1"
