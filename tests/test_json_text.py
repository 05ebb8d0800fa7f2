"""JSON in and out (``sse_fast.json_text``): exact integers beyond 64 bits, line separators escaped.

orjson decodes an integer outside ``[-2**63, 2**64)`` as a float and refuses
to encode one; it leaves U+2028, U+2029 and U+0085 unescaped.  These tests pin
what the edge does instead, and that the fast path and orjson's acceptance are
kept.  Over real sockets: tests/test_text_on_the_wire.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_fast import json_text
from sse_fast._core import may_hold_wide_integer
from sse_fast.endpoints import decode_push
from sse_fast.errors import HTTPError

BIG = 123456789012345678901234567890


# ------------------------------------------------------------------ decode


@pytest.mark.parametrize(
    "number",
    [
        BIG,
        -BIG,
        2**64,  # the first beyond unsigned 64 bits
        -(2**63) - 1,  # the first below signed 64 bits: 19 digits after a '-'
        10**308 * 7,  # past any float: orjson refuses it ("number is infinity")
        int("9" * 4000),
    ],
    ids=lambda n: f"{len(str(n))} chars",
)
def test_wide_integers_decode_exactly(number: int) -> None:
    body = f'{{"data": {{"n": {number}, "list": [1, {number}, "x"]}}}}'.encode()
    value = json_text.loads(body)
    assert value == {"data": {"n": number, "list": [1, number, "x"]}}
    assert type(value["data"]["n"]) is int


def test_orjson_alone_turns_them_into_floats() -> None:
    # What the fallback is for (if orjson ever decodes them exactly, it can go).
    assert isinstance(orjson.loads(str(BIG).encode()), float)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(("1" * 400).encode())


@pytest.mark.parametrize("number", [2**64 - 1, -(2**63), 1234567890123456789, 0, -1], ids=lambda n: str(n))
def test_integers_within_64_bits_are_orjsons(number: int) -> None:
    assert json_text.loads(str(number).encode()) == number == orjson.loads(str(number).encode())


@pytest.mark.parametrize(
    "body",
    [
        b"1e400",  # a float past 1e308: refused, as orjson refuses it
        b"[1e400, 12345678901234567890123]",
        b"[12345678901234567890123, 1e400]",
        b"[12345678901234567890123, NaN]",
        b"[12345678901234567890123, Infinity]",
        b'[12345678901234567890123, "\\ud800"]',  # a lone surrogate escape: orjson refuses it
        b"[" + b"1" * 400 + b', "\\ud800"]',
        b"[" + b"1" * 400 + b", 00]",  # a leading zero stays one when long runs are cut short
        b"[" + b"0" * 400 + b"]",
        b"[" + b"1" * 5000 + b"]",  # more digits than int() reads
        b"[" + b"1" * 400 + b"] x",
        b"\xff" + b"1" * 400,
    ],
    ids=lambda b: repr(b[:40]),
)
def test_what_orjson_refuses_stays_refused(body: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        json_text.loads(body)


def test_the_error_of_a_body_orjson_refuses_is_orjsons() -> None:
    body = b'{"a": 12345678901234567890123, "b": tru}'
    with pytest.raises(orjson.JSONDecodeError) as theirs:
        orjson.loads(body)
    with pytest.raises(orjson.JSONDecodeError) as ours:
        json_text.loads(body)
    assert str(ours.value) == str(theirs.value)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),  # hypothesis reaches far beyond 64 bits
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=4)),
        max_leaves=12,
    )


@settings(max_examples=500, deadline=None)
@given(value=_json_values())
def test_any_json_value_round_trips_exactly(value: Any) -> None:
    text = json_text.dumps(value)
    assert text.splitlines() == [text]
    assert _typed(json_text.loads(text.encode())) == _typed(value)
    assert _typed(json.loads(text)) == _typed(value)  # the standard library reads the same value


def _typed(value: Any) -> Any:
    """``value`` with each number tagged by its type: 1 == 1.0, but an int must stay an int."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (type(value).__name__, value)
    return value


_json_bytes = st.lists(
    st.sampled_from(
        [
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            '"',
            "\\",
            "-",
            ".",
            "e",
            "1",
            "0",
            "9" * 19,
            "9" * 25,
            "nul",
            " ",
            "a",
        ]
    ),
    max_size=30,
).map(lambda parts: "".join(parts).encode())


