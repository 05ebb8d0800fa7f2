"""Redis over TLS (``rediss://``) and with a password, end to end.

Each test runs its own ``redis-server`` speaking TLS only (no plain port: a
client that fell back to plain text could not connect at all), with a
self-signed certificate for 127.0.0.1 (:mod:`_certs`) and, but for one
variant, ``--requirepass`` with URL-special characters, percent-encoded in
the URL.  The store URL is the one an operator writes:
``rediss://:PASSWORD@host:port/0?prefix=P&ssl_ca_certs=/path/ca.pem``.

What is checked, on both engines: a push reaches a subscriber, a resume with
``Last-Event-ID`` gets what it missed (read from Redis over TLS), and the bus
(a client of its own) follows with no error; two nodes on one prefix share
their pushes; a wrong password or a certificate the CA file does not vouch
for stops ``serve`` at startup with the reason, and under a running server
makes pushes and ``/readyz`` answer 503 (JSON, bounded time), the reason in
``/stats``, until Redis is right again.  The password is never in the
server's output or in ``/stats``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from _certs import CertificateFiles, self_signed
from conftest import Serve, ServerProcess, Subscribe, wait_until
from sse_fast.stores import open_store
from test_redis_failures import RedisServer, push, push_until_accepted

pytestmark = pytest.mark.redis

PASSWORD = "p@ss:w/rd?#[]%&=+"
"""Every character here means something in a URL: the URL carries it percent-encoded."""
WRONG_PASSWORD = "n0t-%the@one"
NEW_PASSWORD = "rotated:@/%"
SECRETS = [
    form for secret in (PASSWORD, WRONG_PASSWORD, NEW_PASSWORD) for form in (secret, quote(secret, safe=""))
]
"""What must never come out of the server: each password as given and as written in the URL."""


@dataclass(frozen=True)
class Certificates:
    redis: CertificateFiles
    """What the Redis serves; its own CA (self-signed), which the store URL names."""
    stranger: CertificateFiles
    """Another self-signed certificate for 127.0.0.1: a CA that vouches for nothing the Redis serves."""


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("redis-tls")
    return Certificates(self_signed(directory, "redis"), self_signed(directory, "stranger"))


@pytest.fixture
def tls_redis(tmp_path: Path, certificates: Certificates) -> Iterator[Callable[..., RedisServer]]:
    """Start TLS-only Redis servers (``password=``: with ``--requirepass``); all killed at teardown."""
    started: list[RedisServer] = []

    def start(password: str | None = PASSWORD) -> RedisServer:
        directory = tmp_path / f"redis-{len(started)}"
        directory.mkdir()
        server = RedisServer(directory, password=password, tls=certificates.redis)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


def new_prefix() -> str:
    return f"tls-{uuid.uuid4().hex[:12]}"


def assert_no_secret_shown(server: ServerProcess) -> None:
    shown = {"output": server.output(), "/stats": json.dumps(server.stats())}
    for where, text in shown.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in the server's {where}"


def ready(server: ServerProcess) -> httpx.Response:
    return httpx.get(f"{server.url}/readyz", timeout=5)


def assert_refused_while(server: ServerProcess, reason: str) -> None:
    """Pushes answer 503 JSON quickly and /readyz 503, naming the store; /stats says why, as does the bus."""
    wait_until(lambda: ready(server).status_code == 503, timeout=10)
    assert ready(server).json() == {"code": 503, "msg": "store: unavailable", "data": {}}
    started = time.monotonic()
    refused = push(server, 99)
    assert time.monotonic() - started < 10
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/json"
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["msg"].startswith("store: unavailable")
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # still serving its streams
    store = server.stats()["store"]
    assert store["available"] is False and reason in store["error"], store
    wait_until(lambda: reason in (server.stats()["node"]["bus_error"] or ""), timeout=10)
    log = server.output()  # what an operator reads first: one warning from the store, one from the bus
    assert re.search(rf"store unavailable, pushes answer 503 until it is back: [^\n]*{reason}", log), log
    assert re.search(rf"bus: cannot follow the store, [^\n]*{reason}", log), log


def assert_following(server: ServerProcess) -> None:
    wait_until(lambda: server.stats()["node"]["bus_error"] is None, timeout=10)
    node = server.stats()["node"]
    assert node["bus"] == "following" and node["bus_error"] is None, node


# ------------------------------------------------------------------ working


@pytest.mark.parametrize("password", [None, PASSWORD], ids=["tls", "tls-password"])
def test_pushes_resumes_and_the_bus_all_go_over_tls(
    serve: Serve, subscribe: Subscribe, tls_redis: Callable[..., RedisServer], password: str | None
) -> None:
    redis_server = tls_redis(password)
    prefix = new_prefix()
    server = serve("--store", redis_server.store_url(prefix))
    live = subscribe(f"{server.url}/events?uid=u")
    live.wait_subscribed()
    first = push_until_accepted(server, 1)
    assert [(e.id, e.json()) for e in live.wait_events(1)] == [(first, 1)]  # through the bus's XREAD

    missed = [push_until_accepted(server, n) for n in (2, 3)]
    resumed = subscribe(f"{server.url}/events?uid=u", last_event_id=first)
    assert [(e.id, e.json()) for e in resumed.wait_events(2)] == [(missed[0], 2), (missed[1], 3)]
    assert redis_server.client().xlen("{" + prefix + "}:stream") == 3  # the history is in this Redis

    assert_following(server)
    assert server.stats()["store"] == {"available": True, "error": None}
    assert_no_secret_shown(server)


@pytest.mark.foreign_server  # one granian node and one native node, both in this one test
def test_two_nodes_on_one_rediss_prefix_share_their_pushes(
    serve: Serve, subscribe: Subscribe, tls_redis: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL given as README's *Secrets off the command line* advises: in ``SSE_FAST_STORE``."""
    monkeypatch.setenv("SSE_FAST_STORE", tls_redis().store_url(new_prefix()))
    granian = serve("--engine", "granian", "--node-id", "g")
    native = serve("--engine", "native", "--node-id", "n")
    readers = [subscribe(f"{node.url}/events?uid=u") for node in (granian, native)]
    for reader in readers:
        reader.wait_subscribed()
    ids = [push_until_accepted(granian, 1), push_until_accepted(native, 2)]
    for reader in readers:
        assert [(e.id, e.json()) for e in reader.wait_events(2)] == [(ids[0], 1), (ids[1], 2)]
    # presence, on each bus's own client: the other node's lease is read back
    wait_until(lambda: granian.stats()["cluster"]["nodes"] == ["g", "n"], timeout=10)
    for node in (granian, native):
        assert_following(node)
        assert_no_secret_shown(node)


