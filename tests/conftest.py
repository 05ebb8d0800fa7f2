"""Fixtures shared by the end-to-end tests: real ``sse-fast serve`` processes on free loopback ports."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from sse_fast import EventParser, ServerSentEvent

HOST = "127.0.0.1"
LISTENING = re.compile(rb"listening on https?://127\.0\.0\.1:(\d+)")
"""The line ``sse-fast serve`` prints once it listens (with ``--port 0``: on the port it got)."""
ALL_ENGINES = ("granian", "native")


def _engines_to_test() -> tuple[str, ...]:
    """``$SSE_FAST_TEST_ENGINES`` (comma-separated), else every engine."""
    given = os.environ.get("SSE_FAST_TEST_ENGINES")
    if not given:
        return ALL_ENGINES
    engines = tuple(name.strip() for name in given.split(",") if name.strip())
    unknown = set(engines) - set(ALL_ENGINES)
    if unknown or not engines:
        raise pytest.UsageError(
            f"SSE_FAST_TEST_ENGINES: one or more of {', '.join(ALL_ENGINES)}, not {given!r}"
        )
    return engines


ENGINES = _engines_to_test()
"""``sse-fast serve --engine`` values: tests starting our own server run once per engine
(``SSE_FAST_TEST_ENGINES=native`` narrows them, as CI's run on the oldest Python does)."""
HEARTBEAT = b": heartbeat\n\n"
"""The comment the hub sends after silence (and on connect, when it sends no ``retry:``)."""
OPENING = re.compile(rb": heartbeat\n\n(?:retry: (\d+)\n\n)?")
"""A stream's first bytes: the heartbeat, then the stream's ``retry:`` when the server sends one."""


def split_opening(raw: bytes) -> tuple[int | None, bytes]:
    """A stream's ``retry:`` (None when its first frame has none) and what came after that frame."""
    match = OPENING.match(raw)
    assert match is not None, f"not a stream's first frame: {raw[:80]!r}"
    retry = match.group(1)
    return (int(retry) if retry is not None else None), raw[match.end() :]


def free_port() -> int:
    """A TCP port that was free a moment ago on the loopback interface."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def accepts_connections(port: int, host: str = HOST) -> bool:
    """Whether something listens on ``host:port`` right now."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def reachable_redis(url: str) -> str:
    """``url`` if a Redis answers there; otherwise fail under CI and skip elsewhere."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis at {url} unreachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return url


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s: {predicate}")


class ServerProcess:
    """One ``sse-fast serve`` (or any ASGI app under granian) in its own process group.

    Ours is started with ``--port 0`` and reports the port it got on stdout
    (``listening on http://HOST:PORT``), so no two tests can race for one; a
    foreign ``command`` gets a port that was free a moment ago.  A restart
    keeps the port, as clients that reconnect expect.
    """

    _logs = itertools.count(1)

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        command: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.args = args
        self.scheme = "http"
        self.verify: ssl.SSLContext | bool = True
        """What httpx checks the server's certificate against: a self-signed ``--tls-cert`` is its own CA."""
        if "--tls-cert" in args:
            self.scheme = "https"
            self.verify = ssl.create_default_context(cafile=args[args.index("--tls-cert") + 1])
        self.cwd = cwd
        self.command = command
        self.port = port or (free_port() if command is not None else 0)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cwd / f"server-{next(self._logs)}.log"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        command = self.command or [sys.executable, "-m", "sse_fast", "serve", "--log-level", "warning"]
        argv = [*command, "--host", HOST, "--port", str(self.port), *self.args]
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while self.port == 0:
            self._check_alive(timeout, deadline)
            found = LISTENING.search(self.log.read_bytes()[offset:])
            if found:
                self.port = int(found.group(1))
            else:
                time.sleep(0.02)
        while True:
            self._check_alive(timeout, deadline)
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"{self.url}/healthz", timeout=1.0, verify=self.verify)
                if answer.status_code in (200, 401, 404):
                    return self
            time.sleep(0.05)

    def _check_alive(self, timeout: float, deadline: float) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server did not answer within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the main process (as an operator would) and wait for the whole group."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._kill_group()

    def kill(self) -> None:
        """SIGKILL every process of the server (a crash: nothing gets to clean up)."""
        self._kill_group()
        if self.proc is not None:
            self.proc.wait(5)

    def _kill_group(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def restart(self) -> ServerProcess:
        self.kill()
        return self.start()

    def stats(self, **headers: str) -> dict[str, Any]:
        """``GET /stats``: a JSON object, typed as the hub's own ``Hub.snapshot()`` is."""
        response = httpx.get(f"{self.url}/stats", headers=headers, timeout=5.0, verify=self.verify)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def push(
        self, events: list[dict[str, object]], uids: list[str] | None = None, token: str | None = None
    ) -> httpx.Response:
        body: dict[str, object] = {"events": events}
        if uids is not None:
            body["uids"] = uids
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.post(f"{self.url}/push", json=body, headers=headers, timeout=10.0, verify=self.verify)


class RecordingSink:
    """A subscriber sink for in-process hub tests: keeps what was written and whether it was closed."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True


class StreamReader:
    """A subscriber over a real socket: collects the raw body and the parsed events in a thread."""

    def __init__(
        self, url: str, headers: dict[str, str] | None = None, verify: ssl.SSLContext | bool = True
    ) -> None:
        self.url = url
        self.headers = headers or {}
        self.raw = bytearray()
        self.events: list[ServerSentEvent] = []
        self.status: int | None = None
        self.response_headers: httpx.Headers | None = None
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._parser = EventParser()
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=None), verify=verify)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._connected = threading.Event()
        self._thread.start()
        self._connected.wait(10)

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self.url, headers=self.headers) as response:
                self.status = response.status_code
                self.response_headers = response.headers
                self._connected.set()
                for chunk in response.iter_raw():
                    with self._lock:
                        self.raw += chunk
                        self.events += self._parser.feed(chunk)
                    if self._stop:
                        break
        except BaseException as exc:  # reported to the test
            self.error = exc
        finally:
            self._connected.set()
            self.ended.set()

    def received(self) -> list[ServerSentEvent]:
        """The events so far, without the markers of :func:`nothing_else_arrived`."""
        with self._lock:
            return [e for e in self.events if e.event != MARKER_EVENT]

    @property
    def comments(self) -> int:
        return self._parser.comments

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Wait until the server registered this subscriber: its connect heartbeat arrived.

        The hub sends that heartbeat as it registers the subscriber, so events
        pushed from now on reach it.  Unlike ``stats()["connections"]`` this
        holds on a server other tests use too.
        """
        wait_until(lambda: OPENING.match(self.raw) is not None or self.ended.is_set(), timeout)
        assert OPENING.match(self.raw), f"not subscribed (status {self.status}): {self.raw!r}"

    def wait_events(self, count: int, timeout: float = 10.0) -> list[ServerSentEvent]:
        wait_until(lambda: len(self.events) >= count or self.ended.is_set(), timeout)
        with self._lock:
            assert len(self.events) >= count, f"got {len(self.events)} events, wanted {count}: {self.raw!r}"
            return list(self.events)

    def close(self) -> None:
        """Stop reading; the thread ends at its next chunk or when the server goes."""
        self._stop = True
        self._client.close()
        self._thread.join(0.2)


MARKER_EVENT = "test-marker"
_markers = itertools.count(1)


def nothing_else_arrived(server: ServerProcess, *readers: StreamReader) -> None:
    """Wait until whatever was pushed so far has reached ``readers``, without sleeping.

    A broadcast marker is pushed and awaited on each reader: one connection's
    events arrive in push order, so anything pushed before it has arrived by
    then.  Read the events with :meth:`StreamReader.received`, which leaves
    markers out.
    """
    n = str(next(_markers))
    assert server.push([{"event": MARKER_EVENT, "data": n}]).status_code == 200

    def marker_arrived(reader: StreamReader) -> Callable[[], bool]:
        return lambda: any(e.event == MARKER_EVENT and e.json() == n for e in reader.events)

    for reader in readers:
        wait_until(marker_arrived(reader))


_uids = itertools.count(1)


def unique_uid(name: str = "user") -> str:
    """A uid no other test uses: tests on a :func:`shared_serve` server must not see each other's events."""
    return f"{name}-{next(_uids)}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engines(*names): run only on these sse-fast serve engines")
    config.addinivalue_line("markers", "foreign_server: serve(command=...) runs another server, once")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that starts ``sse-fast serve`` once per engine.

    ``@pytest.mark.engines(...)`` narrows the engines (tests/test_native_engine.py);
    ``@pytest.mark.foreign_server`` marks tests whose ``serve(command=...)`` runs
    another server (tests/test_mounted.py): they run once.  ``shared_serve`` is
    parametrised the same way, per module, so that pytest groups a module's
    tests by engine and starts each shared server once.
    """
    if metafunc.definition.get_closest_marker("foreign_server"):
        return
    marker = metafunc.definition.get_closest_marker("engines")
    engines = ENGINES if marker is None else tuple(e for e in marker.args if e in ENGINES)
    if "serve" in metafunc.fixturenames:
        metafunc.parametrize("serve", engines, indirect=True)
    if "shared_serve" in metafunc.fixturenames:
        metafunc.parametrize("shared_serve", engines, indirect=True, scope="module")


class Serve(Protocol):
    """The ``serve`` fixture: start a server of this test's own."""

    def __call__(
        self, *args: str, command: list[str] | None = None, port: int | None = None
    ) -> ServerProcess: ...


class SharedServe(Protocol):
    """The ``shared_serve`` fixture: the module's running server for these arguments."""

    def __call__(self, *args: str) -> ServerProcess: ...


class Subscribe(Protocol):
    """The ``subscribe`` fixture: open a stream (``last_event_id=`` sends ``Last-Event-ID:``)."""

    def __call__(self, url: str, **headers: str) -> StreamReader: ...


@pytest.fixture
def serve(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Serve]:
    """Start ``sse-fast serve`` with the given arguments; every server is killed at teardown."""
    servers: list[ServerProcess] = []
    engine: str | None = getattr(request, "param", None)

    def start(*args: str, command: list[str] | None = None, port: int | None = None) -> ServerProcess:
        if command is None and engine is not None:
            args = (*args, "--engine", engine)
        server = ServerProcess(list(args), tmp_path, command, port)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


@pytest.fixture(scope="module")
def shared_serve(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedServe]:
    """``sse-fast serve`` shared by a module's tests on one engine: one server per set of arguments.

    Starting a server costs ~0.5-1 s; tests that only push and read can use a
    running one.  Such a test uses uids of its own (:func:`unique_uid`),
    leaves the server running as it found it (no stop, kill or restart) and
    asserts no figure that other tests move: a reader another test closed may
    count in ``connections`` until the server notices (on granian: its next
    write).  Counters only pushes move (``events``) may be compared before and
    after, as tests run one at a time.  A test that needs any of that uses ``serve``.
    """
    engine: str = request.param
    started: list[ServerProcess] = []
    servers: dict[tuple[str, ...], ServerProcess] = {}

    def running(*args: str) -> ServerProcess:
        server = servers.get(args)
        if server is None:
            cwd = tmp_path_factory.mktemp(f"shared-{engine}")
            server = ServerProcess([*args, "--engine", engine], cwd)
            started.append(server)
            servers[args] = server.start()
        assert server.proc is not None and server.proc.poll() is None, "a test ended the shared server"
        return server

    yield running
    for server in started:
        server.kill()


@pytest.fixture
def subscribe() -> Iterator[Subscribe]:
    """Open subscriber streams; all are closed at teardown."""
    readers: list[StreamReader] = []

    def open_stream(url: str, **headers: str) -> StreamReader:
        reader = StreamReader(url, {k.replace("_", "-"): v for k, v in headers.items()})
        readers.append(reader)
        return reader

    yield open_stream
    for reader in readers:
        reader.close()
