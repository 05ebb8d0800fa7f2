"""SQLiteStore: the embedded durable default (stdlib ``sqlite3``, no new dependency).

Threads, so that the event loop never waits on the disk:

* one **writer thread** owns the only writing connection.  ``save`` puts a
  request on a queue and awaits a future.  The writer takes every request
  queued at that moment, writes them all in ONE transaction, commits, and then
  resolves their futures in queue order with ``loop.call_soon_threadsafe``.
  Many small concurrent pushes therefore cost one commit (group commit), saves
  complete FIFO, and seqs increase in queue order.  Retention pruning runs in
  the same transaction.  An event's recipient rows are expanded by SQLite from
  its uids' JSON array (``json_each``): no Python object per recipient, and the
  GIL is released while SQLite writes them, so a push of 100,000 recipients
  does not hold the event loop (which waits for the GIL) for the writer's sake.
  A push stays one transaction however large: readers see it whole or not at all.
* a small **reader pool** (threads with their own connections) serves
  ``list_after``; WAL mode lets those reads run while the writer commits.

Durability: WAL journal.  ``synchronous="FULL"`` (the default) fsyncs the WAL
on every commit, so an event ``save`` returned survives kill -9 of the process
*and* a power cut or kernel crash; group commit amortises that fsync over every
save that was waiting.  ``synchronous="NORMAL"`` skips the per-commit fsync: a
committed event still survives kill -9 of the process (the WAL is in the OS
page cache the moment the commit returns) but the last commits may be lost if
the machine itself goes down.

Schema (version 1, in ``PRAGMA user_version``)::

    meta(key PRIMARY KEY, value)          -- 'epoch' (written once), 'last_seq'
    events(seq INTEGER PRIMARY KEY, event, data, created REAL,
           uids,                          -- uids: JSON array, NULL = broadcast
           publisher_id)                  -- the publisher's own id, NULL = none
    recipients(seq, uid) PRIMARY KEY (seq, uid), INDEX (uid, seq)
    INDEX events_broadcast ON events(seq) WHERE uids IS NULL
    publisher_ids(id PRIMARY KEY, seq)    -- id -> seq of the latest event saved with it
    INDEX publisher_ids_seq ON publisher_ids(seq)

A file of version 0 (before publisher ids were kept) is migrated when it is
opened: ``ALTER TABLE events ADD COLUMN publisher_id`` (no rewrite of the
rows) and the new table, in the opening transaction; its events keep working,
with no publisher id.  ``publisher_ids`` is pruned with the events, one
retention window later (see ``Retention.ids_kept_from``).  A file of a newer
version than this code knows is refused.

``last_seq`` is kept in ``meta`` so that seqs are never reused even after
retention removed every row.  Deleting the file (with its ``-wal``/``-shm``)
wipes the history; the next open draws a new epoch.

Several processes may share one file (an overlapping restart: the new process
opens it before the old one exits).  No bound of the history is trusted from memory
between transactions: each commit reads the last seq (``meta.last_seq``, and
``max(seq)`` as a guard) and the first retained seq from the file after
``BEGIN IMMEDIATE`` has taken the write lock, numbers its events from there and
prunes from there; ``first_seq``/``last_seq`` read the file too.  So ids stay
strictly increasing across the processes and both see the whole history, but
each process fans out live only what it saved itself.  A warning names the
file when a commit finds that another process wrote it (at the first
detection, then at most once a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ..ids import format_id, new_epoch
from .base import (
    DEFAULT_PAGE,
    Clock,
    NewEvent,
    Retention,
    StoreClosedError,
    StoredEvent,
    check_limit,
    wall_clock,
)

DEFAULT_MAX_EVENTS = 1_000_000
FOREIGN_WRITE_WARNING_INTERVAL = 60.0
"""Seconds between two warnings that another process writes the file (the first is logged at once)."""

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the files this code writes (0: before publisher ids)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    created REAL NOT NULL,
    uids TEXT,
    publisher_id TEXT
);
CREATE INDEX IF NOT EXISTS events_broadcast ON events(seq) WHERE uids IS NULL;
CREATE TABLE IF NOT EXISTS recipients (
    seq INTEGER NOT NULL,
    uid TEXT NOT NULL,
    PRIMARY KEY (seq, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_uid ON recipients(uid, seq);
CREATE TABLE IF NOT EXISTS publisher_ids (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS publisher_ids_seq ON publisher_ids(seq);
"""

_INSERT_WITH_ID = (
    "INSERT INTO events(seq, event, data, created, uids, publisher_id) VALUES (?, ?, ?, ?, ?, ?)"
)
_INDEX_ID = (
    "INSERT INTO publisher_ids(id, seq) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET seq = excluded.seq"
)

