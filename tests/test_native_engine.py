"""The native engine's own HTTP/1.1 behaviour: limits, timeouts, keep-alive, pipelining, wire format.

Everything the two engines share (routes, auth, resend, shutdown) is tested
on both by the other end-to-end modules; these tests are about what the
native engine does itself, over raw sockets where byte-level behaviour counts.
Tests that need no option of their own share one server (``shared_serve``),
each with uids of its own.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import httpx
import pytest

from _raw_http import Responses, closed_by_server, connect
from conftest import (
    HOST,
    OPENING,
    Serve,
    ServerProcess,
    SharedServe,
    Subscribe,
    split_opening,
    unique_uid,
    wait_until,
)
from sse_fast.engines.native.wire import LAST_CHUNK, chunk, encode_head

pytestmark = pytest.mark.engines("native")


def shared(shared_serve: SharedServe) -> ServerProcess:
    """This module's shared server: no history, every other option the default."""
    return shared_serve("--store", "none")


def unicast(uid: str, event: str, data: int) -> bytes:
    """A /push body for one event to ``uid``."""
    return b'{"uids":["%s"],"events":[{"event":"%s","data":%d}]}' % (uid.encode(), event.encode(), data)


def push_request(body: bytes, extra: str = "") -> bytes:
    return (
        f"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# ------------------------------------------------------------------ wire


def test_chunk_framing_and_heads_are_byte_exact() -> None:
    assert chunk(b"abc") == b"3\r\nabc\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"
    assert encode_head(431, [(b"content-length", b"0")]) == (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"
    )


def test_stream_is_chunked_on_the_wire(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    sock = connect(server)
    sock.sendall(f"GET /events?uid={unique_uid()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while not (b"\r\n\r\n" in data and data.endswith(b"\n\n\r\n")):
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    _, _, payload = body[: -len(b"\r\n")].partition(b"\r\n")
    assert OPENING.fullmatch(payload) and body == chunk(payload), body
    sock.close()


def test_http_1_0_client_gets_a_close_delimited_stream(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    sock = connect(server)
    sock.sendall(f"GET /events?uid={unique_uid()} HTTP/1.0\r\n\r\n".encode())
    data = b""
    while not (b"\r\n\r\n" in data and data.endswith(b"\n\n")):
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert OPENING.fullmatch(body), body
    sock.close()


# ----------------------------------------------------------------- limits


def test_slowloris_client_is_closed_after_the_header_timeout(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none", "--header-timeout", "0.5")
    trickling = connect(server)
    trickling.sendall(b"GET /events?uid=slow HTTP/1.1\r\nHost: x\r\n")
    silent = connect(server)
    reader = subscribe(f"{server.url}/events?uid=ok")
    for _ in range(3):  # a byte now and then does not extend the deadline
        time.sleep(0.2)
        try:
            trickling.sendall(b"X")
        except OSError:
            break
    assert closed_by_server(trickling)
    assert closed_by_server(silent)
    # A subscriber that finished its request long ago is not affected.
    assert server.push([{"event": "still", "data": 1}]).status_code == 200
    assert [e.event for e in reader.wait_events(1)] == ["still"]
    assert server.stats()["connections"] == 1


def test_idle_keep_alive_connection_is_closed_after_its_timeout(serve: Serve) -> None:
    server = serve("--store", "none", "--keep-alive-timeout", "0.5")
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    [(status, _, _)] = Responses(sock).read(1)
    assert status == 200
    assert closed_by_server(sock)


def test_oversized_headers_are_431(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    [(status, headers, body)] = Responses(sock).read(1)
    assert status == 431
    assert httpx.Response(200, content=body).json() == {
        "code": 431,
        "msg": "headers: larger than 32768 bytes",
        "data": {},
    }
    assert headers[b"connection"] == b"close"
    assert closed_by_server(sock)

    many = connect(server)
    many.sendall(b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(150)) + b"\r\n")
    [(status, _, body)] = Responses(many).read(1)
    assert status == 431 and b"headers: more than 100" in body


def test_a_header_that_never_ends_is_431_not_buffered(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Endless: ")
    with pytest.raises(OSError):  # the server answers and closes while we are still sending
        for _ in range(64):
            sock.sendall(b"b" * 4096)
            time.sleep(0.005)
    [(status, _, _)] = Responses(sock).read(1)
    assert status == 431


def test_malformed_request_is_400_and_closed(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    sock = connect(server)
    sock.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
    [(status, _, body)] = Responses(sock).read(1)
    assert status == 400 and b'"code":400' in body
    assert closed_by_server(sock)


# ------------------------------------------------------- connection reuse


def test_keep_alive_serves_several_pushes_on_one_connection(
    shared_serve: SharedServe, subscribe: Subscribe
) -> None:
    server = shared(shared_serve)
    uid = unique_uid()
    reader = subscribe(f"{server.url}/events?uid={uid}")
    reader.wait_subscribed()
    sock = connect(server)
    responses = Responses(sock)
    for n in range(3):
        sock.sendall(push_request(unicast(uid, "n", n)))
        status, headers, _ = responses.read(n + 1)[n]
        assert status == 200 and b"connection" not in headers
    assert [e.data for e in reader.wait_events(3)] == ["0", "1", "2"]
    sock.close()


def test_pipelined_requests_are_answered_in_order(shared_serve: SharedServe, subscribe: Subscribe) -> None:
    server = shared(shared_serve)
    uid = unique_uid()
    reader = subscribe(f"{server.url}/events?uid={uid}")
    reader.wait_subscribed()
    sock = connect(server)
    sock.sendall(
        push_request(unicast(uid, "first", 1))
        + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        + push_request(unicast(uid, "second", 2))
    )
    answers = Responses(sock).read(4)
    assert [status for status, _, _ in answers] == [200, 404, 200, 200]
    assert b'"status":"ok"' in answers[2][2]
    assert [e.event for e in reader.wait_events(2)] == ["first", "second"]
    sock.close()


def test_chunked_request_body_is_decoded(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none", "--max-body", "2000")
    reader = subscribe(f"{server.url}/events?uid=c")
    wait_until(lambda: server.stats()["connections"] == 1)
    body = b'{"uids":["c"],"events":[{"event":"chunked","data":"' + b"y" * 300 + b'"}]}'
    sock = connect(server)
    sock.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for start in range(0, len(body), 100):  # chunks in separate segments
        sock.sendall(chunk(body[start : start + 100]))
        time.sleep(0.01)
    sock.sendall(LAST_CHUNK)
    [(status, _, _)] = Responses(sock).read(1)
    assert status == 200
    [event] = reader.wait_events(1)
    assert event.event == "chunked" and event.json() == "y" * 300

    too_big = connect(server)
    too_big.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(OSError):  # the server answers 413 and closes while we are still sending
        for _ in range(40):
            too_big.sendall(chunk(b"z" * 1000))
            time.sleep(0.01)
    [(status, _, body413)] = Responses(too_big).read(1)
    assert status == 413 and b"body" in body413


def test_expect_100_continue_is_honoured(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    sock = connect(server)
    body = b'{"events":[{"event":"x","data":1}]}'
    head = b"POST /push HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
    sock.sendall(head % len(body))
    assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(body)
    [(status, _, _)] = Responses(sock).read(1)
    assert status == 200


# ------------------------------------------------------------- backpressure


def test_a_stuck_client_is_held_busy_by_the_high_water_mark_and_dropped(
    serve: Serve, subscribe: Subscribe
) -> None:
    """No ring overflow here (4096 frames): only the transport's pause keeps the subscriber busy.

    Were the sink to report ready while its transport is paused, the
    subscriber would never stall and would never be dropped.
    """
    server = serve("--store", "none", "--heartbeat", "0.5", "--max-body", "4000000")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect((HOST, server.port))
    stuck.sendall(b"GET /events?uid=stuck HTTP/1.1\r\nHost: x\r\n\r\n")
    healthy = subscribe(f"{server.url}/events?uid=fine")
    wait_until(lambda: server.stats()["connections"] == 2)
    big = "x" * 1024 * 1024
    for n in range(12):
        assert server.push([{"event": "big", "data": {"n": n, "pad": big}}]).status_code == 200
    assert [e.json()["n"] for e in healthy.wait_events(12, timeout=30)] == list(range(12))
    wait_until(lambda: server.stats()["slow_consumers"] == 1, timeout=15)
    stats = server.stats()
    assert stats["connections"] == 1
    assert stats["ring"]["frames"] <= 12
    stuck.close()


# ------------------------------------------------------------------ clients


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_reads_the_stream_to_its_clean_end(serve: Serve) -> None:
    server = serve("--store", "none")
    curl = subprocess.Popen(
        ["curl", "-N", "-s", "-S", "--max-time", "30", f"{server.url}/events?uid=curl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: server.stats()["connections"] == 1)
        [event_id] = server.push([{"event": "hi", "data": {"a": 1}}], uids=["curl"]).json()["data"]["ids"]
        wait_until(lambda: server.stats()["deliveries"] == 1)
        assert server.stop() == 0
        out, err = curl.communicate(timeout=30)
    finally:
        if curl.poll() is None:
            curl.kill()
    assert curl.returncode == 0, err  # 18 would mean the chunked body was cut short
    retry, rest = split_opening(out)
    assert rest == (
        f'id: {event_id}\nevent: hi\ndata: {{"a":1}}\n\n'.encode()
        + f'retry: {retry}\nevent: shutdown\ndata: {{"reason":"server shutting down"}}\n\n'.encode()
    )


def test_httpx_reads_the_stream_and_its_clean_end(serve: Serve) -> None:
    server = serve("--store", "none")
    with (
        httpx.Client(timeout=httpx.Timeout(10.0, read=30.0)) as client,
        client.stream("GET", f"{server.url}/events?uid=h") as response,
    ):
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = response.iter_raw()
        retry, first_rest = split_opening(next(chunks))
        assert first_rest == b""
        wait_until(lambda: server.stats()["connections"] == 1)
        server.push([{"event": "hello", "data": 1}])
        assert next(chunks).endswith(b"event: hello\ndata: 1\n\n")
        assert server.stop() == 0
        rest = b"".join(chunks)  # raises if the body is cut short
    assert rest.startswith(f"retry: {retry}\nevent: shutdown\n".encode())
