"""``--workers N`` on the native engine: N processes on one port, each with its own listening socket.

The parent reserves the port (bound with ``SO_REUSEPORT``, never listening,
so that ``--port 0`` is resolved once and the port stays ours), forks the
workers, and says where (the ``listening on`` line) once each has its own
socket listening on that port with ``SO_REUSEPORT``: the kernel spreads new
connections evenly over them.  (One socket shared by all let whichever worker
woke first take connections in bursts: at 100,000 subscribers on six workers,
two reached their 20,000 open files while others held 12,000, and refused
the rest.)  The parent serves nothing itself.  A worker's connections still
queued, not yet accepted, when it dies are reset (their clients reconnect).
Each worker is a whole node (its hub follows the
Redis bus, so a push to any worker reaches every worker's subscribers) and
watches the parent (:mod:`sse_fast.parentwatch`), so a SIGKILLed parent leaves
no worker behind.  A worker that dies is started again, unless it was itself
started again and died within ``CRASH_LOOP`` seconds: then no worker can start
(a wrong Redis password, a certificate not trusted, Redis unreachable) and the
server stops with status 1, as granian does, rather than fork workers forever
behind a port that accepts connections and never answers them.
SIGTERM/SIGINT to the parent is passed on to the workers (each says goodbye to
its subscribers) and the parent exits once they have.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable

from ...config import ServeConfig
from ...parentwatch import PARENT_PID_ENV, watch_parent
from ..setup import SHUTDOWN_GRACE, announce

logger = logging.getLogger("sse_fast.native")

RESPAWN_DELAY = 0.5
"""Seconds before a worker that died is started again (a worker that cannot start does not spin)."""
CRASH_LOOP = 5.0
"""Seconds: a worker started again that dies within this of its start means workers cannot start."""


WORKER_LISTEN_WAIT = 10.0
"""Seconds the parent waits for the workers' sockets before it says where it listens anyway."""


def bind_shared(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT``: the parent's (never listening) or a
    worker's (listening next)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def worker_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A worker's own listening socket on the reserved port."""
    sock = bind_shared(host, port)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def run_workers(config: ServeConfig, serve: Callable[[ServeConfig, socket.socket], None]) -> None:
    """Fork ``config.workers`` workers on one port and keep that many running until told to stop."""
    reserved = bind_shared(config.host, config.port)
    config.port = int(reserved.getsockname()[1])
    backlog = max(1024, min(config.max_connections, 65535))
    listening_r, listening_w = os.pipe()  # each new worker writes one byte once its socket listens
    parent = os.getpid()
    os.environ[PARENT_PID_ENV] = str(parent)
    workers: set[int] = set()
    restarted: dict[int, float] = {}  # the workers started again, and when
    stopping = False
    crash_loop = False

    def start_worker(again: bool = False) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                os.close(listening_r)
                reserved.close()
                sock = worker_socket(config.host, config.port, backlog)
                os.write(listening_w, b"l")
                os.close(listening_w)
                watch_parent(parent, grace=SHUTDOWN_GRACE)
                serve(config, sock)
            except BaseException:
                logger.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        workers.add(pid)
        if again:
            restarted[pid] = time.monotonic()

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                workers.discard(pid)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(config.workers):
        start_worker()
    _wait_listening(listening_r, config.workers)
    announce(config.host, config.port, tls=config.tls)
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        workers.discard(pid)
        lived = time.monotonic() - restarted.pop(pid, float("-inf"))
        if stopping:
            continue
        if lived < CRASH_LOOP:
            logger.error(
                "worker %d exited (status %d) %.1f s after it was started again: workers cannot start, "
                "stopping (its error is above)",
                pid,
                status,
                lived,
            )
            crash_loop = True
            stop(signal.SIGTERM, None)
            continue
        logger.warning("worker %d exited (status %d): starting another", pid, status)
        time.sleep(RESPAWN_DELAY)
        if not stopping:
            start_worker(again=True)
    reserved.close()
    os.close(listening_r)
    os.close(listening_w)
    if crash_loop:
        raise SystemExit(1)


def _wait_listening(pipe: int, workers: int) -> None:
    """Until ``workers`` workers said their socket listens (one that fails to start says nothing:
    the wait ends after ``WORKER_LISTEN_WAIT``, and the loop below handles the failure)."""
    deadline = time.monotonic() + WORKER_LISTEN_WAIT
    heard = 0
    while heard < workers:
        left = deadline - time.monotonic()
        if left <= 0:
            logger.warning("%d of %d workers listening after %.0f s", heard, workers, WORKER_LISTEN_WAIT)
            return
        ready, _, _ = select.select([pipe], [], [], left)
        if ready:
            heard += len(os.read(pipe, workers - heard))
