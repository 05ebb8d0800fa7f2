"""RedisStore: history in a Redis stream, shared by every process that uses the same keys.

Key layout (``P`` is ``key_prefix``; it is wrapped in braces, a Redis Cluster
hash tag, so that all keys of one store live in one slot)::

    {P}:epoch        string   the epoch, created once with SET NX; a wiped Redis
                              therefore yields a new epoch at the next open, and
                              a save finding another (or no) epoch there fails
                              with HistoryLostError rather than reuse ids
    {P}:seq          string   the last seq assigned (INCRBY allocates a batch)
    {P}:stream       stream   one entry per event, id "<seq>-0", fields
                                t  created, Unix seconds (float text)
                                e  event type
                                d  data (wire text)
                                u  JSON array of recipient uids; absent = broadcast
                                i  the publisher's own id; absent = none
                                o  the node that accepted it (``origin``); absent = unnamed
    {P}:bcast        zset     seqs of broadcasts (score = member = seq)
    {P}:u:<uid>      zset     seqs of the events addressed to <uid>
    {P}:users        zset     the user indexes: member <uid>, score the newest seq
                              in {P}:u:<uid>
    {P}:ids          zset     publisher ids: member the id, score the seq of the
                              latest event saved with it
    {P}:open         zset     saves under way in several calls: member the first
                              seq, score the deadline (ms) of its writer's next call

Entries are self-contained (event, data, uids, created), so the stream is also
the bus for scaling out: another process can ``XREAD`` ``{P}:stream`` and fan
out pushes accepted elsewhere, turning the entry id ``<seq>-0`` and the epoch
into the wire id ``<epoch>-<seq>``.

Ordering: one Lua script allocates the seqs (INCRBY), XADDs the entries with
explicit ids and updates the indexes atomically, so concurrent savers in many
processes get strictly increasing seqs and the stream order is the seq order.
Within a process, one save is in flight at a time, which keeps completion
FIFO even though the client has a pool of connections.  A save that finds
none in flight and none waiting sends itself, from its caller's task (the
common case, a push now and then: no hand-off to another task, whose wake-up
and answer would each wait for a turn of a loop busy with fan-out slices).
Saves that arrive while one is in flight wait for the writer task, which
sends everything waiting as one save (a group commit: one round trip for many
pushes) and resolves the callers in order.

Large saves: one script call does at most ``CALL_BUDGET`` work (~2,000 index
entries, ~10 ms of Redis), so a save of 100,000 recipients goes in some 50-150
calls in a row (:func:`plan_calls`; each allocates the seqs of the entries it
adds, in order), and Redis serves its other clients in between.  Atomicity
for readers: the first call of such a save adds ``{P}:open`` (member its first
seq, score a deadline ``OPEN_TTL`` ahead, renewed by each call) and the last
removes it; ``list_after`` reads ``{P}:open`` in the same MULTI/EXEC as the
indexes and returns nothing at or above the oldest open save.  So a reader, in
any process, sees a save whole or not at all, never some of its recipients'
index entries without the others, and nothing saved after it (by any process)
until it is whole; the hub's resend seam stays exact, since a resume that
stops below a save still under way gets it live once it is accepted.  Not
atomic: a save that fails midway (Redis gone, or the writer killed) leaves its
entries and the index entries written so far, visible once its mark is gone
(at its deadline), as a failed single-call save may also have been executed.
A caller gets ``StoreUnavailableError`` then, as for any failed save.

Retention: ``XADD ... MAXLEN ~ max_events`` (approximate: Redis trims whole
stream nodes, so up to ~100 more entries may stay) and, for ``max_age``,
``XTRIM MINID`` past the expired entries.  The indexes are trimmed below the
stream's first entry whenever they are written.  A user index whose newest seq
falls below the stream's first entry holds nothing readable any more: each save
deletes such indexes (and their ``{P}:users`` members), the oldest first, up to
``INDEX_SWEEP`` plus as many as it wrote, the rest at the next save.  So the
user indexes and ``{P}:users`` are bounded by retention, by count as well as by
age: live ones by the recipients of the retained events, stale ones (not yet
swept) by no more than that again.  With ``index_ttl`` (default: ``max_age``)
the user indexes also expire on their own when nobody writes.  ``{P}:ids``
is trimmed by score in the same script, one retention window below the
stream's first entry (``max_events``, the stream's span or ``MIN_ID_WINDOW``,
whichever is more: see ``Retention.ids_kept_from``), so it holds no more ids
than the retained entries and that window; a resume looks an id up with one
``ZSCORE``.
``list_after`` reads at most ``limit`` candidates per index per round trip, both
indexes in one MULTI/EXEC (so a concurrent save is seen in both or in neither), and
checks each entry's own ``u`` field, so a stale index member is harmless.

Durability is Redis's: a ``save`` returns once Redis has executed the script;
whether that survives a Redis restart depends on its AOF/RDB settings.

Failures: a Redis that cannot be reached, is loading its data, or does not
answer within ``COMMAND_TIMEOUT`` makes calls raise
:class:`~sse_fast.stores.base.StoreUnavailableError` (the edge answers 503), and
a save waits at most ``SAVE_TIMEOUT`` per script call it needs, queue
included.  A Redis that lost its data (FLUSHALL, a restart without persistence) no longer holds our
epoch: saves and :meth:`RedisStore.check` raise ``HistoryLostError``, and
:meth:`RedisStore.recover` goes on with the new history.  The client gets short
timeouts and one quick reconnect attempt by default; options given in the URL
(``socket_timeout=``, ...) win.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..ids import format_id, new_epoch
from ..redact import redact_text
from .base import (
    DEFAULT_PAGE,
    MIN_ID_WINDOW,
    Clock,
    HistoryLostError,
    NewEvent,
    Retention,
    StoreClosedError,
    StoredEvent,
    StoreUnavailableError,
    check_limit,
    wall_clock,
)

DEFAULT_MAX_EVENTS = 100_000
DEFAULT_URL = "redis://127.0.0.1:6379/0"
INDEX_SWEEP = 256
"""Stale user indexes a save deletes beyond as many as it wrote itself (the rest go at
the next save): the sweep keeps pace with the writes, and a save's work stays bounded."""
MAX_BATCH_EVENTS = 2_000
"""Events queued saves may share one save (a group commit) before it is cut into calls."""
CALL_BUDGET = 2_048
"""Work of one script call: an entry added counts four, a user index touched two and each
index entry written in it one (~10 ms of Redis on a small VM); a larger save takes several
calls, so that Redis serves its other clients in between."""
_ENTRY_COST = 4
_INDEX_COST = 2
OPEN_TTL = 10.0
"""Seconds an unfinished save in several calls holds readers below it without a further call
from its writer: a writer that died midway stops hiding what came after it."""
CONNECT_TIMEOUT = 1.0
"""Seconds to open a connection to Redis before it counts as unreachable."""
COMMAND_TIMEOUT = 2.0
"""Seconds Redis may take to answer one command (the save script included)."""
SAVE_TIMEOUT = 2.5
"""Seconds a save may wait in all, queued behind others included, per script call it
needs: a publisher hears 503 within that, not whenever a hung Redis lets go."""
POOL_SIZE = 64
"""Connections a store keeps to Redis at most (saves and resend reads share them)."""
POOL_WAIT = 2.0
"""Seconds a call waits for a free connection before it counts as Redis unavailable."""

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
"""What a Redis that is down, restarting, loading its data or a read-only replica raises."""


