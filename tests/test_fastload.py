"""loadtest/fastload.c, the C load generator: exact counts against a real server and a scripted one.

- Driven by ``loadtest/fastload.py`` (subscribers and publisher in two processes)
  against ``sse-fast serve`` on both engines: every pushed event reaches every
  subscriber once, the report has loadgen's fields.
- The binary alone, unicast batches: the counts add up over distinct uids.
- Against a scripted server: chunked bodies split everywhere, CR / LF / CRLF
  line ends, a BOM, comments, blocks without data, a bad status and a wrong
  content type, the stream's last chunk; pipelined answers with content-length
  or chunked bodies, and 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Serve, free_port

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "loadtest" / "fastload.py"

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None and shutil.which("cc") is None, reason="needs a C compiler"
)


def _load_driver() -> Any:
    sys.path.insert(0, str(ROOT / "loadtest"))
    spec = importlib.util.spec_from_file_location("fastload", DRIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastload"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fastload() -> Any:
    return _load_driver()


def _run_binary(fastload: Any, *args: str, timeout: float = 30) -> dict[str, Any]:
    binary = fastload.build_fastload()
    out = subprocess.run([str(binary), *args], capture_output=True, timeout=timeout, check=True)
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def test_driven_against_sse_fast_counts_what_was_pushed(serve: Serve, fastload: Any) -> None:
    server = serve("--store", "memory://", "--heartbeat", "0.5")
    subscribers, rate, duration = 30, 20.0, 1.5
    cfg = fastload.Config(
        subscribe_url=f"{server.url}/events?uid={{uid}}",
        push_url=f"{server.url}/push",
        subscribers=subscribers,
        rate=rate,
        duration=duration,
        warmup=0.2,
        drain=0.5,
        connect_timeout=10,
        push_inflight=4,
    )
    seen: list[str] = []
    report = asyncio.run(asyncio.wait_for(fastload.run_fast_load(cfg, seen.append), 30))

    assert seen == ["connected", "start", "stop", "drained"]
    assert report["load"] == "c"
    assert report["established"] == subscribers
    assert report["errors"] == 0, report["error_samples"]
    assert report["disconnects"] == 0
    pub = report["publisher"]
    assert pub["offered"] == pub["sent"] == pub["acked"] == int(rate * duration)
    # each push left on schedule or late (by --late-ms; how many are late is the machine's business)
    assert pub["on_schedule"] + pub["late"] == pub["acked"]
    assert pub["schedule_lag_ms"]["p50"] is not None
    assert pub["statuses"] == {"200": pub["acked"]}
    assert report["expected_events"] == pub["acked"] * subscribers
    assert report["events"] == report["expected_events"]
    assert report["delivered_ratio"] == 1.0
    assert report["lat_count"] == report["events"]
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 2000
    assert 0 < pub["push_rtt_ms"]["p50"] <= pub["push_rtt_ms"]["max"] < 2000
    # the comment each stream opens with (a stream that gets events needs no heartbeat)
    assert report["heartbeats"] >= subscribers
    assert 0 < report["events_window"] <= report["events"]
    assert report["window_seconds"] >= duration * 0.9


@pytest.mark.engines("native")
def test_binary_alone_unicast_batches_to_distinct_uids(serve: Serve, fastload: Any) -> None:
    server = serve("--store", "memory://")
    report = _run_binary(
        fastload,
        *("--subscribe-url", f"{server.url}/events?uid={{uid}}", "--push-url", f"{server.url}/push"),
        *("--subscribers", "40", "--mode", "unicast", "--uids-per-push", "7", "--events-per-push", "3"),
        *("--saturate", "--push-conns", "2", "--push-inflight", "4", "--duration", "0.8"),
        *("--warmup", "0.1", "--drain", "0.5"),
    )
    pub = report["publisher"]
    assert report["errors"] == 0, (report["error_samples"], pub["error_samples"])
    assert pub["kind"] == "saturate" and pub["sent"] == pub["acked"] > 20
    # 7 distinct uids and 3 events in each push
    assert report["expected_events"] == pub["acked"] * 21 == report["events"]
    assert report["delivered_ratio"] == 1.0


# --------------------------------------------------------------------------- a scripted server

BOM = b"\xef\xbb\xbf"


def _stream_body(t: float) -> tuple[bytes, int, int, int]:
    """An SSE body with every line ending and block shape; (body, events, events with t, comments)."""
    body = (
        BOM
        + b": hello\n\n"
        + f'id: 1\nevent: tick\ndata: {{"t":{t},"n":1}}\n\n'.encode()
        + f'data: {{"t":{t},\r\ndata: "n":2}}\r\n\r\n'.encode()  # CRLF, two data lines
        + f'data:{{"t": {t}}}\r\rdata\r\r'.encode()  # lone CRs; "data" alone is an empty data field
        + b"event: no-data\nid: 7\n\n"  # a block without data dispatches nothing
        + b":comment\r\n"
        + b"retry: 100\ndata: plain text\n\n"
        + b"data: unterminated"  # never dispatched: the stream ends first
    )
    return body, 5, 3, 2


def _chunked(body: bytes, size: int) -> bytes:
    out = b""
    for i in range(0, len(body), size):
        part = body[i : i + size]
        out += b"%x;ext=1\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


class ScriptedServer:
    """Streams at /events?uid=0, errors at uid 1 and 2; pipelined push answers of three kinds."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.pushes = 0
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = b""
        with conn:
            while not self.stop:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                if head.startswith(b"GET"):
                    self._stream(conn, head)
                    return
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                conn.sendall(self._answer())

    def _answer(self) -> bytes:
        k = self.pushes % 3
        self.pushes += 1
        if k == 0:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
        if k == 1:
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        return b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"

    def _stream(self, conn: socket.socket, head: bytes) -> None:
        uid = head.split(b"uid=")[1].split(b" ")[0]
        if uid == b"1":
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        if uid == b"2":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n")
            return
        body, _, _, _ = _stream_body(time.time())
        wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        wire += _chunked(body, 5)
        for i in range(0, len(wire), 3):  # split everywhere: head, chunk sizes, CR LF pairs
            conn.sendall(wire[i : i + 3])
            time.sleep(0.0005)
        time.sleep(0.2)

    def close(self) -> None:
        self.stop = True
        self.sock.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def test_streams_are_parsed_exactly_and_answers_counted(scripted: ScriptedServer, fastload: Any) -> None:
    url = f"http://127.0.0.1:{scripted.port}"
    report = _run_binary(
        fastload,
        *("--subscribe-url", f"{url}/events?uid={{uid}}", "--push-url", f"{url}/push"),
        *("--subscribers", "3", "--rate", "30", "--duration", "1", "--push-conns", "1"),
        # the drain covers the stream's tail on a slow machine (it takes ~0.3 s here)
        *("--push-inflight", "8", "--warmup", "0", "--drain", "1.5", "--connect-timeout", "5"),
    )
    _, events, with_t, comments = _stream_body(0.0)
    assert report["established"] == 1
    assert report["http_errors"] == 2
    assert report["parse_errors"] == 0, report["error_samples"]
    assert report["events"] == events
    assert report["lat_count"] == with_t
    assert report["heartbeats"] == comments
    assert report["disconnects"] == 1  # the last chunk ended the stream
    assert sum(report["hist"].values()) == with_t
    pub = report["publisher"]
    assert pub["sent"] == 30 and scripted.pushes == 30
    assert pub["statuses"] == {"200": 20, "503": 10}
    assert pub["retry_after"] == 10
    assert pub["acked"] == 20 and pub["failed"] == 10
    assert report["errors"] == 2 + 10


