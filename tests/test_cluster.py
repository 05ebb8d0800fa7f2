"""Two nodes on one Redis prefix (one granian, one native): one cluster, one sequence.

Every test gets a prefix of its own on the shared Redis (its keys are deleted
afterwards, never the others'), and real ``sse-fast serve`` processes: an
event pushed to either node reaches the matching subscribers on both, with
the same ids in the same order; a node killed with SIGKILL leaves its
subscribers to resume exactly on the other; losing the prefix's keys resets
everyone; a node that fell behind the stream's retention says so.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from conftest import (
    ServerProcess,
    StreamReader,
    Subscribe,
    accepts_connections,
    nothing_else_arrived,
    reachable_redis,
    unique_uid,
    wait_until,
)
from sse_fast import ServerSentEvent
from test_redis_failures import RedisServer, push_until_accepted

pytestmark = [pytest.mark.redis, pytest.mark.foreign_server]

REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Cluster:
    prefix: str
    granian: ServerProcess
    native: ServerProcess
    redis: redis.Redis

    @property
    def nodes(self) -> tuple[ServerProcess, ServerProcess]:
        return self.granian, self.native

    def keys(self) -> list[bytes]:
        return list(self.redis.scan_iter(match="{" + self.prefix + "}:*", count=1000))


def start_cluster(directory: Path, *args: str) -> Cluster:
    url = reachable_redis(REDIS)
    prefix = f"cluster-{uuid.uuid4().hex[:12]}"
    store = f"{url}?prefix={prefix}"
    nodes = [
        ServerProcess(["--store", store, "--engine", engine, "--node-id", f"{engine}-node", *args], directory)
        for engine in ("granian", "native")
    ]
    for node in nodes:
        node.start()
    return Cluster(prefix, nodes[0], nodes[1], redis.Redis.from_url(url))


def stop_cluster(cluster: Cluster) -> None:
    for node in cluster.nodes:
        node.kill()
    keys = cluster.keys()
    if keys:
        cluster.redis.delete(*keys)
    cluster.redis.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own (the test may kill, freeze or wipe it)."""
    started = start_cluster(tmp_path)
    yield started
    stop_cluster(started)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster the module's push-and-read tests share (each with uids of its own)."""
    started = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield started
    stop_cluster(started)


def push(node: ServerProcess, data: object, uids: list[str] | None = None) -> str:
    response = node.push([{"event": "n", "data": data}], uids)
    assert response.status_code == 200, response.text
    [event_id] = response.json()["data"]["ids"]
    return str(event_id)


def seq_of(event_id: str) -> int:
    return int(event_id.rpartition("-")[2])


def numbered(reader: StreamReader) -> list[ServerSentEvent]:
    return [e for e in reader.received() if e.event == "n"]


def test_pushes_to_either_node_reach_both_with_the_same_ids_in_the_same_order(
    shared_cluster: Cluster, subscribe: Subscribe
) -> None:
    """Broadcasts and unicasts from several concurrent publishers per node: each subscriber gets
    exactly its events, in increasing ids, and the same sequence on both nodes."""
    a, b = unique_uid("a"), unique_uid("b")
    readers = {
        (node.url, uid): subscribe(f"{node.url}/events?uid={uid}")
        for node in shared_cluster.nodes
        for uid in (a, b)
    }
    for reader in readers.values():
        reader.wait_subscribed()
    sent: dict[str, tuple[str, list[str] | None]] = {}  # id -> (data, recipients)
    lock = threading.Lock()
    counter = itertools.count()
    errors: list[BaseException] = []

    def publisher(node: ServerProcess) -> None:
        try:
            with httpx.Client(timeout=10) as client:
                for _ in range(15):
                    n = next(counter)
                    uids = [None, [a], [b], [a, b]][n % 4]
                    body: dict[str, object] = {"events": [{"event": "n", "data": f"e{n}"}]}
                    if uids is not None:
                        body["uids"] = uids
                    response = client.post(f"{node.url}/push", json=body)
                    assert response.status_code == 200, response.text
                    [event_id] = response.json()["data"]["ids"]
                    with lock:
                        sent[event_id] = (f"e{n}", uids)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(node,)) for node in shared_cluster.nodes * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for node in shared_cluster.nodes:
        nothing_else_arrived(node, *readers.values())
    ordered = sorted(sent, key=seq_of)
    for (_, uid), reader in readers.items():
        expected = [(i, sent[i][0]) for i in ordered if sent[i][1] is None or uid in (sent[i][1] or ())]
        assert [(e.id, e.json()) for e in numbered(reader)] == expected
    for uid in (a, b):
        on_granian = [e.id for e in numbered(readers[shared_cluster.granian.url, uid])]
        on_native = [e.id for e in numbered(readers[shared_cluster.native.url, uid])]
        assert on_granian == on_native


