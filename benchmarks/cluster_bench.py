"""What the Redis bus costs, and what a second node adds to an event's latency.

Two measurements, each alternating its variants run after run (so that a
noisy minute hurts all of them alike) and reporting medians:

``--what bus``: one node, N subscribers (10,000), broadcasts at 5/s and 20/s
(fanout.py's b5 and b20), in three set-ups of the same server:

- ``in_process``: ``--store memory://``, the hub fans out its own pushes;
- ``redis_local``: ``--store redis://...`` with ``--bus local``: the events
  are saved in Redis, the node fans out its own pushes (what the store costs);
- ``redis_bus``: the same store, following the bus: the node fans out what it
  reads back from ``{P}:stream`` (what a node of a cluster does).

Reported: server CPU per delivered event and delivery p50/p99, each as a
ratio to ``in_process`` of the same round.

``--what many``: one machine holding S subscribers (100,000) with
``--workers W`` (6) of the native engine on one Redis: RSS of all the
workers, idle CPU over 20 s (heartbeats included), then one broadcast and
the time until the last subscriber has it (the latency's max).  One process
may open 20,000 files here, so the load runs in one fastload process per
~19,800 subscribers, from source addresses spread over 127.0.0.x.

``--what workers``: the same, ``--workers 1`` against ``--workers 2`` (both
on the Redis bus, both pinned to the server core): CPU per delivered event of
the workers together, since the load shares this 2-core machine.

``--what cross``: two nodes on one Redis prefix; pushes go to node A and M
subscribers (1,000) listen on node A (``same_node``) or on node B
(``cross_node``); the added latency of the second is what crossing nodes
costs.  A third variant pushes unicasts to node A's subscribers only
(``unicast_on_a``): node B holds none of them and still reads every one from
the stream, which is where a unicast-heavy cluster stops scaling with nodes
(``cpu_b_us_per_push``).  Both nodes are pinned to the server core, the load
and Redis to the other.

    python benchmarks/cluster_bench.py --what bus --engines native,granian --runs 3
    python benchmarks/cluster_bench.py --what cross --runs 5
    python benchmarks/cluster_bench.py --what many --subscribers 100000 --workers 6 --runs 1

Redis is a ``redis-server`` of its own on a free port (no persistence), never
the shared one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fanout  # noqa: E402
from fanout import Server, Step, run_step  # noqa: E402
from fastload import run_fast_load  # noqa: E402
from loadgen import Config  # noqa: E402
from own_redis import free_port, redis_server_argv  # noqa: E402

SSE_FAST = Path(sys.executable).parent / "sse-fast"
SERVE = (
    f"{SSE_FAST} serve --host 127.0.0.1 --port {{port}} --heartbeat {{heartbeat}} "
    "--max-connections {max_connections} --log-level warning"
)


class RedisProcess:
    """A redis-server of this benchmark's own, without persistence, pinned to ``core``."""

    def __init__(self, core: int) -> None:
        self.port = free_port()
        cmd = redis_server_argv(self.port)
        if core >= 0 and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(core), *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            != "PONG"
        ):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def url(self, prefix: str) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def bus_variants(redis: RedisProcess) -> dict[str, str]:
    """Each set-up's server command (a fresh prefix per run: no history carried over)."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    return {
        "in_process": f"{SERVE} --store memory://",
        "redis_local": f"{SERVE} --store '{redis.url(prefix + 'l')}' --bus local",
        "redis_bus": f"{SERVE} --store '{redis.url(prefix + 'b')}'",
    }


def worker_variants(redis: RedisProcess) -> dict[str, str]:
    """One worker against two on the same core and the same Redis bus."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    return {
        "workers1": f"{SERVE} --store '{redis.url(prefix + '1')}'",
        "workers2": f"{SERVE} --store '{redis.url(prefix + '2')}' --workers 2",
    }


def _fanout_args(args: argparse.Namespace, log_dir: Path) -> argparse.Namespace:
    return argparse.Namespace(
        heartbeat=15.0,
        sse_fast_cmd="",
        server_core=args.server_core,
        load_core=args.load_core,
        log_dir=log_dir,
        connect_timeout=120.0,
        push_conns=0,
        push_inflight=16,
        load="c",
    )


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    lat = result.get("latency_ms") or {}
    return {
        "cpu_us_per_event": result.get("cpu_us_per_event"),
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "delivered_ratio": result.get("delivered_ratio"),
        "push_p99_ms": (result.get("push_rtt_ms") or {}).get("p99"),
        "errors": result.get("errors"),
    }


