"""Redis failing under a running server: flushed, restarted empty, down, hung.

Each test runs its own ``redis-server`` on a free port (never the shared one):
a storage fault is a 503 with a JSON reason and ``Retry-After``, never a 4xx;
streams stay open and heartbeated; a wiped history is adopted (new epoch) and
every subscriber is told with a ``reset``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis

from _certs import CertificateFiles
from conftest import (
    HOST,
    Serve,
    ServerProcess,
    StreamReader,
    Subscribe,
    accepts_connections,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.redis


class RedisServer:
    """A throw-away redis-server, which a test may flush, stop or freeze.

    Without persistence, unless ``durable``: then every write is in its
    append-only file before Redis answers (``appendfsync always``), and a
    restart (:meth:`start` again, same port and directory) loses nothing.
    With ``tls`` it speaks TLS only (no plain port), with that certificate
    (self-signed: its own CA) and no client certificates asked for; change
    ``tls`` before a restart to serve another certificate on the same port.
    """

    def __init__(
        self,
        directory: Path,
        *,
        durable: bool = False,
        password: str | None = None,
        tls: CertificateFiles | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is not installed")
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.durable = durable
        self.password = password
        self.tls = tls

    def start(self) -> RedisServer:
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            listen = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                self.tls.cert,
                "--tls-key-file",
                self.tls.key,
                "--tls-ca-cert-file",
                self.tls.cert,
                "--tls-auth-clients",
                "no",
            ]
        self.proc = subprocess.Popen(
            [
                self.binary,
                *listen,
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "yes" if self.durable else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=10)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:  # refused its options (a build without TLS, say): say so
            pytest.fail(f"redis-server exited with {self.proc.returncode}: {self.proc.args!r}")
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(
            host=HOST,
            port=self.port,
            socket_timeout=2,
            password=self.password,
            ssl=self.tls is not None,
            ssl_ca_certs=None if self.tls is None else self.tls.cert,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)
        wait_until(lambda: not accepts_connections(self.port), timeout=5)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    @property
    def url(self) -> str:
        return self.store_url()

    def store_url(
        self, prefix: str = "failures", *, password: str | None = None, ca: str | None = None
    ) -> str:
        """``--store`` for this Redis: ``rediss://`` trusting ``ca`` (default: its certificate) when it
        speaks TLS, with ``password`` (default: its own) percent-encoded."""
        password = self.password if password is None else password
        secret = f":{quote(password, safe='')}@" if password else ""
        query = f"prefix={quote(prefix, safe='')}"
        if self.tls is not None:  # the form an operator writes: the path's slashes as they are
            query += f"&ssl_ca_certs={quote(ca or self.tls.cert, safe='/')}"
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://{secret}{HOST}:{self.port}/0?{query}"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


def push(server: ServerProcess, n: int, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(f"{server.url}/push", json={"events": [{"event": "n", "data": n}]}, timeout=timeout)


def push_until_accepted(server: ServerProcess, n: int, within: float = 10.0) -> str:
    """Push until the server takes it (a restarted Redis needs a moment); return the id."""
    deadline = time.monotonic() + within
    while True:
        response = push(server, n)
        if response.status_code == 200:
            [event_id] = response.json()["data"]["ids"]
            return str(event_id)
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, f"push still refused after {within} s: {response.text}"
        time.sleep(0.2)


def epoch_of(event_id: str) -> str:
    return event_id.rpartition("-")[0]


def test_flushall_starts_a_new_history_and_tells_subscribers(
    serve: Serve, subscribe: Subscribe, own_redis: RedisServer
) -> None:
    server = serve("--store", own_redis.url, "--heartbeat", "1")
    live: StreamReader = subscribe(f"{server.url}/events?uid=1")
    old_id = push_until_accepted(server, 1)
    live.wait_events(1)

    own_redis.client().flushall()
    # Noticed without a push (the hub checks the store every second): a reset
    # whose id belongs to the new history.
    events = live.wait_events(2, timeout=10)
    reset = events[1]
    assert reset.event == "reset"
    assert reset.json() == {"reason": "history_lost", "last_event_id": old_id}
    new_epoch = epoch_of(reset.id)
    assert new_epoch != epoch_of(old_id)

    new_id = push_until_accepted(server, 2)
    assert epoch_of(new_id) == new_epoch
    assert [(e.event, e.id) for e in live.wait_events(3)[2:]] == [("n", new_id)]

    resumed = subscribe(f"{server.url}/events?uid=1", last_event_id=old_id)
    first, second = resumed.wait_events(2)
    assert first.event == "reset" and first.json()["reason"] == "unknown_epoch"
    assert (second.event, second.id) == ("n", new_id)
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert server.stats()["histories_lost"] == 1


def test_a_push_finds_the_lost_history_itself(
    serve: Serve, subscribe: Subscribe, own_redis: RedisServer
) -> None:
    """Flushed and pushed at once, before the hub's own check: the push still succeeds."""
    server = serve("--store", own_redis.url)
    live = subscribe(f"{server.url}/events?uid=1")
    old_id = push_until_accepted(server, 1)
    own_redis.client().flushall()
    response = push(server, 2)
    assert response.status_code == 200, response.text
    [new_id] = response.json()["data"]["ids"]
    assert epoch_of(new_id) != epoch_of(old_id)
    events = live.wait_events(3)
    assert [e.event for e in events] == ["n", "reset", "n"]
    assert events[2].id == new_id


