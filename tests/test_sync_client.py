"""The blocking client against the raw-socket server: iterator and callback styles.

Threads that could hang are joined with a timeout and the test fails instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from _raw_sse_server import HOLD, RawServer, Reply
from sse_fast import ServerSentEvent
from sse_fast.errors import ConnectionLostError, HTTPStatusError, RetriesExhaustedError
from sse_fast.sync_client import SyncClient
from test_against_raw_server import AWKWARD, AWKWARD_EVENTS, NO_CONTENT

LIMIT = 15.0


def in_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_iterator_yields_what_eventsource_would_and_resumes() -> None:
    with RawServer([Reply(body=AWKWARD), NO_CONTENT]) as server:
        client = SyncClient(server.url, retry=5.0)
        events: list[ServerSentEvent] = []
        thread = in_thread(lambda: events.extend(client))
        thread.join(LIMIT)
        assert not thread.is_alive()
        first, second = server.wait_for_requests(2)
    assert events == AWKWARD_EVENTS
    assert "last-event-id" not in first.headers
    assert second.headers["last-event-id"] == "5"
    assert first.finished is not None
    assert 0.15 <= second.arrived - first.finished < 4.0  # the server's retry: 150 ms, not 5 s
    assert client.state == "closed" and client.error is None


def test_callbacks_and_close_from_another_thread() -> None:
    opened: list[bool] = []
    got: list[str] = []
    arrived = threading.Event()
    with RawServer([Reply(body=[b"event: x\ndata: 1\n\n", b"data: ignored-type\n\n", HOLD])]) as server:
        client = SyncClient(server.url, retry=0.01)
        client.on_open(lambda: opened.append(True))

        def on_x(event: ServerSentEvent) -> None:
            got.append(event.data)
            arrived.set()

        client.on("x", on_x)
        thread = in_thread(client.run_forever)
        assert arrived.wait(LIMIT)
        assert client.state == "open"
        client.close()  # the reader is blocked in recv() on a held connection: must wake up
        thread.join(LIMIT)
        assert not thread.is_alive()
        assert len(server.requests) == 1
    assert got == ["1"]
    assert opened == [True]
    assert client.state == "closed" and client.error is None


def test_503_then_events_then_500_raises_the_status() -> None:
    errors: list[BaseException] = []
    delays: list[float] = []
    busy = Reply("503 Service Unavailable", headers=[("Retry-After", "1")])
    fail = Reply("500 Internal Server Error", body=[b"it broke"])
    with RawServer([busy, Reply(body=[b"id: 1\ndata: a\n\n"]), fail]) as server:
        client = SyncClient(server.url, retry=0.05)
        client.on_error(errors.append)
        client.on_reconnect(delays.append)
        events: list[ServerSentEvent] = []
        raised: list[BaseException] = []

        def consume() -> None:
            try:
                for event in client:
                    events.append(event)
            except HTTPStatusError as exc:
                raised.append(exc)

        thread = in_thread(consume)
        thread.join(LIMIT)
        assert not thread.is_alive()
        first, second, third = server.wait_for_requests(3)
    assert events == [ServerSentEvent("a", id="1")]
    assert len(raised) == 1 and isinstance(raised[0], HTTPStatusError)
    assert raised[0].status == 500 and raised[0].message == "it broke"
    assert [type(e) for e in errors] == [HTTPStatusError, ConnectionLostError, HTTPStatusError]
    assert delays[0] >= 1.0
    assert first.finished is not None
    assert second.arrived - first.finished >= 1.0
    assert third.headers["last-event-id"] == "1"


def test_max_attempts_gives_up() -> None:
    with RawServer([Reply(body=[])]) as server:
        client = SyncClient(server.url, retry=0.01, max_attempts=2)
        raised: list[BaseException] = []

        def consume() -> None:
            with pytest.raises(RetriesExhaustedError) as info:
                client.run()
            raised.append(info.value)

        thread = in_thread(consume)
        thread.join(LIMIT)
        assert not thread.is_alive()
        assert len(server.requests) == 2
    assert len(raised) == 1


def test_async_callbacks_are_refused() -> None:
    async def cb(event: ServerSentEvent) -> None:
        pass

    with pytest.raises(TypeError):
        SyncClient("http://127.0.0.1:1/").on("message", cb)


def test_a_non_ascii_last_event_id_is_sent_as_utf8() -> None:
    with RawServer([Reply(body=["id: é-日本\ndata: x\n\n".encode()]), NO_CONTENT]) as server:
        client = SyncClient(server.url, retry=0.01)
        events: list[ServerSentEvent] = []
        thread = in_thread(lambda: events.extend(client))
        thread.join(LIMIT)
        assert not thread.is_alive()
        second = server.wait_for_requests(2)[1]
    assert events == [ServerSentEvent("x", id="é-日本")]
    assert second.headers["last-event-id"].encode("latin-1").decode() == "é-日本"
