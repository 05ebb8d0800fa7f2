"""Events that could not be delivered live, and the subscribers that cannot keep up."""

from __future__ import annotations

OFFLINE = "offline"
SLOW_CONSUMER = "slow_consumer"
WRITE_ERROR = "write_error"
