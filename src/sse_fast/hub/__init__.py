"""The hub: subscribers by user id, push, fan-out, heartbeats and failure policy.

:class:`Hub` is the one class callers use; the modules beside it each hold
one of its concerns.
"""

from ..errors import HubClosedError, HubFullError
from ..ids import EventId
from ..protocol import HISTORY_LOST, RESET_EVENT, SHUTDOWN_EVENT
from .failures import OFFLINE, SLOW_CONSUMER, WRITE_ERROR, PushFailedCallback
from .hub import Hub
from .stats import HubStats
from .subscriber import Subscriber, SubscriberSink

__all__ = [
    "HISTORY_LOST",
    "OFFLINE",
    "RESET_EVENT",
    "SHUTDOWN_EVENT",
    "SLOW_CONSUMER",
    "WRITE_ERROR",
    "EventId",
    "Hub",
    "HubClosedError",
    "HubFullError",
    "HubStats",
    "PushFailedCallback",
    "Subscriber",
    "SubscriberSink",
]
