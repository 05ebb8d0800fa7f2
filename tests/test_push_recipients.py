"""End to end, on both engines: ``--max-recipients`` bounds one push, and a big push is delivered whole.

Recipients are events x uids as given (a broadcast counts one per event).
Over the limit: 413 in the edge's JSON error format, naming the limit, and
nothing stored or delivered.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from conftest import Serve, ServerProcess, Subscribe, nothing_else_arrived


def push_body(events: int, uids: list[str] | None) -> dict[str, object]:
    body: dict[str, object] = {"events": [{"event": "bulk", "data": n} for n in range(events)]}
    if uids is not None:
        body["uids"] = uids
    return body


def post(server: ServerProcess, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/push", json=body, timeout=30.0)


def test_a_push_over_max_recipients_is_413_and_nothing_is_stored_or_sent(
    serve: Serve, subscribe: Subscribe, tmp_path: Path
) -> None:
    server = serve("--store", f"sqlite:///{tmp_path / 'h.db'}", "--max-recipients", "1000")
    reader = subscribe(f"{server.url}/events?uid=u0")
    reader.wait_subscribed()
    uids = [f"u{n}" for n in range(100)]

    over = post(server, push_body(11, uids))
    assert over.status_code == 413
    assert over.json() == {
        "code": 413,
        "msg": "push: 1100 recipients (events x uids) is over --max-recipients 1000",
        "data": {},
    }
    broadcast = post(server, push_body(1001, None))  # a broadcast counts one per event
    assert broadcast.status_code == 413 and "1001 recipients" in broadcast.json()["msg"]
    # refused as soon as the lists' lengths are known: before the events are looked at
    unchecked = post(server, {"uids": uids, "events": [{"event": "no data"}] * 11})
    assert unchecked.status_code == 413
    stats = server.stats()
    assert stats["events"] == 0 and stats["last_id"] is None

    at_limit = post(server, push_body(10, uids))
    assert at_limit.status_code == 200
    ids = at_limit.json()["data"]["ids"]
    nothing_else_arrived(server, reader)
    assert [e.id for e in reader.received()] == ids
    resumed = subscribe(f"{server.url}/events?uid=u0", last_event_id=f"{ids[0].rpartition('-')[0]}-0")
    resumed.wait_events(len(ids) + 1)  # and the marker
    assert [e.id for e in resumed.received()] == ids  # the history holds what was accepted, nothing else


def test_the_default_limit_is_100000(serve: Serve) -> None:
    server = serve("--store", "none")
    answer = post(server, push_body(1000, [f"u{n}" for n in range(101)]))
    assert answer.status_code == 413
    assert answer.json()["msg"] == "push: 101000 recipients (events x uids) is over --max-recipients 100000"
    assert post(server, push_body(1000, [f"u{n}" for n in range(100)])).status_code == 200


def test_a_push_at_the_limit_reaches_every_online_recipient_in_order(
    serve: Serve, subscribe: Subscribe
) -> None:
    """20,000 uids, a few of them online, placed over many slices: each online one gets both
    events, in order, and the broadcast pushed right after comes after them."""
    server = serve("--store", "memory://", "--max-recipients", "40000")
    online = [f"u{n}" for n in range(0, 20_000, 2_000)]
    readers = [subscribe(f"{server.url}/events?uid={uid}") for uid in online]
    for reader in readers:
        reader.wait_subscribed()
    big = post(server, push_body(2, [f"u{n}" for n in range(20_000)]))
    assert big.status_code == 200
    after = post(server, push_body(1, None))
    ids = big.json()["data"]["ids"] + after.json()["data"]["ids"]
    for reader in readers:
        assert [e.id for e in reader.wait_events(3)] == ids
    assert server.stats()["failed_by_reason"]["offline"] == 2 * (20_000 - len(online))


def test_max_recipients_must_be_positive(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sse_fast", "serve", "--max-recipients", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "--max-recipients: must be at least 1" in result.stderr
