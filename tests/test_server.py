"""End to end: a real ``sse-fast serve`` process on each engine, real sockets, exact wire bytes.

Tests that only push and read share one server per engine (``shared_serve``,
each with uids of its own); those that need options, stop the server or read
its connection and user counts start their own (``serve``).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import jwt
import pytest

from conftest import (
    HEARTBEAT,
    HOST,
    Serve,
    ServerProcess,
    SharedServe,
    Subscribe,
    nothing_else_arrived,
    split_opening,
    unique_uid,
    wait_until,
)


def events_url(server: ServerProcess, query: str) -> str:
    return f"{server.url}/events?{query}"


def shared(shared_serve: SharedServe) -> ServerProcess:
    """This module's shared server: no history, every other option the default."""
    return shared_serve("--store", "none")


# ----------------------------------------------------------------- delivery


def test_unicast_arrives_as_exact_wire_bytes(shared_serve: SharedServe, subscribe: Subscribe) -> None:
    server = shared(shared_serve)
    uid = unique_uid()
    reader = subscribe(events_url(server, f"uid={uid}"))
    assert reader.status == 200
    assert reader.response_headers is not None
    assert reader.response_headers["content-type"].startswith("text/event-stream")
    assert reader.response_headers["cache-control"] == "no-cache"
    assert reader.response_headers["x-accel-buffering"] == "no"
    reader.wait_subscribed()
    retry, rest = split_opening(bytes(reader.raw))
    assert retry is not None and 1500 <= retry <= 4500 and rest == b""

    answer = server.push([{"event": "greeting", "data": {"hello": "world"}}], uids=[uid])
    assert answer.status_code == 200
    body = answer.json()
    assert body["code"] == 0 and body["msg"] == "ok"
    [event_id] = body["data"]["ids"]

    reader.wait_events(1)
    expected = f'id: {event_id}\nevent: greeting\ndata: {{"hello":"world"}}\n\n'.encode()
    assert split_opening(bytes(reader.raw)) == (retry, expected)


def test_broadcast_reaches_everyone_and_unicast_only_its_user(
    shared_serve: SharedServe, subscribe: Subscribe
) -> None:
    server = shared(shared_serve)
    alice_uid = unique_uid("alice")
    alice = subscribe(events_url(server, f"uid={alice_uid}"))
    bob = subscribe(events_url(server, f"uid={unique_uid('bob')}"))
    alice.wait_subscribed()
    bob.wait_subscribed()

    server.push([{"event": "all", "data": 1}])
    server.push([{"event": "for-alice", "data": 2}], uids=[alice_uid])
    server.push([{"event": "all", "data": 3}])

    expected = [("all", "1"), ("for-alice", "2"), ("all", "3")]
    assert [(e.event, e.data) for e in alice.wait_events(3)] == expected
    assert [(e.event, e.data) for e in bob.wait_events(2)] == [("all", "1"), ("all", "3")]
    nothing_else_arrived(server, bob)
    assert len(bob.received()) == 2


