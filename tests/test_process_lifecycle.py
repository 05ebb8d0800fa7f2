"""Processes as a supervisor sees them: a SIGKILLed server leaves nothing behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conftest import Serve, Subscribe, accepts_connections, wait_until


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkill_of_the_server_pid_leaves_no_worker_listening(serve: Serve, subscribe: Subscribe) -> None:
    """A supervisor kills the pid it knows (not the group) and starts a new server on the port."""
    server = serve("--store", "none")
    proc = server.proc
    assert proc is not None
    reader = subscribe(f"{server.url}/events?uid=7")
    wait_until(lambda: server.stats()["connections"] == 1)

    os.kill(proc.pid, signal.SIGKILL)  # only the main process, as a supervisor would
    proc.wait(5)
    wait_until(lambda: not _group_alive(proc.pid), timeout=15)
    assert not accepts_connections(server.port)
    assert reader.ended.wait(5)  # the worker's streams ended with it

    replacement = serve("--store", "none", port=server.port)
    fresh = subscribe(f"{replacement.url}/events?uid=7")
    wait_until(lambda: replacement.stats()["connections"] == 1)
    for _ in range(5):  # every push lands in the one live process
        assert replacement.push([{"event": "n", "data": 1}], uids=["7"]).status_code == 200
    assert len(fresh.wait_events(5)) == 5
    assert replacement.stats()["connections"] == 1


def test_a_worker_whose_parent_is_already_gone_stops_at_once(tmp_path: Path) -> None:
    """The watch notices a parent that died before it started (a race at start-up)."""
    import subprocess
    import sys

    code = (
        "import os, time\n"
        "from sse_fast.parentwatch import watch_parent\n"
        "watch_parent(1 if os.getppid() != 1 else 2, grace=1.0)\n"  # a pid that is not our parent
        "time.sleep(30)\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert result.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 10
    assert "is gone: stopping this worker" in result.stderr


def test_the_listening_announcer_imports_nothing_while_granian_forks() -> None:
    """A module import under way in the parent's announcing thread when granian forks a worker
    leaves that module's import lock held in the worker forever: with ``rediss://`` the
    worker's first TLS connection needs the ``idna`` codec the announcer's first
    ``getaddrinfo`` imported, and hung at startup (about one start in three, granian only)."""
    import subprocess
    import sys

    code = (
        "import socket, sys, threading\n"
        "from sse_fast.engines.setup import announce_when_listening\n"
        "imported = []\n"
        "def note(event, args):\n"
        "    if event == 'import' and threading.current_thread().name == 'sse-fast-announce':\n"
        "        imported.append(args[0])\n"
        "sys.addaudithook(note)\n"
        "listener = socket.create_server(('127.0.0.1', 0))\n"
        "announce_when_listening('127.0.0.1', listener.getsockname()[1], timeout=5).join(5)\n"
        "print('imported in the thread:', imported)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert "listening on http://127.0.0.1:" in result.stdout  # the thread did connect and announce
    assert "imported in the thread: []" in result.stdout, result.stdout
