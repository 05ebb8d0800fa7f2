"""The failover benchmark (``failover.py``) at a tiny scale, so that it keeps working: 200 subscribers of
a killed node resume through haproxy on the survivor, with and without the ``retry:`` jitter (~20 s)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).with_name("failover.py")
SUBSCRIBERS = 200
RETRY_MS = 1000


def needed(program: str) -> str:
    """The path of ``program``; fail under CI without it (the benchmark would not be tried), else skip."""
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if found is None:
        message = f"{program} is not installed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def cores() -> list[str]:
    """The nodes on one core and the load on another, when this process may use two."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return ["--server-core", "-1", "--load-core", "-1"]
    return ["--server-core", str(allowed[0]), "--load-core", str(allowed[1])]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``--compare`` run: jitter 0.5, then 0."""
    work = tmp_path_factory.mktemp("failover")
    argv = [
        sys.executable,
        str(SCRIPT),
        "--subscribers",
        str(SUBSCRIBERS),
        "--per-process",
        str(SUBSCRIBERS // 2),
        "--retry-ms",
        str(RETRY_MS),
        "--rate",
        "10",
        "--before",
        "1",
        "--after",
        "1",
        "--cpu-window",
        "2",
        "--compare",
        "--deadline",
        "40",
        "--haproxy",
        needed("haproxy"),
        "--redis-server",
        needed("redis-server"),
        "--sse-fast",
        str(Path(sys.executable).with_name("sse-fast")),
        "--log-dir",
        str(work / "logs"),
        "--json",
        str(work / "report.json"),
        *cores(),
    ]
    needed("taskset")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=100)
    output = f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert (work / "report.json").exists(), f"no report ({output})"
    result: dict[str, Any] = json.loads((work / "report.json").read_text())
    print(done.stdout)
    return result


@pytest.mark.timeout(120)
def test_every_resume_is_exact(report: dict[str, Any]) -> None:
    """Every subscriber got every push once, in order, and no reset, with the jitter and in the storm."""
    assert [run["retry_jitter"] for run in report["runs"]] == [0.5, 0.0]
    for run in report["runs"]:
        assert run["subscribers"] == SUBSCRIBERS
        assert run["streams_on_node_a_before_kill"] == SUBSCRIBERS, "balance first: everyone starts on a"
        assert run["pushes_before_kill"] >= 3 and run["pushes"] > run["pushes_before_kill"]
        exactness = run["exactness"]
        assert exactness["examples"] == []
        assert exactness["all_exact"] and exactness["exact"] == SUBSCRIBERS
        assert exactness["drained_to_last_push"]
        assert (
            exactness["duplicates"],
            exactness["missing"],
            exactness["extra"],
            exactness["out_of_order"],
            exactness["subscribers_with_reset"],
        ) == (0, 0, 0, 0, 0)
        assert len(exactness["epochs"]) == 1
        assert run["survivor"]["connections"] == SUBSCRIBERS
        assert run["survivor"]["cpu_s"] > 0


@pytest.mark.timeout(120)
def test_the_jitter_spreads_the_resumes_and_zero_is_one_storm(report: dict[str, Any]) -> None:
    """With jitter each stream had its own ``retry:`` within ±50 %; without, all had the same one."""
    spread, storm = report["runs"]
    assert RETRY_MS * 0.5 <= spread["retry_ms_seen"]["min"] < spread["retry_ms_seen"]["max"] <= RETRY_MS * 1.5
    assert storm["retry_ms_seen"] == {"min": RETRY_MS, "max": RETRY_MS}
    for run in (spread, storm):
        assert run["resume_after_disconnect_ms"]["p50"] >= run["retry_ms_seen"]["min"]
        assert run["last_resumed_s"] is not None
    # Everyone reconnects within one 100 ms bin in the storm; the jitter spreads them over ~1 s.
    assert storm["peak_reconnects_per_100ms"] > spread["peak_reconnects_per_100ms"]
