"""The access log: one line per push, per other request, and per subscription's open and close.

Off by default, and then free: nothing here runs and no request carries a
:class:`~sse_fast.request.RequestLog`.  On (``--access-log``), the engines
begin a request's record as it arrives (the ASGI app in ``SSEApp._http``,
the native engine for the subscriptions it streams itself), the endpoints
add what they learn (a push's size), and the line is written when the answer
is sent, or, for a subscription, when it opens and when the hub drops it
(:attr:`Hub.on_subscriber_closed`, with the reason: ``client_gone``,
``slow_consumer``, ``write_error``, ``shutdown``...).

Lines are formatted on the event loop (a few microseconds) and written by
one thread (:class:`LineWriter`), many lines per write, through the standard
library's logging handlers, so a stalled standard error or a slow disk never
blocks the loop; past :data:`QUEUE_LIMIT` waiting lines, new ones are
dropped and counted, and the count is logged.  A file is reopened when it is
rotated (:class:`~logging.handlers.WatchedFileHandler`).  Query strings are logged
with secret parameters' values as ``***`` (``token=``); headers, and so
``Authorization`` and cookies, never are.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from .config import STDERR
from .hub import Hub, Subscriber
from .redact import redact_query
from .request import Request, RequestLog

QUEUE_LIMIT = 100_000
"""Lines waiting for the writer thread before new ones are dropped (and counted)."""
BATCH_LINES = 1024
"""Most lines the writer thread joins into one write."""
DROP_REPORT_INTERVAL = 10.0
"""Seconds between two warnings that lines were dropped."""
STOP_TIMEOUT = 5.0
"""Seconds :meth:`AccessLog.close` waits for the writer (an output stuck for longer loses its last lines)."""

Line = dict[str, Any]


def _address(client: Any) -> str | None:
    if isinstance(client, (tuple, list)) and len(client) >= 2:
        host, port = client[0], client[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return None if client is None else str(client)


class _Clock:
    """Wall-clock timestamps (UTC, milliseconds), the seconds' part formatted once a second."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int((t - second) * 1000):03d}Z"


def format_json(line: Line) -> str:
    """One JSON object; U+2028/U+2029/U+0085 escaped so that no reader splits the line."""
    text = orjson.dumps(line).decode()
    if not text.isascii():
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\u0085", "\\u0085")
    return text


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if text and text.isascii() and text.isprintable() and not any(c in text for c in ' "\\'):
        return text
    return json.dumps(text)  # ASCII, every control and non-ASCII character escaped


def format_text(line: Line) -> str:
    """``<time> <kind> key=value ...`` (logfmt): a value with a space, a quote, a backslash, a control
    or a non-ASCII character is a JSON string (ASCII, escaped); ``-`` is none."""
    parts = [str(line["time"]), str(line["kind"])]
    parts += [f"{key}={_text_value(value)}" for key, value in line.items() if key not in ("time", "kind")]
    return " ".join(parts)


FORMATS: dict[str, Callable[[Line], str]] = {"text": format_text, "json": format_json}


