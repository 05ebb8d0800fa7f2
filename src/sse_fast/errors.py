"""Exceptions raised by sse_fast.

Kept in a small pure-Python module beside the compiled core (as httptools keeps
``errors.py``) so that callers can import and catch them without touching the
extension, and so that the compiled code raises ordinary Python classes.
"""

from __future__ import annotations


class SSEFastError(Exception):
    """Base class of every error sse_fast raises on purpose."""


class CursorLagging(SSEFastError):
    """A subscriber's cursor points at frames the fan-out ring has already dropped.

    The hub treats this subscriber as a slow consumer: it is disconnected and may
    resume from the store with ``Last-Event-ID``.
    """

    def __init__(self, cursor: int, oldest: int) -> None:
        super().__init__(f"cursor {cursor} is behind the oldest retained frame {oldest}")
        self.cursor = cursor
        self.oldest = oldest


class InvalidEventError(SSEFastError, ValueError):
    """An event cannot be put on the wire; the message names the field and the rule."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidEventIdError(SSEFastError, ValueError):
    """A ``Last-Event-ID`` (or an id given to a store) is not of the form ``<epoch>-<seq>``."""