def test_every_connection_of_a_user_receives_its_events(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none")
    tabs = [subscribe(events_url(server, "uid=7")) for _ in range(3)]
    other = subscribe(events_url(server, "uid=8"))
    wait_until(lambda: server.stats()["connections"] == 4)
    assert server.stats()["users"] == 2

    server.push([{"event": "x", "data": "hi"}], uids=["7"])
    for tab in tabs:
        assert [e.data for e in tab.wait_events(1)] == ['"hi"']
    nothing_else_arrived(server, other)
    assert other.received() == []


def test_multicast_to_several_users_in_one_push(shared_serve: SharedServe, subscribe: Subscribe) -> None:
    server = shared(shared_serve)
    uids = {name: unique_uid(name) for name in ("a", "b", "c")}
    readers = {name: subscribe(events_url(server, f"uid={uid}")) for name, uid in uids.items()}
    for reader in readers.values():
        reader.wait_subscribed()
    ids = server.push(
        [{"event": "m", "data": 1}, {"event": "m", "data": 2}], uids=[uids["a"], uids["c"]]
    ).json()
    assert len(ids["data"]["ids"]) == 2
    for name in ("a", "c"):
        assert [e.data for e in readers[name].wait_events(2)] == ["1", "2"]
        assert [e.id for e in readers[name].events] == ids["data"]["ids"]
    nothing_else_arrived(server, readers["b"])
    assert readers["b"].received() == []


def test_ids_are_strictly_increasing(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    ids = []
    for n in range(5):
        ids += server.push([{"event": "n", "data": n}, {"event": "n", "data": -n}]).json()["data"]["ids"]
    seqs = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len({i.rsplit("-", 1)[0] for i in ids}) == 1


def test_event_type_filter_from_query_or_header(shared_serve: SharedServe, subscribe: Subscribe) -> None:
    server = shared(shared_serve)
    uid = unique_uid()
    by_query = subscribe(events_url(server, f"uid={uid}&event_type=order"))
    by_header = subscribe(events_url(server, f"uid={uid}"), event_type="order")
    everything = subscribe(events_url(server, f"uid={uid}"))
    for reader in (by_query, by_header, everything):
        reader.wait_subscribed()

    server.push([{"event": "chat", "data": 1}, {"event": "order", "data": 2}])
    server.push([{"event": "order", "data": 3}], uids=[uid])
    for reader in (by_query, by_header):
        assert [(e.event, e.data) for e in reader.wait_events(2)] == [("order", "2"), ("order", "3")]
    assert [e.event for e in everything.wait_events(3)] == ["chat", "order", "order"]


def test_multiline_data_is_split_into_data_lines(shared_serve: SharedServe, subscribe: Subscribe) -> None:
    server = shared(shared_serve)
    reader = subscribe(events_url(server, f"uid={unique_uid()}"))
    reader.wait_subscribed()
    server.push([{"event": "text", "data": {"s": "a\nb"}}])
    [event] = reader.wait_events(1)
    assert event.json() == {"s": "a\nb"}
    assert b'data: {"s":"a\\nb"}\n\n' in bytes(reader.raw)


# --------------------------------------------------------------- liveness


def test_heartbeats_on_connect_and_after_silence(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none", "--heartbeat", "0.3")
    reader = subscribe(events_url(server, "uid=1"))
    wait_until(lambda: reader.raw.count(HEARTBEAT) >= 2, timeout=10)
    assert reader.events == []
    _, rest = split_opening(bytes(reader.raw))
    assert set(rest.split(HEARTBEAT)) == {b""}


def test_a_client_that_went_away_is_removed_within_a_heartbeat(serve: Serve) -> None:
    server = serve("--store", "none", "--heartbeat", "0.5")
    sockets = []
    for uid in ("gone-1", "gone-2"):
        sock = socket.create_connection((HOST, server.port))
        sock.sendall(f"GET /events?uid={uid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sockets.append(sock)
    wait_until(lambda: server.stats()["connections"] == 2)
    for sock in sockets:
        sock.close()
    wait_until(lambda: server.stats()["connections"] == 0, timeout=10)
    assert server.stats()["users"] == 0


def test_a_slow_consumer_is_dropped_and_others_keep_receiving(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none", "--ring-frames", "16", "--heartbeat", "1", "--max-body", "4000000")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect((HOST, server.port))
    stuck.sendall(b"GET /events?uid=slow HTTP/1.1\r\nHost: x\r\n\r\n")
    healthy = subscribe(events_url(server, "uid=fast"))
    wait_until(lambda: server.stats()["connections"] == 2)

    big = "x" * 256 * 1024
    pushes = 48
    for n in range(pushes):
        assert server.push([{"event": "big", "data": {"n": n, "pad": big}}]).status_code == 200
    events = healthy.wait_events(pushes, timeout=30)
    assert [e.json()["n"] for e in events] == list(range(pushes))
    wait_until(lambda: server.stats()["slow_consumers"] >= 1, timeout=15)
    stats = server.stats()
    assert stats["connections"] == 1
    assert stats["failed_by_reason"]["slow_consumer"] >= 1
    stuck.close()
    # Dropping it cancelled a send stuck in the server: that must leave the
    # process able to stop (on Python 3.10 it once raised and hung on SIGTERM).
    assert server.stop(timeout=15) == 0
    assert "Traceback" not in server.output()


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b"{}", "events"),
        (b'{"events": []}', "events"),
        (b'{"events": "x"}', "events"),
        (b'{"events": [{"event": "x"}]}', "events[0].data"),
        (b'{"events": [{"event": "a\\nb", "data": 1}]}', "events[0].event"),
        (b'{"events": [{"event": "a\\rb", "data": 1}]}', "events[0].event"),
        (b'{"events": [{"event": "a\\u0000b", "data": 1}]}', "events[0].event"),
        (b'{"events": [{"event": "ok", "id": "1\\n2", "data": 1}]}', "events[0].id"),
        (b'{"events": [{"event": 5, "data": 1}]}', "events[0].event"),
        (b'{"events": [{"data": 1}], "uids": [1]}', "uids[0]"),
        (b'{"events": [{"data": 1}], "uids": "alice"}', "uids"),
        (b'{"events": [{"data": 1}], "topic": "x"}', "topic"),
        (b'{"events": [{"data": 1}, {"data": 2, "event": "x\\ny"}]}', "events[1].event"),
    ],
)
def test_bad_push_is_400_naming_the_field_and_delivers_nothing(
    shared_serve: SharedServe, subscribe: Subscribe, body: bytes, field: str
) -> None:
    server = shared(shared_serve)
    reader = subscribe(events_url(server, f"uid={unique_uid()}"))
    reader.wait_subscribed()
    events_before = server.stats()["events"]  # only this test pushes while it runs
    answer = httpx.post(f"{server.url}/push", content=body, timeout=5)
    assert answer.status_code == 400
    reply = answer.json()
    assert reply["code"] == 400 and reply["data"] == {}
    assert reply["msg"].startswith(field), reply["msg"]
    server.push([{"event": "after", "data": 1}])
    assert [e.event for e in reader.wait_events(1)] == ["after"]
    assert server.stats()["events"] == events_before + 1


def test_oversized_push_is_413(serve: Serve) -> None:
    server = serve("--store", "none", "--max-body", "1000")
    answer = server.push([{"event": "big", "data": "x" * 2000}])
    assert answer.status_code == 413
    assert answer.json()["code"] == 413
    assert "body" in answer.json()["msg"]


def test_a_broadcast_larger_than_the_ring_is_400_and_stores_nothing(serve: Serve) -> None:
    # With --max-body above the fan-out ring's 32 MiB, one event's frame can
    # be larger than the ring: it was stored and counted, then the ring refused
    # it, and the publisher got a 500 for an event that resend would deliver.
    server = serve("--store", "memory://", "--max-body", str(40 * 1024 * 1024))
    huge = [{"event": "huge", "data": "x" * (33 * 1024 * 1024)}]
    answer = httpx.post(f"{server.url}/push", json={"events": huge}, timeout=60)
    assert answer.status_code == 400, answer.text
    assert answer.json()["msg"].startswith("events[0]: "), answer.text
    assert server.stats()["events"] == 0 and server.stats()["last_id"] is None
    # Unicast frames do not go through the ring: the same event for one user is accepted.
    unicast = httpx.post(f"{server.url}/push", json={"uids": ["a"], "events": huge}, timeout=60)
    assert unicast.status_code == 200


def test_unknown_route_and_wrong_method(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    assert httpx.get(f"{server.url}/nope").status_code == 404
    wrong = httpx.get(f"{server.url}/push")
    assert wrong.status_code == 405 and wrong.json()["msg"].startswith("method")
    assert httpx.post(f"{server.url}/events").status_code == 405


def test_both_engines_match_routes_on_the_decoded_path(
    shared_serve: SharedServe, subscribe: Subscribe
) -> None:
    """One route table: a percent-encoded /events is the subscribe route on either engine."""
    server = shared(shared_serve)
    uid = unique_uid("encoded")
    reader = subscribe(f"{server.url}/%65vents?uid={uid}")
    assert reader.status == 200
    assert server.push([{"event": "n", "data": 1}], uids=[uid]).status_code == 200
    assert [e.event for e in reader.wait_events(1)] == ["n"]
    encoded = httpx.get(f"{server.url}/%73tats").json()  # /stats: its figures, our reader among them
    assert encoded.keys() == server.stats().keys() and encoded["connections"] >= 1


def test_subscribe_without_uid_is_400(shared_serve: SharedServe) -> None:
    server = shared(shared_serve)
    answer = httpx.get(f"{server.url}/events")
    assert answer.status_code == 400
    assert answer.json()["msg"].startswith("uid")


# ------------------------------------------------------------------ auth


def test_push_token_guards_push_and_figures(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none", "--push-token", "s3cret")
    assert server.push([{"event": "x", "data": 1}]).status_code == 401
    assert server.push([{"event": "x", "data": 1}], token="wrong").status_code == 401
    assert httpx.get(f"{server.url}/stats").status_code == 401
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    reader = subscribe(events_url(server, "uid=1"))
    wait_until(lambda: server.stats(authorization="Bearer s3cret")["connections"] == 1)
    assert server.push([{"event": "x", "data": 1}], token="s3cret").status_code == 200
    assert [e.event for e in reader.wait_events(1)] == ["x"]


def test_jwt_subscribers_use_the_sub_claim(serve: Serve, subscribe: Subscribe) -> None:
    secret = "jwt-secret-for-tests-0123456789abcdef"
    server = serve("--store", "none", "--jwt-secret", secret)
    token = jwt.encode({"sub": "carol", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    expired = jwt.encode({"sub": "carol", "exp": int(time.time()) - 60}, secret, algorithm="HS256")
    forged = jwt.encode({"sub": "carol"}, "another-secret-0123456789abcdef0123", algorithm="HS256")

    assert httpx.get(f"{server.url}/events?uid=carol").status_code == 401
    for bad in (expired, forged, "garbage"):
        answer = httpx.get(f"{server.url}/events?token={bad}")
        assert answer.status_code == 401 and answer.json()["msg"].startswith("token")

    by_header = subscribe(f"{server.url}/events", authorization=f"Bearer {token}")
    by_query = subscribe(f"{server.url}/events?token={token}&uid=mallory")
    assert by_header.status == by_query.status == 200
    wait_until(lambda: server.stats()["connections"] == 2)
    server.push([{"event": "x", "data": 1}], uids=["carol"])
    server.push([{"event": "y", "data": 2}], uids=["mallory"])
    for reader in (by_header, by_query):
        assert [e.event for e in reader.wait_events(1)] == ["x"]
    nothing_else_arrived(server, by_query)
    assert len(by_query.received()) == 1


def test_cors_headers_only_for_allowed_origins(serve: Serve) -> None:
    server = serve("--store", "none", "--cors-origin", "https://app.example")
    allowed = httpx.options(
        f"{server.url}/push",
        headers={"origin": "https://app.example", "access-control-request-method": "POST"},
    )
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    other = httpx.get(f"{server.url}/healthz", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_wildcard_cors_is_refused_with_jwt(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "sse_fast", "serve", "--jwt-secret", "x" * 32, "--cors-origin", "*"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "--cors-origin" in result.stderr


def test_http2_on_the_native_engine_is_refused_with_the_reason(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "sse_fast", "serve", "--engine", "native", "--http", "auto"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "--http" in result.stderr and "HTTP/1.1" in result.stderr


def test_more_than_one_worker_is_refused_with_the_reason(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "sse_fast", "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "--workers" in result.stderr and "redis://" in result.stderr and "SQLite" in result.stderr


@pytest.mark.parametrize(
    ("store", "bus"), [("memory://", "auto"), (None, "auto"), ("redis://127.0.0.1:6379/0", "local")]
)
def test_workers_need_the_redis_bus(store: str | None, bus: str) -> None:
    from sse_fast.config import ServeConfig

    with pytest.raises(ValueError, match="--workers: above 1 needs a redis:// store"):
        ServeConfig(workers=2, store=store, bus=bus).validate()
    ServeConfig(workers=2, store="redis://127.0.0.1:6379/0").validate()


# --------------------------------------------------------------- figures


def test_stats_metrics_and_health(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none")
    reader = subscribe(events_url(server, "uid=1"))
    wait_until(lambda: server.stats()["connections"] == 1)
    server.push([{"event": "x", "data": 1}])
    server.push([{"event": "x", "data": 1}], uids=["nobody"])
    reader.wait_events(1)
    stats = server.stats()
    assert stats["events"] == 2 and stats["deliveries"] == 1
    assert stats["failed_by_reason"]["offline"] == 1
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "sse_fast_connections 1" in metrics
    assert 'sse_fast_push_failures_total{reason="offline"} 1' in metrics
    assert "# TYPE sse_fast_deliveries_total counter" in metrics
    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_connection_limit_answers_503(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none", "--max-connections", "2")
    first, second = subscribe(events_url(server, "uid=1")), subscribe(events_url(server, "uid=2"))
    assert first.status == second.status == 200
    refused = httpx.get(events_url(server, "uid=3"))
    assert refused.status_code == 503
    assert refused.json()["msg"].startswith("connections")


# -------------------------------------------------------------- shutdown


def test_sigterm_says_goodbye_and_exits_cleanly(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none")
    readers = [subscribe(events_url(server, f"uid={n}")) for n in range(3)]
    wait_until(lambda: server.stats()["connections"] == 3)
    for reader in readers:
        reader.wait_subscribed()
    started = time.monotonic()
    assert server.stop(timeout=15) == 0
    assert time.monotonic() - started < 10
    for reader in readers:
        assert reader.ended.wait(5)
        [goodbye] = reader.events
        assert goodbye.event == "shutdown"
        assert goodbye.json() == {"reason": "server shutting down"}
        # The goodbye repeats the stream's own reconnection time: its clients stay spread.
        assert goodbye.retry == split_opening(bytes(reader.raw))[0]
        assert reader.error is None


def test_each_stream_opens_with_its_own_retry_spread_by_the_jitter(
    shared_serve: SharedServe, subscribe: Subscribe
) -> None:
    server = shared(shared_serve)
    readers = [subscribe(events_url(server, f"uid={unique_uid()}")) for _ in range(40)]
    retries = []
    for reader in readers:
        reader.wait_subscribed()
        retry, _ = split_opening(bytes(reader.raw))
        assert retry is not None
        retries.append(retry)
    # --retry-ms 3000 and --retry-jitter 0.5 by default: 1500-4500 ms, uniformly. Forty
    # streams all within 300 ms of each other would happen with odds below 1e-30.
    assert all(1500 <= retry <= 4500 for retry in retries), retries
    assert max(retries) - min(retries) > 300, retries


@pytest.mark.parametrize(
    ("args", "expected"),
    [(("--retry-ms", "2000", "--retry-jitter", "0"), 2000), (("--retry-ms", "0"), None)],
    ids=["no-jitter", "none-sent"],
)
def test_retry_ms_and_jitter_set_what_a_stream_opens_with(
    serve: Serve, subscribe: Subscribe, args: tuple[str, ...], expected: int | None
) -> None:
    server = serve("--store", "none", *args)
    readers = [subscribe(events_url(server, f"uid={n}")) for n in range(3)]
    for reader in readers:
        reader.wait_subscribed()
        assert split_opening(bytes(reader.raw)) == (expected, b"")
    assert server.stop(timeout=15) == 0
    for reader in readers:
        assert reader.ended.wait(5)
        [goodbye] = reader.events
        assert goodbye.retry == (expected if expected is not None else 1000)


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "sse_fast", "serve", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and "--push-token" in result.stdout
