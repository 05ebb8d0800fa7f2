"""Event ids: ``<epoch>-<seq>``.

``seq`` is a positive decimal integer, strictly increasing within one epoch.
``epoch`` names the history the sequence belongs to (one store, or one hub
without a store) so that an id that comes from a wiped or different history is
recognised instead of being compared numerically with ours.  The epoch is made
of ``[0-9a-z]`` only; the id is split at its *last* ``-``.
"""

from __future__ import annotations

import secrets
import string
from typing import NamedTuple

from .errors import InvalidEventIdError

_EPOCH_ALPHABET = string.digits + string.ascii_lowercase
_EPOCH_CHARS = frozenset(_EPOCH_ALPHABET)


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
