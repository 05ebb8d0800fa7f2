"""EventParser against the WHATWG HTML rules for "Parsing an event stream".

Byte-exact vectors first (one rule per test, as h11's tests do), then property
tests: the result must not depend on how the stream is cut into chunks, and it
must equal what :func:`reference_parse` -- a line-by-line transcription of the
spec, slow and obviously correct -- gives for the same bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_fast._core import EventParser, ServerSentEvent

BOM = b"\xef\xbb\xbf"


def parse(*chunks: bytes, last_event_id: str = "") -> list[ServerSentEvent]:
    parser = EventParser(last_event_id)
    out: list[ServerSentEvent] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def ev(data: str, event: str = "message", id: str = "", retry: int | None = None) -> ServerSentEvent:
    return ServerSentEvent(data, event, id, retry)


# --------------------------------------------------------------------------
# A reference parser: the spec, transcribed
# --------------------------------------------------------------------------


@dataclass
class ReferenceResult:
    events: list[ServerSentEvent] = field(default_factory=list)
    last_event_id: str = ""
    retry: int | None = None
    comments: int = 0


def reference_parse(stream: bytes, last_event_id: str = "") -> ReferenceResult:
    """Parse a whole stream the way the spec words it, one step per sentence.

    "Streams must be decoded using the UTF-8 decode algorithm" (which strips
    one leading BOM and replaces errors with U+FFFD); lines end at CRLF, LF or
    CR; a line with no line end yet is not a line ("If the file ends in the
    middle of an event, before the final empty line, the incomplete event is
    not dispatched").  Beyond the spec, the per-block ``retry`` that
    ``ServerSentEvent`` carries is tracked, so whole events can be compared.
    """
    if stream.startswith(BOM):
        stream = stream[len(BOM) :]
    text = stream.decode("utf-8", "replace")
    lines = re.split(r"\r\n|\r|\n", text)
    lines.pop()  # what follows the last line end: not (yet) a line

    result = ReferenceResult(last_event_id=last_event_id)
    data_buffer = ""
    event_type_buffer = ""
    last_event_id_buffer = last_event_id
    block_retry: int | None = None

    for line in lines:
        if line == "":
            # Dispatch the event.
            result.last_event_id = last_event_id_buffer
            if data_buffer == "":
                data_buffer = ""
                event_type_buffer = ""
                block_retry = None
                continue
            if data_buffer.endswith("\n"):
                data_buffer = data_buffer[:-1]
            event_type = event_type_buffer if event_type_buffer != "" else "message"
            result.events.append(ServerSentEvent(data_buffer, event_type, result.last_event_id, block_retry))
            data_buffer = ""
            event_type_buffer = ""
            block_retry = None
            continue
        if line.startswith(":"):
            result.comments += 1
            continue
        if ":" in line:
            name, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            event_type_buffer = value
        elif name == "data":
            data_buffer += value + "\n"
        elif name == "id":
            if "\0" not in value:
                last_event_id_buffer = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value):
            # "only ASCII digits"; an empty value sets nothing (there is no integer to take).
            result.retry = int(value)
            block_retry = result.retry
        # Otherwise the field (or a retry that is not all ASCII digits) is ignored.
    return result


def compiled_parse(stream_chunks: list[bytes], last_event_id: str = "") -> ReferenceResult:
    parser = EventParser(last_event_id)
    events: list[ServerSentEvent] = []
    for chunk in stream_chunks:
        events.extend(parser.feed(chunk))
    return ReferenceResult(events, parser.last_event_id, parser.retry, parser.comments)


# --------------------------------------------------------------------------
# Vectors: dispatch and fields
# --------------------------------------------------------------------------


def test_single_event() -> None:
    assert parse(b"data: hello\n\n") == [ev("hello")]


def test_fields_of_one_event() -> None:
    assert parse(b"id: 7\nevent: greeting\ndata: hi\n\n") == [ev("hi", "greeting", "7")]


def test_field_order_does_not_matter() -> None:
    assert parse(b"data: hi\nevent: greeting\nid: 7\n\n") == [ev("hi", "greeting", "7")]


def test_blank_line_ends_each_event() -> None:
    assert parse(b"data: a\n\ndata: b\n\n") == [ev("a"), ev("b")]


def test_data_lines_are_joined_with_lf() -> None:
    assert parse(b"data: a\ndata: b\ndata: c\n\n") == [ev("a\nb\nc")]


def test_empty_data_line_dispatches_empty_string() -> None:
    assert parse(b"data\n\n") == [ev("")]
    assert parse(b"data:\n\n") == [ev("")]


def test_empty_data_lines_keep_their_line_breaks() -> None:
    assert parse(b"data\ndata\n\n") == [ev("\n")]
    assert parse(b"data:\ndata: x\ndata:\n\n") == [ev("\nx\n")]


def test_only_one_leading_space_is_removed() -> None:
    assert parse(b"data:  two\n\n") == [ev(" two")]
    assert parse(b"data:no-space\n\n") == [ev("no-space")]
    assert parse(b"data: trailing \n\n") == [ev("trailing ")]
    assert parse(b"data:\ttab\n\n") == [ev("\ttab")]


def test_value_keeps_further_colons() -> None:
    assert parse(b"data: a: b:c\n\n") == [ev("a: b:c")]


def test_field_without_colon_has_empty_value() -> None:
    # "event" alone sets the type to "" and the event keeps the default type.
    assert parse(b"event: x\nevent\ndata: d\n\n") == [ev("d")]


def test_space_before_colon_makes_another_field_name() -> None:
    assert parse(b"data : ignored\n\n") == []
    assert parse(b"data : ignored\ndata: kept\n\n") == [ev("kept")]


def test_field_names_are_case_sensitive() -> None:
    assert parse(b"Data: x\nDATA: y\n\n") == []


def test_unknown_fields_are_ignored() -> None:
    assert parse(b"foo: bar\ndata: x\nbaz\n\n") == [ev("x")]


def test_comment_lines_are_ignored_and_counted() -> None:
    parser = EventParser()
    assert parser.feed(b": heartbeat\n\n:\n: x\ndata: y\n\n") == [ev("y")]
    assert parser.comments == 3


def test_comment_only_block_dispatches_nothing() -> None:
    assert parse(b": heartbeat\n\n") == []


def test_empty_event_type_means_message() -> None:
    assert parse(b"event:\ndata: x\n\n") == [ev("x", "message")]


def test_last_event_type_line_wins() -> None:
    assert parse(b"event: a\nevent: b\ndata: x\n\n") == [ev("x", "b")]


def test_event_type_does_not_carry_over() -> None:
    assert parse(b"event: a\ndata: 1\n\ndata: 2\n\n") == [ev("1", "a"), ev("2")]


def test_event_type_of_a_block_without_data_does_not_carry_over() -> None:
    assert parse(b"event: a\n\ndata: 2\n\n") == [ev("2")]


def test_blank_lines_alone_dispatch_nothing() -> None:
    assert parse(b"\n\n\n\r\n\r") == []


def test_incomplete_final_block_is_not_dispatched() -> None:
    assert parse(b"data: a\n\ndata: b\n") == [ev("a")]
    assert parse(b"data: a\n\ndata: b") == [ev("a")]


def test_incomplete_block_is_dispatched_once_completed() -> None:
    parser = EventParser()
    assert parser.feed(b"data: b\n") == []
    assert parser.feed(b"\n") == [ev("b")]


def test_feed_accepts_bytearray_and_memoryview() -> None:
    parser = EventParser()
    assert parser.feed(bytearray(b"data: a\n\n")) == [ev("a")]
    assert parser.feed(memoryview(b"data: b\n\n")) == [ev("b")]


def test_feed_rejects_text() -> None:
    with pytest.raises(TypeError):
        EventParser().feed("data: x\n\n")  # type: ignore[arg-type]  # the wrong type is the test


def test_many_lines_in_one_chunk_with_every_line_end() -> None:
    # Lines are found with memchr for LF and for CR separately; each result must be
    # reused until passed, whichever line end the stream uses.
    for eol in (b"\n", b"\r", b"\r\n"):
        stream = b"".join(b"id: %d" % i + eol + b"data: %d" % i + eol + eol for i in range(2000))
        events = EventParser().feed(stream)
        assert [(e.id, e.data) for e in events] == [(str(i), str(i)) for i in range(2000)]


def test_empty_chunks_change_nothing() -> None:
    assert parse(b"", b"data: a", b"", b"\n", b"", b"\n", b"") == [ev("a")]


def test_json_helper_decodes_data() -> None:
    assert parse(b'data: {"a": [1, 2]}\n\n')[0].json() == {"a": [1, 2]}


# --------------------------------------------------------------------------
# Vectors: id and retry
# --------------------------------------------------------------------------


def test_last_event_id_persists_across_events() -> None:
    parser = EventParser()
    assert parser.feed(b"id: 1\ndata: a\n\ndata: b\n\n") == [ev("a", id="1"), ev("b", id="1")]
    assert parser.last_event_id == "1"


def test_empty_id_resets_last_event_id() -> None:
    parser = EventParser()
    events = parser.feed(b"id: 1\ndata: a\n\nid\ndata: b\n\nid: 2\ndata: c\n\nid:\ndata: d\n\n")
    assert events == [ev("a", id="1"), ev("b", id=""), ev("c", id="2"), ev("d", id="")]
    assert parser.last_event_id == ""


def test_id_containing_nul_is_ignored() -> None:
    parser = EventParser()
    assert parser.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n") == [ev("a", id="1"), ev("b", id="1")]
    assert parser.last_event_id == "1"


def test_id_is_set_at_dispatch_not_before() -> None:
    parser = EventParser()
    parser.feed(b"id: 5\ndata: x\n")
    assert parser.last_event_id == ""
    parser.feed(b"\n")
    assert parser.last_event_id == "5"


def test_event_without_data_still_updates_last_event_id() -> None:
    parser = EventParser()
    assert parser.feed(b"id: 9\n\n") == []
    assert parser.last_event_id == "9"
    assert parser.feed(b"data: x\n\n") == [ev("x", id="9")]


def test_initial_last_event_id() -> None:
    parser = EventParser("41")
    assert parser.last_event_id == "41"
    assert parser.feed(b"data: x\n\n") == [ev("x", id="41")]


def test_id_of_an_incomplete_block_is_not_applied() -> None:
    parser = EventParser()
    parser.feed(b"id: 3\ndata: x")
    assert parser.last_event_id == ""


def test_id_is_kept_verbatim() -> None:
    assert parse(b"id:  a b \ndata: x\n\n") == [ev("x", id=" a b ")]


def test_retry_sets_reconnection_time() -> None:
    parser = EventParser()
    assert parser.retry is None
    assert parser.feed(b"retry: 1500\ndata: x\n\n") == [ev("x", retry=1500)]
    assert parser.retry == 1500


def test_retry_is_kept_across_events_but_not_attached_to_later_ones() -> None:
    parser = EventParser()
    assert parser.feed(b"retry: 10\ndata: a\n\ndata: b\n\n") == [ev("a", retry=10), ev("b")]
    assert parser.retry == 10


def test_retry_in_a_block_without_data_sets_reconnection_time_only() -> None:
    parser = EventParser()
    assert parser.feed(b"retry: 10\n\ndata: a\n\n") == [ev("a")]
    assert parser.retry == 10


@pytest.mark.parametrize(
    "line",
    [
        b"retry",
        b"retry:",
        b"retry: ",
        b"retry:  ",
        b"retry: 10 ",
        b"retry:  10",
        b"retry: 1.5",
        b"retry: -1",
        b"retry: +1",
        b"retry: 1e3",
        b"retry: one thousand",
        "retry: \u0661".encode(),
        "retry: \uff11".encode(),
        b"retry: 1\x00",
    ],
)
def test_retry_not_all_ascii_digits_is_ignored(line: bytes) -> None:
    parser = EventParser()
    assert parser.feed(b"retry: 7\n\n" + line + b"\ndata: x\n\n") == [ev("x")]
    assert parser.retry == 7


def test_retry_accepts_leading_zeros_and_large_values() -> None:
    parser = EventParser()
    parser.feed(b"retry: 007\n\n")
    assert parser.retry == 7
    parser.feed(b"retry: 123456789012345678901234567890\n\n")
    assert parser.retry == 123456789012345678901234567890


# --------------------------------------------------------------------------
# Vectors: line ends and chunk boundaries
# --------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_end(eol: bytes) -> None:
    stream = b"event: e" + eol + b"data: a" + eol + b"data: b" + eol + eol
    assert parse(stream) == [ev("a\nb", "e")]


def test_mixed_line_ends() -> None:
    assert parse(b"data: a\rdata: b\r\ndata: c\n\r\n") == [ev("a\nb\nc")]


def test_cr_cr_is_two_line_ends() -> None:
    assert parse(b"data: a\r\r") == [ev("a")]


def test_lf_cr_is_two_line_ends() -> None:
    assert parse(b"data: a\n\r") == [ev("a")]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r\n") == [ev("a\nb")]


def test_crlf_split_across_chunks_with_empty_chunk_between() -> None:
    assert parse(b"data: a\r", b"", b"\n", b"data: b\r\n\r\n") == [ev("a\nb")]


def test_cr_at_chunk_end_followed_by_blank_line() -> None:
    # The CR ends "data: a"; the next chunk's CR (no LF) is the blank line.
    assert parse(b"data: a\r", b"\r") == [ev("a")]


def test_cr_at_chunk_end_dispatches_without_waiting() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\n\r") == [ev("a")]


def test_line_split_across_many_chunks() -> None:
    assert parse(b"da", b"ta", b":", b" ", b"he", b"llo", b"\n", b"\n") == [ev("hello")]


def test_field_name_split_at_colon() -> None:
    assert parse(b"data", b": x\n\n") == [ev("x")]
    assert parse(b"data:", b" x\n\n") == [ev("x")]


# --------------------------------------------------------------------------
# Vectors: UTF-8 and the BOM
# --------------------------------------------------------------------------


def test_utf8_is_decoded() -> None:
    assert parse("event: café\nid: ü\ndata: 日本 🎉\n\n".encode()) == [ev("日本 🎉", "café", "ü")]


def test_leading_bom_is_stripped() -> None:
    assert parse(BOM + b"data: x\n\n") == [ev("x")]


def test_leading_bom_split_across_chunks_is_stripped() -> None:
    assert parse(b"\xef", b"\xbb", b"\xbf", b"data: x\n\n") == [ev("x")]
    assert parse(b"\xef\xbb", b"\xbfdata: x\n\n") == [ev("x")]
    assert parse(b"\xef", b"\xbb\xbfdata: x\n\n") == [ev("x")]
    assert parse(b"", b"\xef\xbb\xbf", b"", b"data: x\n\n") == [ev("x")]


def test_only_one_bom_is_stripped() -> None:
    # The second BOM is U+FEFF, part of the field name, which is then unknown.
    assert parse(BOM + BOM + b"data: x\n\n") == []
    assert parse(b"\xef\xbb", b"\xbf\xef\xbb\xbf", b"data: x\n\n") == []


def test_bom_not_at_stream_start_is_kept() -> None:
    assert parse(b"data: " + BOM + b"x\n\n") == [ev("\ufeffx")]
    assert parse(b"data: x\n\n" + BOM + b"data: y\n\n") == [ev("x")]
    parser = EventParser()
    parser.feed(b"data: x\n\n")
    assert parser.feed(BOM + b"data: y\n\n") == []


def test_partial_bom_prefix_that_is_not_a_bom() -> None:
    # 0xEF 0xBB followed by something else is not a BOM: invalid UTF-8, kept as U+FFFD.
    assert parse(b"\xef\xbb", b"x\n") == []
    assert parse(b"\xef\xbbdata: x\n\ndata: y\n\n") == [ev("y")]
    assert parse(b"\xef", b"data: x\n\n") == []


def test_invalid_utf8_is_replaced() -> None:
    assert parse(b"data: a\xffb\n\n") == [ev("a\ufffdb")]
    assert parse(b"event: \xc0\ndata: x\n\n") == [ev("x", "\ufffd")]
    assert parse(b"id: \xfe\ndata: x\n\n") == [ev("x", id="\ufffd")]


def test_truncated_sequence_before_line_end_is_one_replacement() -> None:
    assert parse(b"data: \xe2\x82\n\n") == [ev("\ufffd")]
    assert parse(b"data: \xe2\ndata: \x82\n\n") == [ev("\ufffd\n\ufffd")]


def test_invalid_utf8_matches_the_whole_stream_decoder() -> None:
    stream = b"data: \xf0\x9f\x8e\ndata: \xed\xa0\x80\xc3\n\n"
    assert parse(stream) == reference_parse(stream).events


@pytest.mark.parametrize("cut", range(1, 4))
def test_multibyte_character_split_across_chunks(cut: int) -> None:
    line = "data: 🎉\n\n".encode()
    at = len(b"data: ") + cut
    assert parse(line[:at], line[at:]) == [ev("🎉")]


def test_multibyte_character_split_byte_by_byte() -> None:
    stream = "event: ünïcödé\ndata: 日本語\n\n".encode()
    assert parse(*[stream[i : i + 1] for i in range(len(stream))]) == [ev("日本語", "ünïcödé")]


def test_nul_in_data_is_kept() -> None:
    assert parse(b"data: a\x00b\n\n") == [ev("a\x00b")]


# --------------------------------------------------------------------------
# The reference parser agrees with the vectors above (it is the oracle below)
# --------------------------------------------------------------------------


def test_reference_parser_on_webkit_style_stream() -> None:
    stream = (
        b": a comment (ignored)\n"
        b"this line will be ignored since there is no field and the line itself is not a field\n"
        b"field: an unknown field that will be ignored\n"
        b":another comment\n\n"
        b"data : this line will be ignored since there is a space after data\n\n"
        b"data\ndata:\ndata\n: dispatch event with two newlines\n\n"
        b"data: simple\n\n"
        b"data: spanning\ndata:multiple\ndata\ndata: lines\ndata\n\n"
        b"id: 1\ndata: id is 1\n\n"
        b"data: id is still 1\n\n"
        b"id\ndata: no id\n\n"
        b'event: open\ndata: a message event with the name "open"\n\n'
        b"data: a line ending with crlf\r\ndata: a line with a : (colon)\ndata: a line ending with cr\r\r"
        b"retry: 10000\n: reconnection time set to 10 seconds\n\n"
        b"retry: one thousand\n: ignored invalid reconnection time value\n\n"
    )
    expected = [
        ev("\n\n"),
        ev("simple"),
        ev("spanning\nmultiple\n\nlines\n"),
        ev("id is 1", id="1"),
        ev("id is still 1", id="1"),
        ev("no id"),
        ev('a message event with the name "open"', "open"),
        ev("a line ending with crlf\na line with a : (colon)\na line ending with cr"),
    ]
    ref = reference_parse(stream)
    assert ref.events == expected
    assert ref.retry == 10000
    got = compiled_parse([stream])
    assert got == ref


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

_field_names = st.sampled_from(["data", "event", "id", "retry", "", "dat", "datax", "Data", "foo", " data"])
_values = st.one_of(
    st.text(max_size=12).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=8),
    st.sampled_from([b"", b" ", b"0", b"123", b"1 2", b"\x00", b"\xef\xbb\xbf", b"\xe2\x82", b"\xff"]),
)
_eols = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def sse_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(_eols)  # blank line: dispatch
    if kind == 1:
        return b":" + draw(_values) + draw(_eols)  # comment
    if kind == 2:
        return draw(st.binary(max_size=10))  # arbitrary bytes, may hold CR/LF
    name = draw(_field_names).encode()
    if draw(st.booleans()):
        line = name + draw(st.sampled_from([b":", b": ", b":  "])) + draw(_values)
    else:
        line = name
    # Values may hold CR/LF themselves: that simply cuts the line earlier.
    return line + draw(_eols)


@st.composite
def sse_stream(draw: st.DrawFn) -> bytes:
    prefix = draw(st.sampled_from([b"", b"", BOM, BOM + BOM, b"\xef\xbb", b"\xef"]))
    return prefix + b"".join(draw(st.lists(sse_line(), max_size=30)))


@st.composite
def split_points(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    if not stream:
        return [stream]
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks, start = [], 0
    for cut in [*cuts, len(stream)]:
        chunks.append(stream[start:cut])
        start = cut
    return chunks


_last_ids = st.sampled_from(["", "7", "a b"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=sse_stream(), data=st.data(), last_event_id=_last_ids)
def test_chunk_split_invariance(stream: bytes, data: st.DataObject, last_event_id: str) -> None:
    chunks = data.draw(split_points(stream))
    assert b"".join(chunks) == stream
    assert compiled_parse(chunks, last_event_id) == compiled_parse([stream], last_event_id)


@settings(max_examples=400, deadline=None)
@given(stream=sse_stream(), last_event_id=_last_ids)
def test_byte_by_byte_equals_whole(stream: bytes, last_event_id: str) -> None:
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert compiled_parse(chunks, last_event_id) == compiled_parse([stream], last_event_id)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=sse_stream(), data=st.data(), last_event_id=_last_ids)
def test_matches_reference_parser(stream: bytes, data: st.DataObject, last_event_id: str) -> None:
    chunks = data.draw(split_points(stream))
    assert compiled_parse(chunks, last_event_id) == reference_parse(stream, last_event_id)


@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=200))
def test_matches_reference_parser_on_arbitrary_bytes(stream: bytes) -> None:
    assert compiled_parse([stream]) == reference_parse(stream)


# ------------------------------------------------------------ size limit


def test_an_event_past_max_event_size_raises_and_the_parser_recovers() -> None:
    from sse_fast.errors import EventTooLargeError

    parser = EventParser(max_event_size=100)
    assert parser.feed(b"data: " + b"x" * 50 + b"\n\n")[0].data == "x" * 50
    with pytest.raises(EventTooLargeError, match="max_event_size"):
        parser.feed(b"data: " + b"y" * 60 + b"\ndata: " + b"y" * 60 + b"\n")
    with pytest.raises(EventTooLargeError):
        parser.feed(b"data: " + b"z" * 200)  # an unterminated line counts too
    # Nothing of the refused event is kept: the next one parses cleanly.
    assert [e.data for e in parser.feed(b"\n\ndata: ok\n\n")] == ["ok"]


def test_max_event_size_zero_means_no_limit() -> None:
    parser = EventParser(max_event_size=0)
    assert parser.feed(b"data: " + b"x" * 100_000 + b"\n\n")[0].data == "x" * 100_000
    with pytest.raises(ValueError, match="max_event_size"):
        EventParser(max_event_size=-1)
