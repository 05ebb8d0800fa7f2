"""sse-starlette on uvicorn, written the way its documentation suggests.

One ``asyncio.Queue`` per client; ``/push`` puts the event into every
queue (broadcast) or into the queues of the given uids; each client's
``EventSourceResponse`` generator yields from its queue and sse-starlette
encodes and sends each event (with its own ping task and disconnect
listener per connection).  Same contract as the other peers.

Run: ``uvicorn benchmarks.peers.sse_starlette_app:app --loop uvloop --no-access-log``;
``SSE_STARLETTE_PING`` sets the ping interval in seconds (default 15).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PING = float(os.environ.get("SSE_STARLETTE_PING", "15"))
MAX_QUEUED = 4096

queues: dict[asyncio.Queue[dict[str, Any] | None], None] = {}
by_uid: dict[str, list[asyncio.Queue[dict[str, Any] | None]]] = {}
seq = 0


def _json(status: int, obj: object) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _offer(q: asyncio.Queue[dict[str, Any] | None], item: dict[str, Any]) -> None:
    if q.qsize() >= MAX_QUEUED:
        queues.pop(q, None)
        q.put_nowait(None)
        return
    q.put_nowait(item)


async def events(request: Request) -> EventSourceResponse:
    uid = request.query_params.get("uid", "")
    q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    queues[q] = None
    by_uid.setdefault(uid, []).append(q)

    async def stream() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"comment": "heartbeat"}
            while True:
                item = await q.get()
                if item is None:
                    return
                yield item
        finally:
            queues.pop(q, None)
            conns = by_uid.get(uid)
            if conns is not None:
                with contextlib.suppress(ValueError):
                    conns.remove(q)
                if not conns:
                    del by_uid[uid]

    return EventSourceResponse(stream(), ping=int(PING), headers={"cache-control": "no-cache"})


async def push(request: Request) -> Response:
    global seq
    try:
        req = orjson.loads(await request.body())
        uids = req.get("uids") or []
        items = []
        for ev in req["events"]:
            seq += 1
            data = ev["data"]
            text = data if isinstance(data, str) else orjson.dumps(data).decode()
            items.append({"id": str(seq), "event": ev.get("event") or "message", "data": text})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return _json(400, {"code": 400, "msg": str(exc), "data": {}})
    targets = [q for uid in uids for q in by_uid.get(uid, ())] if uids else list(queues)
    for q in targets:
        for item in items:
            _offer(q, item)
    return _json(200, {"code": 0, "msg": "ok", "data": {"ids": [it["id"] for it in items]}})


app = Starlette(routes=[Route("/events", events), Route("/push", push, methods=["POST"])])
