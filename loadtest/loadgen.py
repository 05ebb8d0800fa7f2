"""SSE load generator: many subscribers on uvloop, a publisher, one JSON report.

Subscribers are raw ``asyncio.Protocol`` connections: a hand-written HTTP/1.1
``GET`` goes out, the response head is skipped, a chunked body is de-chunked
and everything is fed to the compiled ``sse_fast._core.EventParser`` (so
event counts are spec-exact).  The publisher POSTs
``{"uids": [...], "events": [{"event": "tick", "data": {"t": <time>, "n": <n>}}]}``
to the push URL at a fixed rate (broadcast, or unicast to random uids) over a
few keep-alive connections; each subscriber measures publish-to-receive
latency from ``t`` (both ends on this machine, ``time.time()``).

Engine-agnostic: any server that streams ``text/event-stream`` at the
subscribe URL template (``{uid}`` is replaced) and takes the push JSON.

Source addresses are spread over 127.0.0.2, .3, ... (bound before connect,
with ``IP_BIND_ADDRESS_NO_PORT``) so more than ~28k connections to one port
work, and ``--procs N`` splits the subscribers over N child processes when
one process's open-file limit would cap them.  Everything is bounded:
connecting by ``--connect-timeout``, publishing by ``--duration``, the tail
by ``--drain``; children stop by themselves after a hard deadline.

Examples::

    ulimit -n 20000
    python loadtest/loadgen.py --subscribe-url 'http://127.0.0.1:8080/events?uid={uid}' \\
        --push-url http://127.0.0.1:8080/push --subscribers 10000 --rate 5 --duration 20
    python loadtest/loadgen.py ... --mode unicast --rate 1000          # random uid per push
    python loadtest/loadgen.py ... --subscribers 19000 --procs 2 --rate 0   # idle, heartbeats only
    python loadtest/loadgen.py --subscribers 0 --push-url ... --rate 50   # publisher only

The report (stdout, JSON) has: connections established, events received
(total and within the publishing window), delivered ratio against what was
acknowledged by the server, heartbeats (SSE comments), latency percentiles
p50/p90/p99/max in milliseconds, disconnects and errors.  ``run_load`` is
the same thing as a coroutine with hooks, used by ``benchmarks/fanout.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from sse_fast._core import EventParser

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

# Latency histogram: 10 us buckets below 100 ms, then 1 ms buckets up to 60 s, then overflow.
FINE_BUCKETS = 10_000
COARSE_BUCKETS = 60_000
HIST_SIZE = FINE_BUCKETS + COARSE_BUCKETS + 1


def bucket_of(lat: float) -> int:
    if lat < 0.1:
        return int(lat * 100_000) if lat > 0 else 0
    b = FINE_BUCKETS + int(lat * 1000)
    return b if b < HIST_SIZE else HIST_SIZE - 1


def bucket_value(b: int) -> float:
    """Upper edge of a bucket, in seconds."""
    if b < FINE_BUCKETS:
        return (b + 1) / 100_000
    return (b - FINE_BUCKETS + 1) / 1000


def percentiles(hist: dict[int, int], qs: tuple[float, ...] = (50, 90, 99)) -> dict[str, float | None]:
    total = sum(hist.values())
    out: dict[str, float | None] = {}
    if not total:
        return {f"p{q:g}": None for q in qs}
    keys = sorted(hist)
    for q in qs:
        rank = max(1, math.ceil(total * q / 100))
        acc = 0
        for k in keys:
            acc += hist[k]
            if acc >= rank:
                out[f"p{q:g}"] = round(bucket_value(k) * 1000, 3)
                break
    return out


@dataclass
class Config:
    subscribe_url: str = "http://127.0.0.1:8080/events?uid={uid}"
    push_url: str = "http://127.0.0.1:8080/push"
    subscribers: int = 100
    uid_offset: int = 0
    duration: float = 10.0
    rate: float = 0.0
    mode: str = "broadcast"  # or "unicast"
    uids_per_push: int = 1
    events_per_push: int = 1
    event_type: str = "tick"
    procs: int = 1
    sources: int = 0  # 0: one source address per 20,000 connections (at least 1)
    connect_concurrency: int = 500
    connect_timeout: float = 120.0
    warmup: float = 1.0
    drain: float = 2.0
    push_conns: int = 4
    push_conns_max: int = 64  # more are opened while all are busy, so the offered rate holds
    latency_every: int = 1
    push_headers: list[str] = field(default_factory=list)
    sequential: bool = False  # one connection, the next push right after each answer (paced by rate if > 0)
    saturate: bool = False  # every connection sends its next push right after each answer, for duration
    # requests in flight per push connection; fastload (loadtest/fastload.c) pipelines them, this
    # publisher keeps one per connection and opens more connections instead (push_conns_max)
    push_inflight: int = 1


# --------------------------------------------------------------------------- subscribers


class Counters:
    """What one process's subscribers saw (merged across processes at the end)."""

    def __init__(self) -> None:
        self.attempts = 0
        self.established = 0
        self.connect_errors = 0
        self.http_errors = 0
        self.parse_errors = 0
        self.disconnects = 0
        self.events = 0
        self.bytes = 0
        self.comments_closed = 0
        self.hist = [0] * HIST_SIZE
        self.lat_max = 0.0
        self.lat_count = 0
        self.tcache: dict[str, float] = {}
        self.live: set[SubscriberProtocol] = set()
        self.closing = False
        self.error_samples: list[str] = []

    def note_error(self, text: str) -> None:
        if len(self.error_samples) < 5:
            self.error_samples.append(text)

    def t_of(self, data: str) -> float:
        """Publish time carried in an event's data (-1.0 when it has none)."""
        t = self.tcache.get(data)
        if t is None:
            try:
                t = float(orjson.loads(data)["t"])
            except (ValueError, KeyError, TypeError):
                t = -1.0
            if len(self.tcache) > 200_000:
                self.tcache.clear()
            self.tcache[data] = t
        return t

    def heartbeats(self) -> int:
        return self.comments_closed + sum(p.parser.comments for p in self.live)


