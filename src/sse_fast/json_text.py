"""JSON as the edge reads it from publishers and writes it into events: orjson, and where it needs help.

orjson does both fast, with two gaps that matter on an SSE edge:

* **Integers beyond 64 bits.**  orjson decodes an integer outside
  ``[-2**63, 2**64)`` as a float (``123456789012345678901234567890`` becomes
  ``1.2345678901234568e+29``) or fails past 1e308, and refuses to encode one.
  :func:`loads` gives such integers exactly, :func:`dumps` writes them digit
  for digit.  Only a body that may hold one (a run of 20 digits, or 19 after a
  ``-``: ``_core.may_hold_wide_integer``) is decoded a second time, by the
  standard library; an ordinary body costs orjson and one skipping scan.
* **U+2028, U+2029 and U+0085 are left as they are** (JSON allows them in
  strings), but readers that split lines like ``str.splitlines`` (httpx
  ``iter_lines``) break a ``data:`` line there.  :func:`dumps` writes them as
  ``\\u2028``, ``\\u2029``, ``\\u0085``: the same JSON value.  Only non-ASCII
  text is searched for them (``_core.escape_line_separators``), and only text
  that holds one is rewritten.

Client and server both use it: it depends on nothing of either.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from ._core import escape_line_separators, may_hold_wide_integer

_INT64_MIN = -(2**63)
_UINT64_END = 2**64
_LONG_DIGIT_RUN = re.compile(rb"[0-9]{19,}")


def dumps(value: Any) -> str:
    """``value`` as compact one-line JSON text that no reader splits into lines.

    Raises ``TypeError`` (orjson's ``JSONEncodeError``) for what cannot be
    encoded, as ``orjson.dumps`` does.
    """
    try:
        raw = orjson.dumps(value)
    except orjson.JSONEncodeError:
        exact = _wide_integers_as_fragments(value)
        if exact is value:
            raise
        raw = orjson.dumps(exact)
    if not raw.isascii():  # a word at a time: what most data is costs next to nothing
        raw = escape_line_separators(raw)
    return raw.decode()


def loads(body: bytes | str) -> Any:
    """Decode JSON ``body`` (UTF-8 bytes or text) as orjson does, but with integers beyond 64 bits exact.

    Raises ``orjson.JSONDecodeError`` (a ``ValueError``) for what orjson
    refuses; a number too large for any float (``1e400``) stays refused, and so
    does an integer of more digits than ``int()`` accepts (4300).
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not may_hold_wide_integer(body):  # an integer past 1e308 is one orjson calls infinite
            raise
        return _loads_exact(body if isinstance(body, bytes) else body.encode(), exc)
    if not may_hold_wide_integer(body):
        return value
    return _loads_exact(body if isinstance(body, bytes) else body.encode(), None)


def _loads_exact(body: bytes, orjson_error: orjson.JSONDecodeError | None) -> Any:
    """The standard library's exact integers, for a body orjson accepts once its long numbers are cut short.

    Each run of 19 or more digits is cut to its first two (a leading zero, which
    JSON forbids, stays one): orjson then accepts the body exactly when it is
    valid JSON apart from the size of its numbers, so this path refuses what
    orjson's refuses (lone surrogate escapes, other encodings), and only the
    values come from :mod:`json`.
    """
    if orjson_error is not None:
        try:
            orjson.loads(_LONG_DIGIT_RUN.sub(lambda run: run.group()[:2], body))
        except orjson.JSONDecodeError:
            raise orjson_error from None
    try:
        return json.loads(body.decode(), parse_float=_finite_float, parse_int=_int)
    except ValueError as exc:  # a float past 1e308, an integer past int()'s limit on digits
        raise orjson.JSONDecodeError(str(exc), "", 0) from None
    except RecursionError:  # orjson allows 1024 levels, the standard library fewer
        raise orjson.JSONDecodeError("nested too deeply", "", 0) from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # past sys.get_int_max_str_digits()
        raise ValueError(f"integer of {len(text.lstrip('-'))} digits: too long") from None


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number is infinity when parsed as double: {text[:20]}")
    return number


def _wide_integers_as_fragments(value: Any) -> Any:
    """``value`` with each integer orjson cannot encode as an ``orjson.Fragment`` of its digits.

    Returns ``value`` itself when it holds none: the caller then re-raises
    orjson's error.  Walks dicts, lists and tuples, what decoded JSON holds.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if _INT64_MIN <= value < _UINT64_END:
            return value
        try:
            return orjson.Fragment(str(int(value)).encode())
        except ValueError:  # more digits than str() writes
            return value
    if isinstance(value, dict):
        items = {key: _wide_integers_as_fragments(item) for key, item in value.items()}
        changed = any(items[key] is not item for key, item in value.items())
        return items if changed else value
    if isinstance(value, (list, tuple)):
        elements = [_wide_integers_as_fragments(item) for item in value]
        changed = any(new is not old for new, old in zip(elements, value, strict=True))
        return elements if changed else value
    return value


__all__ = ["dumps", "escape_line_separators", "loads"]
