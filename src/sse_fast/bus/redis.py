"""RedisBus: every process on one Redis prefix fans out the same sequence, read from ``{P}:stream``.

The store's save script already numbers every accepted event and appends it
to ``{P}:stream`` (entry id ``<seq>-0``, self-contained fields, and ``o`` the
node that accepted it).  This bus follows that stream on its own connection:
a blocking ``XREAD`` from the last seq it delivered is the wake-up, and a
script pipelined behind it reads, at one instant, the entries after that seq,
the epoch key and the open-save marks: one round trip per wake-up (Redis runs
a client's commands in order, so the script waits for the read it follows).
It hands the entries to the hub in seq order, this node's own pushes
included, so every node sends the same ids in the same order.  What it checks
on each read:

* **the epoch**: another (or no) epoch in ``{P}:epoch`` means Redis lost the
  history followed: the entries read are dropped, the hub is told
  (``history_changed``) and the bus waits for :meth:`RedisBus.follow` with the
  new history;
* **open saves**: a save cut into several script calls is hidden from resend
  readers until its last call (``{P}:open``; see :mod:`sse_fast.stores.redis`);
  entries at or above the oldest open save wait too, so nothing goes out live
  that a resuming subscriber could not read from the store;
* **gaps**: an entry that does not follow the last seq, when the stream's
  first entry is past the seqs in between too (it was trimmed past entries
  this node had not read), is announced as a gap first.  Seqs missing above
  the first entry were never written (a save script that failed after it
  allocated them: the push was answered 5xx) and are no gap.

Presence: ``{P}:nodes`` (zset: node id, score the end of its lease in ms)
and ``{P}:on:<node>`` (set: the users with a connection on that node).  Each
node renews its lease every ``RENEW`` seconds and writes its users' comings
and goings as they happen (batched: whatever changed while the previous write
was in flight goes in the next); a node whose set does not hold as many users
as it has (Redis restarted, or flushed) writes it again whole.  A node whose
lease has ended (``LEASE``: killed, or cut off) is no longer asked, and the
next renewal of any node deletes its set.  Each renewal also publishes the
node's connection and user counts in ``{P}:figures`` (hash: node id, "C U")
and reads back everyone's: the cluster's figures in ``/stats``, at most one
renewal old.

Redis unreachable: the bus tells the hub (``bus_state``), retries with a
short back-off and, when Redis answers again, reads on from its last seq
(nothing is skipped if Redis kept its data).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..stores.redis import COMMAND_TIMEOUT, OWN_TIMEOUTS, RedisStore, deadline
from ..wakeup import Wakeup
from .base import BusEvent, BusListener, NodeFigures

logger = logging.getLogger("sse_fast.bus")

BLOCK_MS = 1000
"""How long one blocking read waits for an entry: the epoch is checked at least this often."""
READ_COUNT = 512
"""Entries one read hands to the hub at most (the fan-out takes them in slices anyway)."""
HOLD_POLL = 0.002
"""Seconds between reads while entries wait behind a save still being written."""
RETRY_FIRST, RETRY_MOST = 0.05, 1.0
"""Back-off between attempts while Redis cannot be reached."""

LEASE = 10.0
"""Seconds a node counts as alive after its last renewal: a dead node's users stop counting
as online within this."""
RENEW = 2.0
"""Seconds between two renewals of a node's lease."""
PRESENCE_CHUNK = 1000
"""Users per SADD/SREM/SMISMEMBER."""
CLOSE_WAIT = 2.0
"""Seconds :meth:`RedisBus.close` waits for its cancelled tasks to end."""

_READ_LUA = """
return {
    redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2]),
    redis.call('GET', KEYS[2]),
    redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES'),
    redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1),
}
"""
"""One read of the follower, atomic: entries after seq ARGV[1] (at most ARGV[2]) of KEYS[1] (the
stream), the epoch (KEYS[2]; false when absent), the open-save marks (KEYS[3]) and the stream's
first entry."""
_READ_SHA = hashlib.sha1(_READ_LUA.encode()).hexdigest()

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError, ResponseError)
"""What makes a read fail for now (a Redis that is down, restarting or loading its data)."""


