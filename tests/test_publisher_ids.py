"""A publisher's own event ids over real sockets: on both engines and all three stores.

A push may give an event its own ``id``.  Live subscribers get it as given, a
replay sends the very same frame, and a client resuming from it continues
after the latest event saved with it; an id that has the server's form is
refused.  Tests that resume from ids of their own share a server per engine
and store, with uids and ids of their own; those that need small retention
or a restart start their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    Serve,
    SharedServe,
    StreamReader,
    Subscribe,
    nothing_else_arrived,
    split_opening,
    unique_uid,
)
from test_resend import ids_of, redis_store_url
from test_stores import write_v0_file


@pytest.fixture(scope="module", params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The store of this module's shared servers (SQLite on a temporary file)."""
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('publisher-ids')}/events.db"
    else:
        yield redis_store_url()


def with_retention(url: str, max_events: int) -> str:
    return f"{url}{'&' if '?' in url else '?'}max_events={max_events}"


def unique_id(name: str) -> str:
    """A publisher id no other test pushes (ids are global to a server, unlike uids)."""
    return f"{name}:{uuid.uuid4().hex[:8]}"


@pytest.fixture
def own_store_url(store_url: str, tmp_path: Path) -> str:
    """A store of the module's kind at a location of this test's own (for a server of its own)."""
    if store_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/own.db"
    if store_url.startswith("redis"):
        return redis_store_url()
    return store_url


def frames(raw: bytes) -> list[bytes]:
    """The stream's frames (and comments) as sent, each with its blank line."""
    return [frame + b"\n\n" for frame in raw.split(b"\n\n") if frame]


def test_live_and_replay_send_the_publisher_id_as_given_byte_for_byte(
    shared_serve: SharedServe, subscribe: Subscribe, store_url: str
) -> None:
    server = shared_serve("--store", store_url)
    uid = unique_uid()
    live = subscribe(f"{server.url}/events?uid={uid}")
    live.wait_subscribed()
    mark = f"mark-{uid}"
    [before] = ids_of(server.push([{"event": mark, "data": 0}], uids=[uid]))
    order, note = unique_id("order"), unique_id("note é/日本")
    answer = ids_of(
        server.push([{"event": "order", "data": {"n": 1}, "id": order}, {"event": "plain", "data": 2}])
    )
    assert all(i.rpartition("-")[0] == before.rpartition("-")[0] for i in answer)  # the answer: server ids
    ids_of(server.push([{"event": "note", "data": "x", "id": note}], uids=[uid]))
    nothing_else_arrived(server, live)
    got = [(e.id, e.event) for e in live.received() if e.event != mark]
    assert got == [(order, "order"), (answer[1], "plain"), (note, "note")]
    live_frames = frames(split_opening(bytes(live.raw))[1])
    assert mark.encode() in live_frames[0]
    assert f"id: {order}\nevent: order\n".encode() in live_frames[1]

    again = subscribe(f"{server.url}/events?uid={uid}", last_event_id=before)
    again.wait_events(3)
    assert frames(split_opening(bytes(again.raw))[1])[:3] == live_frames[1:4]


def test_a_publisher_id_of_the_server_form_is_refused_naming_the_field(
    shared_serve: SharedServe, subscribe: Subscribe, store_url: str
) -> None:
    server = shared_serve("--store", store_url)
    uid = unique_uid()
    reader = subscribe(f"{server.url}/events?uid={uid}")
    reader.wait_subscribed()
    for bad in ("order-17", "k3v9x0qa-1"):
        fine = {"event": "x", "data": 1, "id": unique_id("fine")}
        answer = server.push([fine, {"event": "x", "data": 2, "id": bad}], uids=[uid])
        assert answer.status_code == 400
        body = answer.json()
        assert body["code"] == 400 and body["data"] == {}
        assert body["msg"].startswith("events[1].id: must not have the form of the server's ids"), body
    answer = server.push([{"event": "x", "data": 1, "id": ""}], uids=[uid])
    assert answer.status_code == 400 and answer.json()["msg"].startswith("events[0].id: must not be empty")
    nothing_else_arrived(server, reader)
    assert reader.received() == []