def _client(url: str) -> aioredis.Redis:
    """A client that fails fast: short timeouts, one quick reconnect (a restarted Redis
    leaves the pool's connections dead), never a retry after a timeout.

    Its pool makes a caller *wait* for a connection when all ``POOL_SIZE`` are
    busy (up to ``POOL_WAIT``) instead of failing at once, as redis-py's default
    pool does past its 100: a thousand subscribers resuming at once must queue
    for their reads, not see their streams ended and pushes refused meanwhile.
    """
    backoff = ExponentialWithJitterBackoff(base=0.05, cap=0.25)
    retry = Retry(backoff, 1, supported_errors=(RedisConnectionError,))
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        retry=retry,
    )
    return aioredis.Redis(connection_pool=pool)


def _unavailable(exc: BaseException, doing: str) -> StoreUnavailableError:
    detail = redact_text(f"{type(exc).__name__}: {exc}")  # /stats shows it: never a password
    return StoreUnavailableError(f"RedisStore: {doing}: Redis unavailable ({detail})")


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _fails_as_unavailable(
    method: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Report Redis being down as the store protocol's StoreUnavailableError."""

    @functools.wraps(method)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc, method.__name__) from exc

    return call


# KEYS: seq, stream, broadcast index, epoch, publisher id index, open saves.
# ARGV: 1 user index key prefix, 2 maxlen (0 = none), 3 oldest kept time (0 = none),
#       4 index ttl seconds (0 = none), 5 created, 6 the epoch this store opened,
#       7 marker ('' | 'open' | 'keep' | 'close'), 8 the open save's first seq (keep, close),
#       9 the marker's deadline (ms), 10 n new events, 11 g index groups,
#       12 the values per event (3, or 4 when some event of the call has a publisher id),
#       13 the node that saves ('' = unnamed), written as each entry's field o,
#       then n x (event, data, uids JSON or "" [, publisher id or ""]),
#       then g x (uid, m, m x ref): ref > 0 the seq of an event an earlier call added,
#       ref <= 0 the (-ref)th event this call adds.
# Also writes {P}:users (named after KEYS[1], {P}:seq, in the same hash slot): uid ->
# newest seq of {P}:u:<uid>, so that indexes left wholly below the stream's first
# entry are found and deleted without a scan.
# Returns the last seq allocated (the counter's value when n is 0).  Refuses to
# write when the epoch key no longer holds our epoch (Redis was flushed under
# us): the counter would start again at 1 and hand out ids that clients already hold.
_SAVE_LUA = (
    f"local sweep = {INDEX_SWEEP}\nlocal min_id_window = {MIN_ID_WINDOW}\n"
    + """
local epoch = redis.call('GET', KEYS[4])
if epoch ~= ARGV[6] then
  return redis.error_reply('SSEFAST_EPOCH ' .. tostring(epoch))
end
local n = tonumber(ARGV[10])
local stride = tonumber(ARGV[12])
local last
if n > 0 then
  last = redis.call('INCRBY', KEYS[1], n)
else
  last = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local base = last - n + 1
local maxlen = tonumber(ARGV[2])
local created = ARGV[5]
local origin = ARGV[13]
for i = 0, n - 1 do
  local seq = base + i
  local at = 14 + stride * i
  local sid = string.format('%d', seq)
  local args = {'XADD', KEYS[2]}
  if maxlen > 0 then
    table.insert(args, 'MAXLEN'); table.insert(args, '~'); table.insert(args, maxlen)
  end
  table.insert(args, sid .. '-0')
  table.insert(args, 't'); table.insert(args, created)
  table.insert(args, 'e'); table.insert(args, ARGV[at])
  table.insert(args, 'd'); table.insert(args, ARGV[at + 1])
  if origin ~= '' then
    table.insert(args, 'o'); table.insert(args, origin)
  end
  local pid = stride == 4 and ARGV[at + 3] or ''
  if pid ~= '' then
    table.insert(args, 'i'); table.insert(args, pid)
    redis.call('ZADD', KEYS[5], seq, pid)
  end
  local uids = ARGV[at + 2]
  if uids == '' then
    redis.call(unpack(args))
    redis.call('ZADD', KEYS[3], seq, sid)
  else
    table.insert(args, 'u'); table.insert(args, uids)
    redis.call(unpack(args))
  end
end
-- a save in several calls: readers stop below its first seq until its last call
local marker = ARGV[7]
if marker == 'open' then
  redis.call('ZADD', KEYS[6], ARGV[9], string.format('%d', base))
elseif marker == 'keep' then
  redis.call('ZADD', KEYS[6], ARGV[9], ARGV[8])
elseif marker == 'close' then
  redis.call('ZREM', KEYS[6], ARGV[8])
end
-- the markers of writers that stopped midway: their saves stay as far as they got
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. string.format('%d', tonumber(created) * 1000))
local newest = {}
local touched = {}
local sids = {}
local at = 14 + stride * n
for g = 1, tonumber(ARGV[11]) do
  local uid = ARGV[at]
  local m = tonumber(ARGV[at + 1])
  at = at + 2
  local args = {'ZADD', ARGV[1] .. uid}
  local top = newest[uid]
  if not top then
    top = 0
    touched[#touched + 1] = uid
  end
  for j = 1, m do
    local s = tonumber(ARGV[at])
    at = at + 1
    if s <= 0 then
      s = base - s
    end
    local sid = sids[s]
    if not sid then
      sid = string.format('%d', s)
      sids[s] = sid
    end
    args[#args + 1] = s
    args[#args + 1] = sid
    if s > top then
      top = s
    end
  end
  redis.call(unpack(args))
  newest[uid] = top
end
if n == 0 and maxlen > 0 then
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', maxlen)
end
local oldest = tonumber(ARGV[3])
if oldest > 0 then
  local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if head[1] and tonumber(head[1][2][2]) < oldest then
    local start = '-'
    local minid = nil
    while not minid do
      local chunk = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', 256)
      if #chunk == 0 then
        minid = string.format('%d-0', last + 1)
      else
        for _, entry in ipairs(chunk) do
          if tonumber(entry[2][2]) >= oldest then
            minid = entry[1]
            break
          end
        end
        start = '(' .. chunk[#chunk][1]
      end
    end
    redis.call('XTRIM', KEYS[2], 'MINID', minid)
  end
end
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first = last + 1
if head[1] then
  first = tonumber(string.match(head[1][1], '^(%d+)'))
end
local below = '(' .. string.format('%d', first)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', below)
-- publisher ids: one retention window below the first entry (Retention.ids_kept_from)
local window = math.max(maxlen, last - first + 1, min_id_window)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. string.format('%d', first - window))
local users = string.sub(KEYS[1], 1, -4) .. 'users'
local ttl = tonumber(ARGV[4])
local written = #touched
local tops = {'ZADD', users}
for _, uid in ipairs(touched) do
  local key = ARGV[1] .. uid
  redis.call('ZREMRANGEBYSCORE', key, '-inf', below)
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
  tops[#tops + 1] = newest[uid]
  tops[#tops + 1] = uid
  if #tops >= 2002 then  -- one ZADD per 1,000 users (unpack's stack is bounded)
    redis.call(unpack(tops))
    tops = {'ZADD', users}
  end
end
if #tops > 2 then
  redis.call(unpack(tops))
end
-- the indexes whose newest seq the stream no longer holds, oldest first: ranks 0 .. #stale-1
local stale = redis.call('ZRANGEBYSCORE', users, '-inf', below, 'LIMIT', 0, sweep + written)
for _, uid in ipairs(stale) do
  redis.call('DEL', ARGV[1] .. uid)
end
if #stale > 0 then
  redis.call('ZREMRANGEBYRANK', users, 0, #stale - 1)
end
return last
"""
)


