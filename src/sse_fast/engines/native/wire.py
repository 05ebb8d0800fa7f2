"""HTTP/1.1 response bytes: status lines, heads and chunk framing (sans-IO).

The native engine writes responses itself, so the few rules it needs live
here as pure functions that tests can check byte for byte: a head is the
status line and headers, a streamed body without a length is sent with
``Transfer-Encoding: chunked`` (what HTTP/1.1 clients expect, and it lets a
client tell a clean end, the zero-length chunk, from a cut connection).
"""

from __future__ import annotations

from http import HTTPStatus

Headers = list[tuple[bytes, bytes]]

CHUNK_END = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <phrase>\\r\\n``, cached per status."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")
        _STATUS_LINES[status] = line
    return line


def encode_head(status: int, headers: Headers, date: bytes | None = None) -> bytes:
    """Status line, ``Date`` (when given) and headers, ending with the blank line."""
    parts = [status_line(status)]
    if date is not None:
        parts += (b"date: ", date, b"\r\n")
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never empty: an empty chunk would end the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def has_header(headers: Headers, name: bytes) -> bool:
    return any(key.lower() == name for key, _ in headers)


def header_value(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
