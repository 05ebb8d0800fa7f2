"""Plain-Python versions of the core's three jobs, for the benchmarks to compare against.

Each does the same work as its compiled counterpart in ``sse_fast._core`` the
way one would first write it in Python: string methods doing the heavy
lifting, no tricks.  They are not spec-complete (the parser, for one, does not
keep a CR that ends one chunk apart from an LF that starts the next); the
benchmarks check that on their inputs they give the same results as the core.
"""

from __future__ import annotations

import codecs


def encode_event(data: str, event: str | None = None, id: str | None = None) -> bytes:
    """``id:``, ``event:``, one ``data:`` line per line of ``data``, blank line."""
    parts = []
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise ValueError("id: must not contain CR, LF or NUL")
        parts.append(f"id: {id}\n")
    if event:
        if "\n" in event or "\r" in event or "\0" in event:
            raise ValueError("event: must not contain CR, LF or NUL")
        parts.append(f"event: {event}\n")
    for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode()


class Event:
    __slots__ = ("data", "event", "id", "retry")

    def __init__(self, data: str, event: str, id: str, retry: int | None) -> None:
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    def astuple(self) -> tuple[str, str, str, int | None]:
        return (self.data, self.event, self.id, self.retry)


class NaiveParser:
    """A ``str.split``-based incremental parser: decode, normalise line ends, split blocks."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")
        self._buffer = ""
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        text = self._buffer + self._decoder.decode(chunk)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        blocks = text.split("\n\n")
        self._buffer = blocks.pop()
        out = []
        for block in blocks:
            data_lines = []
            event_type = ""
            block_retry = None
            for line in block.split("\n"):
                if not line or line[0] == ":":
                    continue
                name, _, value = line.partition(":")
                if value[:1] == " ":
                    value = value[1:]
                if name == "data":
                    data_lines.append(value)
                elif name == "event":
                    event_type = value
                elif name == "id":
                    if "\0" not in value:
                        self.last_event_id = value
                elif name == "retry" and value.isascii() and value.isdigit():
                    self.retry = block_retry = int(value)
            if data_lines:
                data = "\n".join(data_lines)
                out.append(Event(data, event_type or "message", self.last_event_id, block_retry))
        return out


class ListRing:
    """A fan-out ring as a Python list: append, evict from the front, ``b"".join`` a slice."""

    def __init__(self, max_frames: int = 4096) -> None:
        self._frames: list[bytes] = []
        self._max_frames = max_frames
        self.tail = 0

    @property
    def head(self) -> int:
        return self.tail + len(self._frames)

    def append(self, frame: bytes) -> int:
        if len(self._frames) >= self._max_frames:
            del self._frames[0]
            self.tail += 1
        self._frames.append(frame)
        return self.head - 1

    def take(self, cursor: int) -> tuple[bytes, int]:
        if cursor < self.tail:
            raise LookupError(f"cursor {cursor} is behind the oldest retained frame {self.tail}")
        return b"".join(self._frames[cursor - self.tail :]), self.head
