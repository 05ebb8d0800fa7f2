"""Connection churn: does a server give back the memory of subscribers that left?

Each server runs alone, pinned to core 0 (``taskset``), the load (this
script) to core 1.  ``--rounds`` times, ``--subscribers`` raw asyncio
sockets subscribe (``GET /events?uid=...``), wait for the response head, stay
``--hold`` seconds and close.  Once the server has let go of them all (its
``/stats`` says 0 connections, and no socket of the server's process tree is
still open on its port) and ``--settle`` seconds more, the RSS of the
server's whole process tree is read (granian serves from a worker child).

Servers (``--servers``, comma-separated):

- ``granian``       ``sse-fast serve`` (the granian engine)
- ``native``        ``sse-fast serve --engine native``
- ``bare_granian``  the bare ASGI app on granian (``benchmarks/peers/bare_granian_app.py``),
  run with ``BARE_WATCH_DISCONNECT=1``: it awaits ``receive()`` to learn that a
  client left (without, it never does: granian's ``send`` to a closed
  connection returns quietly, and every subscriber stays for good)

Both sse_fast servers run ``--heartbeat`` (1 s) with ``--store memory://``.
Printed: RSS per round, side by side, and per server the slope of a linear
fit of RSS against connections made, over the rounds after ``--skip``
(default 5: allocators and caches warm up first), in KiB per connection.  A
server that frees what a finished subscriber held has a slope near 0.

Bounded: every wait has a deadline, and the run stops after ``--rounds``::

    ulimit -n 20000
    python benchmarks/churn.py                                  # 30 x 2,000, all three servers
    python benchmarks/churn.py --servers granian --rounds 10 --json build/bench/churn.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fanout import DEFAULT_SSE_FAST_CMD, Server, _raise_nofile  # noqa: E402

SERVERS = {"granian": "sse_fast", "native": "native", "bare_granian": "bare_granian"}
"""Our names for the servers, and fanout.py's."""

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SOURCES = 8
"""Source addresses (127.0.0.2 ...) taken in turn per round: the sockets the
load closes sit in TIME_WAIT for a minute, and one address has ~28,000 ports."""


class Subscriber(asyncio.Protocol):
    """One stream: counts as connected once a 200 response head arrived; reads and drops the rest."""

    def __init__(self, round_: Round) -> None:
        self.round = round_
        self.head = b""
        self.transport: asyncio.Transport | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.round.open.add(self)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.answered = True
            self.round.answered(self.head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")))
            self.head = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.round.open.discard(self)
        if not self.answered:
            self.answered = True
            self.round.answered(False)


class Round:
    """``n`` subscribers opened together, held, then closed."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.open: set[Subscriber] = set()
        self.connected = 0
        self.failed = 0
        self.all_answered = asyncio.Event()

    def answered(self, ok: bool) -> None:
        if ok:
            self.connected += 1
        else:
            self.failed += 1
        if self.connected + self.failed >= self.n:
            self.all_answered.set()

    async def run(self, port: int, source: str, hold: float, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(500)

        async def one(i: int) -> None:
            request = (
                f"GET /events?uid=c{i} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Accept: text/event-stream\r\n\r\n"
            ).encode()
            async with sem:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setblocking(False)
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((source, 0))
                    await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 10)
                    transport, _ = await loop.create_connection(lambda: Subscriber(self), sock=sock)
                except (OSError, asyncio.TimeoutError):
                    sock.close()
                    self.answered(False)
                    return
                transport.write(request)

        tasks = [loop.create_task(one(i)) for i in range(self.n)]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.all_answered.wait(), timeout)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(hold)
        for sub in list(self.open):
            if sub.transport is not None:
                sub.transport.close()
        end = loop.time() + timeout
        while self.open and loop.time() < end:
            await asyncio.sleep(0.05)


async def http_get(port: int, path: str, timeout: float = 5.0) -> bytes:
    """A one-shot ``GET``; the body (``Connection: close``)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return raw.partition(b"\r\n\r\n")[2]


def open_sockets(server: Server) -> int:
    """Connections (not the listener) that the server's process tree still holds on its port."""
    count = 0
    for proc in server.tree():
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="tcp"):
                if conn.laddr and conn.laddr.port == server.port and conn.status != psutil.CONN_LISTEN:
                    count += 1
    return count


