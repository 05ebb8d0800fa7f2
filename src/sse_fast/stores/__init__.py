"""Persistence backends behind one :class:`~sse_fast.stores.base.Store` protocol.

:func:`open_store` turns the ``store`` setting into a backend::

    memory://[?max_events=N&max_age=S]
    sqlite:///relative/path.db[?max_events=N&max_age=S&synchronous=FULL|NORMAL]
    sqlite:////absolute/path.db
    redis://[:password@]host[:port][/db][?prefix=P&max_events=N&max_age=S]   (also rediss://)

``max_events=0`` (or ``none``) lifts the count bound.  The store is returned
unopened: the hub awaits ``open()`` when it starts.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..redact import redact_text
from .base import (
    DEFAULT_PAGE,
    MIN_ID_WINDOW,
    HistoryLostError,
    NewEvent,
    Retention,
    Store,
    StoreClosedError,
    StoredEvent,
    StoreUnavailableError,
)
from .memory import MemoryStore
from .redis import RedisStore
from .sqlite import SQLiteStore

_SCHEMES = "memory://, sqlite:///<path> or redis://host:port/db"


def _fail(url: str, rule: str) -> ValueError:
    """The error for a bad store URL: it names the URL, never its password."""
    return ValueError(redact_text(f"store: {url!r}: {rule}"))


def open_store(url: str) -> Store:
    """Build the store a ``store`` URL names; raise ValueError naming the rule broken."""
    if not isinstance(url, str) or "://" not in url:
        raise _fail(str(url), f"must be a URL: {_SCHEMES}")
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise _fail(url, f"malformed URL ({exc})") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise _fail(url, f"query parameter {key!r} given twice")
        params[key] = value
    scheme = parts.scheme.lower()

    def take_int(name: str, default: int | None) -> int | None:
        text = params.pop(name, None)
        if text is None:
            return default
        if text.lower() in ("0", "none"):
            return None
        if not text.isdigit():
            raise _fail(url, f"{name} must be a non-negative integer, not {text!r}")
        return int(text)

    def take_age() -> float | None:
        text = params.pop("max_age", None)
        if text is None or text.lower() in ("0", "none"):
            return None
        try:
            age = float(text)
        except ValueError:
            raise _fail(url, f"max_age must be a number of seconds, not {text!r}") from None
        if not age > 0 or age == float("inf"):
            raise _fail(url, f"max_age must be a positive number of seconds, not {text!r}")
        return age

    def no_leftovers() -> None:
        if params:
            raise _fail(url, f"unknown query parameter(s) for {scheme}://: {', '.join(sorted(params))}")

    if scheme == "memory":
        if parts.netloc or parts.path not in ("", "/"):
            raise _fail(url, "memory:// takes no host or path")
        from .memory import DEFAULT_MAX_EVENTS as mem_default

        memory = MemoryStore(take_int("max_events", mem_default), take_age())
        no_leftovers()
        return memory

    if scheme == "sqlite":
        if parts.netloc:
            raise _fail(url, "sqlite URLs have three slashes: sqlite:///relative/path or sqlite:////abs/path")
        path = parts.path[1:] if parts.path.startswith("/") else ""
        if not path or path.endswith("/"):
            raise _fail(url, "sqlite:///<path> needs a file path")
        from .sqlite import DEFAULT_MAX_EVENTS as sqlite_default

        max_events = take_int("max_events", sqlite_default)
        max_age = take_age()
        sync = params.pop("synchronous", "FULL").upper()
        if sync not in ("FULL", "NORMAL"):
            raise _fail(url, f"synchronous must be FULL or NORMAL, not {sync!r}")
        no_leftovers()
        mode: Literal["FULL", "NORMAL"] = "FULL" if sync == "FULL" else "NORMAL"
        return SQLiteStore(path, max_events, max_age, synchronous=mode)

    if scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise _fail(url, "redis://host[:port][/db] needs a host")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise _fail(url, "port must be an integer 0-65535") from None
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise _fail(url, f"the path names a database number, not {db!r}")
        from .redis import DEFAULT_MAX_EVENTS as redis_default

        prefix = params.pop("prefix", "sse_fast")
        if not prefix:
            raise _fail(url, "prefix must not be empty")
        max_events = take_int("max_events", redis_default)
        max_age = take_age()
        # whatever is left (socket_timeout=..., ...) is for the redis client itself
        client_url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))
        return RedisStore(client_url, key_prefix=prefix, max_events=max_events, max_age=max_age)

    raise _fail(url, f"unknown scheme {parts.scheme!r}: use {_SCHEMES}")


__all__ = [
    "DEFAULT_PAGE",
    "MIN_ID_WINDOW",
    "HistoryLostError",
    "MemoryStore",
    "NewEvent",
    "RedisStore",
    "Retention",
    "SQLiteStore",
    "Store",
    "StoreClosedError",
    "StoreUnavailableError",
    "StoredEvent",
    "open_store",
]
