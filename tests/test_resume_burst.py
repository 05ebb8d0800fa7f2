"""Hundreds of subscribers resuming at once on one node with a Redis store (the clients of a node
that died): every one gets its replay, none is ended, and pushes meanwhile are accepted.

Runs ``benchmarks/resume_burst.py`` (its own ``redis-server`` and a native node): on redis-py's
default pool (100 connections, failing at once past them) 300 resumes ended 200 streams and
refused a push with 503.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "resume_burst.py"

pytestmark = pytest.mark.redis


def test_three_hundred_resumes_at_once_all_get_their_replay() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--resumes", "300"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "{'every event once, in order': 300}" in done.stdout
