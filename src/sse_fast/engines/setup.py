"""What both engines share: the hub and the app built from one configuration, and the process tuned.

The engines differ in how bytes reach sockets; everything a request is
answered with comes from here, so ``--engine granian`` and ``--engine
native`` serve the same edge.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import sys
import threading
import time

from ..asgi import SSEApp
from ..auth import JWTAuth, UidResolver, query_uid
from ..config import ServeConfig
from ..hub import Hub

SHUTDOWN_GRACE = 10
"""Seconds a worker may take to say goodbye and exit before it is killed."""


def build_hub(config: ServeConfig) -> Hub:
    store = None
    if config.store:
        from ..stores import open_store

        store = open_store(config.store)
    return Hub(
        store=store,
        heartbeat=config.heartbeat,
        max_connections=config.max_connections,
        max_recipients=config.max_recipients,
        ring_frames=config.ring_frames,
        slice_seconds=config.fanout_slice,
        slice_visits=config.fanout_slice_visits,
        write_pace=config.fanout_write_pace,
    )


def build_app(config: ServeConfig, hub: Hub | None = None) -> SSEApp:
    resolver: UidResolver = JWTAuth(config.jwt_secret) if config.jwt_secret else query_uid
    app = SSEApp(
        hub if hub is not None else build_hub(config),
        resolve_uid=resolver,
        push_token=config.push_token,
        cors_origins=config.cors_origins,
        max_body=config.max_body,
        body_timeout=config.body_timeout,
    )
    if config.dashboard:
        from ..dashboard import install_dashboard

        install_dashboard(app)
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


def raise_open_file_limit() -> None:
    """Lift the soft open-file limit to the hard one: every subscriber is a socket."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listening_line(host: str, port: int) -> str:
    """The one stdout line that says where the edge listens (tests and scripts read it)."""
    shown = f"[{host}]" if ":" in host else host
    return f"listening on http://{shown}:{port}"


def announce(host: str, port: int) -> None:
    print(listening_line(host, port), file=sys.stdout, flush=True)


def reserve_port(host: str) -> tuple[socket.socket, int]:
    """Pick a free port for ``--port 0`` and hold it until the engine listens on it.

    The socket is bound (never listening) with ``SO_REUSEPORT``, which granian's
    workers also set: they can bind the same port, while anyone else who tries
    meanwhile gets "address in use" — no window in which the port may be taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, 0))
    return holder, int(holder.getsockname()[1])


def announce_when_listening(host: str, port: int, timeout: float = 60.0) -> threading.Thread:
    """Print the listening line once ``host:port`` accepts (granian listens in its workers)."""

    def wait() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=1).close()
            except OSError:
                time.sleep(0.02)
                continue
            announce(host, port)
            return

    thread = threading.Thread(target=wait, name="sse-fast-announce", daemon=True)
    thread.start()
    return thread
