"""Deliveries from a following bus: events accepted anywhere in the cluster, into this hub's fan-out.

The hub's :class:`~sse_fast.bus.base.BusListener`.  Events arrive numbered,
as wire text; this encodes each once and hands runs of them to the same
sliced fan-out a local push uses, so everything after that (ring, private
frames, slow consumers, the resend seam by seq) is unchanged.  Only the node
that accepted a push reports its ``offline`` recipients.  Its own pushes'
events are remembered from the push until the bus brings them back, so that
``on_push_failed`` is told of the event as it was pushed and its frame is not
encoded twice.  The bus may read an entry of this node's before the save's
answer has reached the push (both come from the same script call): such an
entry, and those after it, wait for that answer, at most
:data:`WAIT_FOR_OWN_SAVE` (a save whose caller gave up never answers; its
events then go out as the store has them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from .._core import encode_event, escape_line_separators
from ..bus.base import BusEvent, NodeFigures
from ..errors import InvalidEventError
from ..event import Event
from ..ids import format_id
from ..protocol import EVENTS_MISSED
from ..stores.base import StoredEvent
from .fanout import Fanout
from .history import History
from .resend import Resend, reset_frame

logger = logging.getLogger("sse_fast.hub")

WAIT_FOR_OWN_SAVE = 0.5
"""Seconds an entry of this node's waits for its push to hear from the save (see the module docstring)."""


