"""Failover: the subscribers of a killed node resuming on the surviving one through haproxy.

Issue 16: every stream opens with its own ``retry:`` (``--retry-ms`` spread by
``--retry-jitter``), so that the clients of a dead node do not all come back
in the same second.  This script measures it end to end:

- its own ``redis-server`` on a free port (no persistence), and two nodes of one
  cluster on it, ``sse-fast serve --engine native --node-id a|b``, pinned to
  ``--server-core``;
- two (``--proxies``) haproxy processes in ``mode tcp``, ``balance first``
  (every subscriber lands on node a while it is up), node b second, a
  ``GET /readyz`` health check every 500 ms, ``option redispatch``,
  ``retries 3``; each carries its share of the subscribers, as each proxied
  stream costs haproxy two of its 20,000 files;
- subscriber processes (``--per-process``, 5,000 each) on uvloop, raw
  HTTP/1.0 requests (the native engine then sends a close-delimited body),
  parsed by the compiled ``EventParser``.  Each subscriber has its own uid,
  remembers the last id, and on EOF waits its stream's ``retry:`` (as a
  browser does) and reconnects through haproxy with ``Last-Event-ID``;
- a publisher broadcasting ``--rate`` pushes/s to node b directly.

Everything but the nodes runs on ``--load-core``.  The run: all subscribers
connect, then the publisher starts; once every subscriber has a few events,
node a is SIGKILLed; publishing goes on until ``--after`` seconds after the
last subscriber resumed (and at least ``--cpu-window`` after the kill), then
stops, the subscribers drain up to the last push, and everything is stopped.

The report (``--json`` and a summary on stdout): time from the kill until the
last subscriber resumed (its first byte after reconnecting), the resume delays'
percentiles, the peak of reconnect attempts per 100 ms, node b's CPU over the
``--cpu-window`` seconds after the kill and its RSS, and exactness: for every
subscriber, the seqs it received must be exactly those pushed (all pushes come
after every subscriber's stream opened): no gap, no duplicate, in order, and
no ``reset``.  ``--compare`` runs the scenario twice, with ``--retry-jitter``
and with 0 (every client reconnects at the same instant: the storm).

Full run (about two minutes at 10,000 subscribers with --compare)::

    python benchmarks/failover.py --subscribers 10000 --compare --json failover.json

Tiny run (``benchmarks/test_failover.py`` runs it so)::

    python benchmarks/failover.py --subscribers 200 --retry-ms 1000 --after 2 --cpu-window 3
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, cast

import httpx
from own_redis import free_port, redis_server_argv

from sse_fast import EventParser

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_RETRY_MS = 3000
"""What a subscriber waits before it reconnects when its stream set no ``retry:`` (a browser's ~3 s)."""
STATUS_INTERVAL = 0.25
"""Seconds between two status lines of a subscriber process."""


# ============================================================ subscriber processes


class Subscriber:
    """One EventSource-like client: its uid, what it received, and when it lost and regained a stream."""

    __slots__ = (
        "attempts",
        "disconnects",
        "epochs",
        "failures",
        "last_id",
        "last_seq",
        "opened",
        "other_events",
        "resets",
        "retries",
        "retry_ms",
        "seqs",
        "uid",
    )

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.seqs = array.array("q")
        self.last_id = ""
        self.last_seq = -1
        self.epochs: set[str] = set()
        self.retry_ms: int | None = None
        self.attempts: list[float] = []
        """When each connection attempt started (the first one included)."""
        self.opened: list[float] = []
        """When each stream's first byte arrived (a 200 answer)."""
        self.disconnects: list[float] = []
        """When each open stream ended (EOF or error)."""
        self.retries: list[int | None] = []
        """The ``retry:`` each ended stream had set."""
        self.failures: list[str] = []
        """Attempts that brought no stream: refused, closed before an answer, not 200."""
        self.resets = 0
        self.other_events: Counter[str] = Counter()


class StreamConnection(asyncio.Protocol):
    """One HTTP/1.0 ``GET /events`` of a subscriber: head, then a close-delimited SSE body."""

    def __init__(self, sub: Subscriber, pool: SubscriberPool) -> None:
        self.sub = sub
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.streaming = False
        self.failed: str | None = None
        self.parser = EventParser(last_event_id=sub.last_id)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.pool.live[self.sub.uid] = self
        resume = f"Last-Event-ID: {self.sub.last_id}\r\n" if self.sub.last_id else ""
        self.transport.write(
            f"GET /events?uid={self.sub.uid} HTTP/1.0\r\nHost: {HOST}\r\n{resume}\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        if self.streaming:
            self._feed(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > 65536:
                self._fail("response head over 64 KiB")
            return
        status_line = bytes(self.head[: self.head.find(b"\r\n")])
        if status_line.split(b" ")[1:2] != [b"200"]:
            self._fail(status_line.decode(errors="replace"))
            return
        self.streaming = True
        self.sub.opened.append(time.monotonic())
        self.pool.on_opened(self.sub)
        body = bytes(self.head[end + 4 :])
        self.head = bytearray()
        if body:
            self._feed(body)

    def _feed(self, data: bytes) -> None:
        sub = self.sub
        for event in self.parser.feed(data):
            if event.event == "tick":
                epoch, _, seq = event.id.rpartition("-")
                sub.epochs.add(epoch)
                sub.last_seq = int(seq)
                sub.seqs.append(sub.last_seq)
            elif event.event == "reset":
                sub.resets += 1
            else:
                sub.other_events[event.event] += 1
        sub.last_id = self.parser.last_event_id
        if self.parser.retry is not None:
            sub.retry_ms = self.parser.retry

    def _fail(self, why: str) -> None:
        self.failed = why
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.live.pop(self.sub.uid, None)
        if self.pool.stopping:  # the run is over: closed by us, not a disconnect
            return
        if self.streaming:
            self.sub.disconnects.append(time.monotonic())
            self.sub.retries.append(self.sub.retry_ms)
            self.pool.on_disconnected(self.sub)
        else:
            self.sub.failures.append(self.failed or f"closed before an answer ({exc or 'EOF'})")
        self.pool.schedule_reconnect(self.sub)


class SubscriberPool:
    """The subscribers of one process: connects them, reconnects them, reports on them."""

    def __init__(
        self, uids: list[str], port: int, sources: list[str], resume_port: int | None = None
    ) -> None:
        self.subs = [Subscriber(uid) for uid in uids]
        self.port = port
        self.resume_port = resume_port
        """Without a proxy (``--proxies 0``): where a subscriber goes once its stream has ended."""
        self.sources = sources
        self.live: dict[str, StreamConnection] = {}
        self.loop = asyncio.get_running_loop()
        self.stopping = False
        self.ever_opened = 0
        self.open_streams = 0
        self.disconnected = 0
        """Subscribers whose stream ended at least once."""
        self.resumed = 0
        """Subscribers with a stream open again after their first disconnect."""
        self._index = {sub.uid: i for i, sub in enumerate(self.subs)}

    def on_opened(self, sub: Subscriber) -> None:
        self.open_streams += 1
        if len(sub.opened) == 1:
            self.ever_opened += 1
        elif len(sub.disconnects) >= 1 and len(sub.opened) == 2:
            self.resumed += 1

    def on_disconnected(self, sub: Subscriber) -> None:
        self.open_streams -= 1
        if len(sub.disconnects) == 1:
            self.disconnected += 1

    def connect(self, sub: Subscriber) -> None:
        if self.stopping:
            return
        sub.attempts.append(time.monotonic())
        source = self.sources[self._index[sub.uid] % len(self.sources)]
        port = self.resume_port if self.resume_port is not None and sub.disconnects else self.port
        task = self.loop.create_task(
            self.loop.create_connection(
                lambda: StreamConnection(sub, self), HOST, port, local_addr=(source, 0)
            )
        )
        task.add_done_callback(lambda done: self._connected(sub, done))

    def _connected(self, sub: Subscriber, done: asyncio.Task[Any]) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        if exc is not None:
            sub.failures.append(f"connect: {exc}")
            self.schedule_reconnect(sub)

    def schedule_reconnect(self, sub: Subscriber) -> None:
        """Come back after the stream's ``retry:``, as a browser's EventSource does."""
        if self.stopping:
            return
        delay = (sub.retry_ms if sub.retry_ms is not None else DEFAULT_RETRY_MS) / 1000
        self.loop.call_later(delay, self.connect, sub)

    async def connect_all(self, rate: float) -> None:
        """Open every subscriber's first stream, ``rate`` attempts per second at most."""
        batch = 50
        for start in range(0, len(self.subs), batch):
            for sub in self.subs[start : start + batch]:
                self.connect(sub)
            await asyncio.sleep(batch / rate)

    def status(self) -> dict[str, Any]:
        return {
            "status": {
                "opened": self.ever_opened,
                "open": self.open_streams,
                "disconnected": self.disconnected,
                "resumed": self.resumed,
                "min_seq": min(sub.last_seq for sub in self.subs),
            }
        }

    def stop(self) -> None:
        self.stopping = True
        for conn in list(self.live.values()):
            if conn.transport is not None:
                conn.transport.abort()

    def report(self, pushed: list[int], kill_at: float) -> dict[str, Any]:
        """Each subscriber's record checked against the seqs pushed; raw times for the percentiles."""
        pushed_set = set(pushed)
        exact = 0
        problems: list[dict[str, Any]] = []
        totals: Counter[str] = Counter()
        resumes: list[dict[str, Any]] = []
        attempts_after_kill: list[float] = []
        for sub in self.subs:
            received = sub.seqs.tolist()
            unique = set(received)
            duplicates = len(received) - len(unique)
            missing = sorted(pushed_set - unique)
            extra = sorted(unique - pushed_set)
            out_of_order = sum(1 for a, b in itertools.pairwise(received) if b <= a)
            ok = received == pushed and sub.resets == 0
            exact += ok
            totals["duplicates"] += duplicates
            totals["missing"] += len(missing)
            totals["extra"] += len(extra)
            totals["out_of_order"] += out_of_order
            totals["resets"] += sub.resets
            totals["subscribers_with_reset"] += sub.resets > 0
            totals["failed_attempts"] += len(sub.failures)
            totals["streams_opened"] += len(sub.opened)
            totals["subscribers_disconnected_twice_or_more"] += len(sub.disconnects) > 1
            for kind, n in sub.other_events.items():
                totals[f"event_{kind}"] += n
            if not ok and len(problems) < 10:
                problems.append(
                    {
                        "uid": sub.uid,
                        "received": len(received),
                        "duplicates": duplicates,
                        "missing": missing[:20],
                        "extra": extra[:20],
                        "out_of_order": out_of_order,
                        "resets": sub.resets,
                        "attempts": [round(t - kill_at, 3) for t in sub.attempts],
                        "opened": [round(t - kill_at, 3) for t in sub.opened],
                        "disconnects": [round(t - kill_at, 3) for t in sub.disconnects],
                        "failures": sub.failures[:5],
                    }
                )
            attempts_after_kill.extend(t for t in sub.attempts if t >= kill_at)
            down = next((t for t in sub.disconnects if t >= kill_at), None)
            back = next((t for t in sub.opened if down is not None and t > down), None)
            resumes.append(
                {
                    "down": down,
                    "back": back,
                    "attempt": max((t for t in sub.attempts if back is not None and t < back), default=None),
                    "retry": sub.retries[sub.disconnects.index(down)] if down is not None else None,
                }
            )
        failure_kinds = Counter(why.split(":")[0] for sub in self.subs for why in sub.failures)
        return {
            "final": {
                "subscribers": len(self.subs),
                "exact": exact,
                "totals": dict(totals),
                "failure_kinds": dict(failure_kinds),
                "epochs": sorted({e for sub in self.subs for e in sub.epochs}),
                "problems": problems,
                "resumes": resumes,
                "attempts_after_kill": attempts_after_kill,
            }
        }


async def run_subscribers(args: argparse.Namespace) -> None:
    """A subscriber process: connect, report status lines, obey ``stop`` and ``report`` on stdin."""
    uids = [f"{args.uid_prefix}{i}" for i in range(args.first, args.first + args.count)]
    pool = SubscriberPool(
        uids, args.port, [f"127.0.0.{2 + i}" for i in range(args.sources)], args.resume_port
    )

    def emit(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def report_status() -> None:
        while True:
            emit(pool.status())
            await asyncio.sleep(STATUS_INTERVAL)

    reader = asyncio.StreamReader()
    await pool.loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    status = asyncio.create_task(report_status())
    connecting = asyncio.create_task(pool.connect_all(args.connect_rate))
    try:
        while line := await reader.readline():
            command = json.loads(line)
            if command["cmd"] == "stop":
                connecting.cancel()
                pool.stop()
                emit({"stopped": True})
            elif command["cmd"] == "report":
                emit(pool.report(command["pushed"], command["kill_at"]))
                return
    finally:
        status.cancel()


# ============================================================ the processes of a run


def raise_nofile() -> None:
    """In the child, before exec: the open-file limit up to its hard limit (each process holds thousands)."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


LISTEN_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "SyncookiesSent", "TCPTimeouts")
"""The kernel's TcpExt counters that say a listener's queue overflowed (a connect then waits for
SYN retransmits: 1 s, 3 s, 7 s...).  They count every process of the machine, not only this run's."""


def tcp_counters() -> dict[str, int]:
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()]
    out: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names[0] == "TcpExt:":
            out = {k: int(v) for k, v in zip(names[1:], values[1:], strict=True) if k in LISTEN_COUNTERS}
    return out


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


class Started:
    """A process this run started (in its own session), with its log; stopped by its own pid."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, core: int | None) -> None:
        self.name = name
        if core is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(core), *argv]
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=raise_nofile,
        )
        self.pid = self.proc.pid
        """taskset execs its command: this is the pid of the server itself."""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def wait_http(url: str, started: Started, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{started.name}: {url} did not answer 200 within {timeout} s")


def wait_listening(port: int, started: Started, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started.check_alive()
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{started.name}: nothing listens on {port} after {timeout} s")


def haproxy_config(port: int, node_ports: tuple[int, int], maxconn: int) -> str:
    """``mode tcp``, ``balance first``: node a takes everyone while its ``/readyz`` check passes."""
    a, b = node_ports
    return f"""\
global
    maxconn {maxconn}
    nbthread 1

defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout check 1s
    retries 3
    option redispatch

frontend subscribers
    bind {HOST}:{port}
    maxconn {maxconn}
    default_backend nodes

backend nodes
    balance first
    option httpchk GET /readyz
    http-check expect status 200
    server a {HOST}:{a} check inter 500ms fall 3 rise 2
    server b {HOST}:{b} check inter 500ms fall 3 rise 2
"""


# ============================================================ one run


@dataclass
class ProcessState:
    """What the main process knows of one subscriber process."""

    proc: asyncio.subprocess.Process
    status: dict[str, int] = field(default_factory=dict)
    final: dict[str, Any] | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None


class Run:
    """One failover run at one ``--retry-jitter``."""

    def __init__(self, args: argparse.Namespace, jitter: float, work: Path) -> None:
        self.args = args
        self.jitter = jitter
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.started: list[Started] = []
        self.subscriber_procs: list[ProcessState] = []
        self.pushed: list[int] = []
        self.push_errors: list[str] = []
        self.publishing = True
        self.killed = False
        self.load_samples: list[dict[str, float]] = []
        """The CPU seconds of every other process this run started, beside each of ``samples``."""
        self.first_connects_cpu = 0.0
        self.tcp_counters: dict[str, int] = {}
        """The machine's TcpExt listen-queue counters from the kill to the end of publishing."""
        """Node a's CPU seconds while every subscriber opened its first stream (fresh, no Last-Event-ID)."""
        self.samples: list[tuple[float, float, int]] = []
        """``(monotonic, cpu seconds, rss bytes)`` of node b, every 0.5 s from the kill on."""

    # ------------------------------------------------------------ setup

    def start_servers(self) -> None:
        args = self.args
        redis_port = free_port()
        redis = Started(
            "redis",
            redis_server_argv(redis_port, args.redis_server),
            self.work,
            args.load_core,
        )
        self.started.append(redis)
        wait_listening(redis_port, redis)
        prefix = f"failover-{uuid.uuid4().hex[:12]}"
        self.node_ports = (free_port(), free_port())
        self.nodes: dict[str, Started] = {}
        for name, port in zip("ab", self.node_ports, strict=True):
            node = Started(
                f"node-{name}",
                [
                    args.sse_fast,
                    "serve",
                    "--engine",
                    "native",
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--store",
                    f"redis://{HOST}:{redis_port}/0?prefix={prefix}",
                    "--node-id",
                    name,
                    "--max-connections",
                    "25000",
                    "--retry-ms",
                    str(args.retry_ms),
                    "--retry-jitter",
                    str(self.jitter),
                    "--log-level",
                    "warning",
                ],
                self.work,
                args.server_core,
            )
            self.started.append(node)
            self.nodes[name] = node
        for name, port in zip("ab", self.node_ports, strict=True):
            wait_http(f"http://{HOST}:{port}/readyz", self.nodes[name])
        for node in self.nodes.values():
            cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
            assert any(b"sse-fast" in part for part in cmdline), f"{node.name}: pid {node.pid} is {cmdline}"
            children = Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()
            assert not children, f"{node.name}: pid {node.pid} has children {children}: not one process"
        if not args.proxies:  # the subscribers go to node a, and to node b once it is gone
            self.proxy_ports = []
            return
        self.proxy_ports = [free_port() for _ in range(args.proxies)]
        per_proxy = math.ceil(args.subscribers / args.proxies)
        maxconn = per_proxy + 500
        if 2 * maxconn + 200 > 20000:
            raise SystemExit(f"--proxies: {per_proxy} streams per haproxy need more than 20,000 files")
        for i, port in enumerate(self.proxy_ports):
            config = self.work / f"haproxy-{i}.cfg"
            config.write_text(haproxy_config(port, self.node_ports, maxconn))
            proxy = Started(
                f"haproxy-{i}", [args.haproxy, "-db", "-f", str(config)], self.work, args.load_core
            )
            self.started.append(proxy)
            wait_http(f"http://{HOST}:{port}/readyz", proxy)

    async def start_subscribers(self) -> None:
        args = self.args
        processes = max(args.proxies, math.ceil(args.subscribers / args.per_process))
        direct = ["--resume-port", str(self.node_ports[1])] if not self.proxy_ports else []
        share = [args.subscribers // processes + (i < args.subscribers % processes) for i in range(processes)]
        first = 0
        uid_prefix = f"u{uuid.uuid4().hex[:6]}-"
        for i, count in enumerate(share):
            argv = [
                sys.executable,
                str(Path(__file__).resolve()),
                "_subscribers",
                "--port",
                str(self.proxy_ports[i % len(self.proxy_ports)] if self.proxy_ports else self.node_ports[0]),
                *direct,
                "--first",
                str(first),
                "--count",
                str(count),
                "--uid-prefix",
                uid_prefix,
                "--sources",
                str(args.sources),
                "--connect-rate",
                str(args.connect_rate),
            ]
            if args.load_core is not None and shutil.which("taskset"):
                argv = ["taskset", "-c", str(args.load_core), *argv]
            log = (self.work / f"subscribers-{i}.log").open("ab")
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                preexec_fn=raise_nofile,
                limit=64 * 1024 * 1024,
            )
            log.close()
            state = ProcessState(proc)
            state.reader = asyncio.create_task(self._read(state))
            self.subscriber_procs.append(state)
            first += count

    async def _read(self, state: ProcessState) -> None:
        assert state.proc.stdout is not None
        while line := await state.proc.stdout.readline():
            message = json.loads(line)
            if "status" in message:
                state.status = message["status"]
            elif "stopped" in message:
                state.stopped.set()
            elif "final" in message:
                state.final = message["final"]
        state.finished.set()

    def total(self, key: str) -> int:
        return sum(state.status.get(key, 0) for state in self.subscriber_procs)

    def min_seq(self) -> int:
        return min((state.status.get("min_seq", -1) for state in self.subscriber_procs), default=-1)

    async def wait_for(self, what: str, predicate: Any, timeout: float) -> float:
        """Poll until ``predicate()``; the monotonic time it became true."""
        deadline = time.monotonic() + timeout
        while not predicate():
            for started in self.started:
                if started.name != "node-a" or not self.killed:
                    started.check_alive()
            for state in self.subscriber_procs:
                if state.proc.returncode is not None:
                    raise RuntimeError(f"a subscriber process exited with {state.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s (status: {self.statuses()})")
            await asyncio.sleep(0.05)
        return time.monotonic()

    def statuses(self) -> list[dict[str, int]]:
        return [state.status for state in self.subscriber_procs]

    # ------------------------------------------------------------ the publisher

    async def publish(self) -> None:
        """Broadcast to node b at ``--rate``, each push after the last answer, on one paced clock."""
        url = f"http://{HOST}:{self.node_ports[1]}/push"
        interval = 1 / self.args.rate
        async with httpx.AsyncClient(timeout=5.0) as client:
            start = time.monotonic()
            n = 0
            while self.publishing:
                body = {"events": [{"event": "tick", "data": {"n": n}}]}
                try:
                    answer = await client.post(url, json=body)
                    if answer.status_code == 200:
                        event_id = answer.json()["data"]["ids"][0]
                        self.pushed.append(int(event_id.rpartition("-")[2]))
                    else:
                        self.push_errors.append(f"{answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    self.push_errors.append(repr(exc))
                n += 1
                await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))

    async def sample_survivor(self) -> None:
        """Node b's CPU and RSS every 0.5 s; the other processes' CPU too, to tell whose core was full."""
        pid = self.nodes["b"].pid
        others = {s.name: s.pid for s in self.started if s.name not in ("node-a", "node-b")}
        others |= {f"subscribers-{i}": state.proc.pid for i, state in enumerate(self.subscriber_procs)}
        others["main"] = os.getpid()
        while True:
            self.samples.append((time.monotonic(), cpu_seconds(pid), rss_bytes(pid)))
            sample: dict[str, float] = {}
            for name, other in others.items():
                with contextlib.suppress(OSError):
                    sample[name] = cpu_seconds(other)
            self.load_samples.append(sample)
            await asyncio.sleep(0.5)

    # ------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        args = self.args
        n = args.subscribers
        await asyncio.to_thread(self.start_servers)
        a_cpu_before = cpu_seconds(self.nodes["a"].pid)
        await self.start_subscribers()
        connect_timeout = 30 + n / args.connect_rate
        await self.wait_for(
            "every subscriber's stream open", lambda: self.total("opened") >= n, connect_timeout
        )
        self.first_connects_cpu = cpu_seconds(self.nodes["a"].pid) - a_cpu_before
        on_a = await self.node_connections("a")
        on_b = await self.node_connections("b")
        publisher = asyncio.create_task(self.publish())
        await self.wait_for(
            "the first pushes", lambda: len(self.pushed) >= max(3, args.before * args.rate), 30
        )
        warm = self.pushed[-1]
        await self.wait_for("every subscriber has the first pushes", lambda: self.min_seq() >= warm, 30)
        sampler = asyncio.create_task(self.sample_survivor())
        await asyncio.sleep(0)  # the sampler's first sample: node b's CPU at the kill
        profiler = self.start_profiler()
        pushed_before_kill = len(self.pushed)
        counters_at_kill = tcp_counters()
        kill_at = time.monotonic()
        os.kill(self.nodes["a"].pid, signal.SIGKILL)
        self.killed = True
        await asyncio.to_thread(self.nodes["a"].proc.wait, 5)
        # Those haproxy sent to node b (when a refused them) keep their streams: only node a's lose theirs.
        await self.wait_for(
            "node a's subscribers disconnected", lambda: self.total("disconnected") >= on_a, 30
        )
        last_resume = await self.wait_for(
            "every subscriber resumed",
            lambda: self.total("resumed") >= self.total("disconnected"),
            args.resume_timeout,
        )
        stop_at = max(last_resume + args.after, kill_at + args.cpu_window + 0.6)
        await asyncio.sleep(stop_at - time.monotonic())
        self.publishing = False
        await publisher
        if profiler is not None:
            await asyncio.to_thread(profiler.wait, 30)
        sampler.cancel()
        last = self.pushed[-1]
        drained = True
        try:
            await self.wait_for("every subscriber has the last push", lambda: self.min_seq() >= last, 20)
        except TimeoutError:
            drained = False
        counters_after = tcp_counters()
        self.tcp_counters = {k: counters_after[k] - counters_at_kill.get(k, 0) for k in counters_after}
        survivor_stats = await self.node_stats("b")
        for state in self.subscriber_procs:
            await self.command(state, {"cmd": "stop"})
        for state in self.subscriber_procs:
            await asyncio.wait_for(state.stopped.wait(), 10)
            await self.command(state, {"cmd": "report", "pushed": self.pushed, "kill_at": kill_at})
        for state in self.subscriber_procs:
            await asyncio.wait_for(state.finished.wait(), 60)
        return self.summarise(kill_at, last_resume, on_a, on_b, pushed_before_kill, drained, survivor_stats)

    def start_profiler(self) -> subprocess.Popen[bytes] | None:
        """``--py-spy``: node b's stacks over the CPU window, as collapsed stacks (py-spy's ``raw``)."""
        if not self.args.py_spy:
            return None
        argv = [self.args.py_spy_command, "record", "--pid", str(self.nodes["b"].pid), "--format", "raw"]
        argv += ["--duration", str(math.ceil(self.args.cpu_window)), "--rate", "250", "--nonblocking"]
        argv += ["--output", str(Path(self.args.py_spy).resolve().with_suffix(f".jitter-{self.jitter}.txt"))]
        if self.args.load_core is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(self.args.load_core), *argv]
        log = (self.work / "py-spy.log").open("ab")
        with log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def command(self, state: ProcessState, command: dict[str, Any]) -> None:
        assert state.proc.stdin is not None
        state.proc.stdin.write((json.dumps(command) + "\n").encode())
        await state.proc.stdin.drain()

    async def node_stats(self, name: str) -> dict[str, Any]:
        port = self.node_ports["ab".index(name)]
        async with httpx.AsyncClient(timeout=5.0) as client:
            answer = await client.get(f"http://{HOST}:{port}/stats")
            stats: dict[str, Any] = answer.json()
            return stats

    async def node_connections(self, name: str) -> int:
        return int((await self.node_stats(name))["connections"])

    def load_cpu(self, samples: int) -> dict[str, dict[str, float]]:
        """Per process on the load core, over the CPU window: CPU seconds, and its busiest 0.5 s in %."""
        window = self.load_samples[:samples]
        out: dict[str, dict[str, float]] = {}
        if len(window) < 2:
            return out
        times = [t for t, _, _ in self.samples[:samples]]
        for name in window[0]:
            values = [sample.get(name, math.nan) for sample in window]
            steps = zip(itertools.pairwise(values), itertools.pairwise(times), strict=True)
            rates = [(b - a) / (tb - ta) for (a, b), (ta, tb) in steps]
            out[name] = {
                "cpu_s": round(values[-1] - values[0], 2),
                "busiest_half_second_pct": round(100 * max(rates, default=0.0), 1),
            }
        return out

    def stop(self) -> None:
        """Stop whatever this run started, each by its own pid."""
        for state in self.subscriber_procs:
            if state.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    state.proc.kill()
        for started in reversed(self.started):
            with contextlib.suppress(Exception):
                started.stop()

    # ------------------------------------------------------------ the report

    def summarise(
        self,
        kill_at: float,
        last_resume: float,
        on_a: int,
        on_b: int,
        pushed_before_kill: int,
        drained: bool,
        survivor_stats: dict[str, Any],
    ) -> dict[str, Any]:
        finals = [state.final for state in self.subscriber_procs]
        assert all(f is not None for f in finals), "a subscriber process sent no report"
        finals_ = [f for f in finals if f is not None]
        totals: Counter[str] = Counter()
        failure_kinds: Counter[str] = Counter()
        for f in finals_:
            totals.update(f["totals"])
            failure_kinds.update(f["failure_kinds"])
        resumes = [r for f in finals_ for r in f["resumes"]]
        back = sorted(r["back"] - kill_at for r in resumes if r["back"] is not None)
        since_down = sorted(r["back"] - r["down"] for r in resumes if r["back"] is not None)
        answered = sorted(r["back"] - r["attempt"] for r in resumes if r["back"] is not None)
        retries = [r["retry"] for r in resumes if r["retry"] is not None]
        bins = Counter(int((t - kill_at) / 0.1) for f in finals_ for t in f["attempts_after_kill"])
        peak_bin, peak = max(bins.items(), key=lambda kv: kv[1], default=(0, 0))
        window = [s for s in self.samples if s[0] <= kill_at + self.args.cpu_window + 0.25]
        cpu = window[-1][1] - window[0][1] if len(window) > 1 else float("nan")
        span = window[-1][0] - window[0][0] if len(window) > 1 else float("nan")
        subscribers = sum(f["subscribers"] for f in finals_)
        exact = sum(f["exact"] for f in finals_)
        return {
            "retry_ms": self.args.retry_ms,
            "retry_jitter": self.jitter,
            "subscribers": subscribers,
            "streams_on_node_a_before_kill": on_a,
            "streams_on_node_b_before_kill": on_b,
            "pushes": len(self.pushed),
            "pushes_before_kill": pushed_before_kill,
            "push_errors": self.push_errors[:10],
            "push_error_count": len(self.push_errors),
            "last_resumed_s": round(max(back), 3) if back else None,
            "last_resumed_seen_by_main_s": round(last_resume - kill_at, 3),
            "resume_after_kill_ms": percentiles(back),
            "resume_after_disconnect_ms": percentiles(since_down),
            "reconnect_to_first_byte_ms": percentiles(answered),
            "first_connects_cpu_on_a_s": round(self.first_connects_cpu, 3),
            "retry_ms_seen": {"min": min(retries, default=None), "max": max(retries, default=None)},
            "reconnect_attempts_after_kill": sum(bins.values()),
            "peak_reconnects_per_100ms": peak,
            "peak_at_s": round(peak_bin / 10, 1),
            "survivor": {
                "cpu_window_s": round(span, 2),
                "cpu_s": round(cpu, 3),
                "cpu_pct": round(100 * cpu / span, 1) if span else None,
                "rss_mib_at_window_end": round(window[-1][2] / 2**20, 1) if window else None,
                "rss_mib_max": round(max(s[2] for s in self.samples) / 2**20, 1) if self.samples else None,
                "connections": survivor_stats.get("connections"),
                "replayed": survivor_stats.get("replayed"),
                "resets": survivor_stats.get("resets"),
                "profile": [
                    [round(t - kill_at, 2), round(c - self.samples[0][1], 3), round(r / 2**20, 1)]
                    for t, c, r in self.samples
                ],
            },
            "exactness": {
                "exact": exact,
                "not_exact": subscribers - exact,
                "all_exact": exact == subscribers and subscribers > 0,
                "drained_to_last_push": drained,
                "duplicates": totals["duplicates"],
                "missing": totals["missing"],
                "extra": totals["extra"],
                "out_of_order": totals["out_of_order"],
                "subscribers_with_reset": totals["subscribers_with_reset"],
                "epochs": sorted({e for f in finals_ for e in f["epochs"]}),
                "examples": [p for f in finals_ for p in f["problems"]][:10],
            },
            "streams_opened": totals["streams_opened"],
            "failed_attempts": totals["failed_attempts"],
            "failure_kinds": dict(failure_kinds),
            "subscribers_disconnected_twice_or_more": totals["subscribers_disconnected_twice_or_more"],
            "other_events": {k[6:]: v for k, v in totals.items() if k.startswith("event_")},
            "load_cpu_in_window": self.load_cpu(len(window)),
            "tcp_counters_after_kill": self.tcp_counters,
            "haproxy_log": [
                line
                for started in self.started
                if started.name.startswith("haproxy")
                for line in started.log_path.read_text(errors="replace").splitlines()
            ][:40],
            "survivor_log": self.nodes["b"].log_path.read_text(errors="replace").splitlines()[:40],
            "logs": str(self.work),
        }


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max of sorted seconds, in milliseconds."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}

    def at(q: float) -> float:
        return round(1000 * values[min(len(values) - 1, math.ceil(q * len(values)) - 1)], 1)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(1000 * values[-1], 1)}