def test_a_publisher_id_goes_out_on_both_nodes(shared_cluster: Cluster, subscribe: Subscribe) -> None:
    uid = unique_uid()
    readers = [subscribe(f"{node.url}/events?uid={uid}") for node in shared_cluster.nodes]
    for reader in readers:
        reader.wait_subscribed()
    response = shared_cluster.native.push([{"event": "n", "data": 1, "id": "order:7"}], [uid])
    assert response.status_code == 200, response.text
    for reader in readers:
        [event] = [e for e in reader.wait_events(1) if e.event == "n"]
        assert (event.id, event.json()) == ("order:7", 1)


def test_stats_name_the_node_and_its_bus(shared_cluster: Cluster) -> None:
    for node, name in zip(shared_cluster.nodes, ("granian-node", "native-node"), strict=True):
        assert node.stats()["node"] == {"id": name, "bus": "following", "bus_error": None}
        metrics = httpx.get(f"{node.url}/metrics").text
        assert f'sse_fast_connections{{node="{name}"}} ' in metrics
        assert f'sse_fast_push_failures_total{{reason="offline",node="{name}"}} ' in metrics


def test_stats_and_metrics_count_the_cluster(cluster: Cluster, subscribe: Subscribe) -> None:
    """Each node publishes its connections and users with its lease; any node's /stats adds them
    up (a user connected to both nodes counts on both)."""
    granian, native = cluster.nodes
    shared_uid = unique_uid("both")
    readers = [
        subscribe(f"{granian.url}/events?uid={unique_uid()}"),
        subscribe(f"{granian.url}/events?uid={shared_uid}"),
        subscribe(f"{native.url}/events?uid={shared_uid}"),
    ]
    for reader in readers:
        reader.wait_subscribed()
    leaving = socket.create_connection(("127.0.0.1", granian.port))  # a client that can hang up at once
    leaving.sendall(f"GET /events?uid={shared_uid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert leaving.recv(4096).startswith(b"HTTP/1.1 200")
    expected = {
        "nodes": ["granian-node", "native-node"],
        "connections": 4,
        "users": 3,
        "by_node": {
            "granian-node": {"connections": 3, "users": 2},
            "native-node": {"connections": 1, "users": 1},
        },
    }
    for node in cluster.nodes:
        wait_until(lambda n=node: n.stats()["cluster"] == expected, timeout=10)  # type: ignore[misc]
    metrics = httpx.get(f"{native.url}/metrics").text
    assert 'sse_fast_cluster_nodes{node="native-node"} 2\n' in metrics
    assert 'sse_fast_cluster_connections{node="native-node"} 4\n' in metrics
    assert 'sse_fast_cluster_users{node="native-node"} 3\n' in metrics
    leaving.close()
    wait_until(lambda: native.stats()["cluster"]["by_node"]["granian-node"]["connections"] == 2, timeout=10)
    granian.stop()  # its goodbye takes it out of the cluster at once
    wait_until(lambda: native.stats()["cluster"]["nodes"] == ["native-node"], timeout=10)
    assert native.stats()["cluster"]["by_node"] == {"native-node": {"connections": 1, "users": 1}}


def test_a_node_killed_with_sigkill_is_resumed_exactly_on_the_other(
    cluster: Cluster, subscribe: Subscribe
) -> None:
    uid = unique_uid()
    granian, native = cluster.nodes
    on_granian = subscribe(f"{granian.url}/events?uid={uid}")
    on_granian.wait_subscribed()
    first = [push(native, i, [uid] if i % 2 else None) for i in range(4)]
    assert [e.id for e in on_granian.wait_events(4)] == first
    assert granian.proc is not None
    os.kill(granian.proc.pid, signal.SIGKILL)  # the main process; its worker follows (parentwatch)
    missed = [push(native, i, [uid] if i % 2 else None) for i in range(4, 8)]
    resumed = subscribe(f"{native.url}/events?uid={uid}", last_event_id=first[-1])
    later = push(native, 8, [uid])
    events = resumed.wait_events(5)
    assert [(e.id, e.json()) for e in events] == [(i, n) for n, i in enumerate([*missed, later], 4)]
    wait_until(lambda: not accepts_connections(granian.port), timeout=10)  # no worker left behind


def test_deleting_the_prefix_keys_resets_subscribers_on_both_nodes(
    cluster: Cluster, subscribe: Subscribe
) -> None:
    """As FLUSHALL would, for this prefix only: both nodes adopt the new history and say ``reset``."""
    uid = unique_uid()
    readers = [subscribe(f"{node.url}/events?uid={uid}") for node in cluster.nodes]
    for reader in readers:
        reader.wait_subscribed()
    old = push(cluster.granian, 0)
    for reader in readers:
        reader.wait_events(1)
    cluster.redis.delete(*cluster.keys())
    new = push(cluster.native, 1)
    assert new.rpartition("-")[0] != old.rpartition("-")[0]
    for reader in readers:
        wait_until(lambda r=reader: len(r.received()) >= 3)  # type: ignore[misc]
        events = reader.received()
        assert events[1].event == "reset"
        assert events[1].json()["reason"] == "history_lost"
        assert (events[2].id, events[2].json()) == (new, 1)


def test_a_node_behind_the_stream_retention_resets_its_subscribers(
    cluster: Cluster, subscribe: Subscribe
) -> None:
    """Events trimmed before a node read them (here it was frozen): its subscribers hear
    ``reset`` (``events_missed``) with the id to go on from, then what follows live."""
    uid = unique_uid()
    granian, native = cluster.nodes
    reader = subscribe(f"{native.url}/events?uid={uid}")
    reader.wait_subscribed()
    before = push(granian, 0)
    reader.wait_events(1)
    assert native.proc is not None
    os.killpg(native.proc.pid, signal.SIGSTOP)
    try:
        for n in range(1, 6):
            push(granian, n)
        cluster.redis.xtrim("{" + cluster.prefix + "}:stream", maxlen=1, approximate=False)
        after = push(granian, 6)
    finally:
        os.killpg(native.proc.pid, signal.SIGCONT)
    wait_until(lambda: after in [e.id for e in reader.received()])
    events = reader.received()
    # The frozen node may still have the first of them: Redis answers the read a node has
    # already asked for (the blocking read, with the read behind it) when that push wakes it.
    at = [e.event for e in events].index("reset")
    assert [e.json() for e in events[:at]] == list(range(at)) and at in (1, 2), events
    reset, kept, last = events[at:]
    assert reset.json() == {"reason": "events_missed", "last_event_id": events[at - 1].id}
    assert seq_of(reset.id or "") == seq_of(before) + 4  # the 5th of the pushes made while frozen is kept
    assert (kept.json(), last.id) == (5, after)


def offline_count(node: ServerProcess) -> int:
    return int(node.stats()["failed_by_reason"]["offline"])


def test_offline_only_when_no_node_has_the_user_and_only_on_the_node_that_took_the_push(
    shared_cluster: Cluster, subscribe: Subscribe
) -> None:
    granian, native = shared_cluster.nodes
    here, nowhere = unique_uid("here"), unique_uid("nowhere")
    reader = subscribe(f"{native.url}/events?uid={here}")
    reader.wait_subscribed()
    on_native = "{" + shared_cluster.prefix + "}:on:native-node"
    wait_until(lambda: shared_cluster.redis.sismember(on_native, here))
    before = offline_count(granian), offline_count(native)
    push(granian, 1, [here])
    push(granian, 2, [nowhere, here])
    assert [e.json() for e in reader.wait_events(2) if e.event == "n"] == [1, 2]
    wait_until(lambda: offline_count(granian) == before[0] + 1)
    nothing_else_arrived(granian, reader)
    assert (offline_count(granian), offline_count(native)) == (before[0] + 1, before[1])
    both = ["granian-node", "native-node"]
    wait_until(lambda: all(node.stats()["cluster"]["nodes"] == both for node in shared_cluster.nodes))


def test_redis_down_and_back_under_a_running_cluster_loses_nothing(
    tmp_path: Path, subscribe: Subscribe
) -> None:
    """Redis with ``appendonly yes`` and ``appendfsync always`` killed and restarted: pushes answer
    503 with ``Retry-After`` within 3 s and ``/readyz`` 503 meanwhile, streams stay heartbeated,
    and once Redis is back both nodes go on from their last seq, with no gap and no reset."""
    own = RedisServer(tmp_path, durable=True).start()
    nodes = [
        ServerProcess(["--store", own.url, "--engine", engine, "--heartbeat", "0.3"], tmp_path)
        for engine in ("granian", "native")
    ]
    try:
        granian, native = (node.start() for node in nodes)
        uid = unique_uid()
        readers = [subscribe(f"{node.url}/events?uid={uid}") for node in nodes]
        for reader in readers:
            reader.wait_subscribed()
        ids = [push(granian, 0), push(native, 1, [uid])]
        for reader in readers:
            reader.wait_events(2)
        own.kill()
        started = time.monotonic()
        refused = native.push([{"event": "n", "data": "lost"}])
        assert time.monotonic() - started < 3.0
        assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
        assert refused.json()["code"] == 503
        for node in nodes:
            wait_until(lambda n=node: httpx.get(f"{n.url}/readyz").status_code == 503)  # type: ignore[misc]
        beats = [reader.comments for reader in readers]
        wait_until(lambda: all(r.comments >= b + 2 for r, b in zip(readers, beats, strict=True)))
        own.start()
        ids.append(push_until_accepted(native, 2))
        ids.append(push(granian, 3, [uid]))
        for reader in readers:
            events = [e for e in reader.wait_events(4) if e.event == "n"]
            assert [(e.id, e.json()) for e in events] == list(zip(ids, range(4), strict=True))
            assert not [e for e in reader.received() if e.event == "reset"]
        for node in nodes:
            wait_until(lambda n=node: httpx.get(f"{n.url}/readyz").status_code == 200)  # type: ignore[misc]
    finally:
        for node in nodes:
            node.kill()
        own.kill()


@pytest.mark.parametrize("engine", ["granian", "native"])
def test_workers_share_the_port_as_nodes_and_a_dead_worker_comes_back(
    tmp_path: Path, subscribe: Subscribe, engine: str
) -> None:
    """``--workers 2``: both workers serve the port, a push reaches the subscribers of both with one
    id, and a worker killed with SIGKILL is replaced by a new one (a new node id)."""
    url = reachable_redis(REDIS)
    prefix = f"workers-{uuid.uuid4().hex[:12]}"
    server = ServerProcess(
        ["--store", f"{url}?prefix={prefix}", "--engine", engine, "--workers", "2"], tmp_path
    ).start()
    admin = redis.Redis.from_url(url)
    try:
        seen: set[str] = set()

        def both_serve() -> bool:
            seen.add(server.stats()["node"]["id"])  # a new connection each time: any worker
            return len(seen) >= 2

        wait_until(both_serve, timeout=15)
        uid = unique_uid()
        readers = [subscribe(f"{server.url}/events?uid={uid}") for _ in range(6)]
        for reader in readers:
            reader.wait_subscribed()
        first = push(server, 1)
        for reader in readers:
            assert [e.id for e in reader.wait_events(1)] == [first]
        victim = int(sorted(seen)[0].rpartition("-")[2])
        os.kill(victim, signal.SIGKILL)
        fresh: set[str] = set()

        def replaced() -> bool:
            node = server.stats()["node"]["id"]
            if node not in seen:
                fresh.add(node)
            return bool(fresh)

        wait_until(replaced, timeout=15)
        second = push(server, 2)
        for reader in readers:
            wait_until(lambda r=reader: r.ended.is_set() or len(r.received()) >= 2)  # type: ignore[misc]
            assert [e.id for e in reader.received()] in ([first], [first, second])
        survivors = [reader for reader in readers if len(reader.received()) == 2]
        assert survivors
        assert server.stop() == 0  # SIGTERM to the parent: every worker says goodbye
        for reader in survivors:
            wait_until(reader.ended.is_set)
            assert reader.received()[-1].event == "shutdown"
    finally:
        server.kill()
        keys = list(admin.scan_iter(match="{" + prefix + "}:*", count=1000))
        if keys:
            admin.delete(*keys)
        admin.close()


def test_random_pushes_and_reconnects_across_nodes_give_each_user_its_events_once_in_order(
    shared_cluster: Cluster, subscribe: Subscribe
) -> None:
    """A property over both nodes: pushes to random nodes for random users, and users that drop
    and resume (``Last-Event-ID``) on a random node; what each user got is exactly its events."""
    rng = random.Random(16)
    users = [unique_uid("p") for _ in range(3)]
    nodes = shared_cluster.nodes
    readers = {uid: subscribe(f"{rng.choice(nodes).url}/events?uid={uid}") for uid in users}
    for reader in readers.values():
        reader.wait_subscribed()
    got: dict[str, list[tuple[str | None, object]]] = {uid: [] for uid in users}
    expected: dict[str, list[tuple[str, object]]] = {uid: [] for uid in users}
    for step in range(30):
        if rng.random() < 0.25:
            uid = rng.choice(users)
            old = readers[uid]
            old.close()
            got[uid] += [(e.id, e.json()) for e in numbered(old)]
            assert not [e for e in old.received() if e.event == "reset"]
            last = got[uid][-1][0] if got[uid] else None
            headers = {"last_event_id": last} if last else {}
            readers[uid] = subscribe(f"{rng.choice(nodes).url}/events?uid={uid}", **headers)
            readers[uid].wait_subscribed()
            continue
        targets = [uid for uid in users if rng.random() < 0.5] or None
        event_id = push(rng.choice(nodes), step, targets)
        for uid in targets or users:
            expected[uid].append((event_id, step))
    for node in nodes:
        nothing_else_arrived(node, *readers.values())
    for uid in users:
        got[uid] += [(e.id, e.json()) for e in numbered(readers[uid])]
        assert got[uid] == expected[uid]


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on ``port`` (IPv4), as the kernel lists them."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A")


