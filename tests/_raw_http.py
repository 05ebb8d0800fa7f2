"""HTTP/1.1 over raw sockets, for tests where the bytes on the wire are what is tested.

Responses are parsed by httptools' response parser, never by hand; a socket
read that blocks past :data:`SOCKET_LIMIT` fails the test (the behaviour under
test did not happen).
"""

from __future__ import annotations

import socket

import httptools

from conftest import HOST, ServerProcess

SOCKET_LIMIT = 15.0
"""Seconds a socket read may block before the test fails."""


class Responses:
    """Parses the responses that arrive on one raw socket, in order (httptools' response parser)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.done: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self._headers: dict[bytes, bytes] = {}
        self._body = b""
        self.head: tuple[int, dict[bytes, bytes]] | None = None
        self._parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        """A streamed response has no end to wait for: keep its head as soon as it is there."""
        self.head = (self._parser.get_status_code(), dict(self._headers))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self._parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = {}, b""

    def read(self, count: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
        while len(self.done) < count:
            data = self.sock.recv(65536)
            if not data:
                break
            self._parser.feed_data(data)
        return self.done[:count]

    def read_head(self) -> tuple[int, dict[bytes, bytes]]:
        """Status and headers of the next response, without waiting for its body (a stream)."""
        self.head = None
        while self.head is None:
            data = self.sock.recv(65536)
            assert data, "closed before a response head arrived"
            self._parser.feed_data(data)
        return self.head


def connect(server: ServerProcess, source: str = HOST) -> socket.socket:
    """A connection to ``server`` (from ``source``, a loopback address), reads bounded by SOCKET_LIMIT."""
    sock = socket.create_connection((HOST, server.port), timeout=SOCKET_LIMIT, source_address=(source, 0))
    sock.settimeout(SOCKET_LIMIT)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (reads whatever comes before)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    return True