# ------------------------------------------------------------------ refused


@pytest.mark.parametrize(
    "refusal, reason",
    [("wrong password", "AuthenticationError"), ("untrusted certificate", "CERTIFICATE_VERIFY_FAILED")],
)
def test_a_refusal_at_startup_stops_serve_with_the_reason(
    serve: Serve,
    tls_redis: Callable[..., RedisServer],
    certificates: Certificates,
    refusal: str,
    reason: str,
) -> None:
    """Like a Redis unreachable at startup: the hub cannot open its history, so the server exits
    (non-zero, within seconds) rather than listen with a store it will never reach as configured."""
    redis_server = tls_redis()
    if refusal == "wrong password":
        url = redis_server.store_url(new_prefix(), password=WRONG_PASSWORD)
    else:
        url = redis_server.store_url(new_prefix(), ca=certificates.stranger.cert)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^server exited with [1-9]") as exited:
        serve("--store", url)
    assert time.monotonic() - started < 15
    output = str(exited.value)
    assert re.search(rf"RedisStore: open: Redis unavailable \([^\n]*{reason}", output), output
    for secret in SECRETS:
        assert secret not in output


def test_a_refusal_at_startup_stops_serve_with_workers_too(
    serve: Serve, tls_redis: Callable[..., RedisServer]
) -> None:
    """``--workers 2``: workers that cannot start are not started again forever (the native
    engine's parent did, behind a port that accepted connections and never answered them)."""
    url = tls_redis().store_url(new_prefix(), password=WRONG_PASSWORD)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^server exited with [1-9]") as exited:
        serve("--store", url, "--workers", "2")
    assert time.monotonic() - started < 15
    output = str(exited.value)
    assert "RedisStore: open: Redis unavailable (AuthenticationError" in output
    for secret in SECRETS:
        assert secret not in output


def test_a_password_changed_under_a_running_server_is_503_until_it_is_right_again(
    serve: Serve, subscribe: Subscribe, tls_redis: Callable[..., RedisServer]
) -> None:
    redis_server = tls_redis()
    server = serve("--store", redis_server.store_url(new_prefix()), "--heartbeat", "1")
    live = subscribe(f"{server.url}/events?uid=u")
    push_until_accepted(server, 1)
    live.wait_events(1)

    admin = redis_server.client()
    admin.config_set("requirepass", NEW_PASSWORD)
    admin.client_kill_filter(_type="normal", skipme=True)  # the server's connections must log in again
    assert_refused_while(server, "AuthenticationError")
    beats = live.comments
    wait_until(lambda: live.comments > beats, timeout=5)  # the stream stays open and heartbeated
    assert not live.ended.is_set()
    assert_no_secret_shown(server)

    admin.config_set("requirepass", PASSWORD)  # this connection is still logged in
    back = push_until_accepted(server, 2)
    assert [e.id for e in live.wait_events(2)][1:] == [back]
    wait_until(lambda: ready(server).status_code == 200, timeout=5)
    assert_following(server)


def test_a_redis_restarted_with_a_certificate_the_ca_does_not_vouch_for_is_503(
    serve: Serve, subscribe: Subscribe, tls_redis: Callable[..., RedisServer], certificates: Certificates
) -> None:
    redis_server = tls_redis()
    server = serve("--store", redis_server.store_url(new_prefix()))
    push_until_accepted(server, 1)

    redis_server.kill()
    redis_server.tls = certificates.stranger  # same port, another certificate
    redis_server.start()
    assert_refused_while(server, "CERTIFICATE_VERIFY_FAILED")
    assert_no_secret_shown(server)

    redis_server.kill()
    redis_server.tls = certificates.redis
    redis_server.start()  # empty: a new history, which the server adopts
    live = subscribe(f"{server.url}/events?uid=u")
    live.wait_subscribed()
    back = push_until_accepted(server, 2)
    wait_until(lambda: back in [e.id for e in live.received()], timeout=10)  # after a reset, maybe
    wait_until(lambda: ready(server).status_code == 200, timeout=5)
    assert_following(server)


def test_a_client_key_passphrase_in_a_rediss_url_is_never_shown() -> None:
    """redis-py takes the passphrase of a client key (mutual TLS) as ``ssl_password=``."""
    url = "rediss://:pw@127.0.0.1:6380/0?ssl_keyfile=client.key&ssl_password=KEY-PASSPHRASE&max_age=x"
    with pytest.raises(ValueError, match="max_age") as refused:
        open_store(url)
    assert "KEY-PASSPHRASE" not in str(refused.value)
    assert "ssl_password=***" in str(refused.value)