class SubscriberProtocol(asyncio.Protocol):
    """One SSE stream: skip the response head, de-chunk if needed, feed the parser."""

    __slots__ = (
        "_chunk_left",
        "_head",
        "_line",
        "_skip",
        "chunked",
        "counters",
        "established",
        "events",
        "on_head",
        "parser",
        "track",
        "transport",
    )

    def __init__(self, counters: Counters, track_latency: bool, on_head: Callable[[bool], None]) -> None:
        self.counters = counters
        self.track = track_latency
        self.on_head = on_head
        self.parser = EventParser()
        self._head = b""
        self.established = False
        self.chunked = False
        self._chunk_left = 0
        self._skip = 0
        self._line = b""
        self.events = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.counters.live.add(self)

    def data_received(self, data: bytes) -> None:
        c = self.counters
        c.bytes += len(data)
        if not self.established:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > 65536:
                    self._fail("response head too long")
                return
            head = self._head[:end].decode("latin-1")
            rest = self._head[end + 4 :]
            self._head = b""
            lines = head.split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or parts[1] != "200":
                c.http_errors += 1
                c.note_error(f"status line {lines[0]!r}")
                self.on_head(False)
                self._close()
                return
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
            self.established = True
            c.established += 1
            self.on_head(True)
            if not rest:
                return
            data = rest
        if self.chunked:
            # fast path: the read is exactly one whole chunk (the usual case for an SSE stream)
            i = data.find(b"\r\n") if not (self._chunk_left or self._skip or self._line) else -1
            if 0 < i <= 8:
                try:
                    end = i + 2 + int(data[:i], 16)
                except ValueError:
                    end = -1
                if end > i + 2 and len(data) == end + 2 and data[end:] == b"\r\n":
                    data = data[i + 2 : end]
                else:
                    data = self._dechunk(data)
            else:
                data = self._dechunk(data)
            if not data:
                return
        try:
            evs = self.parser.feed(data)
        except Exception as exc:  # a spec-exact parser only fails on a broken stream
            c.parse_errors += 1
            c.note_error(f"parse: {exc!r}")
            self._close()
            return
        if evs:
            n = len(evs)
            c.events += n
            self.events += n
            if self.track:
                now = time.time()
                hist = c.hist
                tcache = c.tcache
                for ev in evs:
                    d = ev.data
                    t = tcache.get(d)
                    if t is None:
                        t = c.t_of(d)
                    if t < 0:
                        continue
                    lat = now - t
                    if lat < 0.1:
                        hist[int(lat * 100_000) if lat > 0 else 0] += 1
                    else:
                        hist[bucket_of(lat)] += 1
                        if lat > c.lat_max:
                            c.lat_max = lat
                c.lat_count += n

    def _dechunk(self, data: bytes) -> bytes:
        if self._line:
            data = self._line + data
            self._line = b""
        out = []
        pos = 0
        n = len(data)
        while pos < n:
            left = self._chunk_left
            if left:
                take = n - pos if n - pos < left else left
                out.append(data[pos : pos + take] if pos or take != n else data)
                pos += take
                self._chunk_left = left - take
                if not self._chunk_left:
                    self._skip = 2
                continue
            if self._skip:
                k = min(self._skip, n - pos)
                pos += k
                self._skip -= k
                continue
            i = data.find(b"\r\n", pos)
            if i < 0:
                self._line = data[pos:]
                break
            try:
                size = int(data[pos:i].split(b";", 1)[0], 16)
            except ValueError:
                self.counters.parse_errors += 1
                self.counters.note_error(f"bad chunk size line {data[pos:i][:40]!r}")
                self._close()
                return b""
            pos = i + 2
            if size == 0:  # last chunk: the server ended the stream
                self._close()
                break
            self._chunk_left = size
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def _fail(self, why: str) -> None:
        self.counters.parse_errors += 1
        self.counters.note_error(why)
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        c = self.counters
        c.live.discard(self)
        c.comments_closed += self.parser.comments
        if not self.established:
            c.connect_errors += 1
            c.note_error(f"closed before response head: {exc!r}")
            self.on_head(False)
        elif not c.closing:
            c.disconnects += 1
        self.transport = None