def test_bad_arguments_name_the_option(fastload: Any) -> None:
    binary = fastload.build_fastload()
    out = subprocess.run([str(binary), "--duration", "0"], capture_output=True, timeout=10)
    assert out.returncode == 2 and b"--duration" in out.stderr
    out = subprocess.run([str(binary), "--push-url", "https://x/push", "--rate", "1"], capture_output=True)
    assert out.returncode == 2 and b"--push-url" in out.stderr
    port = free_port()  # nothing listens there
    report = _run_binary(
        fastload,
        *("--subscribe-url", f"http://127.0.0.1:{port}/events?uid={{uid}}", "--subscribers", "2"),
        *("--no-publisher", "--duration", "0.1", "--warmup", "0", "--drain", "0"),
    )
    assert report["established"] == 0 and report["connect_errors"] == 2 and report["errors"] == 2
    assert "connect" in report["error_samples"][0]
    report = _run_binary(
        fastload,
        *("--push-url", f"http://127.0.0.1:{port}/push", "--subscribers", "0", "--rate", "10"),
        *("--duration", "0.2", "--warmup", "0", "--drain", "0"),
    )
    pub = report["publisher"]
    assert pub["connect_errors"] == 4 and pub["sent"] == 0 and pub["offered"] == 2
    assert report["errors"] == 4
    assert "Connection refused" in pub["error_samples"][0]


def test_paced_sequential_publisher_keeps_pace_and_window(scripted: ScriptedServer, fastload: Any) -> None:
    url = f"http://127.0.0.1:{scripted.port}"
    fastload.build_fastload()
    started = time.monotonic()
    report = _run_binary(
        fastload,
        *("--push-url", f"{url}/push", "--subscribers", "0", "--sequential", "--rate", "20"),
        *("--duration", "0.5", "--warmup", "0", "--drain", "0"),
    )
    pub = report["publisher"]
    assert pub["kind"] == "sequential" and pub["connections"] == 1
    assert pub["sent"] == scripted.pushes == 10  # paced: one each 50 ms, not as fast as answered
    assert pub["statuses"] == {"200": 7, "503": 3}
    # the window ends with the last answer, not after the wait for late answers
    assert 0.45 <= report["window_seconds"] < 2.5
    assert time.monotonic() - started < 4.0
