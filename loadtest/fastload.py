"""Build and drive ``loadtest/fastload.c``: loadgen's ``run_load`` with the load written in C.

The Python load generator reads ~1-1.5 M events/s and publishes a few thousand
pushes/s on its core; a fast server outruns it, and what is measured is the
load core's queueing.  ``run_fast_load`` takes the same ``Config`` and hook and
returns a report with the same fields (plus the C publisher's schedule and
status counts), running the load as C processes on the current core(s):

- one subscriber process per ~19,000 subscribers (one process's open files),
- one publisher process (K keep-alive connections, up to ``push_inflight``
  pipelined requests on each; open loop at ``rate``, ``saturate``, or
  ``sequential``), apart from the subscribers so its round trips do not
  queue behind their reads.

The binary is built with the system compiler (``$CC``, gcc or cc) into
``build/bench/fastload`` and rebuilt when the source is newer.

Command line: the same options as ``loadgen.py`` (plus ``--push-inflight``),
one JSON report on stdout::

    python loadtest/fastload.py --subscribe-url 'http://127.0.0.1:8080/events?uid={uid}' \\
        --push-url http://127.0.0.1:8080/push --subscribers 10000 --rate 20 --duration 10
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = HERE / "fastload.c"
BINARY = ROOT / "build" / "bench" / "fastload"
sys.path.insert(0, str(HERE))

from loadgen import Config, Hook, assemble_report, raise_nofile  # noqa: E402

LINE_LIMIT = 1 << 26  # a result line carries the latency histogram (up to 70,001 buckets)


def build_fastload(out: Path = BINARY) -> Path:
    """Compile fastload.c once (and again when the source changes); return the binary's path."""
    if not out.exists() or out.stat().st_mtime < SOURCE.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or "cc"
        tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
        subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE)], check=True)
        os.replace(tmp, out)  # atomic: a concurrent run never executes a half-written binary
    return out


def command(
    binary: Path, cfg: Config, deadline: float, sub_range: tuple[int, int] | None, publisher: bool
) -> list[str]:
    """The fastload command line for one process of this run (stdin-controlled)."""
    a, b = sub_range or (0, 0)
    cmd = [
        str(binary),
        "--control",
        "--deadline",
        f"{deadline:.3f}",
        "--subscribe-url",
        cfg.subscribe_url,
        "--push-url",
        cfg.push_url,
        "--subscribers",
        str(cfg.subscribers),
        "--sub-range",
        f"{a}:{b}",
        "--uid-offset",
        str(cfg.uid_offset),
        "--duration",
        str(cfg.duration),
        "--mode",
        cfg.mode,
        "--uids-per-push",
        str(cfg.uids_per_push),
        "--events-per-push",
        str(cfg.events_per_push),
        "--event-type",
        cfg.event_type,
        "--sources",
        str(cfg.sources),
        "--connect-concurrency",
        str(cfg.connect_concurrency),
        "--connect-timeout",
        str(cfg.connect_timeout),
        "--latency-every",
        str(cfg.latency_every),
    ]
    if not publisher:
        return [*cmd, "--no-publisher"]
    cmd += ["--rate", str(cfg.rate), "--push-conns", str(cfg.push_conns)]
    cmd += ["--push-inflight", str(max(1, cfg.push_inflight))]
    if cfg.sequential:
        cmd.append("--sequential")
    if cfg.saturate:
        cmd.append("--saturate")
    for h in cfg.push_headers:
        cmd += ["--push-header", h]
    return cmd


class FastloadProcess:
    """One fastload process: JSON lines out, command lines in."""

    def __init__(self, proc: asyncio.subprocess.Process, what: str) -> None:
        self.proc = proc
        self.what = what

    @classmethod
    async def start(cls, cmd: list[str], what: str) -> FastloadProcess:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=LINE_LIMIT
        )
        return cls(proc, what)

    async def line(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            return None
        return json.loads(raw) if raw else None

    async def expect(self, kind: str, timeout: float) -> dict[str, Any] | None:
        """The next line of this type (None on timeout or exit)."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            msg = await self.line(left)
            if msg is None:
                return None
            if msg.get("type") == kind:
                return msg
        return None

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
            self.proc.stdin.write(cmd.encode() + b"\n")

    async def finish(self, timeout: float) -> dict[str, Any] | None:
        self.send("finish")
        res = await self.expect("result", timeout)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        return res

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


async def run_fast_load(cfg: Config, hook: Hook | None = None) -> dict[str, Any]:
    """``loadgen.run_load`` with the subscribers and the publisher in fastload processes."""

    async def call(name: str) -> None:
        if hook is not None:
            r = hook(name)
            if asyncio.iscoroutine(r):
                await r

    binary = build_fastload()
    limit = raise_nofile()
    per_proc = max(1, limit - 200)
    procs = max(1, math.ceil(cfg.subscribers / per_proc)) if cfg.subscribers > 0 else 0
    bounds = [(cfg.subscribers * k // procs, cfg.subscribers * (k + 1) // procs) for k in range(procs)]
    deadline = time.time() + cfg.connect_timeout + cfg.warmup + cfg.duration + cfg.drain + 90
    subs: list[FastloadProcess] = []
    pub: FastloadProcess | None = None
    try:
        t0 = time.perf_counter()
        for a, b in bounds:
            subs.append(
                await FastloadProcess.start(command(binary, cfg, deadline, (a, b), False), f"{a}:{b}")
            )
        for s in subs:
            if await s.expect("ready", cfg.connect_timeout + 30) is None:
                raise RuntimeError(f"fastload subscribers {s.what} did not get ready")
        connect_s = time.perf_counter() - t0
        await call("connected")
        if cfg.rate > 0 or cfg.sequential or cfg.saturate:
            pub = await FastloadProcess.start(command(binary, cfg, deadline, None, True), "publisher")
            if await pub.expect("ready", 30) is None:
                raise RuntimeError("fastload publisher did not get ready")
        await asyncio.sleep(cfg.warmup)
        await call("start")
        for s in subs:
            s.send("start")
        w0 = time.perf_counter()
        if pub is not None:
            pub.send("start")
            # the window, the answers' wait (5 s at most) and a margin
            if await pub.expect("published", cfg.duration + 5.0 + 5.0 + 30) is None:
                raise RuntimeError("fastload publisher did not finish its window")
        else:
            await asyncio.sleep(cfg.duration)
        window = time.perf_counter() - w0
        for s in subs:
            s.send("stop")
        await call("stop")
        await asyncio.sleep(cfg.drain)
        await call("drained")
        results: list[dict[str, Any]] = []
        for s in subs:
            r = await s.finish(30.0)
            results.append(
                r
                if r is not None
                else {
                    "error_samples": [f"fastload subscribers {s.what} did not report"],
                    "window": {},
                    "events": 0,
                }
            )
        pub_result: dict[str, Any] | None = None
        if pub is not None:
            r = await pub.finish(30.0)
            if r is None:
                raise RuntimeError("fastload publisher did not report")
            pub_result = r["publisher"]
    finally:
        for p in [*subs, *([pub] if pub is not None else [])]:
            p.kill()
    report = assemble_report(cfg, procs, connect_s, window, results, pub_result)
    report["load"] = "c"
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    from loadgen import parse_args

    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument(
        "--push-inflight", type=int, default=16, help="pipelined requests per push connection (default 16)"
    )
    cfg = parse_args(argv, ap)
    report = asyncio.run(run_fast_load(cfg))
    print(json.dumps(report, indent=2))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
