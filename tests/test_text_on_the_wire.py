"""End to end, both engines: what text may reach the wire, and what readers that split lines see.

* Event types and ids refuse every control character (Unicode Cc) and line or
  paragraph separator (Zl, Zp) with a 400 naming the field; so does a
  subscriber's event-type filter.
* JSON data has U+2028, U+2029 and U+0085 escaped, so that httpx ``iter_lines``
  (which splits like ``str.splitlines``) reads the lines an SSE parser reads.
* ``Last-Event-ID`` is UTF-8 (as browsers and the ``eventsource`` client send
  it), raw on a socket or ``?last_event_id=`` percent-encoded; bytes that are
  not UTF-8 get ``reset`` with ``malformed_id``.
* Integers beyond 64 bits in ``data`` arrive digit for digit, live and replayed.

In-process: tests/test_text_rules.py, tests/test_json_text.py, tests/test_framing.py.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

import httptools
import httpx
import pytest

from conftest import (
    HOST,
    OPENING,
    ServerProcess,
    SharedServe,
    Subscribe,
    nothing_else_arrived,
    unique_uid,
    wait_until,
)
from sse_fast import EventParser, ServerSentEvent

SOCKET_LIMIT = 15.0
"""Seconds a socket read may block before the test fails (what was awaited did not arrive)."""

# Every character class the rule refuses, and the ones readers split lines at.
REFUSED = {
    "LS": "\u2028",
    "PS": "\u2029",
    "NEL": "\x85",
    "VT": "\x0b",
    "FF": "\x0c",
    "FS": "\x1c",
    "GS": "\x1d",
    "RS": "\x1e",
    "DEL": "\x7f",
    "TAB": "\t",
    "ESC": "\x1b",
    "C1-80": "\x80",
    "C1-9F": "\x9f",
}


def shared(shared_serve: SharedServe) -> ServerProcess:
    """This module's shared server: SQLite history (the default), so that resumes are answered."""
    return shared_serve()


