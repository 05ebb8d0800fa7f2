"""The async client against our own ``sse-fast serve`` (the ``serve`` fixture of conftest.py).

Covers receiving pushed events and resuming across a server restart: the
client's ``on_reconnect`` callback (awaited before the reconnect delay) holds
the reconnect until the restarted server has stored an event, so the event can
only arrive through the ``Last-Event-ID`` resend, never live.
"""

from __future__ import annotations

import asyncio

import httpx

from conftest import Serve
from sse_fast import ServerSentEvent
from sse_fast.client import Client
from sse_fast.errors import ConnectionLostError

LIMIT = 30.0


async def push(url: str, n: int) -> None:
    body = {"uids": ["1"], "events": [{"event": "x", "data": {"n": n}}]}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{url}/push", json=body, timeout=10.0)
    assert response.status_code == 200, response.text


async def next_x(queue: asyncio.Queue[ServerSentEvent]) -> ServerSentEvent:
    while True:
        event = await asyncio.wait_for(queue.get(), LIMIT)
        if event.event == "x":
            return event


def run_resume_across_restart(serve: Serve, graceful: bool) -> None:
    server = serve()
    events: asyncio.Queue[ServerSentEvent] = asyncio.Queue()
    errors: list[BaseException] = []

    async def main() -> None:
        restarted = asyncio.Event()
        held = asyncio.Event()

        async def hold_first_reconnect(delay: float) -> None:
            if not restarted.is_set():
                held.set()
                await restarted.wait()

        client = Client(f"{server.url}/events?uid=1", retry=0.2, max_retry=1.0)
        client.on("*", events.put_nowait)
        client.on_error(errors.append)
        client.on_reconnect(hold_first_reconnect)
        async with client:
            assert client.state == "open"
            await push(server.url, 1)
            first = await next_x(events)
            assert first.json() == {"n": 1}
            assert first.id and client.last_event_id == first.id

            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, server.stop if graceful else server.kill)
            await asyncio.wait_for(held.wait(), LIMIT)
            assert client.state == "connecting"
            await loop.run_in_executor(None, server.start)
            await push(server.url, 2)  # stored while the client is away
            restarted.set()

            second = await next_x(events)
            assert second.json() == {"n": 2}
            assert second.id != first.id
            assert client.state == "open"

            await push(server.url, 3)  # and live again
            assert (await next_x(events)).json() == {"n": 3}

    asyncio.run(asyncio.wait_for(main(), 3 * LIMIT))
    assert errors and isinstance(errors[0], ConnectionLostError)
    if graceful:
        assert errors[0].going_away


def test_receives_pushed_events(serve: Serve) -> None:
    server = serve()

    async def main() -> ServerSentEvent:
        async with Client(f"{server.url}/events?uid=1") as client:
            await push(server.url, 1)
            async for event in client:
                if event.event == "x":
                    return event
        raise AssertionError("the stream ended")

    event = asyncio.run(asyncio.wait_for(main(), LIMIT))
    assert event.json() == {"n": 1}


def test_resumes_with_last_event_id_after_a_graceful_restart(serve: Serve) -> None:
    run_resume_across_restart(serve, graceful=True)


def test_resumes_with_last_event_id_after_a_crash(serve: Serve) -> None:
    run_resume_across_restart(serve, graceful=False)
