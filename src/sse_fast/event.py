"""The event a publisher pushes, and its validation.

Validation happens before anything is stored or delivered, so a rejected push
delivers nothing; every error names the field and the rule that was broken.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._core import encode_event
from .errors import InvalidEventError
from .ids import publisher_id_rule
from .json_text import dumps

EVENT_FIELDS = frozenset({"id", "event", "data"})
"""The fields an event of the push API may have."""


@dataclass(slots=True)
class Event:
    """An event to push.

    ``data`` is JSON-encoded (compact, one line) as the reference server does,
    so a client can ``JSON.parse(e.data)``: integers of any size exactly, and
    U+2028, U+2029 and U+0085 escaped, so that no reader splits the line
    (:mod:`sse_fast.json_text`).  Pass ``raw=True`` to send a string as it is:
    it may span lines (CR, LF), but the other line breaks of
    ``str.splitlines`` (VT, FF, U+001C..U+001E, U+0085, U+2028, U+2029) cannot
    be escaped in raw text and are refused.  ``event`` and ``id`` may not hold
    control characters or line/paragraph separators.  A refused event raises
    :class:`~sse_fast.errors.InvalidEventError` naming the field when pushed.
    ``id`` is normally left out: the hub assigns strictly increasing ids.  One
    given here is sent as it is, stored with the event and resumable (a
    client's ``Last-Event-ID`` naming it continues after the latest event
    saved with it); it must not have the server's form ``<epoch>-<seq>`` (see
    :func:`~sse_fast.ids.publisher_id_rule`).
    """

    event: str = "message"
    data: Any = None
    id: str | None = None
    raw: bool = field(default=False, kw_only=True)

    def data_text(self) -> str:
        """The data as the text that goes on the wire."""
        if self.raw:
            if not isinstance(self.data, str):
                raise InvalidEventError("data", "must be a string when raw=True")
            return self.data
        try:
            return dumps(self.data)
        except TypeError as exc:
            raise InvalidEventError("data", f"is not JSON-serialisable ({exc})") from None

    @classmethod
    def from_json(cls, obj: Any, index: int = 0) -> Event:
        """Build an event from one element of the push API's ``events`` list."""
        if type(obj) is not dict and not isinstance(obj, Mapping):  # dict first: an ABC check is dear
            raise InvalidEventError(f"events[{index}]", "must be an object")
        if not obj.keys() <= EVENT_FIELDS:
            unknown = sorted(set(obj) - EVENT_FIELDS)[0]
            raise InvalidEventError(f"events[{index}].{unknown}", "unknown field")
        if "data" not in obj:
            raise InvalidEventError(f"events[{index}].data", "is required")
        event = obj.get("event", "message")
        if event is None:
            event = "message"
        if not isinstance(event, str):
            raise InvalidEventError(f"events[{index}].event", "must be a string")
        event_id = obj.get("id")
        if event_id is not None and not isinstance(event_id, str):
            raise InvalidEventError(f"events[{index}].id", "must be a string")
        return cls(event or "message", obj["data"], event_id)


def validate_uids(uids: Iterable[Any] | None) -> tuple[str, ...] | None:
    """``None`` or empty means broadcast; otherwise a de-duplicated tuple of strings."""
    if uids is None:
        return None
    if isinstance(uids, (str, bytes)):
        raise InvalidEventError("uids", "must be a list of strings, not a single string")
    named: dict[str, None] = {}
    collect_uids(named, uids if isinstance(uids, (list, tuple)) else list(uids))
    return tuple(named) or None


def collect_uids(named: dict[str, None], uids: Sequence[Any], offset: int = 0) -> None:
    """Check ``uids`` (elements ``offset``... of a push's list) and add them to ``named``.

    A push may name 100,000 uids: the common case (all non-empty strings) is
    checked with C-level passes, and only a list that breaks a rule is walked
    in Python to name the first element that does.
    """
    try:
        chunk = dict.fromkeys(uids)
    except TypeError:  # an unhashable element: named below
        pass
    else:
        types = set(map(type, chunk))
        if (types <= {str} or all(issubclass(t, str) for t in types)) and "" not in chunk:
            named.update(chunk)
            return
    for i, uid in enumerate(uids, offset):
        if not isinstance(uid, str):
            raise InvalidEventError(f"uids[{i}]", f"must be a string, not {type(uid).__name__}")
        if not uid:
            raise InvalidEventError(f"uids[{i}]", "must not be empty")
        named[uid] = None


def encode_body(event: Event, index: int = 0) -> tuple[str, bytes]:
    """Validate ``event`` for the wire and encode everything but its id line.

    Returns the data text and the frame body (``event:`` and ``data:`` lines
    and the blank line); the hub prepends ``id: ...`` once the id is known,
    which keeps the spec's field order and encodes each event exactly once.
    """
    try:
        text = event.data_text()
        body = encode_event(text, event.event)
        if event.id is not None:
            encode_event("", None, event.id)
            rule = publisher_id_rule(event.id)
            if rule is not None:
                raise InvalidEventError("id", rule)
    except InvalidEventError as exc:
        raise InvalidEventError(f"events[{index}].{exc.field}", exc.reason) from None
    return text, body
