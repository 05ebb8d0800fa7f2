"""The connections the hub holds, in subscription order and by user id."""

from __future__ import annotations

import contextlib

from .subscriber import Subscriber


class SubscriberRegistry:
    """Every live connection, and each user's connections.

    Both maps are plain dicts that the fan-out walks itself: a broadcast pass
    over ``subs`` or a push to some users through ``by_uid`` costs no call
    per subscriber.  ``subs`` is a dict (not a set) so that passes go in
    subscription order.
    """

    __slots__ = ("by_uid", "joins", "subs")

    def __init__(self) -> None:
        self.subs: dict[Subscriber, None] = {}
        self.by_uid: dict[str, list[Subscriber]] = {}
        self.joins = 0
        """Subscriptions so far: the next one's :attr:`Subscriber.serial`."""

    def add(self, sub: Subscriber) -> None:
        sub.serial = self.joins
        self.joins += 1
        self.subs[sub] = None
        self.by_uid.setdefault(sub.uid, []).append(sub)

    def snapshot(self) -> list[Subscriber]:
        """The connections now, in subscription order: a copy to walk while subscribers come and go."""
        return list(self.subs)

    def drop(self, sub: Subscriber, *, close: bool) -> None:
        """Forget ``sub`` and what was pending for it; ``close`` ends its stream. Safe to call twice."""
        if sub.closed:
            return
        sub.closed = True
        self.subs.pop(sub, None)
        subs = self.by_uid.get(sub.uid)
        if subs is not None:
            with contextlib.suppress(ValueError):
                subs.remove(sub)
            if not subs:
                del self.by_uid[sub.uid]
        sub.private = None
        if close:
            sub.sink.close()
