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
from dataclasses import asdict, dataclass, field, fields
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
BUSES = ("auto", "local")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
STDERR = "-"
"""``--access-log`` to standard error (also what the flag means without a path)."""
CONFIG_ENV = "SSE_FAST_SERVE"
"""The environment variable a granian worker reads its configuration from."""


_COOKIE_NAME_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _is_cookie_name(name: str) -> bool:
    """A token of RFC 9110 (what RFC 6265 allows as a cookie name)."""
    return bool(name) and all(c in _COOKIE_NAME_CHARS for c in name)


def cli(help: str, *, secret: bool = False, **argparse_options: Any) -> dict[str, Any]:
    """A field's metadata: how the CLI offers it (help, and ``flag``, ``choices``, ``action``...).

    ``secret=True`` marks a value that must not be typed on a command line
    (which every local user can read): the CLI also offers ``--<flag>-file``
    and ``SSE_FAST_<FLAG>_FILE`` for it (:mod:`sse_fast.config_sources`).
    """
    return {"help": help, "secret": secret, **argparse_options}


@dataclass
class ServeConfig:
    """Everything ``sse-fast serve`` can be told; defaults suit a small production edge."""

    host: str = field(default="127.0.0.1", metadata=cli("address to bind"))
    port: int = field(
        default=8080, metadata=cli("port to bind; 0 for any free one (stdout says which: 'listening on ...')")
    )
    workers: int = field(
        default=1,
        metadata=cli(
            "worker processes sharing the port, each a node of the cluster (above 1 needs a "
            "redis:// store and its bus); a worker that dies is started again"
        ),
    )
    heartbeat: float = field(default=15.0, metadata=cli("seconds of silence before a heartbeat"))
    retry_ms: int = field(
        default=3000,
        metadata=cli(
            "the reconnection time (retry:) a stream opens with and its shutdown frame repeats, "
            "in milliseconds; 0: none sent (clients keep their own)"
        ),
    )
    retry_jitter: float = field(
        default=0.5,
        metadata=cli(
            "each stream's retry: spread by this fraction either way (0.5: 50-150 %%), so the clients "
            "of a dead or draining node do not all come back in the same second"
        ),
    )
    push_token: str | None = field(
        default=None,
        metadata=cli("require 'Authorization: Bearer TOKEN' on /push, /stats, /metrics", secret=True),
    )
    jwt_secret: str | None = field(
        default=None,
        metadata=cli("subscribers authenticate with an HS256 JWT; its 'sub' is the uid", secret=True),
    )
    jwt_public_key: str | None = field(
        default=None,
        metadata=cli(
            "subscribers authenticate with a JWT signed by this PEM public key (RSA: RS256..., EC: ES256...)",
            metavar="FILE",
        ),
    )
    jwks_url: str | None = field(
        default=None,
        metadata=cli(
            "subscribers authenticate with a JWT signed by a key of this JWKS (an identity provider's "
            "published keys; refetched when a token names an unknown kid)",
            metavar="URL",
        ),
    )
    jwks_max_age: float = field(
        default=300.0, metadata=cli("seconds the --jwks-url key set is used before it is fetched again")
    )
    jwks_min_interval: float = field(
        default=10.0,
        metadata=cli("least seconds between two fetches of the --jwks-url key set prompted by unknown kids"),
    )
    jwt_leeway: float = field(
        default=5.0,
        metadata=cli(
            "seconds a subscriber's JWT is still accepted after its exp; its stream ends then "
            "(event: token_expired)"
        ),
    )
    jwt_audience: str | None = field(
        default=None, metadata=cli("subscriber JWTs must carry this 'aud' (not checked when unset)")
    )
    jwt_issuer: str | None = field(
        default=None, metadata=cli("subscriber JWTs must carry this 'iss' (not checked when unset)")
    )
    jwt_cookie: str | None = field(
        default=None,
        metadata=cli(
            "also read a subscriber's JWT from this cookie (for EventSource withCredentials)", metavar="NAME"
        ),
    )
    cors_origins: list[str] = field(
        default_factory=list,
        metadata=cli(
            "allow browsers from ORIGIN: CORS with credentials, and pushes from its pages (repeatable; "
            "'*' for any, not with subscriber JWTs; pages of other origins cannot push: 403)",
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
    bus: str = field(
        default="auto",
        metadata=cli(
            "auto: with a redis:// store every process on its prefix fans out every process's pushes "
            "(they follow the store's stream); local: this process fans out only its own pushes",
            choices=BUSES,
        ),
    )
    node_id: str | None = field(
        default=None, metadata=cli("this process's name in a cluster, in /stats and logs (default: host-pid)")
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
    access_log: str | None = field(
        default=None,
        metadata=cli(
            "write an access log line per push, request and subscription open and close: to "
            "standard error (no PATH, or '-'), or appended to PATH (reopened when rotated); off by default",
            nargs="?",
            const=STDERR,
            metavar="PATH",
        ),
    )
    log_format: str = field(
        default="text",
        metadata=cli(
            "the access log's lines: text (key=value) or json (one object a line)", choices=LOG_FORMATS
        ),
    )
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
    http: str | None = field(
        default=None,
        metadata=cli(
            "granian engine: 1 (HTTP/1.1 only, the least memory per stream), 2, or auto (HTTP/2 or "
            "1.1 as the client offers, by ALPN over TLS); default auto with --tls-cert, else 1",
            choices=HTTP_MODES,
        ),
    )
    tls_cert: str | None = field(
        default=None,
        metadata=cli(
            "serve HTTPS with this PEM certificate (the chain after it); needs --tls-key",
            metavar="FILE",
        ),
    )
    tls_key: str | None = field(
        default=None,
        metadata=cli("the certificate's private key (PEM, unencrypted); needs --tls-cert", metavar="FILE"),
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
        if self.workers < 1:
            raise ValueError("--workers: must be at least 1")
        if self.workers > 1 and (
            not (self.store or "").startswith(("redis://", "rediss://")) or self.bus != "auto"
        ):
            raise ValueError(
                "--workers: above 1 needs a redis:// store and its bus (not --bus local): with an "
                "SQLite or memory store, or no store, the workers could not see each other's pushes "
                "nor share the history a reconnecting client resumes from"
            )
        if not 0 <= self.port < 65536:
            raise ValueError("--port: must be between 0 (any free port) and 65535")
        if self.heartbeat <= 0:
            raise ValueError("--heartbeat: must be a positive number of seconds")
        if self.retry_ms < 0:
            raise ValueError("--retry-ms: must be zero (none sent) or a positive number of milliseconds")
        if not 0 <= self.retry_jitter <= 1:
            raise ValueError("--retry-jitter: must be between 0 and 1")
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
        if self.http is not None and self.http not in HTTP_MODES:
            raise ValueError(f"--http: one of {', '.join(HTTP_MODES)}")
        if self.engine == "native" and self.http not in (None, "1"):
            raise ValueError("--http: the native engine speaks HTTP/1.1 only; use the granian engine for 2")
        if self.header_timeout <= 0 or self.keepalive_timeout <= 0:
            raise ValueError("--header-timeout/--keep-alive-timeout: must be positive numbers of seconds")
        if not 0 < self.body_timeout < math.inf:
            raise ValueError("--body-timeout: must be a positive number of seconds")
        self._validate_jwt()
        from .tls import check_server_files

        check_server_files(self.tls_cert, self.tls_key)
        if self.bus not in BUSES:
            raise ValueError(f"--bus: one of {', '.join(BUSES)}")
        if self.node_id is not None and (not self.node_id or not self.node_id.isprintable()):
            raise ValueError("--node-id: must be a non-empty printable name")
        for f in fields(self):
            if f.metadata.get("secret") and getattr(self, f.name) == "":
                flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
                raise ValueError(f"{flag}: must not be empty")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"--log-format: one of {', '.join(LOG_FORMATS)}")
        if self.access_log == "":
            raise ValueError("--access-log: an empty path; give a file, or '-' for standard error")
        if self.access_log not in (None, STDERR):
            try:  # here, rather than as a traceback from the worker that opens it
                with open(self.access_log, "a", encoding="utf-8"):
                    pass
            except OSError as exc:
                raise ValueError(
                    f"--access-log: cannot write to {self.access_log!r}: {exc.strerror}"
                ) from None
        if self.store:
            from .stores import open_store

            open_store(self.store)  # parses the URL only: a bad one fails here, with the reason

    @property
    def tls(self) -> bool:
        """Whether the edge serves HTTPS (both files given; :meth:`validate` checks them)."""
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def http_mode(self) -> str:
        """``--http`` as granian is told: as given, else HTTP/2 by ALPN with TLS (browsers' many streams)."""
        if self.http is not None:
            return self.http
        return "auto" if self.tls else "1"

    @property
    def jwt_option(self) -> str | None:
        """The option that makes subscribers present JWTs, if one is set."""
        given = [
            name
            for name, value in (
                ("--jwt-secret", self.jwt_secret),
                ("--jwt-public-key", self.jwt_public_key),
                ("--jwks-url", self.jwks_url),
            )
            if value
        ]
        if len(given) > 1:
            raise ValueError(f"{given[1]}: give only one of --jwt-secret, --jwt-public-key, --jwks-url")
        return given[0] if given else None

    def _validate_jwt(self) -> None:
        jwt_option = self.jwt_option
        if not 0 <= self.jwt_leeway <= 300:
            raise ValueError("--jwt-leeway: must be between 0 and 300 seconds")
        if not 0 < self.jwks_max_age < math.inf or not 0 <= self.jwks_min_interval < math.inf:
            raise ValueError("--jwks-max-age/--jwks-min-interval: must be positive numbers of seconds")
        if jwt_option is None:
            for name, value in (
                ("--jwt-audience", self.jwt_audience),
                ("--jwt-issuer", self.jwt_issuer),
                ("--jwt-cookie", self.jwt_cookie),
            ):
                if value is not None:
                    raise ValueError(f"{name}: needs --jwt-secret, --jwt-public-key or --jwks-url")
            return
        if "*" in self.cors_origins:
            raise ValueError(
                f"--cors-origin: '*' is not allowed together with {jwt_option}; list the origins"
            )
        if self.jwt_cookie is not None and not _is_cookie_name(self.jwt_cookie):
            raise ValueError("--jwt-cookie: not a cookie name (letters, digits and !#$%&'*+-.^_`|~ only)")
        if self.jwt_public_key:
            from .jwt_keys import PublicKey

            PublicKey.from_file(self.jwt_public_key)  # a bad file fails here, with the reason
        if self.jwks_url and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError(f"--jwks-url: must be an http(s) URL, got {self.jwks_url!r}")

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        raw = os.environ.get(CONFIG_ENV)
        return cls(**json.loads(raw)) if raw else cls()
