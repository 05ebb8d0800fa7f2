"""Smoke test of loadtest/loadgen.py against the raw uvloop peer in a subprocess.

Twenty subscribers, a two-second broadcast at 20/s: every published event
must reach every subscriber exactly once, with no error and no disconnect.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "loadtest" / "loadgen.py"
PEER = ROOT / "benchmarks" / "peers" / "raw_uvloop.py"

pytest.importorskip("uvloop")


def _load_loadgen() -> Any:
    spec = importlib.util.spec_from_file_location("loadgen", LOADGEN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["loadgen"] = module
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def peer_port() -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(PEER), "--port", str(port), "--heartbeat", "0.5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("peer did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_loadgen_counts_add_up(peer_port: int) -> None:
    loadgen = _load_loadgen()
    subscribers, rate, duration = 20, 20.0, 2.0
    cfg = loadgen.Config(
        subscribe_url=f"http://127.0.0.1:{peer_port}/events?uid={{uid}}",
        push_url=f"http://127.0.0.1:{peer_port}/push",
        subscribers=subscribers,
        rate=rate,
        duration=duration,
        warmup=0.2,
        drain=0.5,
        connect_timeout=10,
    )
    seen: list[str] = []
    report = asyncio.run(asyncio.wait_for(loadgen.run_load(cfg, seen.append), 20))

    assert seen == ["connected", "start", "stop", "drained"]
    assert report["established"] == subscribers
    assert report["errors"] == 0, report["error_samples"]
    assert report["disconnects"] == 0
    pub = report["publisher"]
    assert pub["sent"] == pub["acked"] == int(rate * duration)
    assert report["expected_events"] == pub["acked"] * subscribers
    assert report["events"] == report["expected_events"]
    assert report["delivered_ratio"] == 1.0
    assert report["lat_count"] == report["events"]
    lat = report["latency_ms"]
    assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 2000
    # one heartbeat on subscribe plus about one per 0.5 s afterwards
    assert report["heartbeats"] >= subscribers * 2


def test_dechunking_and_percentiles() -> None:
    loadgen = _load_loadgen()
    counters = loadgen.Counters()
    heads: list[bool] = []
    proto = loadgen.SubscriberProtocol(counters, True, heads.append)
    t = time.time()
    frame = f'id: 1\nevent: tick\ndata: {{"t":{t},"n":1}}\n\n'.encode()
    body = b"%x\r\n%s\r\n" % (len(frame), frame) + b"%x\r\n%s\r\n" % (len(b": hb\n\n"), b": hb\n\n")
    stream = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body * 3
    for i in range(0, len(stream), 7):  # split everywhere, including inside chunk-size lines
        proto.data_received(stream[i : i + 7])
    assert heads == [True]
    assert counters.events == 3
    assert proto.parser.comments == 3
    assert counters.parse_errors == 0
    assert loadgen.percentiles({5: 98, 20_000: 2}) == {"p50": 0.06, "p90": 0.06, "p99": 10001.0}
