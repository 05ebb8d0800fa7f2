"""The native engine: ``sse-fast serve --engine native``, HTTP/1.1 (over TLS too) on uvloop transports.

``GET /events`` is served natively (the hub writes into the socket, no
coroutine per subscriber); everything else goes through the same
:class:`~sse_fast.asgi.SSEApp` that granian runs.  See :mod:`.server`,
:mod:`.connection`, :mod:`.stream`, :mod:`.asgi_bridge`, :mod:`.lifespan`,
:mod:`.limits` and :mod:`.wire`.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from .limits import Limits
from .server import NativeServer

if TYPE_CHECKING:
    from ...config import ServeConfig

__all__ = ["Limits", "NativeServer", "run"]


def run(config: ServeConfig) -> None:
    """Run the edge described by ``config`` on the native engine until SIGINT/SIGTERM
    (``--workers N``: N such processes on one listening socket, :mod:`.workers`)."""
    from ..setup import configure_logging

    configure_logging(config)
    if config.workers > 1:
        from .workers import run_workers

        run_workers(config, serve)
    else:
        serve(config)


def serve(config: ServeConfig, sock: socket.socket | None = None) -> None:
    """One process of the native engine, on ``sock`` when its parent bound it."""
    import uvloop

    from ..setup import SHUTDOWN_GRACE, build_app, name_logs, tune_gc

    limits = Limits(header_timeout=config.header_timeout, keepalive_timeout=config.keepalive_timeout)
    tls = None
    if config.tls_cert is not None and config.tls_key is not None:
        from ...tls import server_context

        tls = server_context(config.tls_cert, config.tls_key)  # ALPN: http/1.1 only

    app = build_app(config)
    name_logs(app.hub)
    server = NativeServer(
        app,
        config.host,
        config.port,
        limits=limits,
        backlog=max(1024, min(config.max_connections, 65535)),
        grace=SHUTDOWN_GRACE,
        tls=tls,
        sock=sock,
    )
    tune_gc()
    uvloop.run(server.serve())
