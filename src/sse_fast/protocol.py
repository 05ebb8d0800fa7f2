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

HISTORY_LOST = "history_lost"
"""The ``reset`` reason for subscribers connected when the store lost its history."""

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""Answers to a subscription that mean "not now" (overloaded, restarting, shutting
down): a client waits (``Retry-After`` when given) and tries again; any other
error status stops it for good."""
