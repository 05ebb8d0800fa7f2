"""One subscriber's stream on a uvloop transport: the hub writes straight into the socket.

The ASGI transport needs a coroutine per subscriber to carry each write to
the server; here :class:`NativeSink` *is* the path: ``write`` frames the
bytes as one chunk, hands them to the transport (which sends them at once
when the socket has room) and tells the hub it is ready for more, all inside
the hub's own call.  Only a transport whose write buffer passed its
high-water mark holds the subscriber busy: what arrives meanwhile waits in
the hub's ring, the hub's slow-consumer policy decides, and
``resume_writing`` makes it ready again.  No task, no timer, no queue per
subscriber; a resuming subscriber's replay is one short-lived task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ...hub import Hub, Subscriber
from .wire import LAST_CHUNK, chunk

logger = logging.getLogger("sse_fast.native")


class NativeSink:
    """The hub's handle on one streaming response (see the module docstring).

    ``head`` (the response head) goes out with the first write: the hub's
    first write is the heartbeat it sends while registering the subscriber,
    before the engine knows the subscription succeeded.  ``chunked`` is false
    for HTTP/1.0 clients, whose stream ends with the connection.
    """

    __slots__ = ("_drained", "chunked", "closed", "head", "hub", "live", "paused", "sub", "transport")

    def __init__(self, hub: Hub, transport: asyncio.Transport, head: bytes, chunked: bool = True) -> None:
        self.hub = hub
        self.transport = transport
        self.head: bytes | None = head
        self.chunked = chunked
        self.sub: Subscriber | None = None
        self.paused = False
        self.live = False
        self.closed = False
        self._drained: asyncio.Future[None] | None = None

    # ------------------------------------------------------ the hub's side

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        payload = chunk(data) if self.chunked else data
        head = self.head
        if head is not None:
            payload = head + payload
            self.head = None
        try:
            self.transport.write(payload)
        except (OSError, RuntimeError) as exc:  # the handle is already closed
            self._write_failed(exc)
            return
        if self.live and not self.paused:
            self.hub.ready(self.sub)  # type: ignore[arg-type]  # live implies sub

    def close(self) -> None:
        """The hub dropped the subscriber: end the body, or cut a stuck client off."""
        if self.closed:
            return
        self.closed = True
        transport = self.transport
        if self.paused:
            transport.abort()  # a slow consumer: do not keep its backlog in memory
            return
        if self.head is None and self.chunked:
            with contextlib.suppress(OSError, RuntimeError):
                transport.write(LAST_CHUNK)
        transport.close()

    # ------------------------------------------------- the connection's side

    def start(self, sub: Subscriber) -> None:
        """The subscription was accepted: the hub may send what comes next."""
        self.sub = sub
        self.live = True
        if not self.paused and not self.closed:
            self.hub.ready(sub)

    async def replay(self, sub: Subscriber, last_event_id: str) -> None:
        """Send what ``sub`` missed (the hub keeps it busy meanwhile), then go live."""
        self.sub = sub
        try:
            async for data in self.hub.replay(sub, last_event_id):
                if self.closed:
                    return
                self.write(data)
                if self.paused:
                    self._drained = asyncio.get_running_loop().create_future()
                    await self._drained
                    if self.closed:
                        return
        except Exception as exc:
            self._write_failed(exc)
            return
        self.start(sub)

    def pause(self) -> None:
        """The transport's write buffer passed its high-water mark."""
        self.paused = True

    def resume(self) -> None:
        """The transport drained below its low-water mark: send what piled up."""
        self.paused = False
        self._wake()
        sub = self.sub
        if self.live and not self.closed and sub is not None:
            self.hub.ready(sub)

    def lost(self) -> None:
        """The connection is gone: the hub forgets the subscriber at once."""
        self.closed = True
        self._wake()
        if self.sub is not None:
            self.hub.unsubscribe(self.sub)

    def _write_failed(self, exc: BaseException) -> None:
        logger.debug("subscriber write failed: %r", exc)
        if self.sub is not None:
            self.hub.write_failed(self.sub, exc)
        self.closed = True

    def _wake(self) -> None:
        waiter = self._drained
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._drained = None
