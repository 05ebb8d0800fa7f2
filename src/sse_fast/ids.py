"""Event ids: the server's ``<epoch>-<seq>``, and the rules for a publisher's own.

``seq`` is a positive decimal integer, strictly increasing within one epoch.
``epoch`` names the history the sequence belongs to (one store, or one hub
without a store) so that an id that comes from a wiped or different history is
recognised instead of being compared numerically with ours.  The epoch is made
of ``[0-9a-z]`` only; the id is split at its *last* ``-``.

A publisher may give an event its own id instead.  A ``Last-Event-ID`` is
first read as a server id, so a publisher id must not parse as one: it is
then looked up by name in the store (see :func:`publisher_id_rule`).
"""

from __future__ import annotations

import secrets
import string
from typing import NamedTuple

from .errors import InvalidEventIdError

_EPOCH_ALPHABET = string.digits + string.ascii_lowercase
_EPOCH_CHARS = frozenset(_EPOCH_ALPHABET)

MAX_PUBLISHER_ID_LENGTH = 256
"""Characters in a publisher's own id: it is a key of the store's id index."""


def new_epoch(length: int = 8) -> str:
    """A fresh random epoch token (8 base-36 characters: ~41 bits)."""
    return "".join(secrets.choice(_EPOCH_ALPHABET) for _ in range(length))


class EventId(NamedTuple):
    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> EventId:
        """Parse ``<epoch>-<seq>``; raise :class:`InvalidEventIdError` naming the rule broken."""
        epoch, sep, seq = text.rpartition("-")
        if not sep or not epoch or not set(epoch) <= _EPOCH_CHARS:
            raise InvalidEventIdError(f"event id {text!r}: expected '<epoch>-<seq>' with epoch of [0-9a-z]")
        if not (seq.isascii() and seq.isdigit()) or len(seq) > 19:
            raise InvalidEventIdError(f"event id {text!r}: seq must be a decimal integer")
        return cls(epoch, int(seq))


def format_id(epoch: str, seq: int) -> str:
    return f"{epoch}-{seq}"


def publisher_id_rule(text: str) -> str | None:
    """Why ``text`` cannot be a publisher's own id, or None when it can.

    One rule for both ends: a push is refused with this reason, and a
    ``Last-Event-ID`` that is neither a server id nor a possible publisher id
    is malformed.
    """
    if not text:
        return "must not be empty (an empty id clears the client's Last-Event-ID; leave it out instead)"
    if len(text) > MAX_PUBLISHER_ID_LENGTH:
        return f"at most {MAX_PUBLISHER_ID_LENGTH} characters"
    try:
        EventId.parse(text)
    except InvalidEventIdError:
        return None
    return "must not have the form of the server's ids, '<epoch>-<seq>' ([0-9a-z]+ '-' digits)"
