"""The ``retry:`` a stream opens with: how long its client waits before it reconnects.

When a node dies or drains, every one of its clients reconnects after its
reconnection time.  Were that the same for all, they would all come back in
the same second and land on the surviving nodes as one storm; so each stream
gets its own, ``retry_ms`` spread uniformly by ``± retry_jitter`` (0.5: from
half to one and a half times), sent in its first frame and repeated by its
goodbye (``event: shutdown``).
"""

from __future__ import annotations

import random

from .._core import HEARTBEAT


class RetryAdvice:
    """Picks each new stream's ``retry:`` (None: the hub sends none, clients keep their own)."""

    __slots__ = ("_jitter", "_ms", "_random")

    def __init__(self, retry_ms: int | None, jitter: float) -> None:
        self._ms = retry_ms
        self._jitter = jitter
        self._random = random.Random()

    def pick(self) -> int | None:
        if self._ms is None:
            return None
        if not self._jitter:
            return self._ms
        spread = self._ms * self._jitter
        return round(self._ms - spread + 2 * spread * self._random.random())


def opening_frame(retry_ms: int | None) -> bytes:
    """A stream's first bytes: the heartbeat (headers and first bytes on the wire at once), then
    the stream's ``retry:`` as a block of its own when it has one (a block without data sets the
    reconnection time and dispatches nothing), in one write."""
    if retry_ms is None:
        return HEARTBEAT
    return HEARTBEAT + b"retry: %d\n\n" % retry_ms