@settings(max_examples=2000, deadline=None)
@given(body=_json_bytes)
def test_orjsons_acceptance_is_kept(body: bytes) -> None:
    """Accepted by orjson: accepted, the same value but for wide integers; refused by it: refused,
    unless a wide integer (which orjson cannot read) is why."""
    try:
        expected = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            json_text.loads(body)
        except orjson.JSONDecodeError:
            return
        assert may_hold_wide_integer(body)
        return
    got = json_text.loads(body)
    if not may_hold_wide_integer(body):
        assert _typed(got) == _typed(expected)


# ------------------------------------------------------ the fast path's check


_DIGIT_RUN = re.compile(rb"[0-9]+")


def _reference_may_hold(text: bytes) -> bool:
    """The rule, plainly: a run of 20 digits, or of 19 right after a '-'."""
    for run in _DIGIT_RUN.finditer(text):
        after_minus = run.start() > 0 and text[run.start() - 1 : run.start()] == b"-"
        if len(run.group()) >= 20 or (after_minus and len(run.group()) >= 19):
            return True
    return False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"", False),
        (b"1234567890123456789", False),  # 19 digits: within 64 bits unsigned
        (b"-1234567890123456789", True),  # 19 digits after '-': may be below -2**63
        (b"12345678901234567890", True),
        (b'{"a":[1,2,3],"b":"x"}', False),
        (b"x" * 1000 + b"12345678901234567890", True),
        (b"123456789012345678 1234567890123456789", False),
        (b"1234567890123456789x" * 50, False),
        (b"1.12345678901234567890", True),  # a fraction: answers True, decoded exactly anyway
    ],
)
def test_may_hold_wide_integer(text: bytes, expected: bool) -> None:
    assert may_hold_wide_integer(text) is expected
    assert _reference_may_hold(text) is expected


@settings(max_examples=3000, deadline=None)
@given(text=st.lists(st.sampled_from([b"1", b"0", b"-", b"x", b"12345678", b" "]), max_size=80).map(b"".join))
def test_may_hold_wide_integer_is_the_plain_rule(text: bytes) -> None:
    assert may_hold_wide_integer(text) is _reference_may_hold(text)


# ------------------------------------------------------------------ encode


def test_wide_integers_are_encoded_digit_for_digit() -> None:
    value = {"n": BIG, "m": [-(2**63) - 1, (2**64, "x")], "k": 2**64 - 1}
    assert json_text.dumps(value) == (
        '{"n":123456789012345678901234567890,"m":[-9223372036854775809,[18446744073709551616,"x"]],'
        '"k":18446744073709551615}'
    )


def test_what_orjson_cannot_encode_is_still_a_type_error() -> None:
    with pytest.raises(TypeError):
        json_text.dumps({"n": BIG, "x": object()})
    with pytest.raises(TypeError):
        json_text.dumps(object())


@pytest.mark.parametrize(
    ("char", "escape"), [("\u2028", "\\u2028"), ("\u2029", "\\u2029"), ("\x85", "\\u0085")]
)
def test_separators_json_leaves_alone_are_escaped(char: str, escape: str) -> None:
    text = json_text.dumps({"k" + char: "a" + char + "\\" + char})
    assert text == '{"k' + escape + '":"a' + escape + "\\\\" + escape + '"}'
    assert text.isascii()
    assert json.loads(text) == {"k" + char: "a" + char + "\\" + char}


def test_orjson_alone_leaves_them_unescaped() -> None:
    assert orjson.dumps("\u2028\u2029\x85") == '"\u2028\u2029\x85"'.encode()


def test_other_text_is_orjsons_byte_for_byte() -> None:
    value = {"a": "café ü 日本 🎉\u2027\u202a\x84\x86\x7f", "b": [1, 2.5, None, True]}
    assert json_text.dumps(value).encode() == orjson.dumps(value)


# ------------------------------------------------------------- push decoding


def test_push_body_keeps_wide_integers() -> None:
    events, uids = decode_push(
        b'{"uids": ["7"], "events": [{"data": {"n": 123456789012345678901234567890}}]}'
    )
    assert uids == ["7"]
    assert events[0].data == {"n": BIG}
    assert events[0].data_text() == '{"n":123456789012345678901234567890}'


def test_push_body_past_any_float_is_400() -> None:
    with pytest.raises(HTTPError) as info:
        decode_push(b'{"events": [{"data": 1e400}]}')
    assert info.value.status == 400
    assert info.value.reason.startswith("body: invalid JSON (number is infinity")
