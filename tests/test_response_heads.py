"""What response heads say on both engines: a ``Date`` on every answer, and HTTP/1.0 keep-alive said aloud.

granian dates its answers and speaks HTTP/1.0 keep-alive itself; the native
engine writes its heads (``engines/native/wire.py``), so these tests hold it
to the same: RFC 9110's IMF-fixdate on every response, streams and errors
included, and an HTTP/1.0 client that asks for ``Connection: keep-alive`` is
told so (with a length) when the connection stays open, and otherwise sees
it closed after the answer.  Raw sockets: the heads are what is tested.
"""

from __future__ import annotations

import email.utils
import re
import time

import pytest

from _raw_http import Responses, closed_by_server, connect
from conftest import ServerProcess, SharedServe, unique_uid
from sse_fast.engines.native.date_header import DateHeader, imf_fixdate
from sse_fast.engines.native.wire import encode_head

IMF_FIXDATE = re.compile(
    rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    rb"\d\d:\d\d:\d\d GMT"
)


def shared(shared_serve: SharedServe) -> ServerProcess:
    """This module's server: no history, keep-alive kept long (a connection held open shows)."""
    return shared_serve("--store", "none", "--keep-alive-timeout", "60", "--header-timeout", "60")


# ------------------------------------------------------------------ Date


def test_imf_fixdate_is_rfc_9110s_form() -> None:
    assert imf_fixdate(784111777) == b"Sun, 06 Nov 1994 08:49:37 GMT"  # RFC 9110's own example


def test_the_date_is_formatted_once_per_second() -> None:
    now = [1000.1]
    date = DateHeader(lambda: now[0])
    first = date()
    now[0] = 1000.9
    assert date() is first  # the same second: the same bytes, not formatted again
    now[0] = 1001.0
    assert date() == imf_fixdate(1001) != first


def test_a_head_carries_the_date_it_is_given() -> None:
    assert encode_head(204, [], b"Sun, 06 Nov 1994 08:49:37 GMT") == (
        b"HTTP/1.1 204 No Content\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
    )


REQUESTS = {
    "healthz": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "not found": b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad push": b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{x}",
    "refused subscribe": b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n",
    "stream": b"GET /events?uid=%s HTTP/1.1\r\nHost: x\r\n\r\n",
    "malformed": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: z\r\n\r\n",
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_every_response_is_dated(shared_serve: SharedServe, name: str) -> None:
    server = shared(shared_serve)
    sock = connect(server)
    request = REQUESTS[name]
    sock.sendall(request % unique_uid().encode() if b"%s" in request else request)
    _, headers = Responses(sock).read_head()
    sock.close()
    date = headers.get(b"date", b"")
    assert IMF_FIXDATE.fullmatch(date), date
    # The server's clock is this machine's: a date far from now would be a stale cache.
    assert abs(email.utils.parsedate_to_datetime(date.decode()).timestamp() - time.time()) < 60


# ------------------------------------------------------------ HTTP/1.0


def test_http_1_0_keep_alive_is_said_and_kept(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    sock = connect(server)
    responses = Responses(sock)
    for n in (1, 2):
        sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = responses.read(n)[-1]
        assert status == 200
        assert headers[b"connection"].lower() == b"keep-alive"
        assert int(headers[b"content-length"]) == len(body)
    # The same connection without keep-alive: answered, then closed (the server does not hold it).
    sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
    status, headers, _ = responses.read(3)[-1]
    assert status == 200
    assert headers.get(b"connection", b"close").lower() == b"close"
    assert closed_by_server(sock)


@pytest.mark.parametrize("keep_alive", [True, False])
def test_http_1_0_refused_subscription_says_what_becomes_of_the_connection(
    shared_serve: SharedServe, keep_alive: bool
) -> None:
    server = shared(shared_serve)
    sock = connect(server)
    extra = b"Connection: keep-alive\r\n" if keep_alive else b""
    sock.sendall(b"GET /events HTTP/1.0\r\n" + extra + b"\r\n")  # no uid: 400
    responses = Responses(sock)
    [(status, headers, _)] = responses.read(1)
    assert status == 400
    if keep_alive:
        assert headers[b"connection"].lower() == b"keep-alive"
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert responses.read(2)[-1][0] == 200
    else:
        assert headers.get(b"connection", b"close").lower() == b"close"
    assert closed_by_server(sock)


def test_http_1_0_push_with_keep_alive_serves_two_on_one_connection(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    sock = connect(server)
    responses = Responses(sock)
    body = b'{"uids":["%s"],"events":[{"event":"x","data":1}]}' % unique_uid().encode()
    request = b"POST /push HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    sock.sendall(request)
    sock.sendall(request)
    answers = responses.read(2)
    assert [status for status, _, _ in answers] == [200, 200]
    assert all(headers[b"connection"].lower() == b"keep-alive" for _, headers, _ in answers)
    sock.close()