async def wait_released(server: Server, timeout: float) -> dict[str, Any]:
    """Wait until the server holds no subscriber: ``/stats`` and its open sockets both say 0."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    connections: int | None = None
    sockets = -1
    while loop.time() < end:
        with contextlib.suppress(OSError, asyncio.TimeoutError, ValueError, KeyError):
            connections = int(json.loads(await http_get(server.port, "/stats"))["connections"])
        sockets = open_sockets(server)
        if sockets == 0 and connections == 0:
            return {"released": True, "connections": connections, "sockets": sockets}
        await asyncio.sleep(0.1)
    return {"released": False, "connections": connections, "sockets": sockets}


def slope_kib_per_conn(conns: list[int], rss: list[int]) -> float | None:
    """Least-squares slope of RSS (bytes) against connections made, in KiB per connection."""
    if len(conns) < 2:
        return None
    mx = statistics.fmean(conns)
    my = statistics.fmean(rss)
    sxx = sum((x - mx) ** 2 for x in conns)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(conns, rss, strict=True))
    return round(sxy / sxx / 1024, 3)


async def run_server(name: str, args: argparse.Namespace, run: int) -> dict[str, Any]:
    server = Server(SERVERS[name], args, args.subscribers + 1000)
    rounds: list[dict[str, Any]] = []
    try:
        server.wait_listening()
        await asyncio.sleep(1.0)
        base = server.rss()
        made = 0
        for i in range(args.rounds):
            started = time.perf_counter()
            rnd = Round(args.subscribers)
            source = f"127.0.0.{2 + (run * args.rounds + i) % SOURCES}"
            await rnd.run(server.port, source, args.hold, args.timeout)
            made += rnd.connected + rnd.failed
            state = await wait_released(server, args.timeout)
            await asyncio.sleep(args.settle)
            rss = server.rss()
            rounds.append(
                {
                    "round": i + 1,
                    "connected": rnd.connected,
                    "failed": rnd.failed,
                    "connections_made": made,
                    "rss": rss,
                    "seconds": round(time.perf_counter() - started, 2),
                    **state,
                }
            )
            print(
                f"  {name} run {run + 1} round {i + 1:>3}: {rnd.connected} connected, {rnd.failed} failed, "
                f"released={state['released']} (connections {state['connections']}, "
                f"sockets {state['sockets']}) rss {rss / 2**20:.1f} MiB",
                file=sys.stderr,
                flush=True,
            )
            if server.proc.poll() is not None:
                break
    finally:
        server.stop()
    fit = [r for r in rounds if r["round"] > args.skip]
    return {
        "server": name,
        "run": run + 1,
        "rss_base": base,
        "rounds": rounds,
        "rss_first": rounds[0]["rss"] if rounds else None,
        "rss_last": rounds[-1]["rss"] if rounds else None,
        "slope_kib_per_conn": slope_kib_per_conn(
            [r["connections_made"] for r in fit], [r["rss"] for r in fit]
        ),
        "failed": sum(r["failed"] for r in rounds),
        "unreleased_rounds": sum(not r["released"] for r in rounds),
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per server: medians over the runs of each round's RSS, of the first/last RSS and of the slope."""

    def med(values: list[Any]) -> Any:
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    n = min(len(r["rounds"]) for r in runs)
    return {
        "server": runs[0]["server"],
        "runs": len(runs),
        "rss_per_round": [med([r["rounds"][i]["rss"] for r in runs]) for i in range(n)],
        "rss_first": med([r["rss_first"] for r in runs]),
        "rss_last": med([r["rss_last"] for r in runs]),
        "slope_kib_per_conn": med([r["slope_kib_per_conn"] for r in runs]),
        "slopes": [r["slope_kib_per_conn"] for r in runs],
        "failed": sum(r["failed"] for r in runs),
        "unreleased_rounds": sum(r["unreleased_rounds"] for r in runs),
    }


def mib(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:.1f}"


