"""Framing: ``encode_event``, ``encode_comment`` and ``HEARTBEAT``, byte for byte.

The wire contract (see the design notes) is ``id: <id>\\nevent: <type>\\ndata:
<data>\\n\\n``; these vectors pin it down exactly, then a property test checks
that whatever text is framed, a conforming parser gives it back.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_fast._core import (
    HEARTBEAT,
    EventParser,
    ServerSentEvent,
    check_single_line,
    encode_comment,
    encode_event,
)
from sse_fast.errors import InvalidEventError, SSEFastError

# --------------------------------------------------------------------------
# Vectors
# --------------------------------------------------------------------------


def test_heartbeat_bytes() -> None:
    assert HEARTBEAT == b": heartbeat\n\n"
    assert type(HEARTBEAT) is bytes


def test_data_only() -> None:
    assert encode_event("hello") == b"data: hello\n\n"


def test_field_order_is_id_event_data() -> None:
    assert encode_event("d", "greeting", "1-7") == b"id: 1-7\nevent: greeting\ndata: d\n\n"
    assert encode_event(data="d", id="1-7", event="greeting") == b"id: 1-7\nevent: greeting\ndata: d\n\n"


def test_retry_comes_first() -> None:
    assert encode_event("d", "e", "1", 2500) == b"retry: 2500\nid: 1\nevent: e\ndata: d\n\n"
    assert encode_event("d", retry=0) == b"retry: 0\ndata: d\n\n"


def test_event_only_and_id_only() -> None:
    assert encode_event("d", event="t") == b"event: t\ndata: d\n\n"
    assert encode_event("d", id="9") == b"id: 9\ndata: d\n\n"


def test_empty_event_type_leaves_the_line_out() -> None:
    assert encode_event("d", "") == b"data: d\n\n"
    assert encode_event("d", None) == b"data: d\n\n"


def test_empty_id_is_sent_because_it_resets_the_last_event_id() -> None:
    assert encode_event("d", id="") == b"id: \ndata: d\n\n"


def test_empty_data_is_one_empty_data_line() -> None:
    assert encode_event("") == b"data: \n\n"


def test_json_text_is_sent_as_is() -> None:
    assert encode_event('{"a":1}', "update") == b'event: update\ndata: {"a":1}\n\n'


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("a\nb", b"data: a\ndata: b\n\n"),
        ("a\r\nb", b"data: a\ndata: b\n\n"),
        ("a\rb", b"data: a\ndata: b\n\n"),
        ("a\n", b"data: a\ndata: \n\n"),
        ("\n", b"data: \ndata: \n\n"),
        ("\r\n", b"data: \ndata: \n\n"),
        ("\r\r", b"data: \ndata: \ndata: \n\n"),
        ("\n\r", b"data: \ndata: \ndata: \n\n"),
        ("a\r\n\r\nb", b"data: a\ndata: \ndata: b\n\n"),
        ("\ra\n\rb\r", b"data: \ndata: a\ndata: \ndata: b\ndata: \n\n"),
        ("x\r", b"data: x\ndata: \n\n"),
    ],
    ids=repr,
)
def test_line_breaks_in_data_become_data_lines(data: str, expected: bytes) -> None:
    assert encode_event(data) == expected


def test_data_lines_keep_spaces_and_colons() -> None:
    assert encode_event(" a: b ") == b"data:  a: b \n\n"


def test_nul_in_data_is_allowed() -> None:
    assert encode_event("a\x00b") == b"data: a\x00b\n\n"


def test_utf8_output() -> None:
    frame = encode_event("日本 🎉", "café", "ü")
    assert frame == "id: ü\nevent: café\ndata: 日本 🎉\n\n".encode()


# What str.splitlines breaks lines at besides CR and LF: VT, FF, FS, GS, RS, NEL, LS, PS.
SPLITLINES_ONLY_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def test_splitlines_only_breaks_are_what_str_splitlines_says() -> None:
    found = {chr(cp) for cp in range(0x110000) if len(f"a{chr(cp)}b".splitlines()) == 2} - {"\r", "\n"}
    assert found == set(SPLITLINES_ONLY_BREAKS)


@pytest.mark.parametrize("char", SPLITLINES_ONLY_BREAKS, ids=lambda c: f"U+{ord(c):04X}")
def test_data_refuses_line_breaks_that_only_splitlines_knows(char: str) -> None:
    # SSE reads on across them, but httpx's iter_lines and anything splitting like
    # str.splitlines would see the rest as a line of its own ("event: x" injected).
    with pytest.raises(InvalidEventError, match=rf"^data: must not contain U\+{ord(char):04X}") as info:
        encode_event(f"a{char}event: injected")
    assert info.value.field == "data"


def test_data_keeps_other_controls_and_near_misses() -> None:
    # Neither SSE nor str.splitlines breaks at these: DEL, C1 other than NEL, NBSP,
    # U+2027 and U+202A (next to LS and PS), U+0084/U+0086 (next to NEL), TAB, NUL.
    text = "\x7f\x80\x84\x86\x9f\xa0\u2027\u202a\t\x00\x1f"
    assert encode_event(text) == f"data: {text}\n\n".encode()


def test_every_code_point_in_data_is_framed_or_refused_as_splitlines_says() -> None:
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        char = chr(cp)
        if char in "\r\n":
            continue
        if char in SPLITLINES_ONLY_BREAKS:
            with pytest.raises(InvalidEventError):
                encode_event(f"a{char}b")
        else:
            assert encode_event(f"a{char}b") == f"data: a{char}b\n\n".encode()


def test_returns_bytes() -> None:
    assert type(encode_event("x", "e", "1", 1)) is bytes


# --------------------------------------------------------------------------
# Validation: every error is a ValueError naming the field
# --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb", "\n", "x\x00", "\x00"], ids=repr)
@pytest.mark.parametrize("field", ["event", "id"])
def test_single_line_fields_reject_cr_lf_nul(field: str, bad: str) -> None:
    kwargs: dict[str, Any] = {field: bad}  # the field is chosen at run time
    with pytest.raises(InvalidEventError) as info:
        encode_event("d", **kwargs)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, SSEFastError)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: must not contain control characters")


REFUSED_IN_FIELDS = [
    "\u2028",  # LINE SEPARATOR (Zl)
    "\u2029",  # PARAGRAPH SEPARATOR (Zp)
    "\x85",  # NEL (C1)
    "\x0b",  # VT
    "\x0c",  # FF
    "\x1c",
    "\x1d",
    "\x1e",
    "\x7f",  # DEL
    "\t",
    "\x01",
    "\x1b",  # ESC: terminal escapes in a log that prints the type
    "\x80",
    "\x9f",
]


@pytest.mark.parametrize("char", REFUSED_IN_FIELDS, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("field", ["event", "id", "comment"])
def test_single_line_fields_refuse_every_control_and_separator(field: str, char: str) -> None:
    value = f"ok{char}event: injected"
    with pytest.raises(InvalidEventError) as info:
        if field == "comment":
            encode_comment(value)
        else:
            kwargs: dict[str, Any] = {field: value}
            encode_event("d", **kwargs)
    assert info.value.field == field
    assert str(info.value) == (
        f"{field}: must not contain control characters or line/paragraph separators (found U+{ord(char):04X})"
    )


def test_every_code_point_in_a_field_is_refused_exactly_when_it_is_cc_zl_or_zp() -> None:
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        char = chr(cp)
        refused = unicodedata.category(char) in ("Cc", "Zl", "Zp")
        try:
            check_single_line(f"a{char}b{char}", "id")
        except InvalidEventError as exc:
            assert refused, f"U+{cp:04X} refused: {exc}"
        else:
            assert not refused, f"U+{cp:04X} accepted"


def test_check_single_line_is_the_rule_of_encode_event() -> None:
    check_single_line("order.updated")
    check_single_line("café ü 日本 🎉", "event_type")
    with pytest.raises(InvalidEventError, match=r"^event_type: must not contain") as info:
        check_single_line("a\u2029b", "event_type")
    assert info.value.field == "event_type"
    with pytest.raises(InvalidEventError, match=r"^id: is not encodable as UTF-8"):
        check_single_line("\udcff", "id")
    with pytest.raises(InvalidEventError, match=r"^id: must be a string"):
        check_single_line(b"x", "id")  # type: ignore[arg-type]  # the wrong type is the test


def test_injection_through_event_type_is_impossible() -> None:
    with pytest.raises(ValueError, match=r"^event: "):
        encode_event("safe", "x\ndata: injected\n\nevent: y")


def test_injection_through_id_is_impossible() -> None:
    with pytest.raises(ValueError, match=r"^id: "):
        encode_event("safe", id="1\r\ndata: injected")


@pytest.mark.parametrize("bad", [1, 1.5, b"bytes", None, ["x"], {"a": 1}], ids=repr)
def test_non_str_data_is_rejected_naming_the_field(bad: object) -> None:
    with pytest.raises(InvalidEventError, match=r"^data: must be a string") as info:
        encode_event(bad)  # type: ignore[arg-type]  # the wrong type is the test
    assert info.value.field == "data"
    assert type(bad).__name__ in str(info.value)


@pytest.mark.parametrize("field", ["event", "id"])
@pytest.mark.parametrize("bad", [1, b"x", 2.0], ids=repr)
def test_non_str_event_and_id_are_rejected_naming_the_field(field: str, bad: object) -> None:
    with pytest.raises(InvalidEventError, match=rf"^{field}: must be a string") as info:
        encode_event("d", **{field: bad})  # type: ignore[arg-type]  # deliberately not a str
    assert info.value.field == field


@pytest.mark.parametrize("field", ["data", "event", "id"])
@pytest.mark.parametrize("bad", ["\ud800", "a\udfffb", "\udc80x"], ids=repr)
def test_lone_surrogates_are_rejected_naming_the_field(field: str, bad: str) -> None:
    kwargs: dict[str, Any] = {"data": "d", field: bad}  # the field is chosen at run time
    with pytest.raises(InvalidEventError, match=rf"^{field}: .*surrogate") as info:
        encode_event(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("bad", [-1, -(10**20), True, False, 1.5, "10", [1]], ids=repr)
def test_retry_must_be_a_non_negative_int(bad: object) -> None:
    with pytest.raises(InvalidEventError, match=r"^retry: must be a non-negative integer") as info:
        encode_event("d", retry=bad)  # type: ignore[arg-type]  # the wrong type is the test
    assert info.value.field == "retry"


def test_retry_accepts_large_ints_and_int_subclasses() -> None:
    class Millis(int):
        pass

    assert encode_event("d", retry=10**20) == b"retry: 100000000000000000000\ndata: d\n\n"
    assert encode_event("d", retry=Millis(5)) == b"retry: 5\ndata: d\n\n"


def test_retry_int_subclass_cannot_inject_through_its_str() -> None:
    class Sneaky(int):
        def __str__(self) -> str:
            return "1\ndata: injected"

        __repr__ = __str__

    assert encode_event("d", retry=Sneaky(3)) == b"retry: 3\ndata: d\n\n"


def test_str_subclasses_are_framed_by_their_text() -> None:
    class Text(str):
        pass

    assert encode_event(Text("d"), Text("e"), Text("1")) == b"id: 1\nevent: e\ndata: d\n\n"
    assert encode_comment(Text("c")) == b": c\n\n"


def test_encode_comment() -> None:
    assert encode_comment("keep-alive") == b": keep-alive\n\n"
    assert encode_comment("") == b": \n\n"
    assert encode_comment("héllo") == ": héllo\n\n".encode()


@pytest.mark.parametrize("bad", ["a\nb", "a\r", "\x00"], ids=repr)
def test_encode_comment_rejects_line_breaks(bad: str) -> None:
    with pytest.raises(InvalidEventError, match=r"^comment: must not contain control characters"):
        encode_comment(bad)


def test_encode_comment_rejects_non_str() -> None:
    with pytest.raises(InvalidEventError, match=r"^comment: must be a string"):
        encode_comment(b"x")  # type: ignore[arg-type]  # the wrong type is the test


def test_comment_and_heartbeat_parse_to_nothing() -> None:
    parser = EventParser()
    assert parser.feed(HEARTBEAT + encode_comment("x")) == []
    assert parser.comments == 2


# --------------------------------------------------------------------------
# Round trip: frame, then parse
# --------------------------------------------------------------------------

_single_line = st.text(st.characters(blacklist_categories=["Cs", "Cc", "Zl", "Zp"]))
_any_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters=SPLITLINES_ONLY_BREAKS))


def _normalise_line_breaks(text: str) -> str:
    return re.sub(r"\r\n|\r", "\n", text)


@settings(max_examples=500, deadline=None)
@given(
    data=_any_text,
    event=st.one_of(st.none(), _single_line),
    id=st.one_of(st.none(), _single_line),
    retry=st.one_of(st.none(), st.integers(0, 10**12)),
)
def test_round_trip(data: str, event: str | None, id: str | None, retry: int | None) -> None:
    frame = encode_event(data, event, id, retry)
    assert frame.endswith(b"\n\n")
    parser = EventParser()
    events = parser.feed(frame)
    assert events == [ServerSentEvent(_normalise_line_breaks(data), event or "message", id or "", retry)]
    assert parser.last_event_id == (id or "")


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(_any_text, st.one_of(st.none(), _single_line), st.one_of(st.none(), _single_line)),
        max_size=8,
    ),
    cut=st.integers(0, 10_000),
)
def test_round_trip_of_a_concatenated_stream(
    events: list[tuple[str, str | None, str | None]], cut: int
) -> None:
    stream = HEARTBEAT + b"".join(encode_event(d, e, i) for d, e, i in events)
    cut = min(cut, len(stream))
    parser = EventParser()
    got = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
    expected, last_id = [], ""
    for data, event, id in events:
        if id is not None:
            last_id = id
        expected.append(ServerSentEvent(_normalise_line_breaks(data), event or "message", last_id))
    assert got == expected


def _spec_lines(frame: str) -> list[str]:
    """The lines an SSE parser reads: the stream cut at CRLF, CR or LF (the frame ends with one)."""
    lines = re.split(r"\r\n|\r|\n", frame)
    assert lines[-1] == ""
    return lines[:-1]


# Text most likely to break a reader: every line break either side knows, controls, separators.
_hostile_text = st.lists(
    st.one_of(
        st.sampled_from(
            ["\r", "\n", "\r\n", *SPLITLINES_ONLY_BREAKS, "\x00", "\x7f", "\x9f", "\t", ":", " "]
        ),
        st.characters(blacklist_categories=["Cs"]),
    )
).map("".join)


@settings(max_examples=1000, deadline=None)
@given(
    data=st.one_of(_any_text, _hostile_text),
    event=st.one_of(st.none(), _single_line, _hostile_text),
    id=st.one_of(st.none(), _single_line, _hostile_text),
    retry=st.one_of(st.none(), st.integers(0, 10**12)),
)
def test_any_text_is_refused_or_framed_so_splitlines_sees_the_parsers_lines(
    data: str, event: str | None, id: str | None, retry: int | None
) -> None:
    """What ``str.splitlines`` (httpx ``iter_lines``) reads is what the spec parser reads."""
    try:
        frame = encode_event(data, event, id, retry)
    except InvalidEventError as exc:
        assert exc.field in ("data", "event", "id")
        refused = {"data": data, "event": event, "id": id}[exc.field]
        assert refused is not None
        if exc.field == "data":
            assert any(c in refused for c in SPLITLINES_ONLY_BREAKS)
        else:
            assert any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in refused)
        return
    text = frame.decode()
    assert text.splitlines() == _spec_lines(text)
    assert EventParser().feed(frame) == [
        ServerSentEvent(_normalise_line_breaks(data), event or "message", id or "", retry)
    ]
