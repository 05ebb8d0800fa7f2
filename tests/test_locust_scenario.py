"""The locust scenario runs headless against a real server and judges it with its thresholds."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Serve

LOCUSTFILE = Path(__file__).resolve().parent.parent / "loadtest" / "locustfile.py"


def run_locust(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "-H",
            url,
            "-u",
            "12",
            "-r",
            "12",
            "--run-time",
            "6s",
            "--stop-timeout",
            "3",
            "--uids",
            "5",
            "--stay-min",
            "1",
            "--stay-max",
            "2",
            "--publishers",
            "2",
            "--push-rate",
            "5",
            "--csv",
            str(out / "sse"),
            "--only-summary",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.engines("granian")
def test_browsers_and_publishers_mix_passes_its_thresholds(serve: Serve, tmp_path: Path) -> None:
    server = serve("--store", "memory://")
    result = run_locust(server.url, tmp_path, "--max-event-p95", "2000", "--max-push-p95", "1000")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["Name"]: row for row in csv.DictReader((tmp_path / "sse_stats.csv").open())}
    assert int(rows["SSE event"]["Request Count"]) > 0
    assert int(rows["/events (connect)"]["Request Count"]) >= 12
    assert int(rows["SSE resent"]["Request Count"]) > 0  # reconnected with Last-Event-ID
    assert int(rows["POST /push unicast"]["Request Count"]) > 0
    assert int(rows["POST /push broadcast"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0


@pytest.mark.engines("granian")
def test_an_impossible_threshold_fails_the_run(serve: Serve, tmp_path: Path) -> None:
    server = serve("--store", "memory://")
    result = run_locust(server.url, tmp_path, "--max-push-p95", "0.001")
    assert result.returncode == 1
    assert "threshold failed" in result.stderr
