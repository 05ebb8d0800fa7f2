"""What ``sse-fast serve`` can be told: one dataclass, each option stated once.

Every field carries its default, its command-line flag, its help text and its
choices, so that the CLI is built from this class (``sse_fast.cli``) and the
engines read nothing else.  granian starts its workers in fresh processes, so
the configuration also travels as JSON in one environment variable.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_STORE = "sqlite:///sse_fast.db"
DEFAULT_MAX_BODY = 1024 * 1024
"""Largest ``POST /push`` body in bytes, for the server and the library alike."""
DEFAULT_MAX_RECIPIENTS = 100_000
"""Most recipients (events x uids; a broadcast counts one per event) of one push, for the
server and the library alike."""
MAX_PUSH_EVENTS = 10_000
"""Most events one ``POST /push`` may carry."""
DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a client may take to send a whole request body, from the end of its headers."""
ENGINES = ("granian", "native")
HTTP_MODES = ("1", "2", "auto")
LOG_LEVELS = ("debug", "info", "warning", "error")
CONFIG_ENV = "SSE_FAST_SERVE"
"""The environment variable a granian worker reads its configuration from."""


def cli(help: str, **argparse_options: Any) -> dict[str, Any]:
    """A field's metadata: how the CLI offers it (help, and ``flag``, ``choices``, ``action``...)."""
    return {"help": help, **argparse_options}


@dataclass
class ServeConfig:
    """Everything ``sse-fast serve`` can be told; defaults suit a small production edge."""

    host: str = field(default="127.0.0.1", metadata=cli("address to bind"))
    port: int = field(
        default=8080, metadata=cli("port to bind; 0 for any free one (stdout says which: 'listening on ...')")
    )
    workers: int = field(default=1, metadata=cli("worker processes (only 1 until the shared bus)"))
    heartbeat: float = field(default=15.0, metadata=cli("seconds of silence before a heartbeat"))
    push_token: str | None = field(
        default=None, metadata=cli("require 'Authorization: Bearer TOKEN' on /push, /stats, /metrics")
    )
    jwt_secret: str | None = field(
        default=None, metadata=cli("subscribers authenticate with an HS256 JWT; its 'sub' is the uid")
    )
    cors_origins: list[str] = field(
        default_factory=list,
        metadata=cli(
            "allow browsers from ORIGIN (repeatable; '*' for any when --jwt-secret is not set)",
            flag="--cors-origin",
            action="append",
            metavar="ORIGIN",
        ),
    )
    max_connections: int = field(default=10_000, metadata=cli("subscriber limit"))
    max_body: int = field(default=DEFAULT_MAX_BODY, metadata=cli("largest /push body in bytes"))
    max_recipients: int = field(
        default=DEFAULT_MAX_RECIPIENTS,
        metadata=cli("most recipients of one push: events x uids, a broadcast counting one per event (413)"),
    )
    store: str | None = field(
        default=DEFAULT_STORE,
        metadata=cli(
            "event history for Last-Event-ID resend: "
            "sqlite:///PATH, memory://, redis://HOST:PORT/DB or 'none'"
        ),
    )
    ring_frames: int = field(default=4096, metadata=cli("frames a subscriber may fall behind"))
    fanout_slice: float = field(
        default=0.002,
        metadata=cli("seconds one slice of a fan-out pass may take before the loop serves others"),
    )
    fanout_slice_visits: int = field(
        default=256, metadata=cli("subscribers one slice of a fan-out pass visits at most")
    )
    fanout_write_pace: float | None = field(
        default=None,
        metadata=cli(
            "seconds a fan-out slice leaves per write before the next slice, so that the server's own "
            "write queue stays short (default: what the engine needs; granian 16e-6, native 0)"
        ),
    )
    log_level: str = field(default="info", metadata=cli("log level", choices=LOG_LEVELS))
    dashboard: bool = field(
        default=True,
        metadata=cli(
            "do not serve the live dashboard (GET /, /dashboard) and its stats stream (/stats/stream)",
            flag="--no-dashboard",
            action="store_false",
        ),
    )
    engine: str = field(
        default="granian",
        metadata=cli(
            "granian (HTTP/1.1 and 2, TLS) or native (uvloop + httptools, HTTP/1.1, "
            "the most subscribers per core)",
            choices=ENGINES,
        ),
    )
    http: str = field(
        default="1",
        metadata=cli(
            "granian engine: HTTP/1.1 only (the least memory per stream), 2, or auto-detect",
            choices=HTTP_MODES,
        ),
    )
    header_timeout: float = field(
        default=10.0,
        metadata=cli(
            "seconds a client may take to send its request headers (on granian also the most an idle "
            "keep-alive connection is kept: granian times both with one timer)"
        ),
    )
    body_timeout: float = field(
        default=DEFAULT_BODY_TIMEOUT,
        metadata=cli(
            "seconds a client may take to send a whole request body, from the end of its headers (408)"
        ),
    )
    keepalive_timeout: float = field(
        default=5.0,
        metadata=cli(
            "native engine: seconds an idle keep-alive connection is kept", flag="--keep-alive-timeout"
        ),
    )

    def __post_init__(self) -> None:
        if self.store in ("", "none"):
            self.store = None

    def validate(self) -> None:
        """Refuse settings that would misbehave, naming the option and the rule."""
        if self.workers != 1:
            raise ValueError(
                "--workers: only 1 is supported until the shared event bus exists; several workers "
                "would split subscribers between processes that cannot see each other's pushes"
            )
        if not 0 <= self.port < 65536:
            raise ValueError("--port: must be between 0 (any free port) and 65535")
        if self.heartbeat <= 0:
            raise ValueError("--heartbeat: must be a positive number of seconds")
        if self.max_connections < 1:
            raise ValueError("--max-connections: must be at least 1")
        if not self.fanout_slice > 0:
            raise ValueError("--fanout-slice: must be a positive number of seconds")
        if self.fanout_slice_visits < 1:
            raise ValueError("--fanout-slice-visits: must be at least 1")
        if self.fanout_write_pace is not None and not self.fanout_write_pace >= 0:
            raise ValueError("--fanout-write-pace: must be zero or a positive number of seconds")
        if self.max_body < 1:
            raise ValueError("--max-body: must be at least 1 byte")
        if self.max_recipients < 1:
            raise ValueError("--max-recipients: must be at least 1")
        if self.engine not in ENGINES:
            raise ValueError(f"--engine: one of {', '.join(ENGINES)}")
        if self.http not in HTTP_MODES:
            raise ValueError(f"--http: one of {', '.join(HTTP_MODES)}")
        if self.engine == "native" and self.http != "1":
            raise ValueError("--http: the native engine speaks HTTP/1.1 only; use the granian engine for 2")
        if self.header_timeout <= 0 or self.keepalive_timeout <= 0:
            raise ValueError("--header-timeout/--keep-alive-timeout: must be positive numbers of seconds")
        if not 0 < self.body_timeout < math.inf:
            raise ValueError("--body-timeout: must be a positive number of seconds")
        if self.jwt_secret is not None and "*" in self.cors_origins:
            raise ValueError("--cors-origin: '*' is not allowed together with --jwt-secret; list the origins")
        if self.store:
            from .stores import open_store

            open_store(self.store)  # parses the URL only: a bad one fails here, with the reason

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        raw = os.environ.get(CONFIG_ENV)
        return cls(**json.loads(raw)) if raw else cls()
