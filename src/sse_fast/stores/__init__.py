"""Persistence backends behind one :class:`~sse_fast.stores.base.Store` protocol."""

from .base import DEFAULT_PAGE, NewEvent, Store, StoredEvent

__all__ = ["DEFAULT_PAGE", "NewEvent", "Store", "StoredEvent"]
