"""The granian engine: the edge as an ASGI app in granian's worker process.

granian starts its workers in fresh processes and imports the app there, so
the configuration travels in one environment variable
(:data:`~sse_fast.config.CONFIG_ENV`, JSON) and :func:`create_app` — granian's
factory target — rebuilds the app from it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from ..asgi import SSEApp
from ..config import CONFIG_ENV, ServeConfig
from ..parentwatch import PARENT_PID_ENV, watch_parent
from .setup import (
    SHUTDOWN_GRACE,
    announce_when_listening,
    build_app,
    configure_logging,
    name_logs,
    reserve_port,
    tune_gc,
)

FACTORY = "sse_fast.engines.granian:create_app"


def create_app() -> SSEApp:
    """granian's factory target: the app described by ``$SSE_FAST_SERVE``."""
    config = ServeConfig.from_env()
    configure_logging(config)
    app = build_app(config)
    name_logs(app.hub)
    _say_goodbye_on_worker_signal(app)
    watch_parent(grace=SHUTDOWN_GRACE)  # a worker must not outlive a SIGKILLed `sse-fast serve`
    tune_gc()
    return app


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


FD_RESERVE = 512
"""Open files a worker keeps for itself (store files, Redis connections, pipes) besides its clients."""


def backpressure(max_connections: int, open_files: int) -> int:
    """How many connections granian's worker may hold at once: as many as its open files allow.

    granian holds one permit per open connection, not per request: an idle
    keep-alive socket, a head or a body that never finishes take one as a
    subscriber does, and with all permits taken granian accepts no one, not
    even ``/healthz``.  So the permits are not what runs out first: they
    match the open-file limit (less :data:`FD_RESERVE`, so that accepting
    stops on a permit rather than spinning on ``EMFILE``), while the hub
    bounds subscribers at ``max_connections`` and the header and body
    timeouts bound how long a stalled socket is held.  Never fewer than
    ``max_connections`` streams plus room for pushes and probes (granian's
    own default, backlog/workers, would admit 1024 streams).
    """
    return max(max_connections + 256, open_files - FD_RESERVE)


def open_file_limit() -> int:
    """This process's soft open-file limit (raised to the hard one at start), which workers inherit."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def run(config: ServeConfig) -> None:
    """Run granian with uvloop in the foreground until SIGINT/SIGTERM."""
    from granian.constants import HTTPModes, Interfaces, Loops, SSLProtocols
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    holder = None
    if config.port == 0:
        holder, config.port = reserve_port(config.host)
    os.environ[CONFIG_ENV] = config.to_env()
    os.environ[PARENT_PID_ENV] = str(os.getpid())
    tls: dict[str, Any] = {}
    if config.tls_cert is not None and config.tls_key is not None:
        # granian's own TLS (rustls), HTTP/2 offered by ALPN in --http auto (the default with TLS).
        tls = {
            "ssl_cert": Path(config.tls_cert),
            "ssl_key": Path(config.tls_key),
            "ssl_protocol_min": SSLProtocols.tls12,
        }
    server: Any = Server(
        FACTORY,
        address=config.host,
        port=config.port,
        interface=Interfaces.ASGI,
        workers=config.workers,
        loop=Loops.uvloop,
        backlog=max(1024, min(config.max_connections, 65535)),
        backpressure=backpressure(config.max_connections, open_file_limit()),
        # One timer for a request head and for an idle keep-alive connection:
        # a client that never finishes its head is cut after it.
        http1_settings=HTTP1Settings(header_read_timeout=max(1, round(config.header_timeout * 1000))),
        log_level=LogLevels(config.log_level),
        factory=True,
        websockets=False,
        # HTTP/1.1 alone unless asked or serving TLS: granian's auto-detecting mode
        # costs ~10 KiB more per open stream (measured at 5,000-19,000 subscribers),
        # and browsers speak HTTP/2 only over TLS.
        http=HTTPModes(config.http_mode),
        workers_kill_timeout=SHUTDOWN_GRACE,
        **tls,
        respawn_failed_workers=config.workers > 1,  # a cluster of workers: one that dies comes back
    )
    announce_when_listening(config.host, config.port, tls=config.tls)
    try:
        server.serve()
    finally:
        if holder is not None:
            holder.close()
