"""The bus between push and fan-out: in-process, or Redis Streams for a cluster.

:mod:`.base` holds the protocol the hub sees and the in-process bus; the
Redis bus (:mod:`.redis`) is imported only when a Redis store is configured.
"""

from .base import Bus, BusEvent, BusListener, InProcessBus, default_node_id

__all__ = ["Bus", "BusEvent", "BusListener", "InProcessBus", "default_node_id"]
