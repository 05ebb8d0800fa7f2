"""Loop lag under big pushes: how long ``/healthz`` waits while a push of many recipients is served.

One ``sse-fast serve`` process (pinned to core 0 with ``taskset``) holds
``--subscribers`` streams (uids ``u0`` ... in a child process on core 1,
reading and dropping what arrives).  A probe thread sends ``GET /healthz``
every ``--probe-interval`` seconds over one keep-alive connection and times
each answer; a publisher meanwhile sends ``--pushes`` pushes of each shape,
one after the other, waiting ``--settle`` seconds after each answer.  A push
of ``E x U`` is ``E`` events to ``U`` uids drawn from ``u0`` ...
``u<--universe - 1>`` (the first ``U`` of a fixed shuffle), so with 10,000
subscribers of a universe of 100,000 about a tenth of the uids are online and
the rest offline; ``E x 0`` is a broadcast of ``E`` events.  What the probe
saw while each shape was served (from the first push sent to ``--settle``
after the last answer) is reported: the worst and the p99 answer time, the
median push answer time, and the statuses.  An idle window before the pushes
gives the floor.  The server's ``--heartbeat`` is 600 s unless told otherwise:
the sweep that heartbeats every subscriber at once (~0.1 s at 10,000 on a
small VM) is a stall of its own, and would otherwise land in one of the shapes.

Every server runs once per engine and store (``--engines``, ``--stores``:
``memory``, ``sqlite`` in a temporary directory, ``redis`` on ``--redis-url``
under a fresh key prefix that is deleted afterwards)::

    ulimit -n 20000
    python benchmarks/loop_lag.py                                       # 2 engines x 3 stores, ~6 min
    python benchmarks/loop_lag.py --engines native --stores memory --shapes 1x100000
    python benchmarks/loop_lag.py --json build/bench/loop_lag.json

``--serve-args`` adds options to ``sse-fast serve`` (e.g. ``--max-recipients 1000000``);
``--python`` runs another interpreter's sse_fast (a checkout to compare with).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

HOST = "127.0.0.1"
LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
DEFAULT_SHAPES = "1x100000,10x10000,1000x100"


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------- the server


class Server:
    """``sse-fast serve`` on a free port, pinned to one core, in its own process group."""

    def __init__(self, args: argparse.Namespace, engine: str, store: str, log: Path) -> None:
        cmd = [
            args.python,
            "-m",
            "sse_fast",
            "serve",
            "--engine",
            engine,
            "--store",
            store,
            "--port",
            "0",
            "--host",
            HOST,
            "--max-connections",
            str(args.subscribers + 1000),
            "--no-dashboard",
            "--heartbeat",
            str(args.heartbeat),
            "--log-level",
            "warning",
            *shlex.split(args.serve_args),
        ]
        if shutil.which("taskset") and args.server_core >= 0:
            cmd = ["taskset", "-c", str(args.server_core), *cmd]
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,
            start_new_session=True,
        )
        self.port = 0

    def wait_listening(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-2000:]
                raise RuntimeError(f"server exited with {self.proc.returncode}: {tail}")
            found = LISTENING.search(self.log.read_bytes())
            if found:
                self.port = int(found.group(1))
                return
            time.sleep(0.05)
        raise RuntimeError("server did not listen in time")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._out.close()


# --------------------------------------------------------------------------- subscribers


class _Drop(asyncio.Protocol):
    """One stream: counted once its response head arrived; the rest is read and dropped."""

    def __init__(self, counts: dict[str, int], ready: asyncio.Event, n: int) -> None:
        self.counts = counts
        self.ready = ready
        self.n = n
        self.head = True

    def data_received(self, data: bytes) -> None:
        self.counts["bytes"] += len(data)
        if self.head and b"\r\n\r\n" in data:
            self.head = False
            self.counts["connected"] += 1
            if self.counts["connected"] >= self.n:
                self.ready.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.counts["lost"] += 1


async def _hold_subscribers(port: int, n: int, sources: int) -> None:
    """The child: open ``n`` streams, say so on stdout, hold them until stdin closes."""
    loop = asyncio.get_running_loop()
    counts = {"connected": 0, "lost": 0, "bytes": 0}
    ready = asyncio.Event()
    sem = asyncio.Semaphore(256)

    async def one(i: int) -> None:
        request = f"GET /events?uid=u{i} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
        async with sem:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((f"127.0.0.{2 + i % sources}", 0))
            await loop.sock_connect(sock, (HOST, port))
            transport, _ = await loop.create_connection(lambda: _Drop(counts, ready, n), sock=sock)
            transport.write(request)

    await asyncio.gather(*(one(i) for i in range(n)))
    await asyncio.wait_for(ready.wait(), 60)
    print(f"connected {counts['connected']}", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    print(json.dumps(counts), flush=True)


def subscribers_main(port: int, n: int, sources: int) -> None:
    import uvloop

    raise_nofile()
    uvloop.run(_hold_subscribers(port, n, sources))


class Subscribers:
    """The child process that holds the streams (on ``--load-core``)."""

    def __init__(self, args: argparse.Namespace, port: int) -> None:
        cmd = [sys.executable, __file__, "--hold-subscribers", str(port), str(args.subscribers)]
        if shutil.which("taskset") and args.load_core >= 0:
            cmd = ["taskset", "-c", str(args.load_core), *cmd]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=raise_nofile, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("connected"):
            raise RuntimeError(f"subscribers failed: {line!r}")

    def stop(self) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait(timeout=30)
        with contextlib.suppress(ValueError):
            return dict(json.loads(out.strip().splitlines()[-1]))
        return {}


# --------------------------------------------------------------------------- HTTP


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length (or chunked) body, read from ``sock``."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lower = head.lower()
    found = re.search(rb"content-length:\s*(\d+)", lower)
    if found:
        length = int(found.group(1))
        body = bytearray(rest)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            body += chunk
        buf[:] = body[length:]
        return status, bytes(body[:length])
    # chunked (granian answers small JSON bodies with a length; this is a fallback)
    body = bytearray()
    data = bytearray(rest)
    while True:
        while b"\r\n" not in data:
            data += sock.recv(65536)
        size_line, _, data = bytes(data).partition(b"\r\n")
        data = bytearray(data)
        size = int(size_line.split(b";")[0], 16)
        while len(data) < size + 2:
            data += sock.recv(65536)
        body += data[:size]
        data = data[size + 2 :]
        if size == 0:
            buf[:] = data
            return status, bytes(body)


class Connection:
    """One keep-alive HTTP/1.1 connection (reconnects when the server closes it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def request(self, method: str, path: str, body: bytes = b"", timeout: float = 60.0) -> tuple[int, bytes]:
        for attempt in range(2):
            if self.sock is None:
                self.sock = socket.create_connection((HOST, self.port), timeout=timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.buf = bytearray()
            head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
            if body:
                head += "Content-Type: application/json\r\n"
            try:
                self.sock.sendall(head.encode() + b"\r\n" + body)
                return _read_response(self.sock, self.buf)
            except (ConnectionError, OSError):
                self.sock.close()
                self.sock = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


@dataclass
class Probe:
    """``GET /healthz`` every ``interval`` seconds; (sent at, answer time) pairs."""

    port: int
    interval: float
    samples: list[tuple[float, float]] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = Connection(self.port)
        while not self._stop.is_set():
            sent = time.perf_counter()
            try:
                status, _ = conn.request("GET", "/healthz", timeout=30)
            except OSError:
                self.failures += 1
                continue
            took = time.perf_counter() - sent
            if status != 200:
                self.failures += 1
            self.samples.append((sent, took))
            pause = self.interval - took
            if pause > 0:
                time.sleep(pause)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def window(self, start: float, end: float) -> list[float]:
        return [took for sent, took in self.samples if start <= sent <= end]


def summary(times: list[float]) -> dict[str, Any]:
    if not times:
        return {"probes": 0, "worst_ms": None, "p99_ms": None, "p50_ms": None}
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "probes": len(ordered),
        "worst_ms": round(ordered[-1] * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
    }


# --------------------------------------------------------------------------- pushes


def parse_shape(text: str) -> tuple[int, int]:
    events, _, uids = text.partition("x")
    return int(events), int(uids)


def push_body(events: int, uids: int, universe: list[str], round_: int) -> bytes:
    payload: dict[str, Any] = {
        "events": [{"event": "bulk", "data": {"n": n, "round": round_}} for n in range(events)]
    }
    if uids:
        payload["uids"] = universe[:uids]
    return orjson.dumps(payload)


def run_shape(
    port: int, probe: Probe, shape: str, universe: list[str], pushes: int, settle: float
) -> dict[str, Any]:
    events, uids = parse_shape(shape)
    bodies = [push_body(events, uids, universe, r) for r in range(pushes)]
    conn = Connection(port)
    statuses: list[int] = []
    answers: list[float] = []
    messages: list[str] = []
    wall_start = time.time()
    start = time.perf_counter()
    for body in bodies:
        sent = time.perf_counter()
        status, answer = conn.request("POST", "/push", body)
        answers.append(time.perf_counter() - sent)
        statuses.append(status)
        if status != 200:
            with contextlib.suppress(ValueError, KeyError):
                messages.append(str(orjson.loads(answer)["msg"]))
        time.sleep(settle)
    end = time.perf_counter()
    conn.close()
    lag = summary(probe.window(start, end))
    return {
        "shape": shape,
        "events": events,
        "uids": uids,
        "recipients": events * (uids or 1),
        "body_bytes": len(bodies[0]),
        "statuses": sorted(set(statuses)),
        "messages": sorted(set(messages)),
        "push_p50_ms": round(statistics.median(answers) * 1000, 2),
        "push_max_ms": round(max(answers) * 1000, 2),
        "window": [wall_start, time.time()],
        **lag,
    }


# --------------------------------------------------------------------------- the run


def store_url(kind: str, tmp: Path, prefix: str, redis_url: str) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'loop_lag.db'}"
    if kind == "redis":
        return f"{redis_url}?prefix={prefix}"
    raise ValueError(f"--stores: unknown store {kind!r}")


def delete_redis_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match="{" + prefix + "}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def run_one(args: argparse.Namespace, engine: str, store: str, universe: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="loop_lag-") as tmp_name:
        tmp = Path(tmp_name)
        prefix = f"looplag-{uuid.uuid4().hex[:8]}"
        log_dir = args.log_dir or tmp
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"server-{engine}-{store}.log"
        server = Server(args, engine, store_url(store, tmp, prefix, args.redis_url), log)
        try:
            server.wait_listening()
            subs = Subscribers(args, server.port)
            try:
                probe = Probe(server.port, args.probe_interval)
                probe.start()
                time.sleep(1.0)
                idle_start = time.perf_counter()
                time.sleep(args.idle)
                idle = summary(probe.window(idle_start, time.perf_counter()))
                shapes = [
                    run_shape(server.port, probe, shape, universe, args.pushes, args.settle)
                    for shape in args.shapes.split(",")
                ]
                probe.stop()
            finally:
                counts = subs.stop()
            log_tail = server.log.read_text(errors="replace")[-1500:]
        finally:
            server.stop()
            if store == "redis":
                delete_redis_prefix(args.redis_url, prefix)
    return {
        "engine": engine,
        "store": store,
        "idle": idle,
        "shapes": shapes,
        "probe_failures": probe.failures,
        "subscriber_bytes": counts.get("bytes"),
        "subscribers_lost": counts.get("lost"),
        "server_log_tail": log_tail if "Traceback" in log_tail else "",
    }


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| engine | store | shape | recipients | status | push p50 ms | /healthz worst ms "
        "| /healthz p99 ms |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for res in results:
        idle = res["idle"]
        lines.append(
            f"| {res['engine']} | {res['store']} | idle | - | - | - | {idle['worst_ms']} | {idle['p99_ms']} |"
        )
        for s in res["shapes"]:
            status = ",".join(str(x) for x in s["statuses"])
            lines.append(
                f"| {res['engine']} | {res['store']} | {s['shape']} | {s['recipients']:,} | {status} | "
                f"{s['push_p50_ms']} | {s['worst_ms']} | {s['p99_ms']} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="granian,native")
    ap.add_argument("--stores", default="memory,sqlite,redis")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="EVENTSxUIDS,... (UIDS 0: broadcast)")
    ap.add_argument("--subscribers", type=int, default=10_000)
    ap.add_argument("--universe", type=int, default=100_000, help="uids u0 .. u<N-1> the pushes draw from")
    ap.add_argument("--pushes", type=int, default=5, help="pushes of each shape")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds after each push's answer")
    ap.add_argument("--idle", type=float, default=2.0, help="seconds of idle probing before the pushes")
    ap.add_argument("--probe-interval", type=float, default=0.005)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    ap.add_argument(
        "--heartbeat",
        type=float,
        default=600.0,
        help="the server's --heartbeat: long by default, so that no heartbeat sweep falls in the run",
    )
    ap.add_argument("--serve-args", default="", help="more options for sse-fast serve")
    ap.add_argument("--python", default=sys.executable, help="the interpreter that runs sse-fast serve")
    ap.add_argument("--server-core", type=int, default=0, help="taskset core of the server (-1: none)")
    ap.add_argument("--load-core", type=int, default=1, help="core of the load and the probe (-1: none)")
    ap.add_argument("--sources", type=int, default=8, help="source addresses 127.0.0.2 ... for the streams")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--log-dir", type=Path, default=None, help="keep the servers' logs here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--hold-subscribers"]:
        subscribers_main(int(argv[1]), int(argv[2]), 8)
        return 0
    args = parse_args(argv)
    raise_nofile()
    if args.load_core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.load_core})
    universe = [f"u{i}" for i in range(args.universe)]
    random.Random(args.seed).shuffle(universe)
    results = []
    for engine in args.engines.split(","):
        for store in args.stores.split(","):
            print(f"# {engine} / {store} ...", file=sys.stderr, flush=True)
            results.append(run_one(args, engine, store, universe))
            print(render(results[-1:]), file=sys.stderr, flush=True)
    print(render(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
