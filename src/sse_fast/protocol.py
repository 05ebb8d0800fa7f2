"""What the server and the clients agree on beyond the SSE spec, stated once for both ends.

The event types the edge sends of its own accord, and the statuses after
which a client should try again rather than give up.
"""

from __future__ import annotations

SHUTDOWN_EVENT = "shutdown"
"""Event type of the last frame a subscriber gets when the server goes away (a
client reconnects after its ``retry:``, as after any dropped connection)."""

RESET_EVENT = "reset"
"""Event type sent before a replay that cannot start right after the client's
``Last-Event-ID``; its data is ``{"reason": ..., "last_event_id": ...}``.
Connected subscribers get one too (reason ``history_lost``) when the store
loses its history under the hub."""

TOKEN_EXPIRED_EVENT = "token_expired"
"""Event type of the last frame a subscriber gets when its token expires (``exp`` plus the
server's leeway); its data is ``{"reason": "token_expired"}``.  A client fetches a fresh token
and reconnects at once with ``Last-Event-ID``: the same token would now be refused with 401."""

HISTORY_LOST = "history_lost"
"""The ``reset`` reason for subscribers connected when the store lost its history."""

EVENTS_MISSED = "events_missed"
"""The ``reset`` reason for subscribers connected when the node found events of its
history gone before it could deliver them (a node of a cluster that fell behind the
store's retention, or was away from Redis that long); the reset's id is where the
events the node delivers next continue."""

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""Answers to a subscription that mean "not now" (overloaded, restarting, shutting
down): a client waits (``Retry-After`` when given) and tries again; any other
error status stops it for good."""