async def run_once(args: argparse.Namespace, jitter: float, work: Path) -> dict[str, Any]:
    run = Run(args, jitter, work)
    try:
        return await asyncio.wait_for(run.run(), args.deadline)
    finally:
        await asyncio.to_thread(run.stop)


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split("\n")[0],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def human(report: dict[str, Any]) -> str:
    runs = report["runs"]
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("retry-jitter", lambda r: f"{r['retry_jitter']}"),
        (
            "subscribers (on a before the kill)",
            lambda r: f"{r['subscribers']} ({r['streams_on_node_a_before_kill']})",
        ),
        ("retry: seen (min-max ms)", lambda r: f"{r['retry_ms_seen']['min']}-{r['retry_ms_seen']['max']}"),
        ("last resumed after the kill (s)", lambda r: f"{r['last_resumed_s']}"),
        (
            "resume after kill p50/p90/p99 (ms)",
            lambda r: "/".join(str(r["resume_after_kill_ms"][q]) for q in ("p50", "p90", "p99")),
        ),
        (
            "resume after EOF p50/p99/max (ms)",
            lambda r: "/".join(str(r["resume_after_disconnect_ms"][q]) for q in ("p50", "p99", "max")),
        ),
        (
            "reconnect to first byte p50/p99/max",
            lambda r: "/".join(str(r["reconnect_to_first_byte_ms"][q]) for q in ("p50", "p99", "max")),
        ),
        ("CPU of node a for the first connects", lambda r: f"{r['first_connects_cpu_on_a_s']} s"),
        (
            "peak reconnects per 100 ms (at s)",
            lambda r: f"{r['peak_reconnects_per_100ms']} ({r['peak_at_s']})",
        ),
        (
            "streams ended again / survivor warnings",
            lambda r: (
                f"{r['subscribers_disconnected_twice_or_more']}"
                f" / {sum('WARNING' in line for line in r['survivor_log'])}"
            ),
        ),
        (
            "haproxy marked b DOWN",
            lambda r: f"{sum('nodes/b is DOWN' in line for line in r['haproxy_log'])} times",
        ),
        (
            "listen overflows/drops (machine)",
            lambda r: (
                f"{r['tcp_counters_after_kill'].get('ListenOverflows')}/"
                f"{r['tcp_counters_after_kill'].get('ListenDrops')}"
            ),
        ),
        ("failed attempts", lambda r: f"{r['failed_attempts']} {r['failure_kinds'] or ''}".strip()),
        (
            "survivor CPU after the kill",
            lambda r: (
                f"{r['survivor']['cpu_s']} s in {r['survivor']['cpu_window_s']} s "
                f"({r['survivor']['cpu_pct']} %)"
            ),
        ),
        (
            "survivor RSS (MiB, end of window/max)",
            lambda r: f"{r['survivor']['rss_mib_at_window_end']}/{r['survivor']['rss_mib_max']}",
        ),
        ("pushes (before the kill)", lambda r: f"{r['pushes']} ({r['pushes_before_kill']})"),
        (
            "exact subscribers",
            lambda r: (
                f"{r['exactness']['exact']}/{r['subscribers']}"
                + ("" if r["exactness"]["drained_to_last_push"] else " (not drained)")
            ),
        ),
        (
            "dup/missing/extra/disorder/reset",
            lambda r: "/".join(
                str(r["exactness"][k])
                for k in ("duplicates", "missing", "extra", "out_of_order", "subscribers_with_reset")
            ),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"failover, {report['date']}, {report['machine']['cpu']} ({report['machine']['cpus']} CPUs), "
        f"load average {report['machine']['load_average_at_start']} at the start, "
        f"{report['load_average_at_end']} at the end",
        f"command: {report['command']}",
    ]
    for name, value in rows:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{value(r):<34}" for r in runs))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    jitters = [args.retry_jitter, 0.0] if args.compare else [args.retry_jitter]
    base = Path(args.log_dir or tempfile.mkdtemp(prefix="failover-"))
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        "runs": [],
    }
    for i, jitter in enumerate(jitters):
        report["runs"].append(await run_once(args, jitter, base / f"run-{i}-jitter-{jitter}"))
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    inner = sub.add_parser("_subscribers", help="(internal) one subscriber process")
    inner.add_argument("--port", type=int, required=True)
    inner.add_argument("--resume-port", type=int, default=None, help="where to resume (no proxy)")
    inner.add_argument("--first", type=int, required=True)
    inner.add_argument("--count", type=int, required=True)
    inner.add_argument("--uid-prefix", required=True)
    inner.add_argument("--sources", type=int, default=4)
    inner.add_argument("--connect-rate", type=float, default=2000)
    venv_bin = Path(sys.executable).parent
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--per-process", type=int, default=5_000, help="subscribers per subscriber process")
    parser.add_argument(
        "--proxies",
        type=int,
        default=2,
        help="haproxy processes, each a share of the streams (0: none, the subscribers resume on b directly)",
    )
    parser.add_argument("--rate", type=float, default=5.0, help="broadcasts per second to node b")
    parser.add_argument("--before", type=float, default=2.0, help="seconds of pushes before the kill")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of pushes after the last resume")
    parser.add_argument(
        "--cpu-window", type=float, default=10.0, help="seconds after the kill node b's CPU covers"
    )
    parser.add_argument("--retry-ms", type=int, default=3000, help="the nodes' --retry-ms")
    parser.add_argument("--retry-jitter", type=float, default=0.5, help="the nodes' --retry-jitter")
    parser.add_argument("--compare", action="store_true", help="run with --retry-jitter, then with 0")
    parser.add_argument("--server-core", type=int, default=0, help="the nodes' core (taskset)")
    parser.add_argument("--load-core", type=int, default=1, help="the core of everything else")
    parser.add_argument(
        "--connect-rate", type=float, default=2000, help="first connects per second per process"
    )
    parser.add_argument(
        "--sources", type=int, default=4, help="subscriber source addresses 127.0.0.2, .3, ..."
    )
    parser.add_argument("--resume-timeout", type=float, default=60.0, help="longest wait for every resume")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds one run may take in all")
    parser.add_argument("--sse-fast", default=str(venv_bin / "sse-fast"))
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--log-dir", help="where the processes' logs go (default: a new temporary directory)")
    parser.add_argument("--json", help="write the report there")
    parser.add_argument(
        "--py-spy", metavar="FILE", help="record node b with py-spy over the CPU window (FILE.jitter-J.txt)"
    )
    parser.add_argument("--py-spy-command", default=str(venv_bin / "py-spy"))
    args = parser.parse_args(argv)
    if args.role is None and args.load_core is not None and args.load_core < 0:
        args.load_core = None
    if args.role is None and args.server_core is not None and args.server_core < 0:
        args.server_core = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "_subscribers":
        import uvloop

        uvloop.run(run_subscribers(args))
        return 0
    import uvloop

    if args.load_core is not None:
        os.sched_setaffinity(0, {args.load_core})
    report = uvloop.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(human(report))
    exact = all(run["exactness"]["all_exact"] for run in report["runs"])
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
