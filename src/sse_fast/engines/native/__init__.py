"""The native engine: ``sse-fast serve --engine native``, HTTP/1.1 on uvloop transports.

``GET /events`` is served natively (the hub writes into the socket, no
coroutine per subscriber); everything else goes through the same
:class:`~sse_fast.asgi.SSEApp` that granian runs.  See :mod:`.server`,
:mod:`.connection`, :mod:`.stream`, :mod:`.asgi_bridge`, :mod:`.lifespan`,
:mod:`.limits` and :mod:`.wire`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .limits import Limits
from .server import NativeServer

if TYPE_CHECKING:
    from ...config import ServeConfig

__all__ = ["Limits", "NativeServer", "run"]


def run(config: ServeConfig) -> None:
    """Run the edge described by ``config`` on the native engine until SIGINT/SIGTERM."""
    import uvloop

    from ..setup import SHUTDOWN_GRACE, build_app, tune_gc

    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    limits = Limits(header_timeout=config.header_timeout, keepalive_timeout=config.keepalive_timeout)
    server = NativeServer(
        build_app(config),
        config.host,
        config.port,
        limits=limits,
        backlog=max(1024, min(config.max_connections, 65535)),
        grace=SHUTDOWN_GRACE,
    )
    tune_gc()
    uvloop.run(server.serve())
