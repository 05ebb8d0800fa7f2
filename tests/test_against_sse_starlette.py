"""The clients against a foreign SSE server: sse-starlette on uvicorn, in a subprocess.

The app sends three events per connection, numbered after the request's
``Last-Event-ID``, then ends the stream; from id 6 on it answers 204.  A client
that resumes correctly therefore sees ids 1..6 exactly once and stops.
sse-starlette frames with CRLF line ends and splits multi-line data itself.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sse_fast import ServerSentEvent
from sse_fast.client import Client
from sse_fast.sync_client import SyncClient

LIMIT = 20.0

APP = """
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route


async def events(request):
    last = int(request.headers.get("last-event-id") or 0)
    if last >= 6:
        return Response(status_code=204)

    async def stream():
        for n in range(last + 1, last + 4):
            yield ServerSentEvent(data=f"n={n}\\nsecond line", event="tick", id=str(n), retry=100)

    return EventSourceResponse(stream(), ping=60)


app = Starlette(routes=[Route("/events", events)])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def starlette_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app_dir: Path = tmp_path_factory.mktemp("sse_starlette_app")
    (app_dir / "sse_app.py").write_text(APP)
    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "sse_app:app", "--app-dir", str(app_dir),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + LIMIT
        while True:
            if proc.poll() is not None:
                assert proc.stderr is not None
                pytest.fail(f"uvicorn exited: {proc.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("uvicorn did not start listening")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/events"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def expected(first: int) -> list[ServerSentEvent]:
    return [
        ServerSentEvent(f"n={n}\nsecond line", event="tick", id=str(n), retry=100) for n in range(first, 7)
    ]


def test_async_client_receives_and_resumes_with_last_event_id(starlette_url: str) -> None:
    opened: list[int] = []

    async def main() -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        async with Client(starlette_url, retry=5.0) as client:
            client.on_open(lambda: opened.append(client.attempts))
            async for event in client:
                out.append(event)
        assert client.last_event_id == "6"
        assert client.retry == 0.1
        return out

    async def bounded() -> list[ServerSentEvent]:
        return await asyncio.wait_for(main(), LIMIT)

    assert asyncio.run(bounded()) == expected(1)
    assert len(opened) == 1  # registered after the first open: it saw the second connection


def test_sync_client_starts_from_a_given_last_event_id(starlette_url: str) -> None:
    events: list[ServerSentEvent] = []
    with SyncClient(starlette_url, last_event_id="3", retry=0.05) as client:
        thread = threading.Thread(target=lambda: events.extend(client), daemon=True)
        thread.start()
        thread.join(LIMIT)
        assert not thread.is_alive()
    assert events == expected(4)
    assert client.error is None
