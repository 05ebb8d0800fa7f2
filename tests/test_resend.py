"""Resend over real sockets: Last-Event-ID replay on SQLite (the default) and Redis, across kill -9.

Tests that resume from an id of their own share a server per engine and store
(``shared_serve``), each with uids of its own: what others pushed before that
id is not replayed.  Tests that read the whole history, need other options or
kill the server start their own.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import Serve, SharedServe, Subscribe, nothing_else_arrived, unique_uid, wait_until

REDIS_URL = os.environ.get("SSE_FAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def redis_store_url() -> str:
    """A Redis store URL with a prefix of its own, after checking Redis answers."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required under CI and is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL}")
    finally:
        client.close()
    return f"{REDIS_URL}?prefix=test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_args(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "sqlite":
        return []  # the CLI's default: sqlite:///sse_fast.db in the working directory
    return ["--store", redis_store_url()]


def ids_of(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    ids: list[str] = answer.json()["data"]["ids"]
    return ids


def test_reconnect_with_last_event_id_gets_what_was_missed_then_live(
    shared_serve: SharedServe, subscribe: Subscribe, store_args: list[str]
) -> None:
    server = shared_serve(*store_args)
    a, b = unique_uid("a"), unique_uid("b")
    first = ids_of(server.push([{"event": "b", "data": 0}]))[0]
    server.push([{"event": "for-a", "data": 1}], uids=[a])
    server.push([{"event": "for-b", "data": 2}], uids=[b])
    server.push([{"event": "b", "data": 3}])

    reader = subscribe(f"{server.url}/events?uid={a}", last_event_id=first)
    assert [(e.event, e.data) for e in reader.wait_events(2)] == [("for-a", "1"), ("b", "3")]
    server.push([{"event": "live", "data": 4}])
    assert reader.wait_events(3)[-1].event == "live"
    nothing_else_arrived(server, reader)
    assert len(reader.received()) == 3


def test_last_event_id_query_parameter_as_the_reference_accepts(
    shared_serve: SharedServe, subscribe: Subscribe
) -> None:
    server = shared_serve()
    ids = ids_of(server.push([{"event": "x", "data": n} for n in range(3)]))
    reader = subscribe(f"{server.url}/events?uid={unique_uid()}&last_event_id={ids[0]}")
    assert [e.data for e in reader.wait_events(2)] == ["1", "2"]


@pytest.mark.parametrize(
    ("last_id", "reason"),
    [
        ("not-an-id!", "unknown_id"),  # a publisher's own id, had one been pushed
        ("abcdefgh-1", "unknown_epoch"),
        ("", "malformed_id"),
        ("x" * 300, "malformed_id"),
    ],
)
def test_unresumable_last_event_id_gets_reset_then_history(
    serve: Serve, subscribe: Subscribe, last_id: str, reason: str
) -> None:
    server = serve()
    server.push([{"event": "x", "data": 1}])
    reader = subscribe(f"{server.url}/events?uid=a", last_event_id=last_id)
    assert reader.status == 200
    reset, replayed = reader.wait_events(2)[:2]
    assert reset.event == "reset"
    assert reset.json() == {"reason": reason, "last_event_id": last_id}
    assert replayed.data == "1"


def test_expired_history_gets_reset_then_what_is_kept(
    serve: Serve, subscribe: Subscribe, tmp_path: Path
) -> None:
    server = serve("--store", f"sqlite:///{tmp_path}/small.db?max_events=3")
    ids = ids_of(server.push([{"event": "x", "data": n} for n in range(8)]))
    reader = subscribe(f"{server.url}/events?uid=a", last_event_id=ids[0])
    events = reader.wait_events(4)
    assert events[0].event == "reset" and events[0].json()["reason"] == "expired"
    assert [e.data for e in events[1:]] == ["5", "6", "7"]


def test_event_type_filter_applies_to_replay(shared_serve: SharedServe, subscribe: Subscribe) -> None:
    server = shared_serve()
    first = ids_of(server.push([{"event": "chat", "data": 0}]))[0]
    server.push([{"event": "order", "data": 1}, {"event": "chat", "data": 2}, {"event": "order", "data": 3}])
    reader = subscribe(f"{server.url}/events?uid={unique_uid()}&event_type=order", last_event_id=first)
    assert [e.data for e in reader.wait_events(2)] == ["1", "3"]


def test_accepted_events_survive_kill_9_and_are_resent_after_restart(
    serve: Serve, subscribe: Subscribe, store_args: list[str]
) -> None:
    server = serve(*store_args)
    reader = subscribe(f"{server.url}/events?uid=a")
    wait_until(lambda: server.stats()["connections"] == 1)
    seen = ids_of(server.push([{"event": "before", "data": 0}]))[0]
    assert reader.wait_events(1)[0].id == seen
    accepted = ids_of(server.push([{"event": "unseen", "data": n} for n in range(1, 4)], uids=["a"]))
    server.kill()  # SIGKILL: no goodbye, no flush, no clean close

    server.start()
    again = subscribe(f"{server.url}/events?uid=a", last_event_id=seen)
    events = again.wait_events(3)
    assert [e.id for e in events] == accepted
    assert [e.data for e in events] == ["1", "2", "3"]
    after = ids_of(server.push([{"event": "after", "data": 4}]))
    assert again.wait_events(4)[-1].id == after[0]
    assert int(after[0].rsplit("-", 1)[1]) > int(accepted[-1].rsplit("-", 1)[1])


def test_no_gap_no_duplicate_while_reconnecting_under_concurrent_pushes(
    shared_serve: SharedServe, subscribe: Subscribe, store_args: list[str]
) -> None:
    """A publisher pushes without pause while a subscriber drops and resumes again and again."""
    server = shared_serve(*store_args)
    a, b = unique_uid("a"), unique_uid("b")
    pushed: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while not stop.is_set() and n < 2000:
                targets = [a] if n % 3 == 0 else ([b] if n % 3 == 1 else None)
                body: dict[str, object] = {"events": [{"event": "n", "data": n}]}
                if targets:
                    body["uids"] = targets
                answer = client.post(f"{server.url}/push", json=body)
                if targets != [b]:
                    pushed.append(answer.json()["data"]["ids"][0])
                n += 1

    publisher = threading.Thread(target=publish)
    publisher.start()
    received = []
    last_id: str | None = None
    try:
        for _ in range(6):
            headers: dict[str, str] = {"last_event_id": last_id} if last_id is not None else {}
            reader = subscribe(f"{server.url}/events?uid={a}", **headers)
            time.sleep(0.15)
            reader.close()
            time.sleep(0.05)
            batch = [e for e in list(reader.events) if e.event == "n"]
            received += batch
            if batch:
                last_id = batch[-1].id
    finally:
        stop.set()
        publisher.join(30)
    final = subscribe(f"{server.url}/events?uid={a}", **({"last_event_id": last_id} if last_id else {}))
    wait_until(lambda: final.events and final.events[-1].id == pushed[-1], timeout=20)
    received += [e for e in final.events if e.event == "n"]
    ids = [e.id for e in received]
    assert len(ids) == len(set(ids)), "an event arrived twice"
    # Everything from the first event this subscriber saw on, with no hole.
    start = pushed.index(ids[0])
    assert ids == pushed[start:]
    assert start == 0 or last_id is not None
