"""The access log's lines in-process: both formats, every close reason, a rotated file.

tests/test_operations.py reads the log of real servers on both engines;
here the reasons that are slow to provoke over a socket (a slow consumer, a
failed write) and the text format's quoting are checked against a hub.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from conftest import RecordingSink, wait_until
from sse_fast import Event, Hub
from sse_fast.access_log import AccessLog, format_json, format_text
from sse_fast.endpoints import Endpoints
from sse_fast.hub import Subscriber
from sse_fast.request import Request


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def subscribe(endpoints: Endpoints, uid: str) -> tuple[Subscriber, RecordingSink]:
    request = Request("GET", "/events", f"uid={uid}&token=T0p".encode(), [])
    AccessLog.begin(request, ("10.0.0.7", 4242))
    sink = RecordingSink()
    wanted = asyncio.get_event_loop().run_until_complete(endpoints.subscription(request))
    sub = endpoints.open_subscription(wanted, sink)
    return sub, sink


def test_every_close_reason(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "json")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        hub = Hub(heartbeat=60)
        endpoints = Endpoints(hub, access_log=log)
        loop.run_until_complete(hub.start())
        gone, _ = subscribe(endpoints, "gone")
        slow, slow_sink = subscribe(endpoints, "slow")
        failed, _ = subscribe(endpoints, "failed")
        stays, stays_sink = subscribe(endpoints, "stays")
        for sub in (gone, slow, failed, stays):
            hub.ready(sub)
        loop.run_until_complete(hub.push([Event("a", 1), Event("b", 2)]))
        loop.run_until_complete(hub.drain())
        hub.unsubscribe(gone)
        hub._failures.drop_slow(slow)  # what the sweep and the ring do to one that falls behind
        hub.write_failed(failed, OSError("broken pipe"))
        loop.run_until_complete(hub.close())
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    log.close()
    closes = {line["uid"]: line for line in lines(path) if line["kind"] == "close"}
    assert {uid: c["reason"] for uid, c in closes.items()} == {
        "gone": "client_gone",
        "slow": "slow_consumer",
        "failed": "write_error",
        "stays": "shutdown",
    }
    assert closes["gone"]["events"] == 2 and closes["gone"]["remote"] == "10.0.0.7:4242"
    assert slow_sink.closed and stays_sink.closed
    opens = [line for line in lines(path) if line["kind"] == "open"]
    assert opens[0]["path"] == "/events?uid=gone&token=***"
    assert "T0p" not in path.read_text()


def test_the_text_format_quotes_what_would_break_a_line() -> None:
    line = {
        "time": "2026-12-02T06:00:00.000Z",
        "kind": "open",
        "sub": 3,
        "uid": 'al ice="x"\nnext line\u2028',
        "event_type": None,
        "ok": True,
        "path": "/events?uid=bob",
    }
    text = format_text(line)
    assert "\n" not in text and "\u2028" not in text and text.isascii()
    words = shlex.split(text, posix=True)
    assert words[:2] == ["2026-12-02T06:00:00.000Z", "open"]
    fields = dict(word.split("=", 1) for word in words[2:])
    assert fields["sub"] == "3" and fields["event_type"] == "-" and fields["ok"] == "true"
    assert fields["path"] == "/events?uid=bob"
    assert json.loads(text.split(" uid=", 1)[1].split(" event_type=")[0]) == line["uid"]
    as_json = format_json(line)
    assert "\u2028" not in as_json and json.loads(as_json) == line


def test_a_rotated_file_is_reopened(tmp_path: Path) -> None:
    path, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    log = AccessLog(str(path), "json")
    request = Request("GET", "/healthz", b"", [])
    AccessLog.begin(request, ("127.0.0.1", 1))
    log.request_done(request, 200)
    wait_until(lambda: path.exists() and path.read_text().endswith("\n"))
    path.rename(rotated)  # logrotate's default: move the file away; the server goes on writing
    AccessLog.begin(request, ("127.0.0.1", 1))
    log.request_done(request, 503)
    log.request_done(request, 503)  # once per request
    log.close()
    assert [line["status"] for line in lines(rotated)] == [200]
    assert [line["status"] for line in lines(path)] == [503]


def test_a_bad_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format"):
        AccessLog("-", "xml")
