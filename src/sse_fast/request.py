"""A transport-neutral view of an HTTP request: method, path, query, headers.

The routes (subscribe, push, stats) read requests through this small class so
that any transport can serve them: the ASGI app builds one from its scope, a
native engine can build one from its own parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote


class RequestLog:
    """What the access log records of one request while it is served (only when the log is on).

    ``kind`` is ``push`` once the push route took it, else ``request``;
    ``fields`` are what the endpoints add to its line (a push's events and
    recipients); ``streaming`` marks a subscription that opened, whose lines
    are its own (open and close) rather than the request's.
    """

    __slots__ = ("error", "fields", "kind", "remote", "started", "status", "streaming")

    def __init__(self, started: float, remote: str | None) -> None:
        self.started = started
        self.remote = remote
        self.kind = "request"
        self.status = 0
        self.fields: dict[str, object] | None = None
        self.error: str | None = None
        """The refusal's reason (``msg`` of the error answer)."""
        self.streaming = False


class Request:
    """Method, path, query and headers of one request (header names lower-case bytes).

    ``path`` is relative to the mount point ``root_path`` (empty when not mounted).
    ``log`` is the access log's record of it, ``None`` unless the log is on.
    """

    __slots__ = ("_query", "headers", "log", "method", "path", "query_string", "root_path")

    def __init__(
        self,
        method: str,
        path: str,
        query_string: bytes,
        headers: list[tuple[bytes, bytes]],
        root_path: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.root_path = root_path
        self.headers = headers
        self.query_string = query_string
        self._query: dict[str, list[str]] | None = None
        self.log: RequestLog | None = None

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> Request:
        """From an ASGI scope; a mount's ``root_path`` is cut off the path."""
        path = str(scope.get("path", "/"))
        root = str(scope.get("root_path", "") or "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        headers = [(bytes(k).lower(), bytes(v)) for k, v in scope.get("headers") or ()]
        query = bytes(scope.get("query_string", b""))
        return cls(str(scope.get("method", "GET")), path, query, headers, root.rstrip("/"))

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower-case), decoded as Latin-1 (for ASCII headers)."""
        value = self.header_bytes(name)
        return None if value is None else value.decode("latin-1")

    def header_bytes(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), as it arrived."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def query(self, name: str) -> str | None:
        """The first value of query parameter ``name``, percent-decoded as UTF-8 (U+FFFD for what is not)."""
        value = self.query_bytes(name)
        return None if value is None else value.decode("utf-8", "replace")

    def query_bytes(self, name: str) -> bytes | None:
        """The first value of query parameter ``name``, percent-decoded to bytes (``+`` is a space)."""
        if self._query is None:
            # Latin-1 maps each byte to one character and back, so the values
            # come out as the bytes the client meant, raw or percent-encoded.
            self._query = parse_qs(
                self.query_string.decode("latin-1"), keep_blank_values=True, encoding="latin-1"
            )
        values = self._query.get(name)
        return values[0].encode("latin-1") if values else None


def decode_path(raw_path: bytes) -> str:
    """A request target's path as ASGI servers hand it to apps: percent-decoded text."""
    text = raw_path.decode("latin-1")
    return unquote(text) if "%" in text else text
