"""A client-only program pays for the client only: ``import sse_fast`` loads no server.

Each check runs in a fresh interpreter (``sys.modules`` of this one already
holds everything), and reads which modules the import left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import sse_fast

SERVER_SIDE = (
    "granian",
    "redis",
    "hiredis",
    "uvloop",
    "httptools",
    "jwt",
    "sse_fast.hub",
    "sse_fast.stores",
    "sse_fast.engines",
    "sse_fast.native",
    "sse_fast.server",
    "sse_fast.asgi",
)
"""Packages and modules only a server needs."""


def loaded_after(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    modules: list[str] = json.loads(proc.stdout.splitlines()[-1])
    return modules


def server_side(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == s or m.startswith(s + ".") for s in SERVER_SIDE)]


@pytest.mark.parametrize(
    "statement",
    [
        "import sse_fast",
        "import sse_fast.client",
        "from sse_fast import Client, SyncClient, ServerSentEvent, EventParser, SSEFastError",
        "from sse_fast.sync_client import SyncClient",
        "import sse_fast.cli",  # sse-fast listen and sse-fast push
    ],
)
def test_client_imports_load_no_server(statement: str) -> None:
    modules = loaded_after(statement)
    assert "sse_fast._core" in modules
    assert server_side(modules) == []


def test_the_hub_loads_when_asked_for() -> None:
    modules = loaded_after("from sse_fast import Hub, Event, SHUTDOWN_EVENT\nassert Hub.__name__ == 'Hub'")
    assert "sse_fast.hub" in modules
    assert "granian" not in modules  # the hub is not the HTTP edge


def test_every_public_name_resolves() -> None:
    for name in sse_fast.__all__:
        assert getattr(sse_fast, name) is not None, name
    assert set(sse_fast.__all__) <= set(dir(sse_fast))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = sse_fast.no_such_name
