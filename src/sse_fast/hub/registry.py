"""The connections the hub holds, in subscription order and by user id."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from .subscriber import CLIENT_GONE, Subscriber

ClosedCallback = Callable[[Subscriber], object]
"""Told of each subscriber once it is dropped, its ``close_reason`` set (the access log is one)."""


class SubscriberRegistry:
    """Every live connection, and each user's connections.

    Both maps are plain dicts that the fan-out walks itself: a broadcast pass
    over ``subs`` or a push to some users through ``by_uid`` costs no call
    per subscriber.  ``subs`` is a dict (not a set) so that passes go in
    subscription order.
    """

    __slots__ = ("by_uid", "first_seen", "joins", "last_gone", "on_closed", "subs")

    def __init__(self) -> None:
        self.first_seen: Callable[[str], None] | None = None
        """Told of a user's first connection (presence across nodes), when set."""
        self.last_gone: Callable[[str], None] | None = None
        """Told when a user's last connection is gone, when set."""
        self.subs: dict[Subscriber, None] = {}
        self.by_uid: dict[str, list[Subscriber]] = {}
        self.on_closed: ClosedCallback | None = None
        self.joins = 0
        """Subscriptions so far: the next one's :attr:`Subscriber.serial`."""

    def add(self, sub: Subscriber) -> None:
        sub.serial = self.joins
        self.joins += 1
        self.subs[sub] = None
        subs = self.by_uid.get(sub.uid)
        if subs is None:
            subs = self.by_uid[sub.uid] = []
            if self.first_seen is not None:
                self.first_seen(sub.uid)
        subs.append(sub)

    def snapshot(self) -> list[Subscriber]:
        """The connections now, in subscription order: a copy to walk while subscribers come and go."""
        return list(self.subs)

    def drop(self, sub: Subscriber, *, close: bool, reason: str = CLIENT_GONE) -> None:
        """Forget ``sub`` and what was pending for it; ``close`` ends its stream. Safe to call twice.

        ``reason`` becomes its ``close_reason`` unless one was set before (a
        policy that ends a stream may name its own: ``token_expired``)."""
        if sub.closed:
            return
        sub.closed = True
        if sub.expiry is not None:
            sub.expiry.cancel()
            sub.expiry = None
        if sub.close_reason is None:
            sub.close_reason = reason
        self.subs.pop(sub, None)
        subs = self.by_uid.get(sub.uid)
        if subs is not None:
            with contextlib.suppress(ValueError):
                subs.remove(sub)
            if not subs:
                del self.by_uid[sub.uid]
                if self.last_gone is not None:
                    self.last_gone(sub.uid)
        sub.private = None
        if close:
            sub.sink.close()
        on_closed = self.on_closed
        if on_closed is not None:
            on_closed(sub)