def source_address(index: int, sources: int) -> str:
    return f"127.0.0.{2 + index % sources}"


class SubscriberGroup:
    """Subscribers ``uids[start:stop]`` in this process's event loop."""

    def __init__(self, cfg: Config, start: int, stop: int) -> None:
        self.cfg = cfg
        self.start = start
        self.stop = stop
        self.counters = Counters()
        self.window: dict[str, float] = {}
        self._pending_heads = 0
        self._heads_done: asyncio.Event | None = None

    def _on_head(self, ok: bool) -> None:
        self._pending_heads -= 1
        if self._pending_heads <= 0 and self._heads_done is not None:
            self._heads_done.set()

    async def connect_all(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        url = cfg.subscribe_url
        parts = urlsplit(url.replace("{uid}", "0"))
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 80
        total = cfg.subscribers
        sources = cfg.sources or max(1, math.ceil(total / 20_000))
        sem = asyncio.Semaphore(cfg.connect_concurrency)
        c = self.counters
        self._heads_done = asyncio.Event()
        n = self.stop - self.start
        self._pending_heads = n
        if n <= 0:
            return

        async def one(i: int) -> None:
            uid = str(cfg.uid_offset + i)
            u = urlsplit(url.replace("{uid}", uid))
            target = u.path + ("?" + u.query if u.query else "")
            req = (
                f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
                "Cache-Control: no-cache\r\n\r\n"
            ).encode()
            async with sem:
                c.attempts += 1
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setblocking(False)
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((source_address(i, sources), 0))
                    await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 30)
                    track = (i % cfg.latency_every) == 0
                    transport, _proto = await loop.create_connection(
                        lambda: SubscriberProtocol(c, track, self._on_head), sock=sock
                    )
                except (OSError, asyncio.TimeoutError) as exc:
                    sock.close()
                    c.connect_errors += 1
                    c.note_error(f"connect: {exc!r}")
                    self._on_head(False)
                    return
                transport.write(req)

        tasks = [loop.create_task(one(i)) for i in range(self.start, self.stop)]
        try:
            await asyncio.wait_for(self._heads_done.wait(), cfg.connect_timeout)
        except asyncio.TimeoutError:
            c.note_error(f"connect timeout: {self._pending_heads} heads still pending")
        for t in tasks:
            t.cancel()

    def mark(self, name: str) -> None:
        self.window[name] = time.time()
        self.window[name + "_events"] = self.counters.events

    def result(self) -> dict[str, Any]:
        c = self.counters
        hist = {i: v for i, v in enumerate(c.hist) if v}
        return {
            "attempts": c.attempts,
            "established": c.established,
            "connect_errors": c.connect_errors,
            "http_errors": c.http_errors,
            "parse_errors": c.parse_errors,
            "disconnects": c.disconnects,
            "events": c.events,
            "bytes": c.bytes,
            "heartbeats": c.heartbeats(),
            "open_at_end": len(c.live),
            "hist": hist,
            "lat_max": c.lat_max,
            "lat_count": c.lat_count,
            "window": self.window,
            "error_samples": c.error_samples,
        }

    async def close(self) -> dict[str, Any]:
        c = self.counters
        res = self.result()
        c.closing = True
        for p in list(c.live):
            if p.transport is not None:
                p.transport.abort()
        await asyncio.sleep(0)
        return res