def ids_of(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    ids: list[str] = answer.json()["data"]["ids"]
    return ids


class RawStream:
    """``GET /events`` over a raw socket, with header bytes exactly as given; the body parsed as SSE."""

    def __init__(self, server: ServerProcess, target: bytes, headers: bytes = b"") -> None:
        self.sock = socket.create_connection((HOST, server.port))
        self.sock.settimeout(SOCKET_LIMIT)
        self.sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        self.status: int | None = None
        self.raw = b""
        self.events: list[ServerSentEvent] = []
        self._sse = EventParser()
        self._http = httptools.HttpResponseParser(self)
        self._complete = False

    def on_headers_complete(self) -> None:
        self.status = self._http.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.raw += body
        self.events += self._sse.feed(body)

    def on_message_complete(self) -> None:
        self._complete = True

    def _read_until(self, done: Callable[[], bool]) -> None:
        while not done() and not self._complete:
            data = self.sock.recv(65536)
            if not data:
                break
            self._http.feed_data(data)

    def wait_subscribed(self) -> None:
        """Until the connect heartbeat arrived: the hub registered the subscriber."""
        self._read_until(lambda: OPENING.match(self.raw) is not None)
        assert self.status == 200 and OPENING.match(self.raw), (self.status, self.raw)

    def read_events(self, count: int) -> list[ServerSentEvent]:
        self._read_until(lambda: len(self.events) >= count)
        assert len(self.events) >= count, f"status {self.status}, got {self.raw!r}"
        return self.events[:count]

    def read_response(self) -> tuple[int, Any]:
        self._read_until(lambda: False)
        assert self.status is not None
        return self.status, httpx.Response(self.status, content=self.raw).json()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_stream() -> Any:
    opened: list[RawStream] = []

    def open_stream(server: ServerProcess, target: bytes, headers: bytes = b"") -> RawStream:
        stream = RawStream(server, target, headers)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


# ------------------------------------------------------- event types and ids


@pytest.mark.parametrize("field", ["event", "id"])
@pytest.mark.parametrize("char", list(REFUSED.values()), ids=list(REFUSED))
def test_push_refuses_controls_and_separators_in_event_and_id_naming_the_field(
    shared_serve: SharedServe, subscribe: Subscribe, field: str, char: str
) -> None:
    server = shared(shared_serve)
    reader = subscribe(f"{server.url}/events?uid={unique_uid()}")
    reader.wait_subscribed()
    events: list[dict[str, object]] = [{"event": "ok", "data": n} for n in range(3)]
    events.append({"event": "ok", "data": 3, field: f"x{char}event: injected"})
    answer = server.push(events)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {
        "code": 400,
        "msg": f"events[3].{field}: must not contain control characters or line/paragraph separators "
        f"(found U+{ord(char):04X})",
        "data": {},
    }
    nothing_else_arrived(server, reader)
    assert reader.received() == []  # nothing of the refused push was delivered


def test_event_types_and_ids_of_any_script_are_delivered(
    shared_serve: SharedServe, subscribe: Subscribe
) -> None:
    server = shared(shared_serve)
    uid = unique_uid()
    reader = subscribe(f"{server.url}/events?uid={uid}")
    reader.wait_subscribed()
    assert (
        server.push([{"event": "café ü 日本 🎉 a:b", "data": 1, "id": "ключ-é"}], uids=[uid]).status_code
        == 200
    )
    [event] = reader.wait_events(1)
    assert (event.event, event.id) == ("café ü 日本 🎉 a:b", "ключ-é")


@pytest.mark.parametrize(
    ("query", "char"),
    [
        ("%E2%80%A8", "\u2028"),
        ("%C2%85", "\x85"),
        ("%0B", "\x0b"),
        ("%7F", "\x7f"),
        ("%0A", "\n"),
        ("%09", "\t"),
    ],
    ids=["LS", "NEL", "VT", "DEL", "LF", "TAB"],
)
def test_event_type_filter_refuses_controls_and_separators(
    shared_serve: SharedServe, query: str, char: str
) -> None:
    server = shared(shared_serve)
    answer = httpx.get(f"{server.url}/events?uid={unique_uid()}&event_type=a{query}b", timeout=5)
    assert answer.status_code == 400
    assert answer.json() == {
        "code": 400,
        "msg": f"event_type: must not contain control characters or line/paragraph separators "
        f"(found U+{ord(char):04X})",
        "data": {},
    }


def test_event_type_header_is_utf8(shared_serve: SharedServe, raw_stream: Any) -> None:
    server = shared(shared_serve)
    uid = unique_uid()
    stream = raw_stream(server, f"/events?uid={uid}".encode(), "Event-Type: café\r\n".encode())
    stream.wait_subscribed()
    ids_of(server.push([{"event": "cafe", "data": 0}, {"event": "café", "data": 1}], uids=[uid]))
    [event] = stream.read_events(1)
    assert (event.event, event.data) == ("café", "1")


@pytest.mark.parametrize(
    ("header", "msg"),
    [
        (b"Event-Type: a\xe2\x80\xa8b\r\n", "event_type: must not contain control characters"),
        (b"Event-Type: caf\xe9\r\n", "event_type: must be UTF-8"),
    ],
    ids=["LS", "latin-1"],
)
def test_event_type_header_refused_naming_the_field(
    shared_serve: SharedServe, raw_stream: Any, header: bytes, msg: str
) -> None:
    server = shared(shared_serve)
    stream = raw_stream(server, f"/events?uid={unique_uid()}".encode(), header)
    status, body = stream.read_response()
    assert status == 400
    assert body["code"] == 400 and body["msg"].startswith(msg), body


# ---------------------------------------------------------------------- data


SEPARATORS = {"LS": "\u2028", "PS": "\u2029", "NEL": "\x85"}


@pytest.mark.parametrize("char", list(SEPARATORS.values()), ids=list(SEPARATORS))
def test_json_data_with_line_separators_is_escaped_so_iter_lines_reads_the_parsers_lines(
    shared_serve: SharedServe, char: str
) -> None:
    server = shared(shared_serve)
    uid = unique_uid()
    value = {"text": f"one{char}event: injected{char}data: x", f"key{char}": [char]}
    with (
        httpx.Client(timeout=httpx.Timeout(10.0, read=10.0)) as client,
        client.stream("GET", f"{server.url}/events?uid={uid}") as response,
    ):
        lines = response.iter_lines()
        assert [next(lines), next(lines)] == [": heartbeat", ""]
        assert re.fullmatch(r"retry: \d+", next(lines)) and next(lines) == ""
        [event_id] = ids_of(server.push([{"event": "text", "data": value}], uids=[uid]))
        got = [next(lines) for _ in range(4)]  # the event's lines, if nothing was injected
    escape = f"\\u{ord(char):04x}"
    assert got == [
        f"id: {event_id}",
        "event: text",
        f'data: {{"text":"one{escape}event: injected{escape}data: x","key{escape}":["{escape}"]}}',
        "",
    ]
    assert ServerSentEvent(got[2].removeprefix("data: ")).json() == value


# ----------------------------------------------------------- Last-Event-ID


def test_last_event_id_header_is_utf8(shared_serve: SharedServe, raw_stream: Any) -> None:
    """A publisher's non-ASCII id, sent back as the UTF-8 a browser sends, resumes after it."""
    server = shared(shared_serve)
    uid = unique_uid()
    mine = f"é-{uid}"
    ids_of(server.push([{"event": "x", "data": 1, "id": mine}, {"event": "x", "data": 2}], uids=[uid]))
    stream = raw_stream(server, f"/events?uid={uid}".encode(), f"Last-Event-ID: {mine}\r\n".encode())
    replayed = stream.read_events(1)[0]
    assert stream.status == 200
    assert (replayed.event, replayed.data) == ("x", "2")


def test_an_unknown_non_ascii_last_event_id_is_echoed_as_sent(
    shared_serve: SharedServe, raw_stream: Any
) -> None:
    server = shared(shared_serve)
    ids_of(server.push([{"event": "x", "data": 1}]))
    stream = raw_stream(server, f"/events?uid={unique_uid()}".encode(), "Last-Event-ID: é-1\r\n".encode())
    reset = stream.read_events(1)[0]
    assert reset.event == "reset"
    # Not "Ã©-1": the bytes were read as the UTF-8 the client sent.
    assert reset.json() == {"reason": "unknown_id", "last_event_id": "é-1"}


def test_last_event_id_that_is_not_utf8_is_malformed(shared_serve: SharedServe, raw_stream: Any) -> None:
    server = shared(shared_serve)
    stream = raw_stream(server, f"/events?uid={unique_uid()}".encode(), b"Last-Event-ID: \xff\xfe-1\r\n")
    reset = stream.read_events(1)[0]
    assert reset.event == "reset"
    assert reset.json() == {"reason": "malformed_id", "last_event_id": "\ufffd\ufffd-1"}


def test_last_event_id_with_a_line_separator_is_malformed_and_echoed_escaped(
    shared_serve: SharedServe, raw_stream: Any
) -> None:
    server = shared(shared_serve)
    stream = raw_stream(
        server, f"/events?uid={unique_uid()}".encode(), b"Last-Event-ID: a\xe2\x80\xa8event: injected\r\n"
    )
    reset = stream.read_events(1)[0]
    assert reset.json() == {"reason": "malformed_id", "last_event_id": "a\u2028event: injected"}
    text = stream.raw.decode()
    assert "\u2028" not in text and "\\u2028event: injected" in text
    assert not any(line.startswith("event: injected") for line in text.splitlines())


@pytest.mark.parametrize(
    ("query", "echo", "reason"),
    [
        ("%C3%A9-1", "é-1", "unknown_id"),  # could be a publisher's id: none was given
        ("%FF%FE-1", "\ufffd\ufffd-1", "malformed_id"),
        ("a%0Ab", "a\nb", "malformed_id"),
        ("a%E2%80%A8b", "a\u2028b", "malformed_id"),
    ],
    ids=["utf8", "not-utf8", "LF", "LS"],
)
def test_last_event_id_query_is_percent_decoded_as_utf8(
    shared_serve: SharedServe, raw_stream: Any, query: str, echo: str, reason: str
) -> None:
    server = shared(shared_serve)
    stream = raw_stream(server, f"/events?uid={unique_uid()}&last_event_id={query}".encode())
    reset = stream.read_events(1)[0]
    assert reset.event == "reset"
    assert reset.json() == {"reason": reason, "last_event_id": echo}


def test_a_server_id_sent_as_utf8_still_resumes(shared_serve: SharedServe, subscribe: Subscribe) -> None:
    server = shared(shared_serve)
    first, second = ids_of(server.push([{"event": "x", "data": 1}, {"event": "x", "data": 2}]))
    reader = subscribe(f"{server.url}/events?uid={unique_uid()}", last_event_id=first)
    assert [(e.id, e.data) for e in reader.wait_events(1)] == [(second, "2")]


# ----------------------------------------------------- integers beyond 64 bits


WIDE = [
    "123456789012345678901234567890",
    "-9223372036854775809",
    "18446744073709551616",
    "7" * 400,  # past any float: orjson alone refuses the body
]


def test_wide_integers_arrive_digit_for_digit_live_and_replayed(
    shared_serve: SharedServe, subscribe: Subscribe
) -> None:
    server = shared(shared_serve)
    uid = unique_uid()
    reader = subscribe(f"{server.url}/events?uid={uid}")
    reader.wait_subscribed()
    before = ids_of(server.push([{"event": "before", "data": 0}], uids=[uid]))[0]
    numbers = ",".join(WIDE)
    body = f'{{"uids":["{uid}"],"events":[{{"event":"n","data":{{"n":[{numbers}],"f":1.5}}}}]}}'
    answer = httpx.post(f"{server.url}/push", content=body.encode(), timeout=10)
    [event_id] = ids_of(answer)
    expected = f'id: {event_id}\nevent: n\ndata: {{"n":[{numbers}],"f":1.5}}\n\n'.encode()
    wait_until(lambda: expected in bytes(reader.raw))
    assert reader.wait_events(2)[1].json() == {"n": [int(n) for n in WIDE], "f": 1.5}

    replay = subscribe(f"{server.url}/events?uid={uid}", last_event_id=before)
    wait_until(lambda: expected in bytes(replay.raw))


def test_a_float_past_1e308_is_still_400(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    answer = httpx.post(f"{server.url}/push", content=b'{"events":[{"data":1e400}]}', timeout=10)
    assert answer.status_code == 400
    assert answer.json()["msg"].startswith("body: invalid JSON (number is infinity")
