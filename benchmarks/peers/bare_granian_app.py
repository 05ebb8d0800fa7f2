"""The reference: a bare ASGI app that only holds the streams (run it on granian).

Each subscriber has an ``asyncio.Queue`` of pre-encoded frames; its stream
waits on the queue, takes everything pending and sends it as ONE
``http.response.body`` message.  One heartbeat sweep serves all
connections (no timer task per connection).  Same contract as the other
peers: ``GET /events?uid=<uid>``, ``POST /push`` with
``{"uids": [...], "events": [...]}`` answering
``{"code":0,"msg":"ok","data":{"ids":[...]}}``.

Run: ``granian --interface asgi --loop uvloop --backpressure 30000 \\
benchmarks.peers.bare_granian_app:app`` (granian's default backpressure caps a
worker at 1024 concurrent streams).  ``BARE_HEARTBEAT`` sets the heartbeat
interval in seconds (default 15).

granian's ``send`` to a connection the client closed returns quietly, so this
app, which never calls ``receive()`` on a stream, never learns that a client
left: its queue, task and granian's stream stay for good.  That is harmless
for fan-out runs, where nobody leaves, but not for churn:
``BARE_WATCH_DISCONNECT=1`` awaits ``receive()`` in one small task per stream
and ends the stream on ``http.disconnect`` (``benchmarks/churn.py`` sets it).
``GET /stats`` answers ``{"connections": <open streams>}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any
from urllib.parse import parse_qs

import orjson

HEARTBEAT = b": heartbeat\n\n"
MAX_QUEUED = 4096  # frames; a subscriber further behind is dropped
_CLOSE = b""  # sentinel: end the stream

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]


def frame(event_id: int, event: str, data: object) -> bytes:
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"id: {event_id}\nevent: {event}\n{lines}\n".encode()


class State:
    def __init__(self) -> None:
        self.queues: dict[asyncio.Queue[bytes], None] = {}
        self.by_uid: dict[str, list[asyncio.Queue[bytes]]] = {}
        self.seq = 0
        self.heartbeat = float(os.environ.get("BARE_HEARTBEAT", "15"))
        self.sweeper: asyncio.Task[None] | None = None
        self.watch_disconnect = os.environ.get("BARE_WATCH_DISCONNECT") == "1"

    def offer(self, q: asyncio.Queue[bytes], data: bytes) -> None:
        if q.qsize() >= MAX_QUEUED:
            self.queues.pop(q, None)
            q.put_nowait(_CLOSE)
            return
        q.put_nowait(data)

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            for q in tuple(self.queues):
                self.offer(q, HEARTBEAT)


state = State()


async def _json(send: Any, status: int, obj: object) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": orjson.dumps(obj)})


async def _until_disconnect(receive: Any, q: asyncio.Queue[bytes]) -> None:
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:  # a receive() that failed means the client is gone too
        q.put_nowait(_CLOSE)


async def _events(scope: Any, receive: Any, send: Any) -> None:
    uid = (parse_qs(scope.get("query_string", b"").decode()).get("uid") or [""])[0]
    if state.sweeper is None:
        state.sweeper = asyncio.get_running_loop().create_task(state.sweep())
    q: asyncio.Queue[bytes] = asyncio.Queue()
    state.queues[q] = None
    state.by_uid.setdefault(uid, []).append(q)
    watcher = asyncio.ensure_future(_until_disconnect(receive, q)) if state.watch_disconnect else None
    try:
        await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
        await send({"type": "http.response.body", "body": HEARTBEAT, "more_body": True})
        while True:
            first = await q.get()
            if first is _CLOSE:
                break
            if q.empty():
                body = first
            else:
                parts = [first]
                while not q.empty():
                    item = q.get_nowait()
                    if item is _CLOSE:
                        q.put_nowait(_CLOSE)  # end the stream after this send
                        break
                    parts.append(item)
                body = b"".join(parts)
            await send({"type": "http.response.body", "body": body, "more_body": True})
    except (OSError, RuntimeError, asyncio.CancelledError):
        pass
    finally:
        if watcher is not None:
            watcher.cancel()
        state.queues.pop(q, None)
        conns = state.by_uid.get(uid)
        if conns is not None:
            with contextlib.suppress(ValueError):
                conns.remove(q)
            if not conns:
                del state.by_uid[uid]


async def _push(receive: Any, send: Any) -> None:
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    try:
        req = orjson.loads(b"".join(chunks))
        uids = req.get("uids") or []
        frames = []
        ids = []
        for ev in req["events"]:
            state.seq += 1
            frames.append(frame(state.seq, ev.get("event") or "message", ev["data"]))
            ids.append(str(state.seq))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        await _json(send, 400, {"code": 400, "msg": str(exc), "data": {}})
        return
    data = frames[0] if len(frames) == 1 else b"".join(frames)
    if uids:
        for uid in uids:
            for q in state.by_uid.get(uid, ()):
                state.offer(q, data)
    else:
        for q in tuple(state.queues):
            state.offer(q, data)
    await _json(send, 200, {"code": 0, "msg": "ok", "data": {"ids": ids}})


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/stats" and scope["method"] == "GET":
        await _json(send, 200, {"connections": len(state.queues)})
    elif path == "/events" and scope["method"] == "GET":
        await _events(scope, receive, send)
    elif path == "/push" and scope["method"] == "POST":
        await _push(receive, send)
    else:
        await _json(send, 404, {"code": 404, "msg": "not found", "data": {}})