class RedisBus:
    """Follows a :class:`~sse_fast.stores.redis.RedisStore`'s stream; see the module docstring.

    Construct it beside the store (it names the store's entries with
    ``node_id``); the hub starts and closes it.
    """

    follows = True

    def __init__(self, store: RedisStore, node_id: str, *, block_ms: int = BLOCK_MS) -> None:
        if not node_id:
            raise ValueError("node_id: must not be empty")
        self._store = store
        self._node_id = node_id
        store.origin = node_id
        self._block_ms = block_ms
        self._read_timeout = block_ms / 1000 + COMMAND_TIMEOUT
        self._listener: BusListener | None = None
        self._epoch = ""
        self._last = 0
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None  # presence and figures
        self._reader: Any = None  # the follower's reads, without redis-py's socket_timeout where it can
        self._failing: str | None = None  # the reason last reported to the listener
        tag = store.epoch_key.rpartition(":")[0]
        self._nodes_key = f"{tag}:nodes"
        self._on_prefix = f"{tag}:on:"
        self._figures_key = f"{tag}:figures"
        self._present: set[str] = set()
        self._changes: dict[str, bool] = {}
        self._presence_task: asyncio.Task[None] | None = None
        self._presence_wake: Wakeup | None = None
        self._stopping = False
        self._generation = 0
        """Which follower is current: one replaced by :meth:`follow`, or stopped, ends at its next turn."""
        self.nodes_alive: list[str] = [node_id]
        """The nodes whose lease had not ended at the last renewal (this one included)."""
        self.cluster_figures: dict[str, NodeFigures] = {}
        """The live nodes' figures as read at the last renewal."""
        self.reads = 0
        """MULTI/EXEC reads made since start (tests and stats)."""

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def last_seq(self) -> int:
        """The last seq handed to the hub (in the history followed)."""
        return self._last

    async def start(self, listener: BusListener, epoch: str, after_seq: int) -> None:
        if self._task is not None:
            return
        self._listener = listener
        self._stopping = False
        self._client = self._store.new_client(self._read_timeout)
        self._reader = self._store.new_client(None if OWN_TIMEOUTS else self._read_timeout)
        self._presence_wake = Wakeup()
        self._presence_task = asyncio.get_running_loop().create_task(self._presence_forever())
        self._run(epoch, after_seq)

    def follow(self, epoch: str, after_seq: int) -> None:
        """Follow ``epoch`` from ``after_seq`` on: the read under way (of the old history) is dropped."""
        if self._listener is None:
            return
        if self._task is not None:
            self._task.cancel()
        self._run(epoch, after_seq)

    def _run(self, epoch: str, after_seq: int) -> None:
        self._epoch, self._last = epoch, after_seq
        self._generation += 1
        self._task = asyncio.get_running_loop().create_task(self._follow_forever(epoch, self._generation))

    async def close(self) -> None:
        await self._stop()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a lease that ends by itself otherwise
                async with client.pipeline(transaction=True) as pipe:
                    pipe.zrem(self._nodes_key, self._node_id)
                    pipe.delete(self._on_prefix + self._node_id)
                    pipe.hdel(self._figures_key, self._node_id)
                    await pipe.execute()
            with contextlib.suppress(Exception):
                await client.aclose()
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader.aclose()
        self._listener = None

    async def _stop(self) -> None:
        """End the follower and the presence loop (no goodbye: what a killed node leaves behind).

        Each loop also ends by itself at its next turn: redis-py can swallow
        a cancel that lands inside a command (redis-py #2028), and a task
        that ran on would hold the close, or follow on for a hub gone.
        """
        self._stopping = True
        self._generation += 1
        if self._presence_wake is not None:
            self._presence_wake.set()
        tasks = [task for task in (self._task, self._presence_task) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=CLOSE_WAIT)
            for task in stuck:
                logger.warning("bus: %s did not end within %.0f s of its cancel", task.get_name(), CLOSE_WAIT)
        self._task = self._presence_task = None

    # -------------------------------------------------------------- presence

    def present(self, uid: str) -> None:
        self._present.add(uid)
        self._changed(uid, True)

    def absent(self, uid: str) -> None:
        self._present.discard(uid)
        self._changed(uid, False)

    def _changed(self, uid: str, present: bool) -> None:
        if self._presence_wake is not None and self._presence_task is not None:
            self._changes[uid] = present
            self._presence_wake.set()

    async def online_elsewhere(self, uids: Sequence[str]) -> set[str]:
        client = self._client
        if client is None or not uids:
            return set()
        now_ms = time.time() * 1000
        alive = await client.zrangebyscore(self._nodes_key, f"({now_ms}", "+inf")
        others = [node for node in alive if node != self._node_id]
        if not others:
            return set()
        chunks = [list(uids[i : i + PRESENCE_CHUNK]) for i in range(0, len(uids), PRESENCE_CHUNK)]
        async with client.pipeline(transaction=False) as pipe:
            for node in others:
                for chunk in chunks:
                    pipe.smismember(self._on_prefix + node, chunk)
            answers = await pipe.execute()
        online: set[str] = set()
        at = 0
        for _ in others:
            for chunk in chunks:
                online.update(uid for uid, member in zip(chunk, answers[at], strict=True) if member)
                at += 1
        return online

    async def _presence_forever(self) -> None:
        """Renew the lease, write the users' comings and goings, delete dead nodes' sets."""
        wake = self._presence_wake
        assert wake is not None
        mine = self._on_prefix + self._node_id
        whole = True  # the first write, and after a failure or a set found short: all users
        while True:
            await wake.wait(RENEW)
            if self._stopping:
                return
            changes, self._changes = self._changes, {}
            expected = len(self._present)  # what the set holds once this write is done
            client = self._client
            now_ms = time.time() * 1000
            listener = self._listener
            assert listener is not None  # start() sets it before this task begins
            mine_now = listener.node_figures()
            try:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.zadd(self._nodes_key, {self._node_id: now_ms + LEASE * 1000})
                    pipe.hset(self._figures_key, self._node_id, f"{mine_now.connections} {mine_now.users}")
                    pipe.pexpire(self._figures_key, int(2 * LEASE * 1000))
                    if whole:
                        pipe.delete(mine)
                        adds, removes = list(self._present), []
                    else:
                        adds = [uid for uid, present in changes.items() if present]
                        removes = [uid for uid, present in changes.items() if not present]
                    for i in range(0, len(adds), PRESENCE_CHUNK):
                        pipe.sadd(mine, *adds[i : i + PRESENCE_CHUNK])
                    for i in range(0, len(removes), PRESENCE_CHUNK):
                        pipe.srem(mine, *removes[i : i + PRESENCE_CHUNK])
                    pipe.pexpire(mine, int(2 * LEASE * 1000))
                    pipe.scard(mine)
                    pipe.zrangebyscore(self._nodes_key, f"({now_ms}", "+inf")
                    pipe.zrangebyscore(self._nodes_key, "-inf", now_ms)
                    pipe.hgetall(self._figures_key)
                    *_, count, alive, dead, published = await pipe.execute()
                whole = count != expected
                self.nodes_alive = list(alive)
                self.cluster_figures = _figures(published, alive)
                if dead:
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.delete(*[self._on_prefix + node for node in dead])
                        pipe.zrem(self._nodes_key, *dead)
                        pipe.hdel(self._figures_key, *dead)
                        await pipe.execute()
            except _UNAVAILABLE:
                whole = True
            except Exception:
                logger.exception("bus: presence")
                whole = True

    async def _follow_forever(self, epoch: str, generation: int) -> None:
        """Follow while this follower is current, and start again after a fault of our own (one
        must not end the following)."""
        while self._generation == generation:
            try:
                await self._follow(epoch, generation)
            except Exception:
                logger.exception("bus: following failed; reading on from seq %d", self._last)
                await asyncio.sleep(RETRY_MOST)

    async def _follow(self, epoch: str, generation: int) -> None:
        listener = self._listener
        assert listener is not None
        store = self._store
        stream = store.stream_key
        delay = RETRY_FIRST
        wait = True
        while self._generation == generation:
            client = self._reader
            try:
                async with client.pipeline(transaction=False) as pipe:
                    if wait:
                        pipe.xread({stream: f"{self._last}-0"}, count=1, block=self._block_ms)
                    keys = (stream, store.epoch_key, store.open_key)
                    pipe.evalsha(_READ_SHA, len(keys), *keys, self._last, READ_COUNT)
                    try:
                        async with deadline(self._read_timeout):
                            *_, (entries, current, marks, head) = await pipe.execute()
                    except TimeoutError:  # ours (redis-py's is another class)
                        raise RedisTimeoutError(f"no answer within {self._read_timeout} s") from None
            except NoScriptError:  # a Redis that restarted, or flushed its scripts
                async with deadline(COMMAND_TIMEOUT):
                    await client.script_load(_READ_LUA)
                wait = False
                continue
            except _UNAVAILABLE as exc:
                if self._generation != generation:
                    return
                reason = f"{type(exc).__name__}: {exc}"
                if reason != self._failing:  # a new fault, or the same outage for another reason
                    self._failing = reason
                    listener.bus_state(reason)
                await asyncio.sleep(delay)
                delay = min(RETRY_MOST, delay * 2)
                wait = False
                continue
            if self._generation != generation:  # replaced or stopped while it read
                return
            self.reads += 1
            delay = RETRY_FIRST
            if self._failing is not None:
                self._failing = None
                listener.bus_state(None)
            if current != epoch:
                listener.history_changed()
                await asyncio.sleep(self._block_ms / 1000)  # until follow() replaces this task
                wait = False
                continue
            held_from = _oldest_open(marks)
            events: list[BusEvent] = []
            held = False
            for entry_id, fields in entries:
                seq = int(entry_id.partition("-")[0])
                if held_from is not None and seq >= held_from:
                    held = True
                    break
                events.append(_decode(seq, dict(zip(fields[::2], fields[1::2], strict=True))))
            if events:
                if events[0].seq != self._last + 1 and _first_seq(head) > self._last + 1:
                    listener.gap(epoch, self._last, events[0].seq)
                self._last = events[-1].seq
                listener.deliver(epoch, events)
            if held:
                await asyncio.sleep(HOLD_POLL)
                wait = False
            else:
                wait = len(entries) < READ_COUNT