def test_native_workers_each_take_a_fair_share_of_the_connections(tmp_path: Path) -> None:
    """Each native worker listens on its own SO_REUSEPORT socket, so the kernel spreads connections
    evenly (one shared socket let the worker that woke first take them in bursts)."""
    url = reachable_redis(REDIS)
    prefix = f"spread-{uuid.uuid4().hex[:12]}"
    server = ServerProcess(
        ["--store", f"{url}?prefix={prefix}", "--engine", "native", "--workers", "3"], tmp_path
    ).start()
    admin = redis.Redis.from_url(url)
    sockets: list[socket.socket] = []
    try:
        wait_until(lambda: len(server.stats()["cluster"]["nodes"]) == 3, timeout=15)
        assert listening_sockets(server.port) == 3  # one per worker, none shared
        for n in range(300):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(f"GET /events?uid=u{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sockets.append(sock)
        for sock in sockets:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")

        # Each /stats answer comes from whichever worker the kernel picks, and shows the others'
        # figures as they were at their last lease renewal: a view can lag behind.  Counts only
        # grow here, so a view that sums to 300 is exact for every node; judge that view.
        views: list[list[int]] = []

        def settled() -> bool:
            by_node = server.stats()["cluster"]["by_node"]
            views.append(sorted(figures["connections"] for figures in by_node.values()))
            return len(views[-1]) == 3 and sum(views[-1]) == 300

        wait_until(settled, timeout=10)
        # 100 each on average; a hash spreading them at random puts each within 100 +- 30 with
        # odds far above 99.9 %.
        assert min(views[-1]) >= 60, views
    finally:
        for sock in sockets:
            sock.close()
        server.kill()
        keys = list(admin.scan_iter(match="{" + prefix + "}:*", count=1000))
        if keys:
            admin.delete(*keys)
        admin.close()
