"""sse_fast: a Server-Sent Events notification edge.

The compiled core (framing, parsing, fan-out ring) lives in ``sse_fast._core``;
the :class:`Hub` holds subscribers and pushes to them; transports, stores and
the client are built on top.

Only the core and the exceptions load with the package: everything else loads
on first use (PEP 562 ``__getattr__``), so a client-only program that imports
``sse_fast`` or ``sse_fast.client`` never pays for the hub, the stores, Redis or
granian, while ``from sse_fast import Hub`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._core import HEARTBEAT, EventParser, FanoutRing, ServerSentEvent, encode_comment, encode_event
from .errors import (
    ClientError,
    ClientStoppedError,
    ConnectionLostError,
    ContentTypeError,
    CursorLagging,
    HTTPStatusError,
    InvalidEventError,
    InvalidEventIdError,
    RetriesExhaustedError,
    SSEFastError,
)

if TYPE_CHECKING:
    from .client import Client
    from .event import Event
    from .hub import OFFLINE, SHUTDOWN_EVENT, SLOW_CONSUMER, WRITE_ERROR, Hub, HubClosedError, HubFullError
    from .sync_client import SyncClient

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Client": ".client",
    "SyncClient": ".sync_client",
    "Event": ".event",
    "Hub": ".hub",
    "HubClosedError": ".hub",
    "HubFullError": ".hub",
    "OFFLINE": ".hub",
    "SHUTDOWN_EVENT": ".hub",
    "SLOW_CONSUMER": ".hub",
    "WRITE_ERROR": ".hub",
}
"""Public names loaded on first access, and the module that defines each."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "HEARTBEAT",
    "OFFLINE",
    "SHUTDOWN_EVENT",
    "SLOW_CONSUMER",
    "WRITE_ERROR",
    "Client",
    "ClientError",
    "ClientStoppedError",
    "ConnectionLostError",
    "ContentTypeError",
    "CursorLagging",
    "Event",
    "EventParser",
    "FanoutRing",
    "HTTPStatusError",
    "Hub",
    "HubClosedError",
    "HubFullError",
    "InvalidEventError",
    "InvalidEventIdError",
    "RetriesExhaustedError",
    "SSEFastError",
    "ServerSentEvent",
    "SyncClient",
    "__version__",
    "encode_comment",
    "encode_event",
]