def _figures(published: dict[str, str], alive: Sequence[str]) -> dict[str, NodeFigures]:
    """The live nodes' entries of ``{P}:figures`` ("connections users"; a malformed one is skipped)."""
    figures = {}
    for node in alive:
        connections, _, users = published.get(node, "").partition(" ")
        if connections.isdigit() and users.isdigit():
            figures[node] = NodeFigures(int(connections), int(users))
    return figures


def _first_seq(head: list[Any]) -> int:
    """The seq of the stream's first entry.  Seqs missing above it were never written (a save
    script that failed after allocating them); missing below it, they were trimmed."""
    return int(head[0][0].partition("-")[0]) if head else 0


def _oldest_open(marks: list[str]) -> int | None:
    """The first seq of the oldest save still being written (a mark past its deadline holds nothing).

    ``marks``: ``{P}:open`` as a script reads it, first seq and deadline (ms) after one another."""
    now_ms = time.time() * 1000
    pairs = zip(marks[::2], marks[1::2], strict=True)
    live = [int(first) for first, deadline in pairs if float(deadline) > now_ms]
    return min(live) if live else None


def _decode(seq: int, fields: dict[str, str]) -> BusEvent:
    uids = fields.get("u")
    return BusEvent(
        seq,
        fields["e"],
        fields["d"],
        None if uids is None else tuple(orjson.loads(uids)),
        fields.get("i"),
        fields.get("o", ""),
    )


__all__ = ["RedisBus"]
