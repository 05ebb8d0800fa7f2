"""``sse-fast serve``: build the hub and the ASGI app from settings and run granian.

granian starts its workers in fresh processes and imports the app there, so
the settings travel in one environment variable (``SSE_FAST_SERVE``, JSON) and
:func:`create_app` — granian's factory target — rebuilds the app from it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
from dataclasses import asdict, dataclass, field
from typing import Any

from .asgi import SSEApp
from .auth import JWTAuth, UidResolver, query_uid
from .hub import Hub
from .parentwatch import PARENT_PID_ENV, watch_parent

CONFIG_ENV = "SSE_FAST_SERVE"
DEFAULT_STORE = "sqlite:///sse_fast.db"
SHUTDOWN_GRACE = 10
"""Seconds a worker may take to say goodbye and exit before it is killed."""
ENGINES = ("granian", "native")
HTTP_MODES = ("1", "2", "auto")


@dataclass
class ServeConfig:
    """Everything ``sse-fast serve`` can be told; defaults suit a small production edge."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    heartbeat: float = 15.0
    push_token: str | None = None
    jwt_secret: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_connections: int = 10_000
    max_body: int = 1024 * 1024
    store: str | None = DEFAULT_STORE
    ring_frames: int = 4096
    log_level: str = "info"
    dashboard: bool = True
    engine: str = "granian"
    http: str = "1"
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0

    def validate(self) -> None:
        """Refuse settings that would misbehave, naming the option and the rule."""
        if self.workers != 1:
            raise ValueError(
                "--workers: only 1 is supported until the shared event bus exists; several workers "
                "would split subscribers between processes that cannot see each other's pushes"
            )
        if not 0 < self.port < 65536:
            raise ValueError("--port: must be between 1 and 65535")
        if self.heartbeat <= 0:
            raise ValueError("--heartbeat: must be a positive number of seconds")
        if self.max_connections < 1:
            raise ValueError("--max-connections: must be at least 1")
        if self.engine not in ENGINES:
            raise ValueError(f"--engine: one of {', '.join(ENGINES)}")
        if self.http not in HTTP_MODES:
            raise ValueError(f"--http: one of {', '.join(HTTP_MODES)}")
        if self.engine == "native" and self.http != "1":
            raise ValueError("--http: the native engine speaks HTTP/1.1 only; use the granian engine for 2")
        if self.header_timeout <= 0 or self.keepalive_timeout <= 0:
            raise ValueError("--header-timeout/--keep-alive-timeout: must be positive numbers of seconds")
        if self.jwt_secret is not None and "*" in self.cors_origins:
            raise ValueError("--cors-origin: '*' is not allowed together with --jwt-secret; list the origins")

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        raw = os.environ.get(CONFIG_ENV)
        return cls(**json.loads(raw)) if raw else cls()


def build_hub(config: ServeConfig) -> Hub:
    store = None
    if config.store:
        from .stores import open_store

        store = open_store(config.store)
    return Hub(
        store=store,
        heartbeat=config.heartbeat,
        max_connections=config.max_connections,
        ring_frames=config.ring_frames,
    )


def build_app(config: ServeConfig, hub: Hub | None = None) -> SSEApp:
    resolver: UidResolver = JWTAuth(config.jwt_secret) if config.jwt_secret else query_uid
    app = SSEApp(
        hub if hub is not None else build_hub(config),
        resolve_uid=resolver,
        push_token=config.push_token,
        cors_origins=config.cors_origins,
        max_body=config.max_body,
    )
    if config.dashboard:
        from .dashboard import install_dashboard

        install_dashboard(app)
    return app


def create_app() -> SSEApp:
    """granian's factory target: the app described by ``$SSE_FAST_SERVE``."""
    app = build_app(ServeConfig.from_env())
    _say_goodbye_on_worker_signal(app)
    watch_parent(grace=SHUTDOWN_GRACE)  # a worker must not outlive a SIGKILLed `sse-fast serve`
    tune_gc()
    return app


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a process holding many long-lived streams.

    Every wake-up allocates a little, so the young generation fills fast, and
    every tenth young collection walks the middle one, where tens of
    thousands of subscribers' tasks and frames sit; profiled at 10,000
    subscribers that was a fifth of the server's time.  A larger young
    generation means far fewer of those walks; what the process imported and
    built before serving is frozen out of them entirely.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _say_goodbye_on_worker_signal(app: SSEApp) -> None:
    """Close the hub first when granian's worker is told to stop.

    On SIGTERM/SIGINT granian stops accepting and then waits for every open
    request to finish, and only then sends the lifespan shutdown; a
    subscriber's request never finishes by itself.  So the hub must say
    goodbye before granian starts waiting.  granian's worker installs its
    signal handlers with ``granian._signals.set_loop_signals`` right after it
    loads this factory: we wrap it so that our handler runs first (close the
    hub, which ends every stream) and then sets granian's own stop signal.
    Should a granian release change that, the worker kill timeout set in
    :func:`run` still ends the process.
    """
    try:
        import granian._signals as granian_signals
    except ImportError:  # pragma: no cover - granian is a dependency
        return
    original = getattr(granian_signals, "set_loop_signals", None)
    if original is None:
        return

    def set_loop_signals(loop: Any) -> Any:
        stop_event = original(loop)

        def on_signal() -> None:
            app.begin_shutdown(then=stop_event.set)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal)
        return stop_event

    granian_signals.set_loop_signals = set_loop_signals


def raise_open_file_limit() -> None:
    """Lift the soft open-file limit to the hard one: every subscriber is a socket."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(config: ServeConfig) -> None:
    """Run the configured engine (granian by default) in the foreground until SIGINT/SIGTERM."""
    config.validate()
    raise_open_file_limit()
    if config.engine == "native":
        from .native import run as run_native

        run_native(config)
        return
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    os.environ[CONFIG_ENV] = config.to_env()
    os.environ[PARENT_PID_ENV] = str(os.getpid())
    # granian admits backlog/workers concurrent requests by default (1024):
    # every subscriber is one long request, so admit max_connections plus
    # room for pushes and probes.
    server: Any = Server(
        "sse_fast.server:create_app",
        address=config.host,
        port=config.port,
        interface=Interfaces.ASGI,
        workers=config.workers,
        loop=Loops.uvloop,
        backlog=max(1024, min(config.max_connections, 65535)),
        backpressure=config.max_connections + 256,
        log_level=LogLevels(config.log_level),
        factory=True,
        websockets=False,
        # HTTP/1.1 alone unless asked: granian's auto-detecting mode costs ~10 KiB
        # more per open stream (measured at 5,000-19,000 subscribers), and
        # browsers speak HTTP/2 only over TLS, which a proxy in front ends.
        http=HTTPModes(config.http),
        workers_kill_timeout=SHUTDOWN_GRACE,
    )
    server.serve()