async def measure_bus(args: argparse.Namespace, redis: RedisProcess, log_dir: Path) -> dict[str, Any]:
    workers = args.what == "workers"
    variants = worker_variants if workers else bus_variants
    fargs = _fanout_args(args, log_dir)
    rows: dict[str, list[dict[str, Any]]] = {}
    for run in range(args.runs):
        for engine in args.engines:
            for scenario, rate in (("b5", 5.0), ("b20", 20.0)):
                for variant, command in variants(redis).items():
                    fargs.sse_fast_cmd = command + ("" if engine == "granian" else " --engine native")
                    step = Step(scenario, args.subscribers, rate=rate, duration=args.duration)
                    result = await run_step("sse_fast", step, fargs)
                    figures = _figures(result)
                    key = f"{engine}/{scenario}/{variant}"
                    rows.setdefault(key, []).append(figures)
                    print(f"run {run + 1} {key}: {figures}", file=sys.stderr, flush=True)
    return summarize(rows, base="workers1" if workers else "in_process")


async def measure_cross(args: argparse.Namespace, redis: RedisProcess, log_dir: Path) -> dict[str, Any]:
    fargs = _fanout_args(args, log_dir)
    rows: dict[str, list[dict[str, Any]]] = {}
    for run in range(args.runs):
        for engine in args.engines:
            prefix = f"cross-{uuid.uuid4().hex[:8]}"
            native = "" if engine == "granian" else " --engine native"
            nodes = []
            for name in ("a", "b"):
                node_args = argparse.Namespace(**vars(fargs))
                node_args.sse_fast_cmd = f"{SERVE} --store '{redis.url(prefix)}' --node-id {name}{native}"
                node_args.log_dir = log_dir / f"{engine}-{name}"  # the server's log: <dir>/sse_fast.log
                node_args.log_dir.mkdir(exist_ok=True)
                nodes.append(Server("sse_fast", node_args, args.subscribers + 1000))
            try:
                for node in nodes:
                    node.wait_listening()
                await asyncio.sleep(2.5)  # each node's lease seen by the other
                for variant, listen, mode in (
                    ("same_node", nodes[0], "broadcast"),
                    ("cross_node", nodes[1], "broadcast"),
                    ("unicast_on_a", nodes[0], "unicast"),
                ):
                    figures = await _cross_step(args, nodes, listen, mode)
                    key = f"{engine}/{variant}"
                    rows.setdefault(key, []).append(figures)
                    print(f"run {run + 1} {key}: {figures}", file=sys.stderr, flush=True)
            finally:
                for node in nodes:
                    node.stop()
    return summarize(rows, base="same_node")


async def _cross_step(
    args: argparse.Namespace, nodes: list[Server], listen: Server, mode: str = "broadcast"
) -> dict[str, Any]:
    cpu: dict[str, list[float]] = {}

    async def hook(point: str) -> None:
        if point in ("start", "drained"):
            cpu[point] = [node.cpu() for node in nodes]

    cfg = Config(
        subscribe_url=f"http://127.0.0.1:{listen.port}/events?uid={{uid}}",
        push_url=f"http://127.0.0.1:{nodes[0].port}/push",
        subscribers=args.subscribers,
        duration=args.duration,
        rate=args.rate if mode == "broadcast" else args.unicast_rate,
        mode=mode,
        procs=1,
        warmup=1.0,
        drain=2.0,
        push_conns=1 if mode == "broadcast" else 4,
        push_conns_max=4 if mode == "broadcast" else 16,
    )
    report = await run_fast_load(cfg, hook)
    lat = report.get("latency_ms") or {}
    events = report.get("events") or 0
    spent = [after - before for before, after in zip(cpu["start"], cpu["drained"], strict=True)]
    figures = {
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "delivered_ratio": report.get("delivered_ratio"),
        "push_p99_ms": (report.get("publisher") or {}).get("push_rtt_ms", {}).get("p99"),
        "cpu_us_per_event": round(sum(spent) / events * 1e6, 2) if events else None,
        "errors": report.get("errors"),
    }
    if mode == "unicast":  # one event per push: what the node holding nobody pays to read it
        figures["cpu_a_us_per_push"] = round(spent[0] / events * 1e6, 2) if events else None
        figures["cpu_b_us_per_push"] = round(spent[1] / events * 1e6, 2) if events else None
    return figures


async def measure_many(args: argparse.Namespace, redis: RedisProcess, log_dir: Path) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.runs):
        figures = await _many_once(args, redis, log_dir)
        rows.setdefault(f"native/workers{args.workers}", []).append(figures)
        print(f"{figures}", file=sys.stderr, flush=True)
    return summarize(rows, base="")


