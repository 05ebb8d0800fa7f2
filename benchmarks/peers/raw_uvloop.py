"""The Python ceiling: a raw uvloop ``asyncio.Protocol`` SSE writer.

No framework and no per-connection task: requests are parsed by hand,
each pushed event is encoded once, and everything pending for a subscriber
leaves as one ``transport.write`` per loop wake-up.  Speaks the benchmark
contract:

- ``GET /events?uid=<uid>`` streams ``text/event-stream`` (body delimited by
  the connection's close, no chunking), starting with ``: heartbeat``;
- ``POST /push`` with ``{"uids": [...], "events": [{"event", "data"}]}``
  (empty ``uids`` is a broadcast) answers
  ``{"code":0,"msg":"ok","data":{"ids":[...]}}``.

Run: ``python benchmarks/peers/raw_uvloop.py --port 8001 [--heartbeat 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from urllib.parse import parse_qs

import orjson
import uvloop

HEARTBEAT = b": heartbeat\n\n"
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"connection: close\r\n\r\n"
)
MAX_PENDING = 4 * 1024 * 1024  # a subscriber further behind than this is dropped


def frame(event_id: int, event: str, data: object) -> bytes:
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"id: {event_id}\nevent: {event}\n{lines}\n".encode()


def reply(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


class Server:
    """Subscribers by uid and the pending frames of the current wake-up."""

    def __init__(self, heartbeat: float) -> None:
        self.subs: dict[Conn, None] = {}
        self.by_uid: dict[str, list[Conn]] = {}
        self.seq = 0
        self.heartbeat = heartbeat
        self.loop = asyncio.get_event_loop()
        self.pending_all: list[bytes] = []
        self.pending_uid: dict[Conn, list[bytes]] = {}
        self.flush_scheduled = False

    def push(self, body: bytes) -> bytes:
        try:
            req = orjson.loads(body)
            uids = req.get("uids") or []
            events = req["events"]
            frames = []
            ids = []
            for ev in events:
                self.seq += 1
                frames.append(frame(self.seq, ev.get("event") or "message", ev["data"]))
                ids.append(str(self.seq))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return reply("400 Bad Request", orjson.dumps({"code": 400, "msg": str(exc), "data": {}}))
        if uids:
            for uid in uids:
                for conn in self.by_uid.get(uid, ()):
                    self.pending_uid.setdefault(conn, []).extend(frames)
        else:
            self.pending_all.extend(frames)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)
        return reply("200 OK", orjson.dumps({"code": 0, "msg": "ok", "data": {"ids": ids}}))

    def flush(self) -> None:
        self.flush_scheduled = False
        pending_uid, self.pending_uid = self.pending_uid, {}
        if self.pending_all:
            common = b"".join(self.pending_all)
            self.pending_all = []
            for conn in tuple(self.subs):
                extra = pending_uid.pop(conn, None)
                conn.send(common + b"".join(extra) if extra else common)
        for conn, frames in pending_uid.items():
            if conn in self.subs:
                conn.send(b"".join(frames))

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            for conn in tuple(self.subs):
                conn.send(HEARTBEAT)


class Conn(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.uid: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.get_write_buffer_size() > MAX_PENDING:
            t.abort()
            return
        t.write(data)

    def data_received(self, data: bytes) -> None:
        if self.uid is not None:
            return  # a subscriber sends nothing more that matters
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            path, _, query = target.partition("?")
            assert self.transport is not None
            if method == "GET" and path == "/events":
                uid = (parse_qs(query).get("uid") or [""])[0]
                self.uid = uid
                self.server.subs[self] = None
                self.server.by_uid.setdefault(uid, []).append(self)
                self.transport.write(STREAM_HEAD + HEARTBEAT)
                return
            if method == "POST" and path == "/push":
                self.transport.write(self.server.push(body))
            else:
                self.transport.write(reply("404 Not Found", b'{"code":404,"msg":"not found","data":{}}'))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.uid is not None:
            self.server.subs.pop(self, None)
            conns = self.server.by_uid.get(self.uid)
            if conns is not None:
                with contextlib.suppress(ValueError):
                    conns.remove(self)
                if not conns:
                    del self.server.by_uid[self.uid]


async def serve(host: str, port: int, heartbeat: float) -> None:
    loop = asyncio.get_running_loop()
    server = Server(heartbeat)
    srv = await loop.create_server(lambda: Conn(server), host, port, backlog=4096, reuse_address=True)
    hb = loop.create_task(server.heartbeats())
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    hb.cancel()
    srv.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--heartbeat", type=float, default=15.0)
    args = ap.parse_args()
    uvloop.run(serve(args.host, args.port, args.heartbeat))


if __name__ == "__main__":
    main()