def test_resuming_from_a_publisher_id_continues_after_the_latest_event_with_it(
    shared_serve: SharedServe, subscribe: Subscribe, store_url: str
) -> None:
    server = shared_serve("--store", store_url)
    uid = unique_uid()
    same, last = unique_id("same"), unique_id("last")
    ids_of(server.push([{"event": "e", "data": 0, "id": same}], uids=[uid]))
    ids_of(server.push([{"event": "e", "data": 1}], uids=[uid]))
    ids_of(server.push([{"event": "e", "data": 2, "id": same}, {"event": "e", "data": 3}], uids=[uid]))
    ids_of(server.push([{"event": "e", "data": 4, "id": last}], uids=[uid]))
    reader = subscribe(f"{server.url}/events?uid={uid}", last_event_id=same)
    events = reader.wait_events(2)
    assert [e.data for e in events[:2]] == ["3", "4"]
    assert events[0].id.rpartition("-")[2].isdigit() and events[1].id == last  # "3" had no id of its own
    ids_of(server.push([{"event": "e", "data": 5, "id": unique_id("live")}], uids=[uid]))
    nothing_else_arrived(server, reader)
    assert [e.data for e in reader.received()] == ["3", "4", "5"]


def test_an_expired_publisher_id_gets_reset_expired_and_an_unknown_one_unknown_id(
    serve: Serve, subscribe: Subscribe, own_store_url: str
) -> None:
    server = serve("--store", with_retention(own_store_url, 5))
    uid = unique_uid()
    gone = unique_id("gone")
    ids_of(server.push([{"event": "e", "data": 0, "id": gone}], uids=[uid]))
    # Redis trims by whole stream nodes (MAXLEN ~, 100 entries): push past several of them.
    pushed = ids_of(server.push([{"event": "e", "data": n, "id": f"{gone}/{n}"} for n in range(1, 400)]))
    unknown = unique_id("never-pushed")
    for last_id, reason in [(gone, "expired"), (unknown, "unknown_id")]:
        reader = subscribe(f"{server.url}/events?uid={uid}", last_event_id=last_id)
        events = reader.wait_events(6)
        assert events[0].event == "reset"
        assert events[0].json() == {"reason": reason, "last_event_id": last_id}
        nothing_else_arrived(server, reader)
        replayed = [e.id for e in reader.received()[1:]]  # what is retained (markers left out)
        assert 3 <= len(replayed) < 300, replayed
        assert replayed == [f"{gone}/{n}" for n in range(1, 400)][-len(replayed) :]
    assert len(pushed) == 399


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_publisher_id_resumes_across_a_restart_on_sqlite(
    serve: Serve, subscribe: Subscribe, tmp_path: Path, how: str
) -> None:
    server = serve("--store", f"sqlite:///{tmp_path}/events.db")
    reader = subscribe(f"{server.url}/events?uid=a")
    reader.wait_subscribed()
    ids_of(server.push([{"event": "seen", "data": 0, "id": "seen:0"}], uids=["a"]))
    assert reader.wait_events(1)[0].id == "seen:0"
    ids_of(server.push([{"event": "missed", "data": n, "id": f"missed:{n}"} for n in range(1, 4)]))
    ids_of(server.push([{"event": "missed", "data": 4}], uids=["a"]))
    if how == "SIGKILL":
        server.kill()
    else:
        server.stop()
    server.start()
    again = subscribe(f"{server.url}/events?uid=a", last_event_id="seen:0")
    events = again.wait_events(4)
    assert [e.id for e in events[:3]] == ["missed:1", "missed:2", "missed:3"]
    assert [e.data for e in events] == ["1", "2", "3", "4"]
    ids_of(server.push([{"event": "after", "data": 5, "id": "after:5"}]))
    assert again.wait_events(5)[-1].id == "after:5"


def test_a_sqlite_file_from_before_publisher_ids_is_served(
    serve: Serve, subscribe: Subscribe, tmp_path: Path
) -> None:
    """An old file (schema version 0): its history resumes by server id, and it takes publisher ids."""
    write_v0_file(tmp_path / "old.db")
    server = serve("--store", f"sqlite:///{tmp_path}/old.db")
    reader = subscribe(f"{server.url}/events?uid=a", last_event_id="v0epoch1-1")
    assert [(e.id, e.data) for e in reader.wait_events(1)] == [("v0epoch1-2", '{"n":2}')]
    assert ids_of(server.push([{"event": "new", "data": 4, "id": "new:4"}])) == ["v0epoch1-4"]
    assert reader.wait_events(2)[-1].id == "new:4"
    again: StreamReader = subscribe(f"{server.url}/events?uid=b", last_event_id="v0epoch1-2")
    assert [e.id for e in again.wait_events(2)] == ["v0epoch1-3", "new:4"]
    resumed = subscribe(f"{server.url}/events?uid=b", last_event_id="new:4")
    resumed.wait_subscribed()
    nothing_else_arrived(server, resumed)
    assert resumed.received() == []
