"""The end-to-end guard (``e2e_guard.py``): real servers against the C floor, and the judging itself."""

from __future__ import annotations

import os
from typing import Any

import pytest

from benchmarks import e2e_guard
from benchmarks.e2e_guard import FLOOR, best_of, judge, ratios

UPDATE_BASELINE = os.environ.get("SSE_FAST_UPDATE_BASELINE") == "1"


@pytest.mark.timeout(900)  # up to three measurements per engine
def test_the_real_path_keeps_its_distance_from_the_floor() -> None:
    """1,000 subscribers, a sequential publisher and b20, on both engines beside the C floor (~1 min)."""
    verdict = e2e_guard.guard(update=UPDATE_BASELINE)
    print(verdict.report())
    assert not verdict.failures, "end-to-end regression against the C floor:\n" + "\n".join(verdict.failures)


def record(server: str, scenario: str, cpu: float, p99: float, push: float, delivered: float = 1.0) -> Any:
    return {
        "server": server,
        "scenario": scenario,
        "cpu_us_per_event": cpu,
        "latency_ms": {"p99": p99},
        "push_rtt_ms": {"p99": push},
        "delivered_ratio": delivered,
    }


FLOOR_RUN = [record(FLOOR, "seqpub", 5.0, 10.0, 2.0), record(FLOOR, "b20", 5.0, 20.0, 2.0)]


def test_ratios_are_taken_against_the_floor_of_the_same_step() -> None:
    measured = ratios([*FLOOR_RUN, record("native", "seqpub", 10.0, 20.0, 1.0)])
    assert measured == {
        "native/seqpub/cpu_us_per_event": 2.0,
        "native/seqpub/delivery_p99_ms": 2.0,
        "native/seqpub/push_p99_ms": 0.5,
    }


def test_the_guard_passes_at_the_baseline_and_fails_past_the_margin() -> None:
    baseline = {
        "native/b20/cpu_us_per_event": 2.0,
        "native/b20/delivery_p99_ms": 2.0,
        "native/b20/push_p99_ms": 1.0,
    }
    at_baseline = [*FLOOR_RUN, record("native", "b20", 10.0, 40.0, 2.0)]
    assert judge(at_baseline, ratios(at_baseline), baseline).failures == []
    slower = [*FLOOR_RUN, record("native", "b20", 16.0, 40.0, 2.0)]  # 3.2x the floor's CPU: ceiling 3.0x
    verdict = judge(slower, ratios(slower), baseline)
    assert verdict.failures == ["native/b20/cpu_us_per_event: 3.20x the floor, baseline 2.00x, ceiling 3.00x"]
    assert verdict.failing_engines == {"native"}


def test_a_push_ratio_has_a_ceiling_of_at_least_the_least_ceiling() -> None:
    """A push round trip of 0.3x the floor's is noise for a baseline of 0.1x; 1x is a publisher
    that waits for the pass."""
    baseline = {
        "native/b20/cpu_us_per_event": 2.0,
        "native/b20/delivery_p99_ms": 2.0,
        "native/b20/push_p99_ms": 0.1,
    }
    noisy = [*FLOOR_RUN, record("native", "b20", 10.0, 40.0, 0.6)]  # 0.3x the floor's push p99
    assert judge(noisy, ratios(noisy), baseline).failures == []
    waiting = [*FLOOR_RUN, record("native", "b20", 10.0, 40.0, 2.2)]  # 1.1x
    assert judge(waiting, ratios(waiting), baseline).failures == [
        "native/b20/push_p99_ms: 1.10x the floor, baseline 0.10x, ceiling 0.60x"
    ]


def test_an_engine_that_loses_events_fails_whatever_its_speed() -> None:
    lossy = [*FLOOR_RUN, record("sse_fast", "seqpub", 5.0, 10.0, 2.0, delivered=0.98)]
    verdict = judge(lossy, ratios(lossy), {k: 9.0 for k in ratios(lossy)})
    assert verdict.failures == ["sse_fast/seqpub: delivered 0.98 of the events"]


def test_a_ratio_without_a_baseline_fails_and_says_how_to_record_one() -> None:
    run = [*FLOOR_RUN, record("native", "seqpub", 5.0, 10.0, 2.0)]
    failures = judge(run, ratios(run), {}).failures
    assert len(failures) == 3 and all("no baseline" in f for f in failures)


def test_a_measurement_again_keeps_the_better_run_of_each_ratio() -> None:
    assert best_of({"a": 3.0, "b": 1.0}, {"a": 2.0, "b": 4.0}) == {"a": 2.0, "b": 1.0}