def test_redis_down_is_503_with_retry_after_and_streams_stay_heartbeated(
    serve: Serve, subscribe: Subscribe, own_redis: RedisServer
) -> None:
    server = serve("--store", own_redis.url, "--heartbeat", "1")
    live = subscribe(f"{server.url}/events?uid=1")
    push_until_accepted(server, 1)
    live.wait_events(1)

    own_redis.kill()
    started = time.monotonic()
    refused = push(server, 2)
    elapsed = time.monotonic() - started
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    body = refused.json()
    assert body["code"] == 503 and body["msg"].startswith("store: unavailable") and body["data"] == {}
    assert elapsed < 10  # well within a publisher's timeout (the closing note reports the figure)

    wait_until(lambda: httpx.get(f"{server.url}/readyz").status_code == 503, timeout=5)
    assert httpx.get(f"{server.url}/readyz").json()["msg"].startswith("store: unavailable")
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # liveness: still serving streams
    beats = live.comments
    wait_until(lambda: live.comments >= beats + 2, timeout=10)
    assert not live.ended.is_set()
    stats = server.stats()
    assert stats["store"] == {"available": False, "error": stats["store"]["error"]}
    assert stats["store_unavailable"] >= 1

    own_redis.start()  # same port, empty: the history is lost as well
    new_id = push_until_accepted(server, 3)
    wait_until(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, timeout=5)
    events = live.wait_events(3)
    assert [e.event for e in events] == ["n", "reset", "n"]
    assert events[2].id == new_id


def test_a_hung_redis_answers_503_in_bounded_time(serve: Serve, own_redis: RedisServer) -> None:
    """SIGSTOPped: connections open but nothing answers; the client's timeouts decide."""
    server = serve("--store", own_redis.url)
    push_until_accepted(server, 1)
    own_redis.freeze()
    try:
        started = time.monotonic()
        refused = push(server, 2)
        elapsed = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.json()["msg"].startswith("store: unavailable")
        assert elapsed < 10
    finally:
        own_redis.thaw()
    push_until_accepted(server, 3)


def test_an_unexpected_store_error_is_a_json_500_and_the_next_push_works(
    serve: Serve, subscribe: Subscribe, own_redis: RedisServer
) -> None:
    """A fault of ours (here: a key of the wrong type under our prefix) is a 5xx in the JSON format."""
    server = serve("--store", own_redis.url)
    live = subscribe(f"{server.url}/events?uid=1")
    push_until_accepted(server, 1)
    client = own_redis.client()
    client.rename("{failures}:stream", "{failures}:saved")
    client.set("{failures}:stream", "not a stream")
    broken = push(server, 2)
    assert broken.status_code == 500, broken.text
    assert broken.headers["content-type"] == "application/json"
    assert broken.json() == {"code": 500, "msg": "server: internal error", "data": {}}
    client.delete("{failures}:stream")
    client.rename("{failures}:saved", "{failures}:stream")
    push_until_accepted(server, 3)
    assert [e.json() for e in live.wait_events(2)] == [1, 3]  # the failed push delivered nothing
