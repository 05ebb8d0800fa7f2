"""Stalled sockets: does the server still answer ``/healthz`` while thousands of clients stall?

A client that opens a connection and never finishes its request (no bytes,
half a head, or a head announcing a body that never comes) costs the server
a socket until a timeout cuts it; on granian every open connection also
holds one of ``--backpressure`` permits, and when they are all taken granian
stops accepting anyone.  This script starts ``sse-fast serve``, then a
separate attacker process (its own open-file budget) that opens
``--sockets`` stalled connections from 127.0.0.2, 127.0.0.3, ... and, once
all are made, holds them ``--hold`` seconds, while this process asks
``GET /healthz`` every ``--probe-interval`` seconds on a fresh connection and
records how long each answer took (``--probe-timeout`` at most; the last
probe ends within the hold).

Printed, as JSON: the probes' latencies while the stalled sockets were open
(median, max, how many timed out), how many stalled sockets connected, and
how long the server took to close them (median, max, how many it never
closed within the hold).

Bounded: the attacker connects at most ``--sockets`` times and every wait has
a deadline; the server is stopped at the end::

    ulimit -n 20000
    python benchmarks/stalled.py --engine granian --max-connections 200 --sockets 600 --mode body
    python benchmarks/stalled.py --engine granian --sockets 10500 --mode mix --hold 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SOURCES = 16
"""Source addresses 127.0.0.2 ... 127.0.0.17, taken in turn: ~28,000 ports each."""
PAYLOADS = {
    "silent": b"",
    "head": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    "body": (
        b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ),
}
MODES = (*PAYLOADS, "mix")


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------- attacker process


class Stalled(asyncio.Protocol):
    """One stalled client: sends its payload, then nothing; notes when the server hangs up."""

    def __init__(self, payload: bytes, closed: list[float]) -> None:
        self.payload = payload
        self.closed = closed
        self.opened = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.opened = time.monotonic()
        if self.payload:
            transport.write(self.payload)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.append(time.monotonic() - self.opened)


async def attack(port: int, sockets: int, mode: str, hold: float, connect_timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    closed: list[float] = []
    transports: list[asyncio.BaseTransport] = []
    failed = 0
    gate = asyncio.Semaphore(256)
    names = list(PAYLOADS)

    async def one(i: int) -> None:
        nonlocal failed
        payload = PAYLOADS[names[i % len(names)] if mode == "mix" else mode]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        async with gate:
            try:
                sock.bind((f"127.0.0.{2 + i % SOURCES}", 0))
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), connect_timeout)
                transport, _ = await loop.create_connection(lambda: Stalled(payload, closed), sock=sock)
            except (OSError, asyncio.TimeoutError):
                sock.close()
                failed += 1
                return
        transports.append(transport)

    await asyncio.gather(*(one(i) for i in range(sockets)))
    print(json.dumps({"connected": len(transports)}), flush=True)
    await asyncio.sleep(hold)
    still_open = sum(1 for t in transports if not t.is_closing())
    for t in transports:
        t.abort()
    await asyncio.sleep(0)
    cut = sorted(closed[: len(transports) - still_open])
    return {
        "connected": len(transports),
        "failed_to_connect": failed,
        "still_open_at_end": still_open,
        "closed_by_server": len(cut),
        "closed_after_median_s": round(statistics.median(cut), 2) if cut else None,
        "closed_after_max_s": round(max(cut), 2) if cut else None,
    }


# --------------------------------------------------------------------------- measuring process


def probe(port: int, timeout: float) -> float | None:
    """Seconds a fresh ``GET /healthz`` took to answer; None if it did not within ``timeout``."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - start)))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    return time.monotonic() - start


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int, Path]:
    log = Path(args.log)
    cmd = [
        sys.executable, "-m", "sse_fast", "serve", "--engine", args.engine, "--port", "0",
        "--store", "none", "--log-level", "warning", "--max-connections", str(args.max_connections),
        *args.server_args,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_raise_nofile,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_bytes())
        if found:
            port = int(found.group(1))
            if probe(port, 1.0) is not None:
                return proc, port, log
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop_server(proc)
    raise RuntimeError(f"server did not start: {log.read_text(errors='replace')}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    proc, port, _log = start_server(args)
    try:
        attack = [sys.executable, __file__, "--attack", str(port), "--sockets", str(args.sockets)]
        attacker = subprocess.Popen(
            [
                *attack,
                "--mode",
                args.mode,
                "--hold",
                str(args.hold),
                "--connect-timeout",
                str(args.connect_timeout),
            ],
            stdout=subprocess.PIPE,
            preexec_fn=_raise_nofile,
        )
        assert attacker.stdout is not None
        connected = json.loads(attacker.stdout.readline() or b"{}")  # every connect tried
        latencies: list[float | None] = []
        # Every probe ends (answered or timed out) while the stalled sockets are still held.
        end = time.monotonic() + args.hold - args.probe_timeout - 0.5
        while time.monotonic() < end:
            latencies.append(probe(port, args.probe_timeout))
            time.sleep(args.probe_interval)
        tail = attacker.communicate(timeout=args.hold + 60)[0]
        report = json.loads(tail.splitlines()[-1])
        answered = [x for x in latencies if x is not None]
        return {
            "engine": args.engine,
            "max_connections": args.max_connections,
            "server_args": args.server_args,
            "mode": args.mode,
            "sockets": args.sockets,
            "connected_before_probing": connected.get("connected"),
            "probes": len(latencies),
            "probes_unanswered": len(latencies) - len(answered),
            "probe_median_ms": round(1000 * statistics.median(answered), 1) if answered else None,
            "probe_max_ms": round(1000 * max(answered), 1) if answered else None,
            **report,
        }
    finally:
        stop_server(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="granian", choices=("granian", "native"))
    parser.add_argument("--max-connections", type=int, default=200)
    parser.add_argument("--sockets", type=int, default=600, help="stalled connections to open (at most)")
    parser.add_argument("--mode", default="body", choices=MODES, help="what each stalled client sends")
    parser.add_argument("--hold", type=float, default=15.0, help="seconds the stalled sockets stay open")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each with a fresh server")
    parser.add_argument("--probe-interval", type=float, default=0.25)
    parser.add_argument("--probe-timeout", type=float, default=5.0)
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument("--log", default="/tmp/sse_fast_stalled_server.log")
    parser.add_argument("--attack", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("server_args", nargs="*", help="more sse-fast serve options (after --)")
    args = parser.parse_args()
    if args.attack:
        _raise_nofile()
        result = asyncio.run(attack(args.attack, args.sockets, args.mode, args.hold, args.connect_timeout))
        print(json.dumps(result), flush=True)
        return
    if args.hold <= args.probe_timeout + 1:
        parser.error("--hold: must exceed --probe-timeout by more than 1 s")
    print(json.dumps([measure(args) for _ in range(args.repeat)], indent=2))


if __name__ == "__main__":
    main()
