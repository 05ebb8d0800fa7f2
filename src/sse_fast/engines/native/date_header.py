"""The ``Date`` header of the native engine's responses, formatted at most once a second.

RFC 9110 (section 6.6.1) asks an origin server with a clock to date its
responses, in the IMF-fixdate form (``Sun, 06 Nov 1994 08:49:37 GMT``).  The
value changes once a second, and formatting it costs more than reading the
clock, so it is formatted when the second changes and reused until then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate


def imf_fixdate(second: int) -> bytes:
    """``second`` (Unix time) as an IMF-fixdate."""
    return formatdate(second, usegmt=True).encode("ascii")


class DateHeader:
    """Calling it gives the current ``Date`` value; ``clock`` is swappable for tests."""

    __slots__ = ("_clock", "_second", "_value")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        second = int(self._clock())
        if second != self._second:
            self._second = second
            self._value = imf_fixdate(second)
        return self._value


date_header = DateHeader()
"""The one every native response reads."""
