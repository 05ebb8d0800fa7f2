"""sse_fast inside a Starlette (or FastAPI) application.

The subscribe endpoint is mounted under ``/sse`` (``GET /sse/events?uid=...``);
the application's own routes call ``hub.push``.  Run it with granian::

    granian --interface asgi examples.starlette_app:app

or uvicorn (``uvicorn examples.starlette_app:app``).  The application owns the
hub's life: its lifespan starts and closes it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from sse_fast import Event, Hub
from sse_fast.asgi import SSEApp

log = logging.getLogger("example")
undelivered: list[dict[str, str]] = []


def remember_undelivered(uid: str, event: Event, reason: str) -> None:
    """Told of every event a user did not get live (offline, slow, write error)."""
    undelivered.append({"uid": uid, "event": event.event, "id": event.id or "", "reason": reason})
    log.info("event %s for %s not delivered: %s", event.id, uid, reason)


hub = Hub(heartbeat=15, on_push_failed=remember_undelivered)


async def ship_order(request: Request) -> JSONResponse:
    """An ordinary route of the application that notifies one user."""
    uid = request.path_params["uid"]
    ids = await hub.push(Event("order", {"order": request.path_params["order"], "status": "shipped"}), [uid])
    return JSONResponse({"ids": ids})


async def announce(request: Request) -> JSONResponse:
    """Broadcast to everyone connected."""
    ids = await hub.push(Event("announcement", await request.json()))
    return JSONResponse({"ids": ids})


async def failures(request: Request) -> JSONResponse:
    return JSONResponse(undelivered)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await hub.start()
    yield
    await hub.close()


app = Starlette(
    routes=[
        Route("/orders/{uid}/{order}/ship", ship_order, methods=["POST"]),
        Route("/announce", announce, methods=["POST"]),
        Route("/failures", failures),
        Mount("/sse", app=SSEApp(hub, manage_hub=False)),
    ],
    lifespan=lifespan,
)
