"""The EventSource state machine on its own: responses, bytes and outcomes in, decisions out.

No sockets, no event loop, no clock (jitter pinned to 0): each test drives
:class:`EventSourceMachine` through connections as a face would, with
byte-exact bodies, and checks what it asks to send, what it dispatches, which
listeners it names and what it decides, as h11's tests do for HTTP/1.1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest

from sse_fast import ServerSentEvent
from sse_fast.errors import (
    ClientError,
    ClientStoppedError,
    ConnectionLostError,
    ContentTypeError,
    HTTPStatusError,
    RetriesExhaustedError,
)
from sse_fast.eventsource import Decision, EventSourceMachine, ListenerCall, Reconnect, Stop

URL = "http://example.test/events"
STREAM = {"content-type": "text/event-stream"}


def machine(**kw: Any) -> EventSourceMachine:
    return EventSourceMachine(URL, **kw, rand=lambda: 0.0)


def connect(
    m: EventSourceMachine,
    chunks: Sequence[bytes] = (),
    *,
    status: int = 200,
    headers: Mapping[str, str] = STREAM,
    body: bytes = b"",
    error: ClientError | None = None,
) -> tuple[dict[str, str], list[ServerSentEvent], Decision]:
    """One connection as a face runs it: the headers sent, the events dispatched, the decision."""
    sent = m.begin_attempt()
    events: list[ServerSentEvent] = []
    if m.receive_response(status, headers, body):
        for chunk in chunks:
            events += m.receive_data(chunk)
            if m.should_drop:
                break
    return sent, events, m.connection_closed(error)


def called(calls: Iterable[ListenerCall]) -> list[tuple[object, ...]]:
    """The arguments of each listener call, in order."""
    return [call.args for call in calls]


# -- one connection ---------------------------------------------------------


def test_a_stream_that_ends_is_reconnected_with_last_event_id() -> None:
    m = machine(headers={"Authorization": "Bearer t"}, retry=2.0)
    assert m.state == "connecting" and m.attempts == 0
    sent, events, decision = connect(m, [b"id: 1\ndata: a\n", b"\nid: 2\ndata: b\n\ndata: half"])
    assert sent == {"Authorization": "Bearer t", "Accept": "text/event-stream", "Cache-Control": "no-cache"}
    assert events == [ServerSentEvent("a", id="1"), ServerSentEvent("b", id="2")]
    assert isinstance(decision, Reconnect) and decision.delay == 2.0
    assert isinstance(decision.error, ConnectionLostError)
    assert str(decision.error) == "the server ended the stream"
    assert m.state == "connecting" and m.last_event_id == "2"
    sent, events, _ = connect(m, [b"\n\n"])  # the half event did not survive the reconnect
    assert sent["Last-Event-ID"] == "2" and events == []


def test_state_follows_the_connection() -> None:
    m = machine()
    m.begin_attempt()
    assert m.state == "connecting" and m.attempts == 1
    assert m.receive_response(200, STREAM)
    assert m.state == "open"
    m.receive_data(b"data: x\n\n")
    assert m.state == "open"
    m.connection_closed()
    assert m.state == "connecting"


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "delay"),
    [
        (200, {"content-type": "text/html"}, b"", ContentTypeError, None),
        (200, {}, b"", ContentTypeError, None),
        (500, {}, b"it broke", HTTPStatusError, None),
        (401, {}, b'{"code":401,"msg":"bad token","data":{}}', HTTPStatusError, None),
        (503, {"retry-after": "4"}, b"busy", HTTPStatusError, 4.0),
        (429, {}, b"", HTTPStatusError, 1.0),
    ],
)
def test_responses_that_do_not_open_the_stream(
    status: int, headers: dict[str, str], body: bytes, expected: type[ClientError], delay: float | None
) -> None:
    m = machine(retry=1.0)
    _, events, decision = connect(m, [b"data: never read\n\n"], status=status, headers=headers, body=body)
    assert events == []
    assert isinstance(decision.error, expected)
    if delay is None:
        assert isinstance(decision, Stop)
        assert m.state == "closed" and m.error is decision.error
    else:
        assert isinstance(decision, Reconnect) and decision.delay == delay
        assert m.state == "connecting" and m.error is None


def test_an_error_body_feeds_the_message() -> None:
    _, _, decision = connect(machine(), status=401, body=b'{"code":401,"msg":"bad token","data":{}}')
    assert isinstance(decision.error, HTTPStatusError)
    assert decision.error.message == "bad token" and decision.error.url == URL


def test_204_stops_quietly_and_for_good() -> None:
    m = machine()
    _, _, decision = connect(m, status=204, headers={})
    assert decision == Stop()
    assert m.state == "closed" and m.error is None
    with pytest.raises(RuntimeError):
        m.begin_attempt()


def test_the_going_away_event_is_dispatched_then_the_connection_dropped() -> None:
    m = machine(retry=5.0)
    going_away = b'id: 9\nevent: shutdown\ndata: {"reason":"deploy"}\nretry: 300\n\ndata: same chunk\n\n'
    _, events, decision = connect(m, [b"id: 8\ndata: before\n\n", going_away, b"data: not read\n\n"])
    assert [e.data for e in events] == ["before", '{"reason":"deploy"}', "same chunk"]
    assert isinstance(decision, Reconnect) and decision.delay == 0.3
    assert isinstance(decision.error, ConnectionLostError) and decision.error.going_away
    assert str(decision.error) == "server going away: deploy"
    assert m.last_event_id == "9"


def test_an_oversized_event_drops_the_connection_and_resumes_after_the_last_whole_one() -> None:
    m = machine(retry=1.0, max_event_size=64)
    _, events, decision = connect(m, [b"id: 1\ndata: fine\n\n", b"data: " + b"x" * 100, b"\n\n"])
    assert events == [ServerSentEvent("fine", id="1")]
    assert isinstance(decision, Reconnect) and isinstance(decision.error, ConnectionLostError)
    sent, _, _ = connect(m)
    assert sent["Last-Event-ID"] == "1"


def test_io_failures_are_decided_by_their_kind() -> None:
    m = machine(retry=1.0)
    lost = ConnectionLostError("ReadTimeout")
    assert connect(m, [b"data: x\n\n"], error=lost)[2] == Reconnect(lost, 1.0)
    bad_url = ClientStoppedError("UnsupportedProtocol: ftp://")
    m.begin_attempt()
    assert m.connection_closed(bad_url) == Stop(bad_url)  # no response at all: connecting failed
    assert m.state == "closed" and m.error is bad_url


def test_what_the_machine_saw_first_wins_over_a_later_io_error() -> None:
    m = machine()
    _, _, decision = connect(m, status=500, error=ConnectionLostError("closing the response failed"))
    assert isinstance(decision.error, HTTPStatusError)


def test_data_before_the_stream_opened_is_a_bug_in_the_face() -> None:
    m = machine()
    m.begin_attempt()
    with pytest.raises(RuntimeError):
        m.receive_data(b"data: x\n\n")
    assert not m.receive_response(503, {})
    with pytest.raises(RuntimeError):
        m.receive_data(b"data: x\n\n")


# -- between connections ----------------------------------------------------


def test_failed_attempts_back_off_then_give_up() -> None:
    m = machine(retry=1.0, max_retry=5.0, max_attempts=4)
    decisions = [connect(m)[2] for _ in range(4)]
    assert [d.delay for d in decisions[:3] if isinstance(d, Reconnect)] == [1.0, 2.0, 4.0]
    last = decisions[3]
    assert isinstance(last, Stop) and isinstance(last.error, RetriesExhaustedError)
    assert isinstance(last.error.__cause__, ConnectionLostError)
    assert m.attempts == 4 and m.state == "closed" and m.error is last.error


def test_a_connection_that_delivered_data_resets_the_streak() -> None:
    m = machine(retry=1.0, max_retry=60.0, max_attempts=3)
    connect(m), connect(m)
    decision = connect(m, [b": a comment is data too\n\n"])[2]
    assert isinstance(decision, Reconnect) and decision.delay == 1.0  # not 4.0: the streak starts over
    assert m.attempts == 0
    assert isinstance(connect(m)[2], Reconnect)  # a fresh streak of 3


def test_the_servers_retry_sets_the_delay() -> None:
    m = machine(retry=3.0, max_retry=2.0)
    decision = connect(m, [b"retry: 10000\n\n"])[2]
    assert isinstance(decision, Reconnect) and decision.delay == 10.0
    assert m.retry == 10.0


def test_close_makes_every_later_decision_a_quiet_stop() -> None:
    m = machine()
    m.on_error(lambda e: None)
    m.begin_attempt()
    m.receive_response(500, {})
    m.close()
    assert m.closed_by_caller
    decision = m.connection_closed(ConnectionLostError("the socket was shut down"))
    assert decision == Stop()
    assert called(m.decision_calls(decision)) == []
    assert m.finish() is None and m.state == "closed"


def test_finish_reports_the_stop_unless_the_caller_closed() -> None:
    m = machine()
    stop = connect(m, status=404)[2]
    assert m.finish() is stop.error
    m.close()  # e.g. from an on_error listener
    assert m.finish() is None and m.error is None


def test_finish_with_a_faces_own_error() -> None:
    m = machine()
    m.begin_attempt()
    bug = ClientStoppedError("unexpected error: KeyError()")
    assert m.finish(bug) is bug
    assert m.state == "closed" and m.error is bug


# -- listeners --------------------------------------------------------------


def test_event_listeners_by_type_then_star_in_registration_order() -> None:
    m = machine()

    def first(e: ServerSentEvent) -> None: ...
    def second(e: ServerSentEvent) -> None: ...
    def every(e: ServerSentEvent) -> None: ...

    assert not m.has_event_listeners
    m.on("*", every)
    m.on("x", first)
    assert m.on("x", second) is second
    assert m.has_event_listeners
    x = ServerSentEvent("1", event="x")
    assert m.event_calls(x) == [
        ListenerCall(first, (x,), "x"),
        ListenerCall(second, (x,), "x"),
        ListenerCall(every, (x,), "x"),
    ]
    assert [c.callback for c in m.event_calls(ServerSentEvent("2"))] == [every]
    m.off("x", first)
    m.off("x", first)  # not there: no error
    m.off("y", first)
    assert [c.callback for c in m.event_calls(x)] == [second, every]


def test_decision_listeners_hear_the_error_then_the_delay() -> None:
    m = machine(retry=1.0)
    states: list[str] = []
    m.on_error(lambda e: states.append(str(m.state)))
    m.on_reconnect(lambda d: None)
    m.on_open(lambda: None)
    m.begin_attempt()
    assert m.receive_response(200, STREAM)
    assert called(m.open_calls()) == [()]
    reconnect = m.connection_closed()
    assert isinstance(reconnect, Reconnect)
    calls = list(m.decision_calls(reconnect))
    assert called(calls) == [(reconnect.error,), (1.0,)]
    for call in calls:
        call.callback(*call.args)
    stop = connect(m, status=500)[2]
    calls = list(m.decision_calls(stop))
    assert called(calls) == [(stop.error,)]  # no delay: nothing to wait for
    calls[0].callback(*calls[0].args)
    assert states == ["connecting", "closed"]  # as EventSource's onerror: retrying, or done
    assert called(m.decision_calls(Stop())) == []


def test_a_listener_added_by_on_error_hears_the_same_decisions_reconnect() -> None:
    m = machine(retry=1.0)
    delays: list[float] = []
    m.on_error(lambda e: m.on_reconnect(delays.append))
    decision = connect(m)[2]
    for call in m.decision_calls(decision):
        call.callback(*call.args)
    assert delays == [1.0]


def test_a_failing_listener_is_logged_with_what_it_was_called_for(caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("listener bug")

    event = ServerSentEvent("x", event="order")
    for call in (ListenerCall(broken, (event,), "order"), ListenerCall(broken, (1.0,))):
        with caplog.at_level(logging.ERROR, logger="sse_fast.client"):
            try:
                call.callback(*call.args)
            except RuntimeError:
                call.log_failure()
    first, second = (r.getMessage() for r in caplog.records)
    assert first.startswith("callback <function") and first.endswith("failed on a 'order' event")
    assert second.startswith("state callback <function") and second.endswith("failed")
    assert all("listener bug" in (r.exc_text or "") for r in caplog.records)


def test_decisions_are_logged_to_the_client_logger(caplog: pytest.LogCaptureFixture) -> None:
    m = machine(retry=1.0, max_attempts=2)
    with caplog.at_level(logging.INFO, logger="sse_fast.client"):
        connect(m, [b"data: x\n\n"])
        connect(m), connect(m)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", f"connected to {URL} (attempt 1)"),
        ("INFO", f"{URL}: the server ended the stream; reconnecting in 1.00 s"),
        ("INFO", f"connected to {URL} (attempt 1)"),
        ("INFO", f"{URL}: the server ended the stream; reconnecting in 1.00 s"),
        ("INFO", f"connected to {URL} (attempt 2)"),
        (
            "WARNING",
            f"{URL}: gave up after 2 failed connection attempts: the server ended the stream;"
            " not reconnecting",
        ),
    ]
