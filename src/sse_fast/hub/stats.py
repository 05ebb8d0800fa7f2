"""The hub's counters, and the figures ``/stats`` shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._core import FanoutRing
from .failures import OFFLINE, SLOW_CONSUMER, WRITE_ERROR


@dataclass(slots=True)
class HubStats:
    """Counters since the hub started (``failed`` counts user x event failures)."""

    events: int = 0
    deliveries: int = 0
    failed: int = 0
    dropped: int = 0
    slow_consumers: int = 0
    heartbeats: int = 0
    replayed: int = 0
    resets: int = 0
    store_unavailable: int = 0
    """Pushes refused because the store could not be reached."""
    overloaded: int = 0
    """Broadcasts refused because the fan-out was too far behind (HubOverloadedError)."""
    histories_lost: int = 0
    tokens_expired: int = 0
    """Streams ended because the subscriber's token expired."""
    """Times the store's history was wiped under the hub (a new epoch began)."""
    failed_by_reason: dict[str, int] = field(
        default_factory=lambda: {OFFLINE: 0, SLOW_CONSUMER: 0, WRITE_ERROR: 0}
    )


def snapshot(
    stats: HubStats,
    *,
    connections: int,
    users: int,
    store_error: str | None,
    ring: FanoutRing,
    last_id: str | None,
) -> dict[str, Any]:
    """The counters and the hub's state as one JSON-ready dict (``/stats``, the dashboard, metrics)."""
    s = stats
    return {
        "connections": connections,
        "users": users,
        "events": s.events,
        "deliveries": s.deliveries,
        "failed": s.failed,
        "failed_by_reason": dict(s.failed_by_reason),
        "dropped": s.dropped,
        "slow_consumers": s.slow_consumers,
        "heartbeats": s.heartbeats,
        "replayed": s.replayed,
        "resets": s.resets,
        "store_unavailable": s.store_unavailable,
        "histories_lost": s.histories_lost,
        "tokens_expired": s.tokens_expired,
        "overloaded": s.overloaded,
        "store": {"available": store_error is None, "error": store_error},
        "ring": {
            "frames": len(ring),
            "bytes": ring.nbytes,
            "max_frames": ring.max_frames,
            "max_bytes": ring.max_bytes,
        },
        "last_id": last_id,
    }
