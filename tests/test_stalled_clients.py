"""Clients that never finish their request: cut by the header and body timeouts, never in the way of others.

A request head or body that stops arriving holds a socket until a timeout
ends it: ``--header-timeout`` for the head (granian: also an idle
keep-alive connection), ``--body-timeout`` for the whole body, answered 408.
On granian every open connection also holds a permit of its
``--backpressure``; such sockets must not take them all, or ``/healthz``
goes unanswered.  Both engines, over raw sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from _raw_http import Responses, closed_by_server, connect
from conftest import Serve, ServerProcess, Subscribe
from sse_fast.config import ServeConfig
from sse_fast.deadlines import BodyDeadlines
from sse_fast.engines.granian import FD_RESERVE, backpressure
from sse_fast.errors import HTTPError

STALLED_BODY = (
    b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
)
"""A push announcing 1,000 bytes of body and sending none."""
HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
"""A request head that never ends."""


def assert_timed_out_408(sock: socket.socket, timeout: str) -> None:
    """The server answered 408 in the JSON error format, said ``Connection: close`` and closed."""
    [(status, headers, body)] = Responses(sock).read(1)
    assert status == 408
    assert orjson.loads(body) == {"code": 408, "msg": f"body: not received within {timeout} s", "data": {}}
    assert headers[b"connection"].lower() == b"close"
    assert closed_by_server(sock)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_body_timeout_must_be_a_positive_number_of_seconds(value: float) -> None:
    with pytest.raises(ValueError, match="--body-timeout: must be a positive number of seconds"):
        ServeConfig(store=None, body_timeout=value).validate()


def test_granians_permits_follow_the_open_file_limit() -> None:
    assert backpressure(10_000, 20_000) == 20_000 - FD_RESERVE  # room beside 10,000 subscribers
    assert backpressure(10_000, 4_096) == 10_256  # never fewer than the subscribers and some room


async def never() -> dict[str, object]:
    """A ``receive()`` whose body never comes."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def test_a_late_body_becomes_408_and_the_request_may_still_answer() -> None:
    async def read() -> str:
        deadlines = BodyDeadlines(0.01)
        try:
            await deadlines.receive(never, deadlines.start())
        except HTTPError as exc:
            await asyncio.sleep(0)  # not left cancelled: the 408 can still be sent
            return f"{exc.status} {exc.reason}"
        raise AssertionError("no timeout")

    assert asyncio.run(read()) == "408 body: not received within 0.01 s"


def test_a_cancellation_not_of_the_deadline_is_not_turned_into_408() -> None:
    async def read() -> None:
        deadlines = BodyDeadlines(60)
        task = asyncio.ensure_future(deadlines.receive(never, deadlines.start()))
        await asyncio.sleep(0)
        task.cancel()  # the server cancelling the request
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(read())


def test_a_body_that_never_comes_is_answered_408_and_closed(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none", "--body-timeout", "1")
    stalled = connect(server)
    stalled.sendall(STALLED_BODY)
    assert_timed_out_408(stalled, "1")
    # Nothing of it was delivered, and an ordinary push works afterwards.
    reader = subscribe(f"{server.url}/events?uid=after")
    reader.wait_subscribed()
    assert server.push([{"event": "fine", "data": 1}], uids=["after"]).status_code == 200
    assert [e.event for e in reader.wait_events(1)] == ["fine"]


def test_a_slow_drip_does_not_extend_the_body_deadline(serve: Serve) -> None:
    # One byte every 0.2 s never leaves the connection idle for the 1 s timeout:
    # only a deadline for the whole body ends it.  It is 408 long before the
    # 1,000 bytes could have been dripped (200 s); 50 bytes (10 s) is the bound.
    server = serve("--store", "none", "--body-timeout", "1")
    sock = connect(server)
    sock.sendall(STALLED_BODY)
    sent = 0
    while sent < 50 and not select.select([sock], [], [], 0.2)[0]:
        sock.sendall(b" ")
        sent += 1
    assert sent < 50, "the drip kept the body alive"
    assert_timed_out_408(sock, "1")


def test_a_body_sent_in_parts_within_the_deadline_is_accepted(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none", "--body-timeout", "5")
    reader = subscribe(f"{server.url}/events?uid=parts")
    reader.wait_subscribed()
    body = b'{"uids":["parts"],"events":[{"event":"late","data":2}]}'
    sock = connect(server)
    sock.sendall(STALLED_BODY.replace(b"1000", str(len(body)).encode()) + body[:10])
    time.sleep(0.3)
    sock.sendall(body[10:])
    [(status, _, answer)] = Responses(sock).read(1)
    assert status == 200, answer
    assert [e.event for e in reader.wait_events(1)] == ["late"]


def test_a_head_that_never_ends_is_closed_after_the_header_timeout(serve: Serve) -> None:
    # granian's own default is 30 s (its http1 header read timeout), which the
    # socket limit of these tests (15 s) would not see end.
    server = serve("--store", "none", "--header-timeout", "1")
    silent = connect(server)
    half = connect(server)
    half.sendall(HALF_HEAD)
    assert closed_by_server(silent)
    assert closed_by_server(half)
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


# ------------------------------------------------------------- backpressure

MAX_CONNECTIONS = 10
STALLED = MAX_CONNECTIONS + 256 + 60
"""More stalled sockets than granian's permits used to be (max_connections + 256)."""


@contextlib.contextmanager
def stalled_sockets(server: ServerProcess, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that never finish a request: silent, half a head, or a body that never comes."""
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            sock = connect(server, source=f"127.0.0.{2 + i % 8}")
            sock.sendall((b"", HALF_HEAD, STALLED_BODY)[i % 3])
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_healthz_answers_while_stalled_sockets_outnumber_the_subscriber_limit(serve: Serve) -> None:
    # Long timeouts: the stalled sockets stay open while /healthz is asked.
    server = serve(
        "--store", "none", "--max-connections", str(MAX_CONNECTIONS),
        "--header-timeout", "60", "--body-timeout", "60",
    )  # fmt: skip
    with stalled_sockets(server, STALLED):
        response = httpx.get(f"{server.url}/healthz", timeout=10)
        assert response.status_code == 200
        assert server.push([{"event": "x", "data": 1}]).status_code == 200


def test_stalled_sockets_are_cut_by_the_timeouts(serve: Serve) -> None:
    server = serve(
        "--store", "none", "--max-connections", str(MAX_CONNECTIONS), "--header-timeout", "1",
        "--body-timeout", "1",
    )  # fmt: skip
    with stalled_sockets(server, STALLED) as socks:
        for i, sock in enumerate(socks):
            if i % 3 == 2:  # the body: answered 408 first
                assert_timed_out_408(sock, "1")
            else:
                assert closed_by_server(sock)
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