@dataclass(slots=True)
class _Call:
    """One script call of a save: the events it adds (indexes into the save's events) and the
    recipient index entries it writes (a uid and the events it gets)."""

    new: list[int] = field(default_factory=list)
    groups: list[tuple[str, list[int]]] = field(default_factory=list)
    cost: int = 0


def plan_calls(events: Sequence[NewEvent], budget: int) -> Iterator[_Call]:
    """Cut a save into script calls of at most ``budget`` (see :data:`CALL_BUDGET`), in
    order: each event's entry before the index entries that name it.

    A generator: a call's plan is made when it is sent, so that a save of
    100,000 recipients never holds the loop for the whole plan at once.
    """
    call = _Call()
    block_most = max(1, budget // 8)  # events whose index entries go together, one ZADD per uid
    i = 0
    while i < len(events):
        uids = events[i].uids
        j = i + 1
        while j < len(events) and (events[j].uids is uids or events[j].uids == uids):
            j += 1
        size = 1 if not uids else min(j - i, block_most)
        for a in range(i, j, size):
            block = list(range(a, min(a + size, j)))
            for k in block:
                if call.cost and call.cost + _ENTRY_COST > budget:
                    yield call
                    call = _Call()
                call.new.append(k)
                call.cost += _ENTRY_COST
            for uid in uids or ():
                cost = len(block) + _INDEX_COST
                if call.cost and call.cost + cost > budget:
                    yield call
                    call = _Call()
                call.groups.append((uid, block))
                call.cost += cost
        i = j
    yield call


def calls_needed(events: Sequence[NewEvent], budget: int) -> int:
    """About how many script calls :func:`plan_calls` makes of ``events`` (for a timeout; the
    events of one push share their recipients)."""
    cost = len(events) * (_ENTRY_COST + (_INDEX_COST + 1) * len(events[0].uids or ()))
    return max(1, -(-cost // budget))


@dataclass(slots=True)
class _SaveRequest:
    future: asyncio.Future[list[StoredEvent]]
    events: Sequence[NewEvent]
    calls: int
    """Script calls its events need (:func:`calls_needed`): its time bound is that many SAVE_TIMEOUTs."""


_timeout = getattr(asyncio, "timeout", None)
"""``asyncio.timeout`` (Python 3.11+).  With it, saves go on a connection without redis-py's
``socket_timeout``, whose every command, on Python 3.11, sends through ``asyncio.wait_for``:
a task of its own, two more turns of the loop per save; the store bounds each save itself.
Without it (3.10), saves keep redis-py's timeouts and all go through the writer task."""


OWN_TIMEOUTS = _timeout is not None
"""Whether this Python bounds commands itself (:func:`deadline`), so that connections that
carry many commands (saves, a follower's reads) can go without redis-py's ``socket_timeout``."""


def deadline(seconds: float) -> contextlib.AbstractAsyncContextManager[None]:
    """A bound on commands that redis-py's timeouts do not bound (see :data:`OWN_TIMEOUTS`)."""
    return contextlib.nullcontext() if _timeout is None else _timeout(seconds)


def _no_answer(timeout: float) -> StoreUnavailableError:
    return StoreUnavailableError(f"RedisStore: save: no answer from Redis within {timeout} s")


def _expire(future: asyncio.Future[list[StoredEvent]], timeout: float) -> None:
    """A waiting save's time is up: not sent yet, it never will be; in flight, Redis may still run it."""
    if not future.done():
        future.set_exception(_no_answer(timeout))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _seq_of(entry_id: str | bytes) -> int:
    return int(_text(entry_id).partition("-")[0])


class RedisStore:
    """History in a Redis stream; see the module docstring for the layout."""

    def __init__(
        self,
        url_or_client: str | aioredis.Redis = DEFAULT_URL,
        key_prefix: str = "sse_fast",
        max_events: int | None = DEFAULT_MAX_EVENTS,
        max_age: float | None = None,
        *,
        index_ttl: int | None = None,
        clock: Clock = wall_clock,
    ) -> None:
        if not key_prefix:
            raise ValueError("key_prefix: must not be empty")
        if index_ttl is not None and index_ttl < 1:
            raise ValueError("index_ttl: must be a positive number of seconds or None")
        self._retention = Retention(max_events, max_age)
        self._url = url_or_client if isinstance(url_or_client, str) else None
        if isinstance(url_or_client, str):
            self._redis: aioredis.Redis = _client(url_or_client)
        else:
            self._redis = url_or_client
        self.key_prefix = key_prefix
        tag = "{" + key_prefix + "}"
        self.epoch_key = f"{tag}:epoch"
        self.seq_key = f"{tag}:seq"
        self.stream_key = f"{tag}:stream"
        self.broadcast_key = f"{tag}:bcast"
        self.user_key_prefix = f"{tag}:u:"
        self.ids_key = f"{tag}:ids"
        self.open_key = f"{tag}:open"
        if index_ttl is None and max_age is not None:
            index_ttl = int(max_age) + 1
        self._index_ttl = index_ttl or 0
        self._clock = clock
        self._saver: aioredis.Redis | None = None  # saves' own connection, while open
        self._save_script = self._redis.register_script(_SAVE_LUA)
        self._epoch = ""
        self._last_created = 0.0
        self._waiting: deque[_SaveRequest] = deque()
        self._kick = asyncio.Event()  # something waits, or the store closes
        self._sending = False  # a save is in flight
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0
        """Group commits made by :meth:`save` since open (one per group of queued saves)."""
        self.calls = 0
        """Script calls those took (a large save takes several: :data:`CALL_BUDGET`)."""
        self.call_budget = CALL_BUDGET
        self.origin = ""
        """The node id written with each entry (field ``o``): a follower of the stream tells its
        own pushes from the others' by it (the Redis bus, :mod:`sse_fast.bus.redis`)."""

    @property
    def epoch(self) -> str:
        return self._epoch

    def new_client(self, socket_timeout: float | None) -> aioredis.Redis:
        """Another client to the same Redis with its own connections (a follower's blocking
        reads must not hold the connections saves use), answers decoded as text."""
        if self._url is not None:
            client = _client(self._url)
            pool = client.connection_pool
        else:
            pool = self._redis.connection_pool
        kwargs = {**pool.connection_kwargs, "socket_timeout": socket_timeout, "decode_responses": True}
        return aioredis.Redis(connection_pool=type(pool)(connection_class=pool.connection_class, **kwargs))

    @property
    def retention(self) -> Retention:
        return self._retention

    def user_key(self, uid: str) -> str:
        return self.user_key_prefix + uid

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        if self._writer is not None:
            return
        await self._adopt_epoch()
        self._saver = self.new_client(None if OWN_TIMEOUTS else COMMAND_TIMEOUT)
        self._save_script = self._saver.register_script(_SAVE_LUA)
        # apply retention now, as the protocol promises
        try:
            async with deadline(SAVE_TIMEOUT):
                await self._call_script([], _Call(), [], max(self._clock(), self._last_created))
        except TimeoutError:
            raise StoreUnavailableError(
                f"RedisStore: open: no answer from Redis within {SAVE_TIMEOUT} s"
            ) from None
        self._closing = False
        self._kick = asyncio.Event()  # of this loop (a store may be opened again on another)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def close(self) -> None:
        """Send every save already waiting, stop the writer task, close an owned client."""
        writer = self._writer
        if writer is None:
            return
        self._writer = None
        self._closing = True
        self._kick.set()
        await writer  # it ends once a save sent from its caller's task ended too
        if self._saver is not None:
            await self._saver.aclose()
            self._saver = None
        if self._url is not None:  # we made the client, so we close it; a re-open makes a new one
            await self._redis.aclose()
            self._redis = _client(self._url)

    # ----------------------------------------------------------------- write

    async def save(self, events: Sequence[NewEvent]) -> list[StoredEvent]:
        if self._writer is None:
            raise StoreClosedError("RedisStore: save before open() or after close()")
        if not events:
            return []
        calls = calls_needed(events, self.call_budget)
        timeout = SAVE_TIMEOUT * calls
        loop = asyncio.get_running_loop()
        request = _SaveRequest(loop.create_future(), events, calls)
        if not self._sending and not self._waiting and calls == 1 and OWN_TIMEOUTS:
            return await self._send_own(request, timeout)
        # A caller that stops waiting cancels its future: the writer skips it unless it is in flight.
        self._waiting.append(request)
        if not self._sending:
            self._kick.set()
        expiry = loop.call_later(timeout, _expire, request.future, timeout)
        try:
            return await request.future
        finally:
            expiry.cancel()

    async def _send_own(self, request: _SaveRequest, timeout: float) -> list[StoredEvent]:
        """Send a one-call save from the caller's task (nothing in flight, nothing waiting).

        A caller cancelled meanwhile cancels the call, which Redis may still
        have run, as after a timeout: a single call is never left half sent.
        """
        self._sending = True
        try:
            if asyncio.current_task() is None:
                # Driven outside a task (an eager start: the native engine's pushes). asyncio's
                # timeout and redis-py's pool need one, and the first suspension brings it.
                await asyncio.sleep(0)
            async with deadline(timeout):
                await self._commit([request])
        except TimeoutError:
            raise _no_answer(timeout) from None
        finally:
            self._sending = False
            if self._waiting or self._closing:
                self._kick.set()
            if request.future.done() and not request.future.cancelled():
                request.future.exception()  # read here, or by the caller from what this raises
        return request.future.result()

    async def _write_loop(self) -> None:
        """Send what waits, as one save at a time (each cut into calls by :meth:`_commit`), until
        the store closes and nothing waits."""
        waiting = self._waiting
        while True:
            await self._kick.wait()
            self._kick.clear()
            while waiting and not self._sending:
                batch: list[_SaveRequest] = []
                size = 0
                while waiting and size < MAX_BATCH_EVENTS:
                    request = waiting.popleft()
                    if not request.future.done():  # its caller stopped waiting
                        batch.append(request)
                        size += len(request.events)
                if batch:
                    self._sending = True
                    calls = sum(request.calls for request in batch)
                    try:
                        async with deadline(SAVE_TIMEOUT * calls):  # the callers' own expire sooner
                            await self._commit(batch)
                    except TimeoutError:
                        pass  # _commit told the callers still waiting
                    finally:
                        self._sending = False
            if self._closing and not self._sending and not waiting:
                return

    async def _commit(self, batch: list[_SaveRequest]) -> None:
        """Save ``batch`` in as many script calls as its size needs (:func:`plan_calls`).

        A save in several calls marks itself open in its first call and
        closes in its last: readers stop below it meanwhile (see the module
        docstring).  Once the first call ran, the rest are sent even if the
        callers stopped waiting, so that a save is never left half written
        while Redis answers.
        """
        now = max(self._clock(), self._last_created)
        events = [ev for req in batch for ev in req.events]
        seqs = [0] * len(events)
        opened: int | None = None  # the first seq of a save in several calls, once it has one
        encoded: dict[int, str] = {}  # the uids JSON of each tuple of recipients, by identity
        try:
            calls = plan_calls(events, self.call_budget)
            call = next(calls)
            for after in calls:
                marker = "open" if opened is None else "keep"
                last = await self._call_script(events, call, seqs, now, marker, opened, encoded)
                if opened is None:
                    opened = seqs[call.new[0]] if call.new else last + 1
                self.calls += 1
                call = after
            last = await self._call_script(
                events, call, seqs, now, "" if opened is None else "close", opened, encoded
            )
            self.calls += 1
        except Exception as exc:
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(exc)
            return
        except asyncio.CancelledError:  # timed out (see deadline), or the loop is going away
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(
                        StoreUnavailableError("RedisStore: save: given up before Redis answered")
                    )
            raise
        self._last_created = now
        self.commits += 1
        epoch = self._epoch
        at = 0
        for req in batch:
            out: list[StoredEvent] = []
            for ev in req.events:
                seq = seqs[at]
                at += 1
                out.append(
                    StoredEvent(
                        seq, format_id(epoch, seq), ev.event, ev.data, ev.uids or None, now, ev.publisher_id
                    )
                )
            if not req.future.done():
                req.future.set_result(out)

    async def _call_script(
        self,
        events: Sequence[NewEvent],
        call: _Call,
        seqs: list[int],
        now: float,
        marker: str = "",
        opened: int | None = None,
        encoded: dict[int, str] | None = None,
    ) -> int:
        """Send one call of a save; the seqs of the events it added are written into ``seqs``."""
        retention = self._retention
        oldest = retention.oldest_kept_time(now)
        args: list[Any] = [
            self.user_key_prefix,
            retention.max_events or 0,
            repr(oldest) if oldest is not None and oldest > 0 else 0,
            self._index_ttl,
            repr(now),
            self._epoch,
            marker,
            opened or 0,
            int((now + OPEN_TTL) * 1000),
            len(call.new),
            len(call.groups),
        ]
        # A call without publisher ids sends what it sent before they existed.
        with_ids = any(events[k].publisher_id is not None for k in call.new)
        args.append(4 if with_ids else 3)
        args.append(self.origin)
        encoded = {} if encoded is None else encoded
        for k in call.new:
            ev = events[k]
            args.append(ev.event)
            args.append(ev.data)
            uids = ev.uids
            if uids:
                text = encoded.get(id(uids))
                if text is None:
                    text = encoded[id(uids)] = orjson.dumps(uids).decode()
                args.append(text)
            else:
                args.append("")
            if with_ids:
                args.append(ev.publisher_id or "")  # never empty when given: event.publisher_id_rule
        offset = {k: -j for j, k in enumerate(call.new)}  # an event this call adds: by its place
        for uid, block in call.groups:
            args.append(uid)
            args.append(len(block))
            args.extend(offset[k] if k in offset else seqs[k] for k in block)
        keys = [
            self.seq_key,
            self.stream_key,
            self.broadcast_key,
            self.epoch_key,
            self.ids_key,
            self.open_key,
        ]
        try:
            result = await self._save_script(keys=keys, args=args)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc, "save") from exc
        except ResponseError as exc:
            if str(exc).startswith("SSEFAST_EPOCH"):
                raise self._history_lost() from None
            raise
        last = int(result)
        base = last - len(call.new) + 1
        for j, k in enumerate(call.new):
            seqs[k] = base + j
        return last

    def _history_lost(self) -> HistoryLostError:
        return HistoryLostError(
            f"RedisStore: {self.epoch_key} no longer holds epoch {self._epoch!r} "
            f"(Redis was flushed, restarted without persistence, or the keys deleted)"
        )

    async def _adopt_epoch(self) -> None:
        """Make this store's epoch the one Redis holds, creating it when there is none."""
        try:
            await self._redis.set(self.epoch_key, new_epoch(), nx=True)
            epoch = await self._redis.get(self.epoch_key)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc, "open") from exc
        if epoch is None:
            raise StoreClosedError(f"RedisStore: {self.epoch_key} vanished while opening")
        self._epoch = _text(epoch)

    # ---------------------------------------------------------------- health

    async def check(self) -> None:
        """One GET: is Redis there, and does it still hold our history?"""
        try:
            epoch = await self._redis.get(self.epoch_key)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc, "check") from exc
        if epoch is None or _text(epoch) != self._epoch:
            raise self._history_lost()

    async def recover(self) -> None:
        """Adopt the history Redis holds now (another process may have started it already)."""
        await self._adopt_epoch()
        self._last_created = 0.0

    # ------------------------------------------------------------------ read

    @_fails_as_unavailable
    async def list_after(
        self,
        uid: str,
        after_seq: int,
        *,
        event_type: str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> list[StoredEvent]:
        check_limit(limit)
        if self._writer is None:
            raise StoreClosedError("RedisStore: list_after before open() or after close()")
        r = self._redis
        user_key = self.user_key(uid)
        epoch = self._epoch
        low = max(after_seq, await self.first_seq() - 1)
        out: list[StoredEvent] = []
        while len(out) < limit:
            # MULTI/EXEC: both indexes are read at one instant.  Read apart, a save landing
            # between them (a unicast then a broadcast) could show the broadcast but not the
            # unicast below it, and paging on from the broadcast would skip the unicast for good.
            # The unfinished saves are read at the same instant: what lies at or above the
            # first of them is left for later (see the module docstring).
            async with r.pipeline(transaction=True) as pipe:
                pipe.zrangebyscore(user_key, f"({low}", "+inf", start=0, num=limit)
                pipe.zrangebyscore(self.broadcast_key, f"({low}", "+inf", start=0, num=limit)
                pipe.zrange(self.open_key, 0, -1, withscores=True)
                mine, broadcasts, unfinished = await pipe.execute()
            candidates = sorted({int(s) for s in mine} | {int(s) for s in broadcasts})[:limit]
            below = self._unfinished_from(unfinished)
            capped = below is not None and bool(candidates) and candidates[-1] >= below
            if below is not None and capped:
                candidates = [seq for seq in candidates if seq < below]
            if not candidates:
                break
            async with r.pipeline(transaction=False) as pipe:
                for seq in candidates:
                    pipe.xrange(self.stream_key, f"{seq}-0", f"{seq}-0")
                entries = await pipe.execute()
            for found in entries:
                if not found:
                    continue  # trimmed since the index was read
                entry_id, fields = found[0]
                ev = self._decode(epoch, entry_id, fields)
                if ev.uids is not None and uid not in ev.uids:
                    continue  # a stale index member from an older history
                if event_type is not None and ev.event != event_type:
                    continue
                out.append(ev)
                if len(out) >= limit:
                    break
            low = candidates[-1]
            if capped or (len(mine) < limit and len(broadcasts) < limit):
                break  # up to an unfinished save, or both indexes were read to their end
        return out

    def _unfinished_from(self, unfinished: list[tuple[Any, float]]) -> int | None:
        """The first seq of the oldest save still being written in several calls (None: none);
        a marker past its deadline belongs to a writer that stopped and holds nothing back."""
        now_ms = self._clock() * 1000
        live = [int(_text(first)) for first, deadline in unfinished if deadline > now_ms]
        return min(live) if live else None

    @staticmethod
    def _decode(epoch: str, entry_id: str | bytes, fields: dict[Any, Any]) -> StoredEvent:
        f = {_text(k): _text(v) for k, v in fields.items()}
        seq = _seq_of(entry_id)
        uids = f.get("u")
        return StoredEvent(
            seq,
            format_id(epoch, seq),
            f["e"],
            f["d"],
            None if uids is None else tuple(orjson.loads(uids)),
            float(f["t"]),
            f.get("i"),
        )

    @_fails_as_unavailable
    async def first_seq(self) -> int:
        head = await self._redis.xrange(self.stream_key, "-", "+", count=1)
        if head and head[0][0] is not None:
            return _seq_of(head[0][0])
        return await self.last_seq() + 1

    @_fails_as_unavailable
    async def last_seq(self) -> int:
        value = await self._redis.get(self.seq_key)
        return int(value) if value is not None else 0

    @_fails_as_unavailable
    async def seq_of_publisher_id(self, publisher_id: str) -> int | None:
        score = await self._redis.zscore(self.ids_key, publisher_id)
        return None if score is None else int(score)


__all__ = ["DEFAULT_MAX_EVENTS", "RedisStore"]