class BusDelivery:
    """Turns what a following bus reads into fan-out calls, and tells the hub how far it got.

    ``delivered`` is the last seq handed to the fan-out in the current
    history; :meth:`wait_delivered` lets :meth:`Hub.drain` and the hub's
    close wait for the pushes this node accepted.
    """

    def __init__(
        self,
        node_id: str,
        history: History,
        fanout: Fanout,
        resend: Resend,
        on_history_changed: Callable[[], None],
        node_figures: Callable[[], NodeFigures],
    ) -> None:
        self.node_id = node_id
        self.node_figures = node_figures
        """This node's connections and users now (the bus publishes them for the cluster)."""
        self.delivered = 0
        self.error: str | None = None
        """Why the bus cannot read the store now (None while it can)."""
        self._history = history
        self._fanout = fanout
        self._resend = resend
        self._on_history_changed = on_history_changed
        self._own: dict[int, tuple[Event, bytes]] = {}
        self._accepted = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._held: list[BusEvent] = []  # from an entry of ours whose save has not answered yet
        self._held_epoch = ""
        self._hold_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------- this node's pushes

    def accepted(
        self, batch: Sequence[Event], prepared: Sequence[tuple[str, bytes]], stored: Sequence[StoredEvent]
    ) -> None:
        """This node's push was saved: remember its events (and their encoded bodies) until the
        bus delivers them."""
        own = self._own
        delivered = self.delivered
        for event, (_, body), saved in zip(batch, prepared, stored, strict=False):
            if saved.seq > delivered:  # the bus may have been quicker than the save's answer
                own[saved.seq] = (event, body)
        self._accepted = max(self._accepted, stored[-1].seq)
        if self._held:
            self._release(force=False)

    async def wait_delivered(self) -> None:
        """Return once every push this node accepted so far was handed to the fan-out (or its
        history was lost)."""
        target = self._accepted
        if self.delivered >= target:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        await waiter

    def new_history(self) -> None:
        """The history was replaced: what was accepted in the old one will not come."""
        self.delivered = self._accepted = 0
        self._own.clear()
        self._held = []
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        self._wake(everyone=True)

    def _wake(self, everyone: bool = False) -> None:
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, waiter in self._waiters:
            if everyone or target <= self.delivered:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                keep.append((target, waiter))
        self._waiters = keep

    # -------------------------------------------------------- the BusListener

    def deliver(self, epoch: str, events: Sequence[BusEvent]) -> None:
        """Fan out ``events`` in runs that share their recipients and their origin."""
        if epoch != self._history.epoch or not events:
            return  # read from a history the hub has left
        if self._held:
            self._held.extend(events)  # behind those waiting for a save's answer
            return
        self._deliver(epoch, events, force=False)

    def _release(self, force: bool) -> None:
        """Deliver what waits for a save's answer: the answer came (``force`` false: what waits
        for another one keeps waiting), or the wait is over."""
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        held, self._held = self._held, []
        if held and self._held_epoch == self._history.epoch:
            self._deliver(self._held_epoch, held, force=force)

    def _deliver(self, epoch: str, events: Sequence[BusEvent], *, force: bool) -> None:
        own = self._own
        node = self.node_id
        if not force:
            for at, ev in enumerate(events):
                if ev.origin == node and ev.seq not in own:  # its push has not heard from the save
                    self._held, self._held_epoch = list(events[at:]), epoch
                    loop = asyncio.get_running_loop()
                    self._hold_timer = loop.call_later(WAIT_FOR_OWN_SAVE, self._release, True)
                    events = events[:at]
                    break
            if not events:
                return
        history = self._history
        fan_out = self._fanout.fan_out
        start = 0
        n = len(events)
        while start < n:
            first = events[start]
            end = start + 1
            while (
                end < n
                and events[end].uids == first.uids
                and (events[end].origin == node) == (first.origin == node)
            ):
                end += 1
            batch: list[Event] = []
            prepared: list[tuple[str, bytes]] = []
            seqs: list[int] = []
            ids: list[str] = []
            for ev in events[start:end]:
                mine = own.pop(ev.seq, None) if own else None
                if mine is not None:
                    event, body = mine
                else:
                    event = Event(ev.event, ev.data, ev.publisher_id, raw=True)
                    found = _body(ev)
                    if found is None:
                        continue
                    body = found
                batch.append(event)
                prepared.append((ev.data, body))
                seqs.append(ev.seq)
                ids.append(format_id(epoch, ev.seq))
            if batch:
                fan_out(batch, prepared, seqs, ids, first.uids, first.origin == node)
            start = end
        last = events[-1].seq
        history.saw(last)
        self.delivered = last
        if self._waiters:
            self._wake()

    def gap(self, epoch: str, after_seq: int, next_seq: int) -> None:
        """Events were trimmed before this node read them: every subscriber is told to reset,
        with the id to resume from (what follows the gap comes live right after)."""
        if epoch != self._history.epoch:
            return
        if self._held:
            self._release(force=True)  # they came before the gap
        logger.warning(
            "bus: events %d..%d of history %s were gone before this node read them; subscribers reset",
            after_seq + 1,
            next_seq - 1,
            epoch,
        )
        last_id = format_id(epoch, after_seq) if after_seq else None
        self._resend.reset_everyone(reset_frame(EVENTS_MISSED, last_id, format_id(epoch, next_seq - 1)))
        self.delivered = max(self.delivered, next_seq - 1)
        for seq in [s for s in self._own if s < next_seq]:
            del self._own[seq]
        self._wake()

    def history_changed(self) -> None:
        self._on_history_changed()

    def bus_state(self, error: str | None) -> None:
        if error is not None and error != self.error:  # the reason an operator reads is the latest
            logger.warning("bus: cannot follow the store, live events wait until it is back: %s", error)
        elif error is None and self.error is not None:
            logger.warning("bus: following the store again from seq %d", self.delivered)
        self.error = error


def _body(ev: BusEvent) -> bytes | None:
    """The frame body of a stored event; text the rules refuse now is escaped, else left out."""
    try:
        return encode_event(ev.data, ev.event)
    except InvalidEventError:
        pass
    try:
        return encode_event(escape_line_separators(ev.data.encode()).decode(), ev.event)
    except InvalidEventError as exc:
        logger.warning("bus: event of seq %d is not fanned out (%s)", ev.seq, exc)
        return None
