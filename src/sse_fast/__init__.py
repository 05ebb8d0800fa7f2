"""sse_fast: a Server-Sent Events notification edge.

The compiled core (framing, parsing, fan-out ring) lives in ``sse_fast._core``;
the :class:`Hub` holds subscribers and pushes to them; transports, stores and
the client are built on top.
"""

from ._core import HEARTBEAT, EventParser, FanoutRing, ServerSentEvent, encode_comment, encode_event
from .client import Client
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
from .event import Event
from .hub import OFFLINE, SHUTDOWN_EVENT, SLOW_CONSUMER, WRITE_ERROR, Hub, HubClosedError, HubFullError
from .sync_client import SyncClient

__version__ = "0.1.0"

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
