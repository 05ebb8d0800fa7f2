"""``sse-fast serve --tls-cert/--tls-key``: HTTPS on both engines, HTTP/2 by ALPN on granian.

Certificates are made at test time (:mod:`_certs`); servers are real
processes on loopback.  What is checked: bad files are one-line startup
errors; a push over HTTPS reaches HTTPS subscribers of every client we ship
(async, sync, ``sse-fast listen``, ``sse-fast push``); a client that does not
trust the certificate stops with the reason; granian speaks HTTP/2 and
HTTP/1.1 on one port, and a reset HTTP/2 stream frees its subscriber within a
heartbeat while its connection stays open, as quickly as an HTTP/1.1 close; the
native engine offers HTTP/1.1 only, and drops a client that stops reading
over TLS as a slow consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import orjson
import pytest

from _certs import CertificateFiles, other_key, self_signed
from conftest import (
    ENGINES,
    HOST,
    OPENING,
    Serve,
    ServerProcess,
    SharedServe,
    StreamReader,
    unique_uid,
    wait_until,
)
from sse_fast import Client, ServerSentEvent, SyncClient, client_cli
from sse_fast.config import ServeConfig
from sse_fast.errors import ClientStoppedError
from sse_fast.tls import client_verify

LIMIT = 20.0
CLI = [sys.executable, "-m", "sse_fast"]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return self_signed(tmp_path_factory.mktemp("tls"))


def trusting(cert: CertificateFiles, alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cert.cert)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def https_server(shared_serve: SharedServe, cert: CertificateFiles) -> ServerProcess:
    return shared_serve("--store", "none", *cert.serve_args)


# ------------------------------------------------------------ configuration


def test_tls_needs_the_certificate_and_its_key(cert: CertificateFiles) -> None:
    with pytest.raises(ValueError, match=r"^--tls-key: required with --tls-cert"):
        ServeConfig(store=None, tls_cert=cert.cert).validate()
    with pytest.raises(ValueError, match=r"^--tls-cert: required with --tls-key"):
        ServeConfig(store=None, tls_key=cert.key).validate()
    ServeConfig(store=None, tls_cert=cert.cert, tls_key=cert.key).validate()


def test_unusable_files_are_refused_naming_the_option_and_the_reason(
    cert: CertificateFiles, tmp_path: Path
) -> None:
    def refused(cert_file: str, key_file: str) -> str:
        with pytest.raises(ValueError) as caught:
            ServeConfig(store=None, tls_cert=cert_file, tls_key=key_file).validate()
        return str(caught.value)

    missing = str(tmp_path / "missing.crt")
    assert refused(missing, cert.key) == f"--tls-cert: cannot read {missing}: No such file or directory"
    assert refused(cert.key, cert.key).startswith(f"--tls-cert: {cert.key} holds no PEM certificate")
    stranger = other_key(tmp_path)
    assert (
        refused(cert.cert, stranger)
        == f"--tls-key: {stranger} is not the key of the certificate in {cert.cert}"
    )
    assert refused(cert.cert, cert.cert) == f"--tls-key: {cert.cert} holds no PEM private key"
    locked = other_key(tmp_path, password=b"secret")  # OpenSSL would prompt for it on the terminal
    assert refused(cert.cert, locked) == (
        f"--tls-key: {locked} is encrypted; give the key unencrypted, in a file only the server may read"
    )


def test_http2_is_offered_by_default_with_tls_only(cert: CertificateFiles) -> None:
    assert ServeConfig(store=None).http_mode == "1"
    assert ServeConfig(store=None, tls_cert=cert.cert, tls_key=cert.key).http_mode == "auto"
    assert ServeConfig(store=None, tls_cert=cert.cert, tls_key=cert.key, http="1").http_mode == "1"
    native = ServeConfig(store=None, engine="native", tls_cert=cert.cert, tls_key=cert.key)
    native.validate()  # TLS, HTTP/1.1
    native.http = "auto"
    with pytest.raises(ValueError, match=r"^--http: the native engine speaks HTTP/1\.1 only"):
        native.validate()


def test_a_ca_file_that_cannot_be_used_is_named(tmp_path: Path) -> None:
    assert client_verify() is True
    assert client_verify(insecure=True) is False
    with pytest.raises(ValueError, match=r"^--cacert: cannot use .*missing\.pem"):
        client_verify(str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match=r"^verify: cannot use"):
        SyncClient("https://127.0.0.1:1/events", verify=str(tmp_path / "missing.pem"))


@pytest.mark.parametrize("engine", ENGINES)
def test_serve_with_a_key_of_another_certificate_exits_with_one_line(
    engine: str, cert: CertificateFiles, tmp_path: Path
) -> None:
    stranger = other_key(tmp_path)
    args = ["serve", "--engine", engine, "--port", "0", "--tls-cert", cert.cert, "--tls-key", stranger]
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=LIMIT)
    assert done.returncode == 2
    assert done.stdout == ""
    assert (
        done.stderr
        == f"sse-fast serve: --tls-key: {stranger} is not the key of the certificate in {cert.cert}\n"
    )


# --------------------------------------------------------------- end to end


def test_a_push_over_https_reaches_every_client_we_ship(
    shared_serve: SharedServe, cert: CertificateFiles
) -> None:
    server = https_server(shared_serve, cert)
    assert f"listening on https://{HOST}:{server.port}" in server.output()
    uid = unique_uid("tls")
    url = f"{server.url}/events?uid={uid}"
    opened = threading.Barrier(3, timeout=LIMIT)
    got: dict[str, ServerSentEvent] = {}

    def sync_subscriber() -> None:
        with SyncClient(url, verify=cert.cert, timeout=LIMIT) as client:
            client.on_open(opened.wait)
            for event in client:
                got["sync"] = event
                return

    async def async_subscriber() -> None:
        async with Client(url, verify=trusting(cert), timeout=LIMIT) as client:
            await asyncio.to_thread(opened.wait)
            async for event in client:
                got["async"] = event
                return

    listener = subprocess.Popen(
        [*CLI, "listen", url, "--json", "-v", "--cacert", cert.cert, "--max-attempts", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    threads = [
        threading.Thread(target=sync_subscriber, daemon=True),
        threading.Thread(
            target=lambda: asyncio.run(asyncio.wait_for(async_subscriber(), LIMIT)), daemon=True
        ),
    ]
    try:
        for thread in threads:
            thread.start()
        opened.wait()  # both clients' streams are open: the hub registered them first
        assert listener.stdout is not None and listener.stderr is not None
        while "connected to" not in (line := listener.stderr.readline()):
            assert line, "sse-fast listen ended before it connected"
        pushed = push_cli(
            server, "--uid", uid, "--event", "hello", "--data", '{"n": 1}', "--cacert", cert.cert
        )
        assert pushed.returncode == 0, pushed.stderr
        assert orjson.loads(pushed.stdout)["code"] == 0
        shown = orjson.loads(listener.stdout.readline())
        assert (shown["event"], orjson.loads(shown["data"])) == ("hello", {"n": 1})
        for thread in threads:
            thread.join(LIMIT)
        assert {k: (e.event, e.json()) for k, e in got.items()} == {
            "sync": ("hello", {"n": 1}),
            "async": ("hello", {"n": 1}),
        }
    finally:
        listener.kill()
        listener.wait(LIMIT)


def push_cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``sse-fast push URL ARGS`` in this process (the function the CLI runs: no interpreter to start)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = client_cli.main(["push", server.url, *args])
    return subprocess.CompletedProcess(
        ["sse-fast", "push", server.url, *args], code, out.getvalue(), err.getvalue()
    )


def test_a_client_that_does_not_trust_the_certificate_stops_with_the_reason(
    shared_serve: SharedServe, cert: CertificateFiles
) -> None:
    server = https_server(shared_serve, cert)
    url = f"{server.url}/events?uid={unique_uid('untrusting')}"
    with SyncClient(url, timeout=LIMIT) as client, pytest.raises(ClientStoppedError) as stopped:
        next(iter(client))
    assert "CERTIFICATE_VERIFY_FAILED" in str(stopped.value)
    assert client.attempts == 1  # not retried: the same certificate would fail the same way
    refused = push_cli(server, "--data", "1")
    assert refused.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    assert push_cli(server, "--data", "1", "--insecure").returncode == 0


# ------------------------------------------------------------ granian: HTTP/2


@pytest.mark.engines("granian")
def test_granian_speaks_http2_and_http11_on_one_port(
    shared_serve: SharedServe, cert: CertificateFiles
) -> None:
    server = https_server(shared_serve, cert)
    with httpx.Client(http2=True, verify=trusting(cert)) as h2_client:
        assert h2_client.get(f"{server.url}/healthz").http_version == "HTTP/2"
        uid = unique_uid("h2")
        with h2_client.stream("GET", f"{server.url}/events?uid={uid}", timeout=LIMIT) as response:
            assert response.http_version == "HTTP/2"
            assert "connection" not in response.headers  # connection-specific headers are not HTTP/2's
            chunks = response.iter_bytes()
            assert OPENING.fullmatch(next(chunks))
            assert server.push([{"event": "over-h2", "data": 1}], uids=[uid]).status_code == 200
            assert b"event: over-h2\ndata: 1\n\n" in next(chunks)
    with httpx.Client(verify=trusting(cert)) as h1_client:
        assert h1_client.get(f"{server.url}/healthz").http_version == "HTTP/1.1"


class H2Connection:
    """One HTTP/2 connection over TLS (``h2``), driven from the test's thread; streams reset as browsers do.

    httpx/httpcore close a stream by forgetting it, without ``RST_STREAM``:
    the server would keep it until the connection ends.  A browser's
    ``EventSource.close()`` sends ``RST_STREAM(CANCEL)``, which is what this does.
    """

    def __init__(self, server: ServerProcess, cert: CertificateFiles) -> None:
        raw = socket.create_connection((HOST, server.port), timeout=LIMIT)
        self.sock = trusting(cert, ["h2"]).wrap_socket(raw, server_hostname=HOST)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.authority = f"{HOST}:{server.port}"
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.data: dict[int, bytearray] = {}
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())

    def get(self, path: str) -> int:
        stream_id: int = self.h2.get_next_available_stream_id()
        self.data[stream_id] = bytearray()
        headers = [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", self.authority)]
        self.h2.send_headers(stream_id, headers, end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        return stream_id

    def reset(self, stream_id: int) -> None:
        self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self.sock.sendall(self.h2.data_to_send())

    def received(self, stream_id: int) -> bytes:
        """What ``stream_id`` received so far, after reading what the server sent within 20 ms."""
        self.sock.settimeout(0.02)
        with contextlib.suppress(TimeoutError, socket.timeout):
            while chunk := self.sock.recv(65536):
                for event in self.h2.receive_data(chunk):
                    if isinstance(event, h2.events.DataReceived):
                        self.data[event.stream_id] += event.data
                        self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self.sock.sendall(self.h2.data_to_send())
        return bytes(self.data[stream_id])

    def close(self) -> None:
        self.sock.close()


HEARTBEAT_SECONDS = 1.0


def time_to_notice(server: ServerProcess, expected: int) -> float:
    """Seconds until ``/stats`` counts ``expected`` connections (polled every 10 ms, within one heartbeat)."""
    started = time.monotonic()
    wait_until(lambda: server.stats()["connections"] == expected, timeout=HEARTBEAT_SECONDS, interval=0.01)
    return time.monotonic() - started


@pytest.mark.engines("granian")
def test_a_reset_http2_stream_is_noticed_as_quickly_as_a_closed_http11_connection(
    serve: Serve, cert: CertificateFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve("--store", "none", "--heartbeat", str(HEARTBEAT_SECONDS), *cert.serve_args)
    connection = H2Connection(server, cert)
    try:
        kept, closed = connection.get("/events?uid=kept"), connection.get("/events?uid=closed")
        wait_until(lambda: connection.received(kept) and connection.received(closed))
        assert server.stats()["connections"] == 2
        connection.reset(closed)
        h2_seconds = time_to_notice(server, 1)
        # The connection and its other stream live on.
        assert server.push([{"event": "still", "data": 1}], uids=["kept"]).status_code == 200
        wait_until(lambda: b"event: still" in connection.received(kept))
    finally:
        connection.close()
    time_to_notice(server, 0)
    h1 = trusting(cert).wrap_socket(socket.create_connection((HOST, server.port)), server_hostname=HOST)
    h1.sendall(b"GET /events?uid=h1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert h1.recv(4096).startswith(b"HTTP/1.1 200")
    wait_until(lambda: server.stats()["connections"] == 1)
    h1.close()
    h1_seconds = time_to_notice(server, 0)
    with capsys.disabled():
        h2_ms, h1_ms = h2_seconds * 1000, h1_seconds * 1000
        print(f"\n  noticed: reset HTTP/2 stream {h2_ms:.0f} ms, closed HTTP/1.1 {h1_ms:.0f} ms")


# ------------------------------------------------------- native: HTTP/1.1 over TLS


@pytest.mark.engines("native")
def test_the_native_engine_offers_http11_only(shared_serve: SharedServe, cert: CertificateFiles) -> None:
    server = https_server(shared_serve, cert)
    offering_h2 = trusting(cert, ["h2", "http/1.1"])
    with (
        socket.create_connection((HOST, server.port)) as raw,
        offering_h2.wrap_socket(raw, server_hostname=HOST) as sock,
    ):
        assert sock.selected_alpn_protocol() == "http/1.1"
    with httpx.Client(http2=True, verify=trusting(cert)) as client:
        assert client.get(f"{server.url}/healthz").http_version == "HTTP/1.1"


@pytest.mark.engines("native")
def test_a_tls_handshake_that_never_comes_is_cut_after_the_header_timeout(
    serve: Serve, cert: CertificateFiles
) -> None:
    """granian cuts it too, after its own fixed 10 s (measured; not ``--header-timeout``)."""
    server = serve("--store", "none", "--header-timeout", "0.5", *cert.serve_args)
    with socket.create_connection((HOST, server.port), timeout=LIMIT) as silent:
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert silent.recv(1) == b""
        assert 0.4 < time.monotonic() - started < 2.0
    assert httpx.get(f"{server.url}/healthz", verify=server.verify).status_code == 200


STUCK_PUSHES = 6
"""1 MiB pushes: more than the kernel's buffers on loopback and the TLS transport's high-water mark."""


def test_a_client_that_stops_reading_over_tls_is_dropped_as_slow(
    serve: Serve, cert: CertificateFiles
) -> None:
    """The TLS transport's buffer passes its high-water mark, the subscriber stalls and is dropped."""
    server = serve("--store", "none", "--heartbeat", "0.5", "--max-body", "4000000", *cert.serve_args)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((HOST, server.port))
    stuck = trusting(cert).wrap_socket(raw, server_hostname=HOST)
    stuck.sendall(b"GET /events?uid=stuck HTTP/1.1\r\nHost: x\r\n\r\n")
    healthy = StreamReader(f"{server.url}/events?uid=fine", verify=trusting(cert))
    try:
        wait_until(lambda: server.stats()["connections"] == 2)
        big = "x" * 1024 * 1024
        for n in range(STUCK_PUSHES):
            assert server.push([{"event": "big", "data": {"n": n, "pad": big}}]).status_code == 200
        assert [e.json()["n"] for e in healthy.wait_events(STUCK_PUSHES, timeout=30)] == list(
            range(STUCK_PUSHES)
        )
        wait_until(lambda: server.stats()["slow_consumers"] == 1, timeout=15)
        assert server.stats()["connections"] == 1
    finally:
        healthy.close()
        stuck.close()