# The history's bounds as the file holds them.  One sub-select per value, so that
# each min/max is a single step down the seq index (min and max in one SELECT
# would scan the table).  created of the newest row: created grows with seq.
_STATE = """
SELECT (SELECT value FROM meta WHERE key = 'last_seq'),
       (SELECT seq FROM events ORDER BY seq DESC LIMIT 1),
       (SELECT created FROM events ORDER BY seq DESC LIMIT 1),
       (SELECT seq FROM events ORDER BY seq LIMIT 1)
"""

_INSERT_RECIPIENTS = "INSERT INTO recipients(seq, uid) SELECT ?, value FROM json_each(?)"
"""An event's recipient rows from its uids' JSON array (SQLite's JSON functions: 3.38+, or
the JSON1 extension that most builds before it include)."""

# Each branch is limited before the union, so a page costs O(limit) index
# steps whatever the size of the history or of other users' traffic.
_LIST_ALL = """
SELECT seq, event, data, created, uids, publisher_id FROM events WHERE seq IN (
    SELECT seq FROM (SELECT seq FROM recipients WHERE uid = :uid AND seq > :after
                     ORDER BY seq LIMIT :limit)
    UNION ALL
    SELECT seq FROM (SELECT seq FROM events WHERE uids IS NULL AND seq > :after
                     ORDER BY seq LIMIT :limit)
) ORDER BY seq LIMIT :limit
"""

_LIST_TYPE = """
SELECT seq, event, data, created, uids, publisher_id FROM events WHERE seq IN (
    SELECT seq FROM (SELECT r.seq FROM recipients r JOIN events e ON e.seq = r.seq
                     WHERE r.uid = :uid AND r.seq > :after AND e.event = :type
                     ORDER BY r.seq LIMIT :limit)
    UNION ALL
    SELECT seq FROM (SELECT seq FROM events WHERE uids IS NULL AND seq > :after AND event = :type
                     ORDER BY seq LIMIT :limit)
) ORDER BY seq LIMIT :limit
"""


@dataclass(slots=True)
class _SaveRequest:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[StoredEvent]]
    events: Sequence[NewEvent]


