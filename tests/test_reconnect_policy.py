"""The sans-IO reconnect policy on its own: no sockets, no clocks (jitter pinned)."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest

from sse_fast.errors import (
    ClientStoppedError,
    ConnectionLostError,
    ContentTypeError,
    HTTPStatusError,
    RetriesExhaustedError,
)
from sse_fast.reconnect import ReconnectPolicy, is_event_stream, parse_retry_after

URL = "http://example.test/events"
LOST = ConnectionLostError("dropped")


def policy(**kw: Any) -> ReconnectPolicy:
    return ReconnectPolicy(**kw, rand=lambda: 0.0)


def fail(p: ReconnectPolicy, error: Exception = LOST) -> float:
    p.begin_attempt()
    assert isinstance(error, (ConnectionLostError, ClientStoppedError))
    return p.next_delay(error)


def test_backoff_doubles_per_failed_attempt_up_to_the_cap() -> None:
    p = policy(retry=1.0, max_retry=5.0)
    assert [fail(p) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert p.attempts == 5


def test_a_connection_that_delivered_data_resets_the_backoff() -> None:
    p = policy(retry=1.0, max_retry=60.0)
    fail(p), fail(p), fail(p)
    p.begin_attempt()
    p.feed(b": hello\n\n")
    assert p.next_delay(LOST) == 1.0
    assert p.attempts == 0


def test_server_retry_sets_the_base_and_wins_over_a_smaller_cap() -> None:
    p = policy(retry=3.0, max_retry=2.0)
    p.begin_attempt()
    p.feed(b"retry: 10000\n\n")
    assert p.retry == 10.0
    assert p.next_delay(LOST) == 10.0


def test_jitter_only_adds() -> None:
    p = ReconnectPolicy(retry=1.0, jitter=0.5, rand=lambda: 0.999)
    p.begin_attempt()
    assert 1.0 <= p.next_delay(LOST) < 1.5


def test_max_attempts_bounds_the_streak() -> None:
    p = policy(retry=0.0, max_attempts=2)
    fail(p)
    with pytest.raises(RetriesExhaustedError) as info:
        fail(p)
    assert info.value.__cause__ is LOST
    assert info.value.attempts == 2


def test_responses() -> None:
    p = policy()
    assert p.check_response(200, {"content-type": "text/event-stream; charset=utf-8"}, URL)
    assert p.check_response(204, {}, URL) is False
    with pytest.raises(ContentTypeError):
        p.check_response(200, {"content-type": "text/html"}, URL)
    with pytest.raises(HTTPStatusError) as info:
        p.check_response(401, {}, URL, b'{"code":401,"msg":"bad token","data":{}}')
    assert info.value.message == "bad token" and not info.value.retryable
    for status in (429, 502, 503, 504):
        with pytest.raises(HTTPStatusError) as info:
            p.check_response(status, {"retry-after": "7"}, URL)
        assert info.value.retryable and info.value.retry_after == 7.0


def test_retryable_status_waits_at_least_retry_after_and_others_stop() -> None:
    p = policy(retry=0.5)
    assert fail(p, HTTPStatusError(503, URL, retry_after=4.0)) == 4.0
    assert fail(p, HTTPStatusError(503, URL)) == 1.0
    stop = HTTPStatusError(500, URL)
    with pytest.raises(HTTPStatusError) as info:
        fail(p, stop)
    assert info.value is stop


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after(None) is None


def test_last_event_id_and_headers() -> None:
    p = policy(last_event_id="")
    assert "Last-Event-ID" not in p.request_headers({"X-A": "1"})
    p.begin_attempt()
    p.feed(b"id: 41\ndata: a\n\nid: 42\ndata: unfinished\n")
    assert p.last_event_id == "41"
    p.begin_attempt()  # a new connection starts a new parser: the half event is gone
    assert p.feed(b"\n") == []
    headers = p.request_headers({"X-A": "1"})
    assert headers == {
        "X-A": "1",
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
        "Last-Event-ID": "41",
    }


def test_going_away_event() -> None:
    p = policy()
    p.begin_attempt()
    events = p.feed(b'event: shutdown\ndata: {"reason":"deploy"}\nretry: 1000\n\n')
    assert [e.event for e in events] == ["shutdown"]
    assert p.going_away == "deploy"
    assert p.retry == 1.0
    p.begin_attempt()
    assert p.going_away is None


def test_is_event_stream() -> None:
    assert is_event_stream("Text/Event-Stream ; charset=utf-8")
    assert not is_event_stream("text/plain")
    assert not is_event_stream(None)
