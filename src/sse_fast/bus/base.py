"""The bus between push and fan-out: how accepted events reach this process's fan-out.

One process alone fans out what it accepts as soon as the store numbered it
(:class:`InProcessBus`: the hub calls the fan-out itself, nothing in between).
Several processes sharing one history need every event accepted by any of
them fanned out by each, in the one order the store numbered them: a
*following* bus reads the store's sequence (the Redis bus follows
``{P}:stream``, :mod:`sse_fast.bus.redis`) and hands each event to the
hub, its own process's pushes included, so ids and order are the same on
every node.  The hub only sees this protocol, never Redis.

What a following bus promises its :class:`BusListener`:

* :meth:`BusListener.deliver` gets events of one history in seq order, each
  once; a seq that does not follow the last one delivered (the stream was
  trimmed past it while the bus was away) comes with a
  :meth:`BusListener.gap` first;
* :meth:`BusListener.history_changed` when the store's history is not the one
  it follows any more (Redis flushed): the bus stops delivering until the hub
  calls :meth:`Bus.follow` with the new history;
* :meth:`BusListener.bus_state` when it loses or regains the store (the
  events accepted meanwhile are read when it is back, from its last seq).

A following bus also keeps **presence** across nodes: the hub tells it which
users have a first or no more connection here (:meth:`Bus.present`,
:meth:`Bus.absent`), and asks :meth:`Bus.online_elsewhere` before it reports
a recipient of its own push ``offline``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class BusEvent(NamedTuple):
    """An event as a following bus reads it: numbered, encoded as wire text, and where it came from.

    ``data`` is the wire text the store keeps; ``uids`` None for a
    broadcast; ``origin`` the id of the node that accepted it (a node reports
    ``offline`` recipients of its own pushes only).
    """

    seq: int
    event: str
    data: str
    uids: tuple[str, ...] | None
    publisher_id: str | None
    origin: str


class NodeFigures(NamedTuple):
    """What a node of a cluster holds, as it last published it."""

    connections: int
    users: int


class BusListener(Protocol):
    """What a following bus calls on the hub (all on the hub's loop)."""

    def deliver(self, epoch: str, events: Sequence[BusEvent]) -> None:
        """Fan out ``events`` (seq order, contiguous with what came before unless a gap was told)."""
        ...

    def gap(self, epoch: str, after_seq: int, next_seq: int) -> None:
        """Events after ``after_seq`` and before ``next_seq`` are gone: nobody will get them live."""
        ...

    def history_changed(self) -> None:
        """The store no longer holds the history followed: adopt the new one, then :meth:`Bus.follow`."""
        ...

    def bus_state(self, error: str | None) -> None:
        """The bus cannot read the store (``error``, told again when it changes), or can again (None)."""
        ...

    def node_figures(self) -> NodeFigures:
        """This node's connections and users now, which the bus publishes for the cluster's figures."""
        ...


class Bus(Protocol):
    """How events accepted by any process of a cluster reach this process's fan-out."""

    @property
    def follows(self) -> bool:
        """True: deliveries come from :meth:`BusListener.deliver`; False: the hub fans out its own pushes."""
        ...

    @property
    def node_id(self) -> str:
        """This process's name in the cluster (stats, logs, the origin of its pushes)."""
        ...

    async def start(self, listener: BusListener, epoch: str, after_seq: int) -> None:
        """Begin delivering the events of ``epoch`` numbered after ``after_seq``."""
        ...

    def follow(self, epoch: str, after_seq: int) -> None:
        """Deliver from another history (the store's history was replaced) after ``after_seq``."""
        ...

    async def close(self) -> None:
        """Stop delivering and release what the bus holds (idempotent)."""
        ...

    @property
    def nodes_alive(self) -> list[str]:
        """The nodes of the cluster known to be alive (this one included)."""
        ...

    def present(self, uid: str) -> None:
        """``uid`` has its first connection on this node (presence across nodes)."""
        ...

    def absent(self, uid: str) -> None:
        """``uid``'s last connection on this node is gone."""
        ...

    async def online_elsewhere(self, uids: Sequence[str]) -> set[str]:
        """Which of ``uids`` have a connection on another live node (a node's lease not expired)."""
        ...

    @property
    def cluster_figures(self) -> dict[str, NodeFigures]:
        """Each live node's figures as it last published them (empty for one process)."""
        ...


class InProcessBus:
    """One process: the hub fans out its own pushes at once; there is nobody else's to read."""

    follows = False

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def nodes_alive(self) -> list[str]:
        return [self._node_id]

    @property
    def cluster_figures(self) -> dict[str, NodeFigures]:
        return {}

    async def start(self, listener: BusListener, epoch: str, after_seq: int) -> None:
        return None

    def follow(self, epoch: str, after_seq: int) -> None:
        return None

    async def close(self) -> None:
        return None

    def present(self, uid: str) -> None:
        return None

    def absent(self, uid: str) -> None:
        return None

    async def online_elsewhere(self, uids: Sequence[str]) -> set[str]:
        return set()


def default_node_id() -> str:
    """The host name and pid: unique among the processes of a cluster, and says where to look."""
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"


__all__ = ["Bus", "BusEvent", "BusListener", "InProcessBus", "NodeFigures", "default_node_id"]
