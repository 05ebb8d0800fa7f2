"""What both engines share: the hub and the app built from one configuration, and the process tuned.

The engines differ in how bytes reach sockets; everything a request is
answered with comes from here, so ``--engine granian`` and ``--engine
native`` serve the same edge.
"""

from __future__ import annotations

import contextlib
import gc

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
