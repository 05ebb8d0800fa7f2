"""A tiny raw-socket HTTP server that plays scripted byte streams, for client tests.

It is deliberately independent of sse_fast (and of any HTTP library): each
accepted connection gets the next :class:`Reply` of the script (the last one
repeats), whose body pieces are sent one ``send`` at a time with a short pause
so they reach the client as separate reads, split wherever the test wants.
Every request is recorded with its headers and timings.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

HOLD = object()  # body step: keep the connection open until the client goes away or the server stops


@dataclass
class Reply:
    status: str = "200 OK"
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Type", "text/event-stream")])
    body: Sequence[object] = field(default_factory=list)  # bytes to send, float seconds to sleep, or HOLD


@dataclass
class Request:
    line: str
    headers: dict[str, str]
    body: bytes
    arrived: float  # time.monotonic() when the request was read
    last_send: float | None = None  # just before the last body piece was sent (the client has it later)
    finished: float | None = None  # just before the server closed its side (the client cannot see EOF sooner)


class RawServer:
    """Serve ``replies`` in order on 127.0.0.1 (a free port chosen by the OS)."""

    def __init__(self, replies: list[Reply], pause: float = 0.02) -> None:
        self.replies = replies
        self.pause = pause
        self.requests: list[Request] = []
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/events"
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()

    def __enter__(self) -> RawServer:
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._sock.close()

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[Request]:
        """Block until ``n`` requests arrived (AssertionError after ``timeout``)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.requests) >= n, timeout=timeout)
        assert ok, f"expected {n} requests, got {len(self.requests)}"
        return self.requests

    def _accept_loop(self) -> None:
        index = 0
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            reply = self.replies[min(index, len(self.replies) - 1)]
            index += 1
            thread = threading.Thread(target=self._serve, args=(conn, reply), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket, reply: Reply) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(5)
            request = self._read_request(conn)
            if request is None:
                return
            head = f"HTTP/1.1 {reply.status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in reply.headers)
            head += "Connection: close\r\n\r\n"
            try:
                conn.sendall(head.encode("latin-1"))
                for step in reply.body:
                    if step is HOLD:
                        self._hold(conn)
                    elif isinstance(step, float):
                        time.sleep(step)
                    else:
                        assert isinstance(step, bytes)
                        time.sleep(self.pause)
                        request.last_send = time.monotonic()
                        conn.sendall(step)
                time.sleep(self.pause)
                request.finished = time.monotonic()
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _hold(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        while not self._stop.is_set():
            try:
                if conn.recv(4096) == b"":
                    return
            except TimeoutError:
                continue

    def _read_request(self, conn: socket.socket) -> Request | None:
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = conn.recv(4096)
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = conn.recv(4096)
            if not chunk:
                break
            body += chunk
        request = Request(lines[0], headers, body, time.monotonic())
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
        return request
