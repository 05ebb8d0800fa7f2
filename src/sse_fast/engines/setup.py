"""What both engines share: the hub and the app built from one configuration, and the process tuned.

The engines differ in how bytes reach sockets; everything a request is
answered with comes from here, so ``--engine granian`` and ``--engine
native`` serve the same edge.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from ..access_log import AccessLog
from ..asgi import SSEApp
from ..auth import JWTAuth, UidResolver, query_uid
from ..bus import Bus, InProcessBus, default_node_id
from ..config import ServeConfig
from ..hub import Hub
from ..jwt_keys import JWKSKeys, KeySource, PublicKey, SharedSecret
from ..redact import redact_logs
from ..stores.base import Store
from ..stores.redis import RedisStore

logger = logging.getLogger("sse_fast.engines")

SHUTDOWN_GRACE = 10
"""Seconds a worker may take to say goodbye and exit before it is killed."""


def build_hub(config: ServeConfig) -> Hub:
    store = None
    if config.store:
        from ..stores import open_store

        store = open_store(config.store)
    return Hub(
        store=store,
        bus=build_bus(config, store),
        heartbeat=config.heartbeat,
        retry_ms=config.retry_ms or None,
        retry_jitter=config.retry_jitter,
        max_connections=config.max_connections,
        max_recipients=config.max_recipients,
        ring_frames=config.ring_frames,
        slice_seconds=config.fanout_slice,
        slice_visits=config.fanout_slice_visits,
        write_pace=config.fanout_write_pace,
    )


def build_resolver(config: ServeConfig) -> UidResolver:
    """Who subscribes: ``?uid=``, or a JWT checked with the configured secret, public key or JWKS."""
    keys: KeySource
    if config.jwt_secret:
        keys = SharedSecret(config.jwt_secret)
    elif config.jwt_public_key:
        keys = PublicKey.from_file(config.jwt_public_key)
    elif config.jwks_url:
        keys = JWKSKeys(config.jwks_url, max_age=config.jwks_max_age, min_interval=config.jwks_min_interval)
    else:
        return query_uid
    return JWTAuth(
        keys,
        leeway=config.jwt_leeway,
        audience=config.jwt_audience,
        issuer=config.jwt_issuer,
        cookie=config.jwt_cookie,
    )


def build_bus(config: ServeConfig, store: Store | None) -> Bus:
    """The Redis bus for a Redis store (unless ``--bus local``); otherwise the in-process one."""
    node_id = config.node_id or default_node_id()
    if config.node_id and config.workers > 1:  # one name per worker
        node_id = f"{config.node_id}-{os.getpid()}"
    if config.bus == "auto" and isinstance(store, RedisStore):
        from ..bus.redis import RedisBus

        return RedisBus(store, node_id)
    return InProcessBus(node_id)


def name_logs(hub: Hub) -> None:
    """In a cluster, begin every log line of ours with ``[node <id>]``: the lines of its nodes are
    told apart wherever they are collected, whatever the handler's format (granian's included).

    Called by the engines in the serving process, never on import or in a library's process."""
    if hub.snapshot()["node"]["bus"] != "following":
        return
    node_id = hub.node_id
    previous = logging.getLogRecordFactory()
    tag = f"[node {node_id}] ".replace("%", "%%")  # the message is a %-format

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = previous(*args, **kwargs)
        if isinstance(made.name, str) and made.name.startswith("sse_fast") and isinstance(made.msg, str):
            made.msg = tag + made.msg
        return made

    logging.setLogRecordFactory(record)
    logger.info("following the store's stream on the Redis bus")


def build_app(config: ServeConfig, hub: Hub | None = None) -> SSEApp:
    resolver = build_resolver(config)
    access_log = AccessLog(config.access_log, config.log_format) if config.access_log else None
    app = SSEApp(
        hub if hub is not None else build_hub(config),
        resolve_uid=resolver,
        push_token=config.push_token,
        cors_origins=config.cors_origins,
        max_body=config.max_body,
        body_timeout=config.body_timeout,
        access_log=access_log,
    )
    if config.dashboard:
        from ..dashboard import install_dashboard

        install_dashboard(app)
    return app


def configure_logging(config: ServeConfig) -> None:
    """The server's own log (not the access log): standard error, timestamped, secrets redacted.

    Every handler of the root logger gets a :class:`~sse_fast.redact.RedactingFilter`,
    so a message or traceback quoting a store URL never shows its password.
    granian's own loggers keep granian's handlers (they do not propagate).
    """
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    redact_logs()


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


def listening_line(host: str, port: int, tls: bool = False) -> str:
    """The one stdout line that says where the edge listens (tests and scripts read it)."""
    shown = f"[{host}]" if ":" in host else host
    return f"listening on {'https' if tls else 'http'}://{shown}:{port}"


def announce(host: str, port: int, tls: bool = False) -> None:
    print(listening_line(host, port, tls), file=sys.stdout, flush=True)


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


def announce_when_listening(
    host: str, port: int, timeout: float = 60.0, tls: bool = False
) -> threading.Thread:
    """Print the listening line once ``host:port`` accepts (granian listens in its workers).

    The thread polls while granian forks its workers, so it must import
    nothing: a worker forked while this thread held a module's import lock
    inherits the lock held, and hangs at its first import of that module.
    ``getaddrinfo`` imports the ``idna`` codec on first use, and a worker's
    first TLS connection (``rediss://``) encodes its host name with that codec:
    the first resolution is therefore made here, before the thread starts.
    """
    with contextlib.suppress(OSError):  # a host that does not resolve fails in the workers, not here
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)

    def wait() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=1).close()
            except OSError:
                time.sleep(0.02)
                continue
            announce(host, port, tls)
            return

    thread = threading.Thread(target=wait, name="sse-fast-announce", daemon=True)
    thread.start()
    return thread