async def _many_once(args: argparse.Namespace, redis: RedisProcess, log_dir: Path) -> dict[str, Any]:
    fargs = _fanout_args(args, log_dir)
    prefix = f"many-{uuid.uuid4().hex[:8]}"
    fargs.sse_fast_cmd = f"{SERVE} --engine native --workers {args.workers} --store '{redis.url(prefix)}'"
    server = Server("sse_fast", fargs, args.subscribers + 1000)
    samples: dict[str, float] = {}
    per_worker: list[int] = []
    try:
        server.wait_listening()
        await asyncio.sleep(3.0)  # every worker's lease published
        samples["rss_base"] = server.rss()

        async def hook(point: str) -> None:
            if point == "connected":
                await asyncio.sleep(2.0)
                samples["rss_connected"] = server.rss()
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/stats", timeout=10) as answer:
                    cluster = json.loads(answer.read())["cluster"]
                per_worker[:] = sorted(figures["connections"] for figures in cluster["by_node"].values())
                cpu, started = server.cpu(), time.perf_counter()
                await asyncio.sleep(args.idle)
                samples["idle_cpu_pct"] = 100 * (server.cpu() - cpu) / (time.perf_counter() - started)
                samples["workers"] = len(server.tree()) - 1

        cfg = Config(
            subscribe_url=f"http://127.0.0.1:{server.port}/events?uid={{uid}}",
            push_url=f"http://127.0.0.1:{server.port}/push",
            subscribers=args.subscribers,
            duration=1.0,
            rate=1.0,
            warmup=0.5,
            drain=10.0,
            connect_timeout=300.0,
            push_conns=1,
            push_conns_max=1,
        )
        started = time.perf_counter()
        report = await run_fast_load(cfg, hook)
    finally:
        server.stop()
    lat = report.get("latency_ms") or {}
    established = max(1, report.get("established") or 0)
    held = samples.get("rss_connected", 0) - samples["rss_base"]
    return {
        "established": report.get("established"),
        "connect_seconds": report.get("connect_seconds"),
        "workers": samples.get("workers"),
        "connections_per_worker": per_worker,
        "error_samples": report.get("error_samples", [])[:5],
        "rss_mib": round(samples.get("rss_connected", 0) / 2**20, 1),
        "rss_per_conn_kib": round(held / established / 1024, 2),
        "idle_cpu_pct": round(samples.get("idle_cpu_pct", 0), 2),
        "heartbeats": report.get("heartbeats"),
        "events": report.get("events"),
        "delivered_ratio": report.get("delivered_ratio"),
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "last_ms": lat.get("max"),
        "errors": report.get("errors"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def summarize(rows: dict[str, list[dict[str, Any]]], base: str) -> dict[str, Any]:
    """Medians per variant, and each variant's ratio to ``base`` of the same engine and scenario."""
    medians: dict[str, dict[str, Any]] = {}
    for key, runs in rows.items():
        medians[key] = {
            field: _median([r[field] for r in runs]) for field in runs[0] if field not in ("errors",)
        }
        medians[key]["errors"] = sum(r["errors"] or 0 for r in runs)
        medians[key]["runs"] = len(runs)
    for key, figures in medians.items():
        group, _, _variant = key.rpartition("/")
        reference = medians.get(f"{group}/{base}")
        if reference is None:
            continue
        for field in ("cpu_us_per_event", "p99_ms"):
            if figures.get(field) and reference.get(field):
                figures[f"{field}_ratio"] = round(figures[field] / reference[field], 3)
        if figures.get("p99_ms") is not None and reference.get("p99_ms") is not None:
            figures["p99_added_ms"] = round(figures["p99_ms"] - reference["p99_ms"], 3)
            figures["p50_added_ms"] = round((figures["p50_ms"] or 0) - (reference["p50_ms"] or 0), 3)
    return medians


def _median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return round(statistics.median(numbers), 3) if numbers else None


MEASURES = {"bus": measure_bus, "workers": measure_bus, "cross": measure_cross, "many": measure_many}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", choices=sorted(MEASURES), required=True)
    ap.add_argument("--workers", type=int, default=6, help="many: worker processes")
    ap.add_argument("--idle", type=float, default=20.0, help="many: seconds of idle CPU sampled")
    ap.add_argument("--engines", default="native,granian", help="comma-separated: native, granian")
    ap.add_argument("--subscribers", type=int, default=None, help="default 10,000 (bus) or 1,000 (cross)")
    ap.add_argument("--rate", type=float, default=20.0, help="cross: broadcasts/s")
    ap.add_argument(
        "--unicast-rate",
        type=float,
        default=2000.0,
        help="cross: unicasts/s to node A's users (node B, holding none, still reads each)",
    )
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--load-core", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON report (default: stdout only)")
    args = ap.parse_args(argv)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.subscribers is None:
        args.subscribers = {"bus": 10_000, "workers": 10_000, "cross": 1_000, "many": 100_000}[args.what]
    fanout._raise_nofile()
    if args.load_core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.load_core})  # the load runs on this process's core
    redis = RedisProcess(args.load_core)
    try:
        with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
            measure = MEASURES[args.what]
            result = asyncio.run(measure(args, redis, Path(tmp)))
    finally:
        redis.stop()
    report = {"what": args.what, "subscribers": args.subscribers, "runs": args.runs, "medians": result}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
