"""The native engine's server: listen, time out idle clients, stop gracefully.

One task sweeps the connections that are waiting for a request (slowloris
and idle keep-alive deadlines) or for the rest of a push's body
(``--body-timeout``); subscribers are never in those sets, so the sweep costs
nothing per subscriber (their heartbeats are the hub's own sweep).

Stopping (SIGTERM/SIGINT): stop accepting, close idle connections, close the
hub (every subscriber gets the ``shutdown`` event and its stream ends),
let in-flight requests finish (up to ``grace`` seconds), wait for the
streams to flush, run the lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from typing import Any

from ...asgi import SSEApp
from ..setup import announce
from .connection import HTTPConnection
from .lifespan import Lifespan
from .limits import Limits

logger = logging.getLogger("sse_fast.native")


class NativeServer:
    """Serves one :class:`~sse_fast.asgi.SSEApp` on uvloop transports (see the module docstring)."""

    def __init__(
        self,
        app: SSEApp,
        host: str,
        port: int,
        *,
        limits: Limits | None = None,
        backlog: int = 1024,
        grace: float = 10.0,
        tls: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.app = app
        self.tls = tls
        self.sock = sock
        """A listening socket to serve on (a worker of ``--workers``: its parent bound it and
        said where it listens), instead of binding ``host:port``."""
        self.host = host
        self.port = port
        self.limits = limits or Limits()
        self.backlog = backlog
        self.grace = grace
        self.stopping = False
        self.state: dict[str, Any] | None = None
        self.connections: dict[HTTPConnection, None] = {}
        self._deadlines: dict[HTTPConnection, float] = {}
        self._body_deadlines: dict[HTTPConnection, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Server | None = None
        self._stop: asyncio.Event | None = None
        self._all_gone: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    # ------------------------------------------------------- connections

    def connected(self, conn: HTTPConnection) -> None:
        self.connections[conn] = None
        if self.stopping:
            conn.close_idle()
            return
        self._deadlines[conn] = self.loop.time() + self.limits.header_timeout

    def disconnected(self, conn: HTTPConnection) -> None:
        self.connections.pop(conn, None)
        self._deadlines.pop(conn, None)
        self._body_deadlines.pop(conn, None)
        if self._all_gone is not None and not self.connections:
            self._all_gone.set()

    def wait_for_head(self, conn: HTTPConnection) -> None:
        """A request began: it has ``header_timeout`` to finish its headers."""
        self._deadlines[conn] = self.loop.time() + self.limits.header_timeout

    def head_received(self, conn: HTTPConnection) -> None:
        self._deadlines.pop(conn, None)

    def wait_for_request(self, conn: HTTPConnection) -> None:
        """A response ended on a keep-alive connection: it may idle ``keepalive_timeout``."""
        if self.stopping:
            conn.close_idle()
        else:
            self._deadlines[conn] = self.loop.time() + self.limits.keepalive_timeout

    def wait_for_body(self, conn: HTTPConnection) -> None:
        """A push's head is in, its body not yet: it has ``--body-timeout`` for all of it."""
        self._body_deadlines[conn] = self.loop.time() + self.app.body_timeout

    def body_received(self, conn: HTTPConnection) -> None:
        if self._body_deadlines:
            self._body_deadlines.pop(conn, None)

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a short-lived task (subscribing, replaying) until it ends: the loop keeps only weak ones."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def streaming(self, conn: HTTPConnection) -> None:
        self._deadlines.pop(conn, None)

    async def _sweep(self) -> None:
        limits = self.limits
        interval = max(
            0.05,
            min(1.0, limits.header_timeout / 4, limits.keepalive_timeout / 4, self.app.body_timeout / 4),
        )
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            expired = [c for c, t in self._deadlines.items() if t <= now and c.active is None]
            for conn in expired:
                self._deadlines.pop(conn, None)
                conn.close_idle()
            if self._body_deadlines:
                late = [c for c, t in self._body_deadlines.items() if t <= now]
                for conn in late:
                    self._body_deadlines.pop(conn, None)
                    conn.body_timed_out()

    # -------------------------------------------------------------- life

    async def serve(self) -> None:
        """Run until SIGINT/SIGTERM (or :meth:`stop`), then stop gracefully."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        lifespan = Lifespan(self.app)
        await lifespan.startup()
        self.state = lifespan.state or None
        # With TLS, uvloop's SSL transport sits between the connection and the
        # socket: the same writes, the same flow control (pause/resume_writing
        # on its buffered ciphertext); a client must finish its handshake within
        # the header timeout, as it must finish its head.
        tls_options: dict[str, Any] = (
            {"ssl": self.tls, "ssl_handshake_timeout": self.limits.header_timeout} if self.tls else {}
        )
        if self.sock is not None:
            self._listener = await self.loop.create_server(
                lambda: HTTPConnection(self), sock=self.sock, backlog=self.backlog, **tls_options
            )
        else:
            self._listener = await self.loop.create_server(
                lambda: HTTPConnection(self),
                self.host,
                self.port,
                backlog=self.backlog,
                reuse_address=True,
                **tls_options,
            )
        sweeper = self.loop.create_task(self._sweep())
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.stop)
        if self.port == 0:  # --port 0: the kernel chose; say which
            self.port = int(self._listener.sockets[0].getsockname()[1])
        if self.sock is None:
            announce(self.host, self.port, tls=self.tls is not None)
        try:
            await self._stop.wait()
            await self._shutdown()
        finally:
            sweeper.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.remove_signal_handler(sig)
            await lifespan.shutdown()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def _shutdown(self) -> None:
        self.stopping = True
        deadline = self.loop.time() + self.grace
        if self._listener is not None:
            self._listener.close()
        for conn in tuple(self.connections):
            conn.stop_keep_alive()
        done = asyncio.Event()
        self.app.begin_shutdown(then=done.set)  # goodbye to every subscriber, streams end
        await _wait(done.wait(), deadline - self.loop.time())
        self._all_gone = asyncio.Event()
        if self.connections:
            await _wait(self._all_gone.wait(), deadline - self.loop.time())
        for conn in tuple(self.connections):  # past the grace period
            if conn.transport is not None:
                conn.transport.abort()
        if self._listener is not None:
            await _wait(self._listener.wait_closed(), 1.0)


async def _wait(awaitable: Any, timeout: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(awaitable, max(timeout, 0.0))
