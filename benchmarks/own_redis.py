"""What a benchmark starts for itself on loopback: a free port, and a ``redis-server`` of its own.

Never the shared Redis at 6379: a benchmark's Redis keeps nothing on disk and
goes with its run.  ``fanout.py``, ``cluster_bench.py``, ``failover.py`` and
``resume_burst.py`` take both from here.
"""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def redis_server_argv(port: int, executable: str = "redis-server") -> list[str]:
    """A redis-server on loopback at ``port``, without persistence (no RDB snapshots, no AOF)."""
    return [executable, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"]
