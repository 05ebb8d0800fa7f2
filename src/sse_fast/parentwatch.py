"""Worker processes die with the process that started them.

granian runs the app in worker processes that share the listening socket
with their parent.  When the parent is killed with SIGKILL (a supervisor's
last resort, an OOM kill) nobody stops the workers: they keep serving, and the
server the supervisor starts next listens on the same port beside them, so
subscribers split between two processes.  A worker therefore watches its
parent and, once the parent is gone, stops itself the way SIGTERM would (say
goodbye, stop accepting, exit) and exits hard if that has not happened within
the grace period.

The watch polls ``os.getppid()`` from a daemon thread.  ``PR_SET_PDEATHSIG``
would be quicker but fires when the parent *thread* that forked the worker
ends, which is not the same thing, and it is Linux only; a poll every quarter
second costs four system calls a second and works everywhere.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

PARENT_PID_ENV = "SSE_FAST_PARENT_PID"
"""Set by the process that starts the workers: the pid they must outlive no longer than a moment."""

POLL_INTERVAL = 0.25

logger = logging.getLogger("sse_fast.server")


def watch_parent(parent_pid: int | None = None, *, grace: float = 10.0) -> threading.Thread | None:
    """Stop this process when ``parent_pid`` (default: ``$SSE_FAST_PARENT_PID``) is gone.

    Returns the watching thread, or ``None`` when there is no parent to watch
    (not started by ``sse-fast serve``, or this process is that parent).  A
    parent already gone when the watch starts is noticed at once.
    """
    if parent_pid is None:
        raw = os.environ.get(PARENT_PID_ENV, "")
        if not raw.isdigit():
            return None
        parent_pid = int(raw)
    if parent_pid == os.getpid():
        return None  # we are the parent (a single-process engine): nothing to outlive
    thread = threading.Thread(
        target=_watch, args=(parent_pid, grace), name="sse-fast-parent-watch", daemon=True
    )
    thread.start()
    return thread


def _watch(parent_pid: int, grace: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_INTERVAL)
    logger.warning("parent process %d is gone: stopping this worker (pid %d)", parent_pid, os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)  # the graceful path: goodbye to subscribers, stop accepting
    time.sleep(grace)
    logger.error("worker %d did not stop within %.0f s of its parent's death: exiting", os.getpid(), grace)
    os._exit(70)
