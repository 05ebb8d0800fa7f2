"""The ASGI lifespan protocol around the native server's life: startup before listening, shutdown last."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .asgi_bridge import ASGI_VERSION, ASGIApp, Message

logger = logging.getLogger("sse_fast.native")


class Lifespan:
    """The app's lifespan protocol around the server's life (startup before listening)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._startup: asyncio.Future[Message] | None = None
        self._shutdown: asyncio.Future[Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsupported = False

    async def startup(self) -> None:
        """Run the app's startup; raise RuntimeError when it reports a failure."""
        loop = asyncio.get_running_loop()
        self._startup = loop.create_future()
        self._shutdown = loop.create_future()
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        self._task = loop.create_task(self._run(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        message = await self._startup
        if message["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"startup failed: {message.get('message', '')}")

    async def shutdown(self) -> None:
        if self._task is None or self._shutdown is None or self._unsupported:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        waiting: set[asyncio.Future[Any]] = {self._shutdown, self._task}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._inbox.get, self._send)
        except Exception:
            if self._startup is not None and not self._startup.done():
                self._unsupported = True  # an app without lifespan support: carry on without it
                logger.debug("the app does not support lifespan", exc_info=True)
                self._startup.set_result({"type": "lifespan.startup.complete"})
            else:
                logger.exception("lifespan failed")
        finally:
            for fut in (self._startup, self._shutdown):
                if fut is not None and not fut.done():
                    fut.set_result({"type": "lifespan.shutdown.complete"})

    async def _send(self, message: Message) -> None:
        kind = str(message["type"])
        waiter = self._startup if kind.startswith("lifespan.startup") else self._shutdown
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
