"""Which text may reach the wire, in-process: library events, ``Last-Event-ID`` and query decoding, resets.

Event types and ids refuse every control character (Unicode Cc) and line or
paragraph separator (Zl, Zp); raw data refuses the line breaks only
``str.splitlines`` knows; JSON data has U+2028, U+2029 and U+0085 escaped.
Over real sockets on both engines: tests/test_text_on_the_wire.py.
"""

from __future__ import annotations

import pytest

from sse_fast import Event, EventParser, Hub, InvalidEventError
from sse_fast.hub.resend import may_be_an_id, replay_frames, reset_frame
from sse_fast.request import Request
from sse_fast.stores import MemoryStore
from sse_fast.stores.base import StoredEvent
from test_hub import Connection, run, settle


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x7f", "\x9b", "\t"])
def test_hub_push_refuses_controls_in_event_and_id_naming_the_field(char: str) -> None:
    async def main() -> None:
        hub = Hub()
        await hub.start()
        conn = await Connection(hub, "a").open()
        with pytest.raises(InvalidEventError, match=r"^events\[2\]\.event: must not contain control") as info:
            await hub.push([Event("ok", 1), Event("ok", 2), Event(f"bad{char}type", 3)])
        assert info.value.field == "events[2].event"
        with pytest.raises(InvalidEventError, match=r"^events\[0\]\.id: must not contain control"):
            await hub.push(Event("ok", 1, f"id{char}"))
        await settle()
        assert conn.events == [] and hub.stats.events == 0
        await hub.close()

    run(main)


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"])
def test_raw_data_refuses_what_only_splitlines_breaks_at(char: str) -> None:
    async def main() -> None:
        hub = Hub()
        await hub.start()
        with pytest.raises(InvalidEventError, match=r"^events\[0\]\.data: must not contain U\+"):
            await hub.push(Event("t", f"line{char}event: injected", raw=True))
        await hub.close()

    run(main)


def test_raw_data_may_span_lines_and_hold_other_controls() -> None:
    async def main() -> None:
        hub = Hub()
        await hub.start()
        conn = await Connection(hub, "a").open()
        await hub.push(Event("t", "one\r\ntwo\x7f\x00\t", raw=True))
        await hub.drain()
        await settle()
        assert conn.seen() == [("t", "one\ntwo\x7f\x00\t")]
        await hub.close()

    run(main)


def test_json_data_escapes_line_separators_and_keeps_the_value() -> None:
    async def main() -> None:
        hub = Hub()
        await hub.start()
        conn = await Connection(hub, "a").open()
        value = {"text": "a\u2028event: injected\u2029b\x85c", "n": 123456789012345678901234567890}
        await hub.push(Event("t", value))
        await hub.drain()
        await settle()
        frame = b"".join(conn.writes).decode()
        assert '"a\\u2028event: injected\\u2029b\\u0085c"' in frame
        assert '"n":123456789012345678901234567890}' in frame
        assert all(not line.startswith("event: injected") for line in frame.splitlines())
        [event] = conn.events
        assert event.json() == value
        await hub.close()

    run(main)


# --------------------------------------------------------- decoding requests


def test_query_values_are_percent_decoded_as_utf8_raw_or_escaped() -> None:
    request = Request("GET", "/events", b"a=caf%C3%A9&b=caf\xc3\xa9&c=%FF&d=x+y%2B&e=", [])
    assert request.query("a") == request.query("b") == "café"
    assert request.query_bytes("c") == b"\xff"
    assert request.query("c") == "\ufffd"
    assert request.query("d") == "x y+"
    assert request.query("e") == ""
    assert request.query("missing") is None


def test_headers_as_bytes_and_latin1() -> None:
    request = Request("GET", "/", b"", [(b"last-event-id", "é-1".encode())])
    assert request.header_bytes(b"last-event-id") == b"\xc3\xa9-1"
    assert request.header(b"last-event-id") == "Ã©-1"  # Latin-1: for headers that are ASCII
    assert request.header_bytes(b"other") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("k3v9x0qa-1", True),
        ("café-1", True),  # non-ASCII text may be an id (a publisher's, once they resume)
        ("", True),
        ("\udcc3\udca9", False),  # bytes that were not UTF-8 (surrogateescape)
        ("a\u2028b", False),
        ("a\x7f", False),
        ("a\nb", False),
    ],
)
def test_may_be_an_id(text: str, expected: bool) -> None:
    assert may_be_an_id(text) is expected


def test_reset_echoes_undecodable_bytes_as_replacement_and_escapes_separators() -> None:
    frame = reset_frame("malformed_id", b"\xff\xfe-1".decode("utf-8", "surrogateescape"))
    [event] = EventParser().feed(frame)
    assert event.event == "reset"
    assert event.json() == {"reason": "malformed_id", "last_event_id": "\ufffd\ufffd-1"}
    frame = reset_frame("malformed_id", "a\u2028event: injected")
    assert (
        frame.decode().splitlines()[1]
        == 'data: {"reason":"malformed_id","last_event_id":"a\\u2028event: injected"}'
    )


def test_a_non_utf8_last_event_id_resumes_as_malformed() -> None:
    async def main() -> None:
        hub = Hub(store=MemoryStore())
        await hub.start()
        await hub.push(Event("x", 1))
        conn = await Connection(hub, "a").open(last_event_id=b"\xe9-1".decode("utf-8", "surrogateescape"))
        reset, replayed = conn.events
        assert reset.event == "reset"
        assert reset.json() == {"reason": "malformed_id", "last_event_id": "\ufffd-1"}
        assert replayed.data == "1"
        await hub.close()

    run(main)


def test_a_stored_event_this_version_refuses_does_not_end_the_replay() -> None:
    # Pushed before U+2028 was escaped in JSON data and controls refused in types.
    page = [
        StoredEvent(1, "e-1", "ok", '"a\u2028b"', None, 0.0),
        StoredEvent(2, "e-2", "bad\x0btype", "1", None, 0.0),
        StoredEvent(3, "e-3", "ok", "3", None, 0.0),
    ]
    frames = replay_frames(page)
    assert frames.decode().splitlines() == [
        "id: e-1",
        "event: ok",
        'data: "a\\u2028b"',
        "",
        "id: e-3",
        "event: ok",
        "data: 3",
        "",
    ]


def test_replay_frames_of_clean_events_are_encode_events() -> None:
    page = [StoredEvent(n, f"e-{n}", "t", str(n), None, 0.0) for n in range(3)]
    assert replay_frames(page) == b"".join(f"id: e-{n}\nevent: t\ndata: {n}\n\n".encode() for n in range(3))
