"""The dashboard's page and stats stream, without a browser.

End to end over ``sse-fast serve`` for the wire (frames about once a second,
the documented fields, identical frames for every viewer, auth), and in
process for what only the inside can show (one publisher task, however many
viewers).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import sys
import time
from fnmatch import fnmatch
from itertools import pairwise
from pathlib import Path

import httpx
import jwt
import pytest

from conftest import Serve, ServerProcess, StreamReader, Subscribe, wait_until
from sse_fast import Hub, ServerSentEvent
from sse_fast.asgi import Message, Send, SSEApp
from sse_fast.dashboard import PUBLISHER_TASK_NAME, STATS_EVENT, Dashboard, install_dashboard

SNAPSHOT_FIELDS = {
    "connections",
    "users",
    "events",
    "deliveries",
    "failed",
    "failed_by_reason",
    "dropped",
    "slow_consumers",
    "heartbeats",
    "replayed",
    "resets",
    "ring",
    "last_id",
    "store_unavailable",
    "histories_lost",
    "tokens_expired",
    "store",
    "overloaded",
    "node",
    "cluster",
}
DASHBOARD_FIELDS = {"rates", "cpu_percent", "rss_bytes", "uptime", "interval", "time", "viewers"}
RATE_FIELDS = {"events", "deliveries", "failed", "dropped"}
SECRET = "dashboard-test-secret-0123456789abcdef"


def stats_url(server: ServerProcess, query: str = "") -> str:
    return f"{server.url}/stats/stream" + (f"?{query}" if query else "")


def frames(reader: StreamReader, count: int, timeout: float = 20.0) -> list[ServerSentEvent]:
    events = reader.wait_events(count, timeout)
    assert all(e.event == STATS_EVENT for e in events), [e.event for e in events]
    return events


# ------------------------------------------------------------------- stream


def test_stats_frames_arrive_about_once_a_second_with_the_documented_fields(
    serve: Serve, subscribe: Subscribe
) -> None:
    server = serve("--store", "none")
    subscriber = subscribe(f"{server.url}/events?uid=alice")
    wait_until(lambda: server.stats()["connections"] == 1)
    viewer = subscribe(stats_url(server), last_event_id="ignored-1")  # stats are not history: no reset
    assert viewer.status == 200
    assert viewer.response_headers is not None
    assert viewer.response_headers["content-type"].startswith("text/event-stream")

    started = time.monotonic()
    events = frames(viewer, 4)
    elapsed = time.monotonic() - started
    assert 2.0 < elapsed < 15.0, elapsed  # four frames need three intervals: not a burst, not stuck

    data = [e.json() for e in events]
    for frame in data:
        assert set(frame) == SNAPSHOT_FIELDS | DASHBOARD_FIELDS
        assert set(frame["rates"]) == RATE_FIELDS
        assert frame["connections"] == 1 and frame["users"] == 1  # viewers are not subscribers
        assert frame["viewers"] == 1
        assert 0.3 < frame["interval"] < 5.0
        assert frame["cpu_percent"] >= 0
        assert frame["rss_bytes"] > 1024 * 1024
    for before, after in pairwise(data):
        assert 0.3 < after["time"] - before["time"] < 5.0
        assert 0.3 < after["uptime"] - before["uptime"] < 5.0
    seqs = [int(e.id.rsplit("-", 1)[1]) for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    subscriber.close()


def test_rates_and_totals_follow_the_pushes(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none")
    alice = subscribe(f"{server.url}/events?uid=alice")
    viewer = subscribe(stats_url(server))
    frames(viewer, 1)
    for n in range(6):
        assert server.push([{"event": "n", "data": n}], uids=["alice"]).status_code == 200
    server.push([{"event": "n", "data": "nobody"}], uids=["bob"])  # offline: a failure
    alice.wait_events(6)
    wait_until(lambda: viewer.events[-1].json()["deliveries"] == 6, timeout=10)

    data = [e.json() for e in viewer.events]
    last = data[-1]
    assert (last["events"], last["deliveries"], last["failed"], last["dropped"]) == (7, 6, 1, 0)
    assert last["failed_by_reason"]["offline"] == 1
    # Each frame's rate covers its own interval: together they account for every count.
    for key in RATE_FIELDS:
        counted = sum(f["rates"][key] * f["interval"] for f in data[1:])
        assert counted == pytest.approx(last[key] - data[0][key], abs=0.05), key
    assert any(f["rates"]["deliveries"] > 0 for f in data)


def test_every_viewer_gets_the_same_frames_from_one_publisher(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none")
    viewers = [subscribe(stats_url(server)) for _ in range(5)]
    wait_until(lambda: all(v.events and v.events[-1].json()["viewers"] == 5 for v in viewers), timeout=15)
    seen = {id(v): len(v.events) for v in viewers}
    wait_until(lambda: all(len(v.events) >= seen[id(v)] + 3 for v in viewers), timeout=15)

    by_id: dict[str, set[str]] = {}
    for viewer in viewers:
        for event in viewer.events:
            by_id.setdefault(event.id, set()).add(event.data)
    assert all(len(payloads) == 1 for payloads in by_id.values()), "viewers got different frames under one id"
    # One frame a second in all, not one per viewer: consecutive ids, a second apart.
    common = sorted(set.intersection(*({e.id for e in v.events} for v in viewers)), key=_seq)
    assert len(common) >= 3
    assert [_seq(i) for i in common] == list(range(_seq(common[0]), _seq(common[0]) + len(common)))
    first = {e.id: e.json() for e in viewers[0].events}
    times = [first[i]["time"] for i in common]
    assert all(0.3 < b - a < 5.0 for a, b in pairwise(times)), times


def _seq(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


def test_one_publisher_task_in_process_whatever_the_number_of_viewers() -> None:
    async def scenario() -> None:
        hub = Hub(heartbeat=5)
        app = SSEApp(hub)
        dashboard = install_dashboard(app, interval=0.2)
        await hub.start()
        received: list[list[bytes]] = [[] for _ in range(5)]
        forever = asyncio.get_running_loop().create_future()

        async def receive() -> Message:
            await forever
            return {"type": "http.disconnect"}

        def sender(into: list[bytes]) -> Send:
            async def send(message: Message) -> None:
                if message["type"] == "http.response.body" and message.get("body"):
                    into.append(message["body"])

            return send

        scope = {"type": "http", "method": "GET", "path": "/stats/stream", "query_string": b"", "headers": []}
        streams = [asyncio.ensure_future(app(dict(scope), receive, sender(into))) for into in received]
        for _ in range(200):
            await asyncio.sleep(0.02)
            if all(sum(b.count(b"event: stats") for b in into) >= 4 for into in received):
                break
        publishers = [t for t in asyncio.all_tasks() if t.get_name() == PUBLISHER_TASK_NAME]
        assert len(publishers) == 1
        assert dashboard.viewers.connections == 5 and hub.connections == 0
        texts = [b"".join(into) for into in received]
        ids = [re.findall(rb"id: (\S+)\nevent: stats\n", t) for t in texts]
        assert all(len(i) >= 4 for i in ids)
        common = set.intersection(*(set(i) for i in ids))

        def frame(event_id: bytes, text: bytes) -> bytes:
            found = re.search(rb"id: " + re.escape(event_id) + rb"\n[^\n]*\n[^\n]*\n", text)
            assert found is not None, event_id
            return found[0]

        for event_id in common:  # the same bytes for everyone
            assert len({frame(event_id, t) for t in texts}) == 1

        await hub.close()  # the publisher notices, says goodbye to the viewers and ends
        await asyncio.wait_for(asyncio.gather(*streams), 5)
        assert not dashboard.running
        assert all(b"event: shutdown" in t for t in (b"".join(into) for into in received))
        forever.cancel()

    asyncio.run(scenario())


def test_no_publisher_before_anyone_watches() -> None:
    async def scenario() -> None:
        hub = Hub(heartbeat=5)
        dashboard = Dashboard(SSEApp(hub)).install()
        await hub.start()
        await asyncio.sleep(0.05)
        assert not dashboard.running
        assert not [t for t in asyncio.all_tasks() if t.get_name() == PUBLISHER_TASK_NAME]
        await hub.close()
        await dashboard.close()

    asyncio.run(scenario())


def test_a_graceful_stop_says_goodbye_to_viewers(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none")
    viewer = subscribe(stats_url(server))
    frames(viewer, 1)
    assert server.stop() == 0
    viewer.ended.wait(10)
    assert viewer.ended.is_set()
    assert viewer.events[-1].event == "shutdown"


# --------------------------------------------------------------------- auth


def test_push_token_guards_the_stats_stream(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none", "--push-token", "s3cret")
    for query, headers in (("", {}), ("token=wrong", {}), ("", {"authorization": "Bearer wrong"})):
        answer = httpx.get(stats_url(server, query), headers=headers, timeout=5)
        assert answer.status_code == 401
        assert answer.json() == {
            "code": 401,
            "msg": "authorization: a valid push token is required (Bearer)",
            "data": {},
        }
        assert answer.headers["www-authenticate"].startswith("Bearer")
    # The token counts only as a header: in a URL it would end up in access logs.
    assert httpx.get(stats_url(server, "token=s3cret"), timeout=5).status_code == 401
    by_header = subscribe(stats_url(server), authorization="Bearer s3cret")
    assert by_header.status == 200
    frames(by_header, 1)

    page = httpx.get(f"{server.url}/", timeout=5)
    assert page.status_code == 200  # the page holds no figures: it loads, then asks for the token
    assert b'name="sse-fast-auth" content="push-token"' in page.content


def test_with_only_a_jwt_secret_the_stats_stream_needs_a_subscriber_token(
    serve: Serve, subscribe: Subscribe
) -> None:
    server = serve("--store", "none", "--jwt-secret", SECRET)
    forged = jwt.encode({"sub": "a"}, "another-secret-of-at-least-32-bytes")
    for query in ("", "uid=alice", "token=not-a-jwt", f"token={forged}"):
        answer = httpx.get(stats_url(server, query), timeout=5)
        assert answer.status_code == 401, query
        assert answer.json()["code"] == 401 and answer.json()["msg"].startswith("token:")
    viewer = subscribe(stats_url(server, "token=" + jwt.encode({"sub": "ops"}, SECRET)))
    assert viewer.status == 200
    frames(viewer, 1)
    assert b'name="sse-fast-auth" content="jwt"' in httpx.get(f"{server.url}/dashboard", timeout=5).content


# --------------------------------------------------------------------- page


def test_the_page_is_self_contained_and_its_policy_admits_only_its_own_code(serve: Serve) -> None:
    server = serve("--store", "none")
    answers = [httpx.get(f"{server.url}{path}", timeout=5) for path in ("/", "/dashboard")]
    assert answers[0].content == answers[1].content
    page = answers[0]
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    body = page.content
    assert b"new EventSource(" in body and b"stats/stream" in body
    assert b'name="sse-fast-auth" content=""' in body
    # Nothing loaded from elsewhere: no external URL, no src= at all, only a data: icon.
    assert not re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", body, re.I)
    assert b" src=" not in body
    assert re.findall(rb'href="([^"]*)"', body) == [b"data:,"]

    csp = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["connect-src"] == "'self'"
    for tag in ("script", "style"):
        inline = re.findall(rf"<{tag}>(.*?)</{tag}>".encode(), body, re.S)
        assert len(inline) == 1
        digest = base64.b64encode(hashlib.sha256(inline[0]).digest()).decode()
        assert csp[f"{tag}-src"] == f"'sha256-{digest}'"
    assert page.headers["x-content-type-options"] == "nosniff"


def test_no_dashboard_flag_serves_neither_page_nor_stream(serve: Serve) -> None:
    server = serve("--store", "none", "--no-dashboard")
    for path in ("/", "/dashboard", "/stats/stream"):
        assert httpx.get(f"{server.url}{path}", timeout=5).status_code == 404, path
    assert httpx.get(f"{server.url}/stats", timeout=5).status_code == 200


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_the_page_is_package_data() -> None:
    import tomllib  # type: ignore[import-not-found]  # new in 3.11; mypy checks as 3.10

    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["sse_fast"]
    page = "static/dashboard.html"
    assert (root / "src" / "sse_fast" / page).is_file()
    assert any(fnmatch(page, pattern) for pattern in patterns), patterns


# --------------------------------------------------------------- viewer pass


def test_the_token_buys_a_viewer_pass_cookie_that_opens_the_stats_stream_only(
    serve: Serve, subscribe: Subscribe
) -> None:
    server = serve("--store", "none", "--push-token", "s3cret")
    session = f"{server.url}/dashboard/session"
    refused = httpx.post(session, headers={"authorization": "Bearer wrong"}, timeout=5)
    assert refused.status_code == 401 and "set-cookie" not in refused.headers
    cross_site = httpx.post(
        session, headers={"authorization": "Bearer s3cret", "origin": "https://evil.example"}, timeout=5
    )
    assert cross_site.status_code == 403 and "set-cookie" not in cross_site.headers

    answer = httpx.post(session, headers={"authorization": "Bearer s3cret"}, timeout=5)
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"]
    attributes = {part.strip().split("=")[0] for part in cookie.split(";")}
    assert {"HttpOnly", "SameSite", "Path", "Max-Age"} <= attributes
    assert "Path=/stats/stream" in cookie and "SameSite=Strict" in cookie
    assert "s3cret" not in cookie  # a pass, not the token
    value = cookie.split(";")[0]
    assert 12 * 3600 - 5 <= answer.json()["data"]["expires"] - time.time() <= 12 * 3600

    viewer = subscribe(stats_url(server), cookie=value)
    assert viewer.status == 200
    frames(viewer, 1)
    # The pass opens nothing else, and a forged one nothing at all.
    name, _, pass_value = value.partition("=")
    assert server.push([{"event": "x", "data": 1}], token=None).status_code == 401
    pushed = httpx.post(
        f"{server.url}/push", json={"events": [{"event": "x", "data": 1}]}, headers={"cookie": value}
    )
    assert pushed.status_code == 401
    expiry = pass_value.partition(".")[0]
    forged = f"{name}={int(expiry) + 3600}.{pass_value.partition('.')[2]}"
    assert httpx.get(stats_url(server), headers={"cookie": forged}, timeout=5).status_code == 401


def test_a_viewer_pass_from_a_jwt_lasts_until_its_exp_and_then_the_stream_ends(
    serve: Serve, subscribe: Subscribe
) -> None:
    server = serve("--store", "none", "--jwt-secret", SECRET, "--jwt-leeway", "0")
    exp = int(time.time()) + 2
    token = jwt.encode({"sub": "ops", "exp": exp}, SECRET)
    answer = httpx.post(f"{server.url}/dashboard/session", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["data"]["expires"] == exp
    viewer = subscribe(stats_url(server), cookie=answer.headers["set-cookie"].split(";")[0])
    assert viewer.status == 200
    assert viewer.ended.wait(10)
    assert viewer.events[-1].event == "token_expired"
