"""Complete (non-streaming) answers, as every engine sends them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import HTTPError

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Response:
    """Status, body and headers of one whole answer (the engine adds ``content-length``)."""

    status: int
    body: bytes = b""
    headers: Headers = field(default_factory=list)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Headers | None = None) -> Response:
        return cls(status, orjson.dumps(payload), [(b"content-type", b"application/json"), *(headers or [])])

    @classmethod
    def error(cls, exc: HTTPError, headers: Headers | None = None) -> Response:
        """The project's error format: ``{"code": status, "msg": "<field>: <rule>", "data": {}}``."""
        body = {"code": exc.status, "msg": exc.reason, "data": {}}
        return cls.json(exc.status, body, [*exc.headers, *(headers or [])])