# --------------------------------------------------------------------------- publisher


class PushProtocol(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection that carries one push at a time."""

    def __init__(self, publisher: Publisher) -> None:
        self.pub = publisher
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.expect = 0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, expect: int) -> None:
        assert self.transport is not None
        self.busy = True
        self.expect = expect
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1")
        length = -1
        chunked = False
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        body_start = end + 4
        if chunked:
            term = self.buf.find(b"0\r\n\r\n", body_start)
            if term < 0:
                return
            consumed = term + 5
        else:
            if length < 0:
                length = 0
            if len(self.buf) < body_start + length:
                return
            consumed = body_start + length
        status = head.split(" ", 2)[1] if " " in head else "?"
        self.buf = self.buf[consumed:]
        self.busy = False
        self.pub.done(self, status == "200", time.perf_counter() - self.sent_at, head.split("\r\n", 1)[0])

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.pub.done(self, False, 0.0, f"push connection lost: {exc!r}")
        self.pub.lost(self)


class Publisher:
    """Pushes at ``cfg.rate`` per second for ``cfg.duration`` seconds."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        u = urlsplit(cfg.push_url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.path = u.path or "/push"
        self.free: list[PushProtocol] = []
        self.conns: list[PushProtocol] = []
        self.free_event = asyncio.Event()
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.expected_per_subscriber = 0  # broadcast events acked
        self.expected_unicast = 0  # unicast deliveries acked (one connection per uid)
        self.waited = 0  # pushes that had to wait for a free connection
        self.rtt: list[float] = []
        self.error_samples: list[str] = []
        self.started = 0.0
        self.finished = 0.0
        self.rng = random.Random(1)
        extra = "".join(h.strip() + "\r\n" for h in cfg.push_headers)
        self.head_tmpl = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\n{extra}Content-Length: "
        ).encode()

    async def open(self) -> None:
        for _ in range(self.cfg.push_conns):
            await self._connect()
        self.free_event.set()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: PushProtocol(self), self.host, self.port)
        self.conns.append(proto)
        self.free.append(proto)

    def done(self, proto: PushProtocol, ok: bool, rtt: float, status: str) -> None:
        if ok:
            self.acked += 1
            if self.cfg.mode == "unicast":
                self.expected_unicast += proto.expect
            else:
                self.expected_per_subscriber += proto.expect
            if len(self.rtt) < 200_000:
                self.rtt.append(rtt)
        else:
            self.failed += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(status)
        if proto.transport is not None:
            self.free.append(proto)
            self.free_event.set()

    def lost(self, proto: PushProtocol) -> None:
        with contextlib.suppress(ValueError):
            self.free.remove(proto)

    def _request(self, n: int) -> tuple[bytes, int]:
        cfg = self.cfg
        t = time.time()
        events = [
            {"event": cfg.event_type, "data": {"t": t, "n": n * cfg.events_per_push + k}}
            for k in range(cfg.events_per_push)
        ]
        if cfg.mode == "unicast":
            pool = max(1, cfg.subscribers)
            uids = {str(cfg.uid_offset + self.rng.randrange(pool)) for _ in range(cfg.uids_per_push)}
            body = orjson.dumps({"uids": sorted(uids), "events": events})
            expect = len(uids) * cfg.events_per_push
        else:
            body = orjson.dumps({"uids": [], "events": events})
            expect = cfg.events_per_push
        return self.head_tmpl + str(len(body)).encode() + b"\r\n\r\n" + body, expect

    async def run(self) -> None:
        cfg = self.cfg
        if cfg.sequential:
            await self._run_sequential()
            return
        if cfg.saturate:
            await self._run_saturating()
            return
        if cfg.rate <= 0:
            await asyncio.sleep(cfg.duration)
            return
        total = int(cfg.rate * cfg.duration)
        self.started = time.perf_counter()
        deadline = self.started + cfg.duration + 5.0
        n = 0
        grow = True
        while n < total:
            now = time.perf_counter()
            if now > deadline:
                break
            due = min(total, int((now - self.started) * cfg.rate) + 1)
            while n < due:
                if not self.free and grow and len(self.conns) < max(cfg.push_conns, cfg.push_conns_max):
                    # open loop: a slow answer must not lower the offered rate
                    try:
                        await self._connect()
                        continue
                    except OSError as exc:
                        grow = False
                        if len(self.error_samples) < 5:
                            self.error_samples.append(f"push connect: {exc!r}")
                if not self.free:
                    self.waited += 1
                    self.free_event.clear()
                    try:
                        await asyncio.wait_for(self.free_event.wait(), max(0.01, deadline - now))
                    except asyncio.TimeoutError:
                        break
                    continue
                proto = self.free.pop()
                req, expect = self._request(n)
                proto.send(req, expect)
                self.sent += 1
                n += 1
            nxt = self.started + n / cfg.rate
            await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
        self.finished = time.perf_counter()

    async def _run_saturating(self) -> None:
        """Every connection busy for the whole window: the next push goes out as each answer comes."""
        cfg = self.cfg
        self.started = time.perf_counter()
        end = self.started + cfg.duration
        n = 0
        while (now := time.perf_counter()) < end and self.conns:
            while self.free:
                proto = self.free.pop()
                req, expect = self._request(n)
                proto.send(req, expect)
                self.sent += 1
                n += 1
            self.free_event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.free_event.wait(), max(0.001, end - now))
        self.finished = time.perf_counter()

    async def _run_sequential(self) -> None:
        """A backend that posts, waits for the 200 and posts again: the publisher users have first.

        One connection; with ``rate`` > 0 the pushes are paced at that rate
        (never faster than the answers come), otherwise each follows the last answer.
        """
        cfg = self.cfg
        self.started = time.perf_counter()
        end = self.started + cfg.duration
        n = 0
        while time.perf_counter() < end and self.free:
            proto = self.free.pop()
            self.free_event.clear()
            req, expect = self._request(n)
            proto.send(req, expect)
            self.sent += 1
            n += 1
            try:
                await asyncio.wait_for(self.free_event.wait(), max(0.01, end + 5.0 - time.perf_counter()))
            except asyncio.TimeoutError:
                break
            if cfg.rate > 0:
                await asyncio.sleep(max(0.0, self.started + n / cfg.rate - time.perf_counter()))
        self.finished = time.perf_counter()

    async def wait_idle(self, timeout: float) -> None:
        end = time.perf_counter() + timeout
        while any(p.busy for p in self.conns) and time.perf_counter() < end:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        for p in self.conns:
            if p.transport is not None:
                p.transport.close()

    def result(self) -> dict[str, Any]:
        rtt = sorted(self.rtt)
        elapsed = (self.finished or time.perf_counter()) - (self.started or time.perf_counter())

        def pct(q: float) -> float | None:
            return round(rtt[min(len(rtt) - 1, int(len(rtt) * q / 100))] * 1000, 3) if rtt else None

        return {
            "mode": self.cfg.mode,
            "target_rate": self.cfg.rate,
            "sent": self.sent,
            "acked": self.acked,
            "failed": self.failed,
            "waited_for_connection": self.waited,
            "connections": len(self.conns),
            "achieved_rate": round(self.sent / elapsed, 2) if elapsed > 0 else 0.0,
            "push_rtt_ms": {"p50": pct(50), "p99": pct(99), "max": round(rtt[-1] * 1000, 3) if rtt else None},
            "expected_per_subscriber": self.expected_per_subscriber,
            "expected_unicast": self.expected_unicast,
            "error_samples": self.error_samples,
        }