class LineWriter:
    """A thread that writes the lines the loop queues, many per write, through a logging handler.

    The handler (:class:`~logging.StreamHandler` for standard error,
    :class:`~logging.handlers.WatchedFileHandler` for a file, which reopens
    it once rotated) gets one record per batch: whatever waited since the
    last write leaves in one ``write``.  :meth:`put` never blocks the loop:
    past ``limit`` waiting lines it drops and counts, and the count is
    reported (through the ``sse_fast`` logger, at most every
    :data:`DROP_REPORT_INTERVAL` seconds).
    """

    _STOP = object()

    def __init__(self, handler: logging.Handler, limit: int = QUEUE_LIMIT) -> None:
        self.handler = handler
        self.dropped = 0
        self._reported = 0
        self._reported_at = 0.0
        self._lines: queue.Queue[Any] = queue.Queue(limit)
        self._thread = threading.Thread(target=self._run, name="sse-fast-access-log", daemon=True)
        self._thread.start()

    def put(self, line: str) -> None:
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Write what waits, then end the thread (within ``timeout`` even if the output is stuck)."""
        with contextlib.suppress(queue.Full):
            self._lines.put(self._STOP, timeout=timeout)
        self._thread.join(timeout)
        self.handler.close()

    def _run(self) -> None:
        lines = self._lines
        while True:
            batch = [lines.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < BATCH_LINES:
                    batch.append(lines.get_nowait())
            stop = batch[-1] is self._STOP
            text = "\n".join(line for line in batch if line is not self._STOP)
            if text:
                # Made directly, not through the process's record factory: a factory that
                # decorates our other log lines (a node's name) must not touch these.
                record = logging.LogRecord("sse_fast.access", logging.INFO, "", 0, text, None, None)
                try:
                    self.handler.handle(record)
                except Exception:  # the writer goes on; the handler says what failed
                    self.handler.handleError(record)
            self._report_drops()
            if stop:
                return

    def _report_drops(self) -> None:
        dropped = self.dropped
        now = time.monotonic()
        if dropped != self._reported and now - self._reported_at >= DROP_REPORT_INTERVAL:
            logging.getLogger("sse_fast").warning(
                "access log: %d lines dropped (its output could not keep up)", dropped - self._reported
            )
            self._reported, self._reported_at = dropped, now


class AccessLog:
    """Formats and writes the access log's lines (see the module docstring).

    ``destination`` is ``"-"`` for standard error or a file path; ``fmt`` is
    ``text`` or ``json``.  :meth:`close` flushes what waits (also at exit).
    """

    def __init__(self, destination: str = STDERR, fmt: str = "text") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"log_format: one of {', '.join(FORMATS)}")
        self._format = FORMATS[fmt]
        self._clock = _Clock()
        self._open: dict[Subscriber, tuple[float, str | None]] = {}
        output: logging.Handler
        if destination == STDERR:
            output = logging.StreamHandler(sys.stderr)
        else:
            output = logging.handlers.WatchedFileHandler(destination, encoding="utf-8")
        output.setFormatter(logging.Formatter("%(message)s"))
        self.writer = LineWriter(output)
        self._closed = False
        atexit.register(self.close)

    def attach(self, hub: Hub) -> None:
        """Hear of every subscriber the hub drops, to write its close line."""
        hub.on_subscriber_closed = self.subscription_closed

    def close(self) -> None:
        """Write what waits and stop the writer thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.writer.stop()
        atexit.unregister(self.close)

    # ------------------------------------------------------------- records

    @staticmethod
    def begin(request: Request, client: Any) -> RequestLog:
        """A request arrived (``client``: the peer's address as the server gives it)."""
        log = request.log = RequestLog(time.perf_counter(), _address(client))
        return log

    def request_done(self, request: Request, status: int) -> None:
        """The answer to ``request`` was sent: a ``push`` line or a ``request`` line (once)."""
        log = request.log
        if log is None or log.streaming:
            return
        request.log = None
        line: Line = {
            "time": self._clock.now(),
            "kind": log.kind,
            "status": status,
            "method": request.method,
            "path": _target(request),
        }
        if log.fields:
            line.update(log.fields)
        if log.error is not None:
            line["error"] = log.error
        line["duration_ms"] = round((time.perf_counter() - log.started) * 1000, 3)
        line["remote"] = log.remote
        self._write(line)

    def subscription_opened(self, request: Request, sub: Subscriber, last_event_id: str | None) -> None:
        """A subscription is live: its ``open`` line; its ``close`` line follows when the hub drops it."""
        log = request.log
        if log is None:
            return
        log.streaming = True
        self._open[sub] = (log.started, log.remote)
        line: Line = {
            "time": self._clock.now(),
            "kind": "open",
            "sub": sub.serial,
            "uid": sub.uid,
            "event_type": sub.event_type,
            "last_event_id": last_event_id,
            "path": _target(request),
            "remote": log.remote,
        }
        self._write(line)

    def subscription_closed(self, sub: Subscriber) -> None:
        """The hub dropped ``sub``: its ``close`` line (duration, events sent, reason)."""
        opened = self._open.pop(sub, None)
        if opened is None:
            return
        started, remote = opened
        line: Line = {
            "time": self._clock.now(),
            "kind": "close",
            "sub": sub.serial,
            "uid": sub.uid,
            "reason": sub.close_reason,
            "events": sub.sent,
            "duration_s": round(time.perf_counter() - started, 3),
            "remote": remote,
        }
        self._write(line)

    def _write(self, line: Line) -> None:
        if not self._closed:
            self.writer.put(self._format(line))


def _target(request: Request) -> str:
    """The path and query as logged: secret parameters' values (``token=``) as ``***``."""
    query = request.query_string
    if not query:
        return request.root_path + request.path
    return f"{request.root_path}{request.path}?{redact_query(query.decode('latin-1'))}"
