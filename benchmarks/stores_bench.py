"""Accepted pushes per second for each store.

Two shapes of load:

* ``single``: many concurrent callers, each saving one event at a time (many
  small ``POST /push``).  This is where group commit shows: SQLite and Redis
  write everything queued meanwhile in one commit / one script call, so the
  rate grows with the number of callers; ``events/commit`` says how many
  saves shared each one.
* ``batch100``: callers saving 100 events per call (one large push).

Each row is the median of ``--repeat`` runs (the machine may be shared).
``CPU µs/event`` is the CPU this process spent per event (all its threads:
SQLite's writer too), plus for Redis the server's own (``INFO cpu``; another
client of the same Redis counts in it): steadier than events/s on a busy machine.

Every event is addressed to one of 10,000 users (one recipient row/index
entry each), with a 100-byte JSON body, as a notification would be.  With
``--publisher-ids`` each event also carries a publisher id of its own (a
distinct ``evt:<uuid>``-like string), which the stores index.

    python benchmarks/stores_bench.py                 # all stores
    python benchmarks/stores_bench.py --stores sqlite-full,redis --events 20000
    python benchmarks/stores_bench.py --publisher-ids --max-events 5000   # ids indexed and trimmed

Redis keys go under a fresh ``bench-*`` prefix in --redis-url and are deleted
afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from sse_fast.stores import MemoryStore, NewEvent, RedisStore, SQLiteStore, Store

USERS = 10_000
BODY = '{"type":"order.shipped","order":"' + "A" * 12 + '","note":"' + "x" * 40 + '"}'


def make_events(n: int, rng: random.Random, publisher_ids: bool = False) -> list[NewEvent]:
    if not publisher_ids:  # as before publisher ids existed, so that older code runs it too
        return [NewEvent("notice", BODY, (f"user{rng.randrange(USERS)}",)) for _ in range(n)]
    return [
        NewEvent("notice", BODY, (f"user{rng.randrange(USERS)}",), f"evt:{rng.getrandbits(64):016x}")
        for _ in range(n)
    ]


def redis_cpu(url: str) -> Callable[[], float]:
    """The Redis server's CPU seconds so far (user + system)."""

    def seconds() -> float:
        client = redis.Redis.from_url(url)
        try:
            info = client.info("cpu")
            return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        finally:
            client.close()

    return seconds


async def measure(
    factory: Callable[[], Store],
    callers: int,
    batch: int,
    total: int,
    publisher_ids: bool = False,
    server_cpu: Callable[[], float] | None = None,
) -> tuple[float, float | None, float]:
    """Return (events/s, events per commit or None, CPU µs per event) for ``callers`` concurrent savers."""
    store = factory()
    await store.open()
    rng = random.Random(7)
    per_caller = max(1, total // (callers * batch))
    # With publisher ids every save gets events of its own, so that each id is new to the index.
    count = per_caller * callers + 1 if publisher_ids else 64
    payloads = [make_events(batch, rng, publisher_ids) for _ in range(count)]
    await store.save(payloads[0])  # warm up: schema, connections, script cache
    commits_before = getattr(store, "commits", None)

    async def caller(k: int) -> None:
        for i in range(per_caller):
            at = 1 + k * per_caller + i if publisher_ids else k + i
            await store.save(payloads[at % len(payloads)])

    server_before = server_cpu() if server_cpu is not None else 0.0
    cpu_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(callers)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    if server_cpu is not None:
        cpu += server_cpu() - server_before
    events = per_caller * callers * batch
    commits_after = getattr(store, "commits", None)
    await store.close()
    per_commit = None
    if commits_before is not None and commits_after is not None and commits_after > commits_before:
        per_commit = events / (commits_after - commits_before)
    return events / elapsed, per_commit, cpu * 1e6 / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="memory,sqlite-full,sqlite-normal,redis")
    parser.add_argument("--events", type=int, default=20_000, help="events per measurement")
    parser.add_argument("--callers", default="1,16,256", help="concurrent callers for single-event saves")
    parser.add_argument("--batch-callers", default="1,8", help="concurrent callers for batches of 100")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median is shown")
    parser.add_argument("--publisher-ids", action="store_true", help="each event carries an id of its own")
    parser.add_argument(
        "--max-events", type=int, default=None, help="retention by count of every store (default: each one's)"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sse-fast-bench-"))
    prefix = f"bench-{secrets.token_hex(4)}"
    counter = iter(range(1_000_000))

    kept: dict[str, Any] = {} if args.max_events is None else {"max_events": args.max_events}

    def sqlite_factory(sync: str) -> Callable[[], Store]:
        return lambda: SQLiteStore(tmp / f"bench-{next(counter)}.db", synchronous=sync, **kept)  # type: ignore[arg-type]

    factories: dict[str, Callable[[], Store]] = {
        "memory": lambda: MemoryStore(**(kept or {"max_events": 1_000_000})),
        "sqlite-full": sqlite_factory("FULL"),
        "sqlite-normal": sqlite_factory("NORMAL"),
        "redis": lambda: RedisStore(args.redis_url, key_prefix=f"{prefix}-{next(counter)}", **kept),
    }
    chosen = [name.strip() for name in args.stores.split(",") if name.strip()]
    for name in chosen:
        if name not in factories:
            parser.error(f"--stores: unknown store {name!r} (choose from {', '.join(factories)})")

    if args.loop == "uvloop":
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    else:
        runner = asyncio.run

    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {args.loop}, {args.events} events per run, "
        f"median of {args.repeat} runs, publisher ids: {'yes' if args.publisher_ids else 'no'}, "
        f"max_events: {args.max_events or 'default'}"
    )
    print()
    print("| store | load | callers | events/s | events/commit | CPU µs/event |")
    print("|---|---|---:|---:|---:|---:|")
    try:
        for name in chosen:
            shapes = [("single", 1, int(c)) for c in args.callers.split(",")]
            shapes += [("batch100", 100, int(c)) for c in args.batch_callers.split(",")]
            for label, batch, callers in shapes:
                # one fsync per event is slow: a tenth of the events keeps that row short
                slow = name == "sqlite-full" and batch == 1 and callers == 1
                total = args.events // 10 if slow else args.events
                server = redis_cpu(args.redis_url) if name == "redis" else None
                runs: list[tuple[float, float | None, float]] = [
                    runner(measure(factories[name], callers, batch, total, args.publisher_ids, server))
                    for _ in range(args.repeat)
                ]
                rate, per_commit, _ = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
                cpu = sorted(r[2] for r in runs)[len(runs) // 2]
                shown = "-" if per_commit is None else f"{per_commit:,.1f}"
                print(f"| {name} | {label} | {callers} | {rate:,.0f} | {shown} | {cpu:.2f} |", flush=True)
    finally:
        for path in tmp.iterdir():
            path.unlink()
        tmp.rmdir()
        if "redis" in chosen:
            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match="{" + prefix + "-*", count=1000))
            for start in range(0, len(keys), 1000):
                client.unlink(*keys[start : start + 1000])
            client.close()


if __name__ == "__main__":
    main()
