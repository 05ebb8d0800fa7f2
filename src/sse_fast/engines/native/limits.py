"""How much a client may send, and how long it may take, before the native engine hangs up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits of the native engine.

    ``max_head`` bounds the request line plus headers (bytes) and
    ``max_headers`` their number: past either the answer is 431.
    ``header_timeout`` is how long a client may take to finish its request
    headers (a client trickling bytes, "slowloris", is closed after it);
    ``keepalive_timeout`` how long an idle keep-alive connection is kept.
    A request body's deadline (``--body-timeout``) is the ASGI app's
    (``SSEApp._read_body``), the same on both engines.
    """

    max_head: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.max_head < 1024:
            raise ValueError("max_head: must be at least 1024 bytes")
        if self.max_headers < 1:
            raise ValueError("max_headers: must be at least 1")
        if self.header_timeout <= 0:
            raise ValueError("--header-timeout: must be a positive number of seconds")
        if self.keepalive_timeout <= 0:
            raise ValueError("--keep-alive-timeout: must be a positive number of seconds")