def render(summary: list[dict[str, Any]], args: argparse.Namespace) -> str:
    names = [s["server"] for s in summary]
    width = max(14, *(len(n) + 2 for n in names))
    lines = [
        f"RSS of the server's process tree after each round (MiB; {args.subscribers} subscribers held "
        f"{args.hold:g} s per round; median of {args.repeat} run(s))",
        "round".rjust(6) + "".join(n.rjust(width) for n in names),
    ]
    rows = max(len(s["rss_per_round"]) for s in summary)
    for i in range(rows):
        cells = [mib(s["rss_per_round"][i]) if i < len(s["rss_per_round"]) else "-" for s in summary]
        lines.append(str(i + 1).rjust(6) + "".join(c.rjust(width) for c in cells))
    lines.append("")
    lines.append(f"slope over rounds {args.skip + 1}-{args.rounds} (KiB per connection):")
    for s in summary:
        slopes = ", ".join("-" if v is None else f"{v:.3f}" for v in s["slopes"])
        lines.append(
            f"  {s['server']:<14} {s['slope_kib_per_conn']} KiB/conn (runs: {slopes}); RSS "
            f"{mib(s['rss_first'])} -> {mib(s['rss_last'])} MiB; failed connects {s['failed']}, "
            f"rounds not released in time {s['unreleased_rounds']}"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    runs: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    doc = document(args, started, summary, runs)
    for name in args.servers:
        mine = []
        for rep in range(args.repeat):
            print(f"[{time.strftime('%H:%M:%S')}] {name} run {rep + 1}/{args.repeat}", file=sys.stderr)
            mine.append(await run_server(name, args, rep))
            runs.append(mine[-1])
            write_json(args, doc)  # what is done survives an interrupted run
        summary.append(median_of(mine))
        write_json(args, doc)
    return doc


def write_json(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2))


def document(
    args: argparse.Namespace, started: str, summary: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "started": started,
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "server_core": args.server_core,
            "load_core": args.load_core,
        },
        "settings": {
            "rounds": args.rounds,
            "subscribers": args.subscribers,
            "hold": args.hold,
            "heartbeat": args.heartbeat,
            "skip": args.skip,
            "settle": args.settle,
        },
        "summary": summary,
        "runs": runs,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument(
        "--servers", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS)
    )
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--subscribers", type=int, default=2000, help="per round")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds each round's subscribers stay")
    ap.add_argument("--heartbeat", type=float, default=1.0, help="the servers' heartbeat, seconds")
    ap.add_argument("--skip", type=int, default=5, help="rounds left out of the fit (warm-up)")
    ap.add_argument("--settle", type=float, default=0.5, help="seconds after the release before reading RSS")
    ap.add_argument("--repeat", type=int, default=1, help="runs per server; medians are reported")
    ap.add_argument("--timeout", type=float, default=30.0, help="deadline of each wait, seconds")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--server-core", type=int, default=0, help="core for the server (-1: no pinning)")
    ap.add_argument("--load-core", type=int, default=1, help="core for the load (-1: no pinning)")
    ap.add_argument(
        "--sse-fast-cmd",
        default=DEFAULT_SSE_FAST_CMD,
        help="server command; {port} {heartbeat} {max_connections} are filled in",
    )
    ap.add_argument("--log-dir", type=Path, default=HERE.parent / "build" / "bench" / "logs")
    args = ap.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in args.servers:
        if s not in SERVERS:
            ap.error(f"--servers: unknown server {s!r} (choose from {', '.join(SERVERS)})")
    if not 1 <= args.rounds <= 1000 or not 1 <= args.subscribers <= 15_000 or not 0 <= args.hold <= 600:
        ap.error("--rounds 1..1000, --subscribers 1..15000, --hold 0..600 seconds")
    if not 0 <= args.skip < args.rounds - 1:
        ap.error("--skip: must leave at least two rounds to fit")
    if (os.cpu_count() or 1) < 2:
        args.server_core = args.load_core = -1
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import uvloop

    args = parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    _raise_nofile()
    if args.load_core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.load_core})
    # SIGTERM (timeout, a CI's stop) ends the run like Ctrl-C: every server is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ["BARE_WATCH_DISCONNECT"] = "1"  # read by the bare granian peer only
    doc = uvloop.run(main_async(args))
    print(render(doc["summary"], args))
    if args.json is not None:
        print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
