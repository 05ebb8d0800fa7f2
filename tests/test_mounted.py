"""The hub mounted in a Starlette application, under granian and under uvicorn."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from conftest import Serve, Subscribe, wait_until

pytestmark = pytest.mark.foreign_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SERVERS = {
    "granian": [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--working-dir",
        str(EXAMPLES),
        "--log-level",
        "warning",
        "starlette_app:app",
    ],
    "uvicorn": [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(EXAMPLES),
        "--log-level",
        "warning",
        "starlette_app:app",
    ],
}


@pytest.mark.parametrize("server_name", sorted(SERVERS))
def test_application_routes_push_through_the_mounted_hub(
    serve: Serve, subscribe: Subscribe, server_name: str
) -> None:
    server = serve(command=SERVERS[server_name])
    alice = subscribe(f"{server.url}/sse/events?uid=alice")
    bob = subscribe(f"{server.url}/sse/events?uid=bob")
    assert alice.status == bob.status == 200
    wait_until(lambda: httpx.get(f"{server.url}/sse/stats").json()["connections"] == 2)

    shipped = httpx.post(f"{server.url}/orders/alice/17/ship")
    assert shipped.status_code == 200
    [event] = alice.wait_events(1)
    assert event.event == "order" and event.json() == {"order": "17", "status": "shipped"}
    assert event.id == shipped.json()["ids"][0]

    httpx.post(f"{server.url}/announce", json={"text": "hello"})
    assert [e.event for e in bob.wait_events(1)] == ["announcement"]
    assert alice.wait_events(2)[-1].json() == {"text": "hello"}

    # The mounted push API works too, and the application hears of what failed.
    body = {"uids": ["carol"], "events": [{"event": "x", "data": 1}]}
    answer = httpx.post(f"{server.url}/sse/push", json=body)
    assert answer.status_code == 200
    httpx.post(f"{server.url}/orders/dave/1/ship")
    failed = httpx.get(f"{server.url}/failures").json()
    assert {(f["uid"], f["reason"]) for f in failed} == {("carol", "offline"), ("dave", "offline")}


@pytest.mark.parametrize("server_name", sorted(SERVERS))
def test_a_gone_client_is_forgotten_at_once(serve: Serve, server_name: str) -> None:
    import socket

    server = serve(command=SERVERS[server_name])
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /sse/events?uid=z HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_until(lambda: httpx.get(f"{server.url}/sse/stats").json()["connections"] == 1)
    sock.close()
    # The hub's heartbeat is 15 s: only the disconnect watcher can be this quick.
    wait_until(lambda: httpx.get(f"{server.url}/sse/stats").json()["connections"] == 0, timeout=5)


@pytest.mark.parametrize("server_name", sorted(SERVERS))
def test_the_api_description_names_the_mount_point(serve: Serve, server_name: str) -> None:
    server = serve(command=SERVERS[server_name])
    answer = httpx.get(f"{server.url}/sse/openapi.json")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["servers"] == [{"url": "/sse"}]  # paths are relative to it
    assert {"/events", "/push", "/openapi.json"} <= set(doc["paths"])
    # The document's own path, resolved against its server URL, is where it was fetched from.
    assert httpx.get(f"{server.url}{doc['servers'][0]['url']}/openapi.json").json() == doc