_STOP = object()


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    """Runs in the loop: a cancelled caller has already gone, nothing to resolve."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _post(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None = None,
) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(_settle, future, result, exc)


class SQLiteStore:
    """Durable history in one SQLite file; see the module docstring for the threading."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_events: int | None = DEFAULT_MAX_EVENTS,
        max_age: float | None = None,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        readers: int = 2,
        clock: Clock = wall_clock,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous: must be 'FULL' or 'NORMAL', not {synchronous!r}")
        if readers < 1:
            raise ValueError("readers: must be at least 1")
        self.path = os.fspath(path)
        self.synchronous = synchronous
        self._retention = Retention(max_events, max_age)
        self._readers = readers
        self._clock = clock
        self._epoch = ""
        self._last_seq = 0
        self._first_seq = 1
        self._last_created = 0.0
        self._written_seq = 0  # the file's last seq as this process last left it (at open or a commit)
        # Whether publisher_ids may have rows to prune: a file that never had any pays nothing for them.
        self._may_hold_ids = True
        self._foreign_writes = 0  # commits that found another process's writes since the last warning
        self._warned_at: float | None = None
        self.commits = 0
        """Transactions committed by :meth:`save` since open (group commit makes it < saves)."""
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        # Held by the writer around each transaction; tests hold it to queue saves deterministically.
        self._commit_gate = threading.Lock()

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def retention(self) -> Retention:
        return self._retention

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        if self._writer is not None:
            return
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._queue = queue.SimpleQueue()
        self._writer = threading.Thread(
            target=self._writer_main, args=(loop, ready), name="sse-fast-sqlite-writer", daemon=True
        )
        self._writer.start()
        try:
            await ready
        except BaseException:
            self._writer.join()
            self._writer = None
            raise
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="sse-fast-sqlite-reader")

    async def close(self) -> None:
        """Commit every save already queued, then stop the threads."""
        writer, pool = self._writer, self._pool
        if writer is None:
            return
        self._writer = self._pool = None
        self._queue.put(_STOP)
        await asyncio.to_thread(writer.join)
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True)
        with self._conns_lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    async def check(self) -> None:
        """A local file: nothing to reach.  Saves report disk errors themselves."""
        if self._writer is None:
            raise StoreClosedError("SQLiteStore: check before open() or after close()")

    async def recover(self) -> None:
        """Nothing to recover: :meth:`check` never reports a lost history."""

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    # ---------------------------------------------------------------- writer

    def _writer_main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            self._init_db(conn)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.Error):  # name the file: "unable to open database file" is no help
                exc = sqlite3.OperationalError(f"SQLiteStore: {self.path}: {exc}")
            _post(loop, ready, None, exc)
            return
        _post(loop, ready, None)
        try:
            self._serve(conn)
        finally:
            conn.close()

    def _init_db(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        try:
            conn.execute("SELECT count(*) FROM json_each('[]')")
        except sqlite3.OperationalError:
            raise sqlite3.OperationalError(
                f"SQLite {sqlite3.sqlite_version} has no JSON functions (json_each): 3.38+ is needed, "
                "or a build with the JSON1 extension"
            ) from None
        conn.execute("BEGIN IMMEDIATE")
        self._migrate(conn)
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('epoch', ?)", (new_epoch(),))
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('last_seq', '0')")
        [(epoch,)] = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchall()
        self._epoch = epoch
        self._may_hold_ids = conn.execute("SELECT 1 FROM publisher_ids LIMIT 1").fetchone() is not None
        last, first, newest = self._file_state(conn)
        self._last_seq = self._written_seq = last
        self._last_created = newest
        self._first_seq = self._prune(conn, first, last, max(self._clock(), newest))
        conn.execute("COMMIT")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the file to :data:`SCHEMA_VERSION` (inside the opening transaction)."""
        [(version,)] = conn.execute("PRAGMA user_version").fetchall()
        if version > SCHEMA_VERSION:
            raise sqlite3.OperationalError(
                f"schema version {version} is newer than this sse_fast knows ({SCHEMA_VERSION})"
            )
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if columns and "publisher_id" not in columns:  # a version 0 file
            conn.execute("ALTER TABLE events ADD COLUMN publisher_id TEXT")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        if version != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _file_state(conn: sqlite3.Connection) -> tuple[int, int, float]:
        """(last seq, first retained seq, created of the newest row) as the file holds them now."""
        meta_last, max_seq, newest, min_seq = conn.execute(_STATE).fetchone()
        last = max(int(meta_last or 0), max_seq or 0)
        return last, (min_seq if min_seq is not None else last + 1), (newest or 0.0)

    def _serve(self, conn: sqlite3.Connection) -> None:
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while True:
            item = get()
            if item is _STOP:
                return
            batch: list[_SaveRequest] = [item]
            stop = False
            with self._commit_gate:
                while True:  # group commit: everything queued now shares this transaction
                    try:
                        nxt = get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    batch.append(nxt)
                self._commit(conn, batch)
            if stop:
                return

    def _commit(self, conn: sqlite3.Connection, batch: list[_SaveRequest]) -> None:
        """Write ``batch`` in one transaction and resolve its futures, in order.

        If the group fails, each save is retried alone so that one bad save
        (or a transient error) fails only itself.
        """
        epoch = self._epoch
        results: list[list[StoredEvent]] = []
        try:
            # Number from the file, under its write lock: another process may have written it.
            conn.execute("BEGIN IMMEDIATE")
            file_last, file_first, newest = self._file_state(conn)
            if file_last != self._written_seq:
                self._foreign_write(file_last)
                self._may_hold_ids = True  # the other process may have saved publisher ids
            seq = max(file_last, self._written_seq)  # never hand out an id twice, whatever the file says
            # never backwards, across processes too: age pruning stops at the first row it keeps
            now = max(self._clock(), newest, self._last_created)
            rows: list[tuple[int, str, str, float, str | None]] = []
            recipients: list[tuple[int, str]] = []  # (seq, the uids as a JSON array)
            texts: dict[int, str] = {}  # the JSON of each tuple of uids, by identity: a push shares one
            with_ids: list[tuple[int, str, str, float, str | None, str]] = []
            for req in batch:
                out: list[StoredEvent] = []
                for ev in req.events:
                    seq += 1
                    uids = ev.uids or None
                    pid = ev.publisher_id
                    encoded = None
                    if uids is not None:
                        encoded = texts.get(id(uids))
                        if encoded is None:
                            encoded = texts[id(uids)] = orjson.dumps(uids).decode()
                        recipients.append((seq, encoded))
                    if pid is None:
                        rows.append((seq, ev.event, ev.data, now, encoded))
                    else:
                        with_ids.append((seq, ev.event, ev.data, now, encoded, pid))
                    out.append(StoredEvent(seq, format_id(epoch, seq), ev.event, ev.data, uids, now, pid))
                results.append(out)
            # Events without a publisher id are written as before ids existed: they cost what they did.
            conn.executemany(
                "INSERT INTO events(seq, event, data, created, uids) VALUES (?, ?, ?, ?, ?)", rows
            )
            # One statement per event, its recipients expanded inside SQLite: no Python object
            # per recipient, and the GIL released for all of them (the loop runs meanwhile).
            conn.executemany(_INSERT_RECIPIENTS, recipients)
            if with_ids:
                conn.executemany(_INSERT_WITH_ID, with_ids)
                # in seq order: the latest event with an id wins
                conn.executemany(_INDEX_ID, [(row[5], row[0]) for row in with_ids])
                self._may_hold_ids = True
            conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (str(seq),))
            first = self._prune(conn, file_first, seq, now)
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if len(batch) > 1:
                for req in batch:
                    self._commit(conn, [req])
            else:
                _post(batch[0].loop, batch[0].future, None, exc)
            return
        self._last_seq = self._written_seq = seq
        self._first_seq = first
        self._last_created = now
        self.commits += 1
        for req, out in zip(batch, results, strict=True):
            _post(req.loop, req.future, out)

    def _foreign_write(self, file_last: int) -> None:
        """Another process wrote the file since this one did: say so, at most once a minute."""
        self._foreign_writes += 1
        at = time.monotonic()
        if self._warned_at is not None and at - self._warned_at < FOREIGN_WRITE_WARNING_INTERVAL:
            return
        logger.warning(
            "SQLiteStore: %s is also written by another process (its last seq is %d, this process "
            "last wrote %d; %d such commit(s) since the last warning): ids stay strictly increasing "
            "and the history is shared, but each process fans out live only its own pushes",
            self.path,
            file_last,
            self._written_seq,
            self._foreign_writes,
        )
        self._warned_at = at
        self._foreign_writes = 0

    def _prune(self, conn: sqlite3.Connection, first: int, last: int, now: float) -> int:
        """Delete what retention no longer keeps; return the new first seq."""
        cut = self._retention.first_kept_seq(last)
        oldest = self._retention.oldest_kept_time(now)
        if oldest is not None:
            # created grows with seq, so this walks only the expired rows (plus one).
            row = conn.execute(
                "SELECT seq FROM events WHERE seq >= ? AND created >= ? ORDER BY seq LIMIT 1", (first, oldest)
            ).fetchone()
            cut = max(cut, row[0] if row is not None else last + 1)
        if cut > first:
            conn.execute("DELETE FROM events WHERE seq < ?", (cut,))
            conn.execute("DELETE FROM recipients WHERE seq < ?", (cut,))
            if self._may_hold_ids:
                conn.execute(
                    "DELETE FROM publisher_ids WHERE seq < ?", (self._retention.ids_kept_from(cut, last),)
                )
            return cut
        return first

    # ------------------------------------------------------------------- API

    async def save(self, events: Sequence[NewEvent]) -> list[StoredEvent]:
        if self._writer is None:
            raise StoreClosedError("SQLiteStore: save before open() or after close()")
        if not events:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[StoredEvent]] = loop.create_future()
        self._queue.put(_SaveRequest(loop, future, events))
        return await future

    async def list_after(
        self,
        uid: str,
        after_seq: int,
        *,
        event_type: str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> list[StoredEvent]:
        check_limit(limit)
        pool = self._pool
        if pool is None:
            raise StoreClosedError("SQLiteStore: list_after before open() or after close()")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, self._read_page, uid, after_seq, event_type, limit)

    def _reader(self) -> sqlite3.Connection:
        """This reader thread's connection (read-only, opened on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    def _read_page(self, uid: str, after_seq: int, event_type: str | None, limit: int) -> list[StoredEvent]:
        conn = self._reader()
        params: dict[str, Any] = {"uid": uid, "after": after_seq, "limit": limit}
        if event_type is None:
            rows = conn.execute(_LIST_ALL, params).fetchall()
        else:
            params["type"] = event_type
            rows = conn.execute(_LIST_TYPE, params).fetchall()
        epoch = self._epoch
        return [
            StoredEvent(
                seq,
                format_id(epoch, seq),
                event,
                data,
                None if uids is None else tuple(orjson.loads(uids)),
                created,
                publisher_id,
            )
            for seq, event, data, created, uids, publisher_id in rows
        ]

    # first_seq/last_seq read the file (another process may have written or
    # pruned it, even while this one saves nothing): one indexed query on a
    # reader thread.  The hub asks on a resume, not on a push.  Closed, they
    # answer what this process last saw.

    async def first_seq(self) -> int:
        return (await self._bounds())[0]

    async def last_seq(self) -> int:
        return (await self._bounds())[1]

    async def _bounds(self) -> tuple[int, int]:
        pool = self._pool
        if pool is None:
            return self._first_seq, self._last_seq
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, self._read_bounds)

    def _read_bounds(self) -> tuple[int, int]:
        last, first, _ = self._file_state(self._reader())
        return first, last

    async def seq_of_publisher_id(self, publisher_id: str) -> int | None:
        pool = self._pool
        if pool is None:
            raise StoreClosedError("SQLiteStore: seq_of_publisher_id before open() or after close()")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, self._read_publisher_id, publisher_id)

    def _read_publisher_id(self, publisher_id: str) -> int | None:
        row = self._reader().execute("SELECT seq FROM publisher_ids WHERE id = ?", (publisher_id,)).fetchone()
        return None if row is None else int(row[0])