# --------------------------------------------------------------------------- child processes


class ChildGroup:
    """A ``SubscriberGroup`` in a child process, driven over stdin/stdout lines."""

    def __init__(self, cfg: Config, start: int, stop: int, deadline: float) -> None:
        payload = json.dumps({"cfg": asdict(cfg), "start": start, "stop": stop, "deadline": deadline})
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--_child", payload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.ready: dict[str, Any] | None = None

    async def _readline(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        return json.loads(line) if line else None

    async def wait_ready(self, timeout: float) -> None:
        self.ready = await self._readline(timeout)

    def command(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()

    async def finish(self, timeout: float) -> dict[str, Any] | None:
        self.command("finish")
        try:
            res = await self._readline(timeout)
        except asyncio.TimeoutError:
            res = None
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return res


async def _child_main(payload: str) -> None:
    spec = json.loads(payload)
    cfg = Config(**spec["cfg"])
    group = SubscriberGroup(cfg, spec["start"], spec["stop"])
    deadline = spec["deadline"]
    loop = asyncio.get_running_loop()
    await group.connect_all()
    c = group.counters
    print(json.dumps({"type": "ready", "established": c.established, "errors": c.connect_errors}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        remaining = deadline - time.time()
        if remaining <= 0:
            break
        try:
            line = await asyncio.wait_for(reader.readline(), remaining)
        except asyncio.TimeoutError:
            break
        cmd = line.decode().strip()
        if not cmd or cmd == "finish":
            break
        group.mark(cmd)
    res = await group.close()
    print(json.dumps({"type": "result", **res}), flush=True)


# --------------------------------------------------------------------------- coordinator


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "attempts",
        "established",
        "connect_errors",
        "http_errors",
        "parse_errors",
        "disconnects",
        "events",
        "bytes",
        "heartbeats",
        "open_at_end",
        "lat_count",
    )
    out: dict[str, Any] = {k: sum(r.get(k, 0) for r in results) for k in keys}
    hist: dict[int, int] = {}
    for r in results:
        for k, v in r.get("hist", {}).items():
            hist[int(k)] = hist.get(int(k), 0) + v
    lat = percentiles(hist)
    lat_max = max([r.get("lat_max", 0.0) for r in results] + [0.0])
    if hist and lat_max < 0.1:
        lat_max = bucket_value(max(hist))
    lat["max"] = round(lat_max * 1000, 3) if hist else None
    out["latency_ms"] = lat
    out["events_window"] = sum(
        r["window"].get("stop_events", r["events"]) - r["window"].get("start_events", 0) for r in results
    )
    out["error_samples"] = [e for r in results for e in r.get("error_samples", [])][:10]
    return out


Hook = Callable[[str], Any]


async def run_load(cfg: Config, hook: Hook | None = None) -> dict[str, Any]:
    """Connect, publish for ``cfg.duration``, drain, report.

    ``hook(name)`` is called (and awaited if it returns an awaitable) at
    ``"connected"``, ``"start"`` (publishing begins), ``"stop"`` (publishing
    ended) and ``"drained"`` (before the streams are closed);
    ``benchmarks/fanout.py`` samples the server there.
    """

    async def call(name: str) -> None:
        if hook is not None:
            r = hook(name)
            if asyncio.iscoroutine(r):
                await r

    limit = raise_nofile()
    t_begin = time.time()
    deadline = t_begin + cfg.connect_timeout + cfg.warmup + cfg.duration + cfg.drain + 60
    procs = max(1, cfg.procs)
    per_proc_cap = limit - 100
    if cfg.subscribers > procs * per_proc_cap:
        procs = math.ceil(cfg.subscribers / per_proc_cap)
    bounds = [(cfg.subscribers * k // procs, cfg.subscribers * (k + 1) // procs) for k in range(procs)]
    local: SubscriberGroup | None = None
    children: list[ChildGroup] = []
    if cfg.subscribers > 0:
        if procs == 1:
            local = SubscriberGroup(cfg, 0, cfg.subscribers)
        else:
            children = [ChildGroup(cfg, a, b, deadline) for a, b in bounds]
    t0 = time.perf_counter()
    if local is not None:
        await local.connect_all()
    for ch in children:
        await ch.wait_ready(cfg.connect_timeout + 30)
    connect_s = time.perf_counter() - t0
    await call("connected")
    publisher = Publisher(cfg) if cfg.rate > 0 or cfg.sequential or cfg.saturate else None
    if publisher is not None:
        await publisher.open()
    await asyncio.sleep(cfg.warmup)

    def mark(name: str) -> None:
        if local is not None:
            local.mark(name)
        for ch in children:
            ch.command(name)

    await call("start")
    mark("start")
    w0 = time.perf_counter()
    if publisher is not None:
        await publisher.run()
        await publisher.wait_idle(5.0)
    else:
        await asyncio.sleep(cfg.duration)
    window = time.perf_counter() - w0
    mark("stop")
    await call("stop")
    await asyncio.sleep(cfg.drain)
    await call("drained")
    results: list[dict[str, Any]] = []
    if local is not None:
        results.append(await local.close())
    for ch in children:
        r = await ch.finish(30.0)
        if r is not None:
            results.append(r)
        else:
            results.append(
                {"error_samples": ["a subscriber process did not report"], "window": {}, "events": 0}
            )
    if publisher is not None:
        publisher.close()
    return assemble_report(
        cfg, procs, connect_s, window, results, publisher.result() if publisher is not None else None
    )


def assemble_report(
    cfg: Config,
    procs: int,
    connect_s: float,
    window: float,
    results: list[dict[str, Any]],
    pub: dict[str, Any] | None,
) -> dict[str, Any]:
    """The report from the subscriber groups' results and the publisher's (shared with fastload.py)."""
    agg = merge(results)
    report: dict[str, Any] = {
        "config": {k: v for k, v in asdict(cfg).items() if k != "push_headers"},
        "procs": procs if cfg.subscribers > 0 else 0,
        "subscribers": agg["established"],
        "connect_seconds": round(connect_s, 3),
        "window_seconds": round(window, 3),
        **agg,
        "events_per_s": round(agg["events_window"] / window, 1) if window > 0 else 0.0,
    }
    if pub is not None:
        if cfg.mode == "unicast":
            expected = pub["expected_unicast"]
        else:
            expected = pub["expected_per_subscriber"] * agg["established"]
        report["publisher"] = pub
        report["expected_events"] = expected
        report["delivered_ratio"] = round(agg["events"] / expected, 5) if expected else None
    report["errors"] = (
        agg["connect_errors"]
        + agg["http_errors"]
        + agg["parse_errors"]
        + (report.get("publisher", {}).get("failed", 0))
        + (report.get("publisher", {}).get("connect_errors", 0))
    )
    return report


def parse_args(argv: list[str] | None = None, ap: argparse.ArgumentParser | None = None) -> Config:
    """The ``Config`` of a command line (``ap``: a parser with more options of the caller's)."""
    ap = ap or argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument(
        "--subscribe-url",
        default=Config.subscribe_url,
        help="URL template; {uid} is replaced (default %(default)s)",
    )
    ap.add_argument("--push-url", default=Config.push_url)
    ap.add_argument("--subscribers", type=int, default=Config.subscribers)
    ap.add_argument("--uid-offset", type=int, default=0)
    ap.add_argument("--duration", type=float, default=Config.duration, help="publishing window, seconds")
    ap.add_argument("--rate", type=float, default=0.0, help="pushes per second (0: no publisher)")
    ap.add_argument("--mode", choices=("broadcast", "unicast"), default="broadcast")
    ap.add_argument("--uids-per-push", type=int, default=1, help="unicast: random uids per push")
    ap.add_argument("--events-per-push", type=int, default=1)
    ap.add_argument("--event-type", default="tick")
    ap.add_argument("--procs", type=int, default=1, help="subscriber processes (1: in this process)")
    ap.add_argument("--sources", type=int, default=0, help="source addresses 127.0.0.2.. (0: auto)")
    ap.add_argument("--connect-concurrency", type=int, default=Config.connect_concurrency)
    ap.add_argument("--connect-timeout", type=float, default=Config.connect_timeout)
    ap.add_argument("--warmup", type=float, default=Config.warmup)
    ap.add_argument("--drain", type=float, default=Config.drain, help="seconds to wait for the tail")
    ap.add_argument("--push-conns", type=int, default=Config.push_conns, help="push connections at start")
    ap.add_argument(
        "--push-conns-max",
        type=int,
        default=Config.push_conns_max,
        help="more are opened while all are busy, up to this many (keeps the offered rate)",
    )
    ap.add_argument("--latency-every", type=int, default=1, help="track latency on 1 in N subscribers")
    ap.add_argument("--push-header", action="append", default=[], help="extra header for pushes")
    ap.add_argument(
        "--sequential",
        action="store_true",
        help="one push connection, the next push after each answer (paced by --rate when > 0)",
    )
    ap.add_argument(
        "--saturate",
        action="store_true",
        help="every push connection sends its next push right after each answer (no --rate)",
    )
    a = ap.parse_args(argv)
    if a.duration <= 0 or a.duration > 3600:
        ap.error("--duration: must be in (0, 3600] seconds")
    return Config(
        subscribe_url=a.subscribe_url,
        push_url=a.push_url,
        subscribers=a.subscribers,
        uid_offset=a.uid_offset,
        duration=a.duration,
        rate=a.rate,
        mode=a.mode,
        uids_per_push=a.uids_per_push,
        events_per_push=a.events_per_push,
        event_type=a.event_type,
        procs=a.procs,
        sources=a.sources,
        connect_concurrency=a.connect_concurrency,
        connect_timeout=a.connect_timeout,
        warmup=a.warmup,
        drain=a.drain,
        push_conns=1 if a.sequential else a.push_conns,
        push_conns_max=1 if a.sequential else a.push_conns_max,
        latency_every=max(1, a.latency_every),
        push_headers=a.push_header,
        sequential=a.sequential,
        saturate=a.saturate,
        push_inflight=1 if a.sequential else max(1, getattr(a, "push_inflight", 1)),
    )


def main(argv: list[str] | None = None) -> int:
    import uvloop

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_child"]:
        raise_nofile()
        uvloop.run(_child_main(argv[1]))
        return 0
    cfg = parse_args(argv)
    report = uvloop.run(run_load(cfg))
    print(json.dumps(report, indent=2))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
