"""Many subscribers resuming at once on one node with a ``redis://`` store: do they all get their replay?

Found by ``failover.py`` at 10,000 subscribers: the survivor ended streams it had
just opened and answered a push 503 ("store unavailable") while Redis was up.
This is the smallest form of it: one native node on its own ``redis-server``,
20 pushes, then ``--resumes`` subscribers all sending ``Last-Event-ID`` of the
first push at the same moment, while 10 more pushes go in.  Each subscriber
must receive every event accepted after its id, once and in order (the 19
before, then those of the 10 new ones answered 200); the script counts those
that did, those whose stream the server ended first, those left open with
events missing, and the pushes' statuses, and prints the node's warnings::

    python benchmarks/resume_burst.py --resumes 1000

On redis-py 8.1 (whose asyncio pool opens at most 100 connections and raises
``MaxConnectionsError`` at once past that), 1000 resumes gave: 100 served,
900 streams ended by the server, one push 503, and the node logged ``store unavailable,
pushes answer 503 ... (MaxConnectionsError: Too many connections)``.  Exit status 1
when any stream was ended early or any push refused.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
from own_redis import free_port, redis_server_argv

from sse_fast import EventParser

HOST = "127.0.0.1"
BEFORE = 20
"""Pushes before the resumes: each subscriber resumes after the first, so 19 are replayed."""
DURING = 10
"""Pushes while the resumes go on: each subscriber must get these live (or replayed) too."""


class Resumer:
    """One subscriber: resumes after ``last_id`` and keeps every tick's seq until it is told to stop."""

    def __init__(self, port: int, uid: str, last_id: str) -> None:
        self.port = port
        self.uid = uid
        self.last_id = last_id
        self.seqs: list[int] = []
        self.ended: str | None = None
        """Why the stream ended before we stopped it (None: still open)."""

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection(HOST, self.port)
        writer.write(f"GET /events?uid={self.uid} HTTP/1.0\r\nLast-Event-ID: {self.last_id}\r\n\r\n".encode())
        parser = EventParser()
        head = b""
        streaming = False
        try:
            while data := await reader.read(65536):
                if not streaming:
                    head += data
                    if b"\r\n\r\n" not in head:
                        continue
                    status, data = head.split(b"\r\n\r\n", 1)
                    if status.split(b" ")[1:2] != [b"200"]:
                        self.ended = f"answered {status.split(b' ')[1].decode()}"
                        return
                    streaming = True
                for event in parser.feed(data):
                    if event.event == "tick":
                        self.seqs.append(int(event.id.rpartition("-")[2]))
            self.ended = "ended by the server"
        finally:
            writer.close()


async def burst(args: argparse.Namespace, port: int) -> tuple[Counter[str], list[int]]:
    """Push, resume everyone at once while pushing on, then judge each subscriber against the pushes."""
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as client:
        accepted: list[str] = []
        statuses: list[int] = []

        async def push(n: int) -> None:
            answer = await client.post("/push", json={"events": [{"event": "tick", "data": {"n": n}}]})
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                accepted.append(answer.json()["data"]["ids"][0])

        for n in range(BEFORE):
            await push(n)
        resumers = [Resumer(port, f"u{i}", accepted[0]) for i in range(args.resumes)]
        tasks = [asyncio.create_task(r.run()) for r in resumers]
        for n in range(BEFORE, BEFORE + DURING):
            await push(n)
            await asyncio.sleep(0.05)
        wanted = [int(event_id.rpartition("-")[2]) for event_id in accepted[1:]]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(r.ended is None and r.seqs != wanted for r in resumers):
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    outcome: Counter[str] = Counter()
    for r in resumers:
        if r.seqs == wanted:
            outcome["every event once, in order"] += 1
        elif r.ended is not None:
            outcome[r.ended] += 1
        else:
            outcome["open, but events missing, doubled or out of order"] += 1
    return outcome, statuses[BEFORE:]


def wait_ready(port: int, node: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and node.poll() is None:
        try:
            if httpx.get(f"http://{HOST}:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the node did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resumes", type=int, default=1000)
    parser.add_argument("--sse-fast", default=str(Path(sys.executable).with_name("sse-fast")))
    parser.add_argument("--redis-server", default="redis-server")
    args = parser.parse_args()
    redis_port, port = free_port(), free_port()
    log = Path(tempfile.mkdtemp(prefix="resume-burst-")) / "node.log"
    redis = subprocess.Popen(
        redis_server_argv(redis_port, args.redis_server),
        stdout=subprocess.DEVNULL,
    )
    store = f"redis://{HOST}:{redis_port}/0?prefix=burst-{uuid.uuid4().hex[:8]}"
    serve = [
        args.sse_fast,
        "serve",
        "--engine",
        "native",
        "--host",
        HOST,
        "--port",
        str(port),
        "--store",
        store,
    ]
    with log.open("wb") as out:
        node = subprocess.Popen(
            [*serve, "--max-connections", "25000", "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(port, node)
        outcome, statuses = asyncio.run(burst(args, port))
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(15)
        redis.terminate()
        redis.wait(5)
    print(f"{args.resumes} resumes at once: {dict(outcome)}; pushes meanwhile answered {statuses}")
    print("\n".join(line for line in log.read_text().splitlines() if "WARNING" in line or "ERROR" in line))
    return 0 if outcome["every event once, in order"] == args.resumes and set(statuses) == {200} else 1


if __name__ == "__main__":
    sys.exit(main())
