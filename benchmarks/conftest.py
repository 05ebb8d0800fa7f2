"""Shared workloads and the speed-up regression guard for the micro-benchmarks.

Two kinds of test live in this folder:

* pytest-benchmark tests (the ``benchmark`` fixture), one per implementation,
  grouped so that the compiled core and its plain-Python counterparts are
  reported side by side: the figures in ``RESULTS.md`` come from these.
* guard tests (the ``speedup`` fixture below), which fail when the compiled
  code's advantage over the plain-Python code shrinks.

The guard never looks at absolute times: machines differ and these ones are
shared.  It times the compiled and the plain-Python version of the same work
in alternating short rounds of the same run (so a slow spell of the machine
hits both), takes each side's median time per call, and compares the ratio of
the two medians (reference / compiled) with the one stored in
``benchmarks/baseline.json``: the test fails when

    ratio < baseline * (1 - MARGIN)          MARGIN = 0.40

(40%: on a shared two-core machine single ratios move by up to 20-30%; a real
regression, such as a per-byte Python call in the parser, costs far more).
Rounds are short (~1 ms a side) and many, so that the medians come from
rounds the scheduler did not interrupt even when the machine is overloaded
(a median of per-round *ratios* would need both sides of a round undisturbed).
A ratio below its floor is measured again, up to three attempts in all, and
the best attempt counts: a regression fails every attempt, a busy spell of the
machine rarely does.  A refresh runs all three and records the middle one.
``SSE_FAST_SPEEDUP_MARGIN=0.5`` loosens it for one run.

Refresh the baseline after an intended change (on a quiet machine), and
commit the file::

    SSE_FAST_UPDATE_BASELINE=1 pytest benchmarks

Only the ratios measured in that run are replaced; the others are kept, so
``SSE_FAST_UPDATE_BASELINE=1 pytest benchmarks -k hub`` refreshes one entry.

Adding a ratio: write a test that asks for ``speedup`` and calls it with a
new name and two zero-argument callables doing the same work, then refresh
the baseline as above::

    def test_fanout_speedup(speedup):
        speedup("hub_fanout_1000", compiled=lambda: ..., reference=lambda: ...)
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from sse_fast._core import encode_event

BASELINE_PATH = Path(__file__).with_name("baseline.json")
MARGIN = float(os.environ.get("SSE_FAST_SPEEDUP_MARGIN", "0.40"))
UPDATE_BASELINE = os.environ.get("SSE_FAST_UPDATE_BASELINE") == "1"

ROUNDS = 101  # alternating rounds per ratio (odd: the median is one of them)
SAMPLE_SECONDS = 0.001  # each side of a round runs about this long
ATTEMPTS = 3  # a ratio below its floor is measured again, up to this many times


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------

EVENT_COUNT = 2000
CHUNK_SIZE = 4096  # what one socket read typically hands the client


def make_events(count: int = EVENT_COUNT) -> list[tuple[str, str, str]]:
    """``(data, event type, id)`` triples shaped like the push API's traffic: compact JSON."""
    out = []
    for i in range(count):
        data = orjson.dumps(
            {
                "uid": str(1000 + i % 97),
                "kind": "order.updated",
                "order": {"id": i, "status": "shipped", "items": [1, 2, 3]},
            }
        ).decode()
        out.append((data, ("order", "chat", "presence")[i % 3], f"1732500000-{i}"))
    return out


@pytest.fixture(scope="session")
def events() -> list[tuple[str, str, str]]:
    return make_events()


@pytest.fixture(scope="session")
def stream(events: list[tuple[str, str, str]]) -> bytes:
    """The events framed, with a heartbeat every 50 events, as a client receives them."""
    parts = []
    for n, (data, event, id) in enumerate(events):
        if n % 50 == 0:
            parts.append(b": heartbeat\n\n")
        parts.append(encode_event(data, event, id))
    return b"".join(parts)


@pytest.fixture(scope="session")
def chunks(stream: bytes) -> list[bytes]:
    return [stream[i : i + CHUNK_SIZE] for i in range(0, len(stream), CHUNK_SIZE)]


# --------------------------------------------------------------------------
# The speed-up guard
# --------------------------------------------------------------------------


@dataclass
class Speedup:
    name: str
    ratio: float  # reference_ns / compiled_ns
    compiled_ns: float  # median time of one compiled call
    reference_ns: float  # median time of one reference call
    baseline: float | None  # the stored ratio (None when there is none yet)
    floor: float | None  # baseline * (1 - MARGIN)


def _run(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start


def _calls_per_sample(fn: Callable[[], object]) -> int:
    n = 1
    while True:
        elapsed = _run(fn, n)
        if elapsed >= SAMPLE_SECONDS / 4:
            return max(1, round(n * SAMPLE_SECONDS / elapsed))
        n *= 4


def _measure_once(
    compiled: Callable[[], object], reference: Callable[[], object], rounds: int
) -> tuple[float, float, float]:
    """``(reference median / compiled median, compiled median, reference median)`` in seconds per call."""
    gc_was_enabled = gc.isenabled()
    try:
        compiled(), reference()  # warm up (imports, caches)
        n_compiled = _calls_per_sample(compiled)
        n_reference = _calls_per_sample(reference)
        gc.collect()
        gc.disable()
        compiled_times, reference_times = [], []
        for r in range(rounds):
            # Alternate which side goes first, so neither always runs on a warm cache.
            if r % 2:
                reference_times.append(_run(reference, n_reference) / n_reference)
                compiled_times.append(_run(compiled, n_compiled) / n_compiled)
            else:
                compiled_times.append(_run(compiled, n_compiled) / n_compiled)
                reference_times.append(_run(reference, n_reference) / n_reference)
    finally:
        if gc_was_enabled:
            gc.enable()
    compiled_median = statistics.median(compiled_times)
    reference_median = statistics.median(reference_times)
    return reference_median / compiled_median, compiled_median, reference_median


def _load_baseline() -> dict[str, Any]:
    if not BASELINE_PATH.exists():
        return {}
    ratios: dict[str, Any] = json.loads(BASELINE_PATH.read_text())["ratios"]
    return ratios


class SpeedupRegistry:
    """What the session measured; written back to the baseline in update mode."""

    def __init__(self) -> None:
        self.measured: dict[str, Speedup] = {}
        self.baseline = _load_baseline()

    def measure(
        self,
        name: str,
        compiled: Callable[[], object],
        reference: Callable[[], object],
        *,
        minimum: float | None = None,
        rounds: int = ROUNDS,
    ) -> Speedup:
        if name in self.measured:
            raise ValueError(f"speedup {name!r} measured twice in one session")
        entry = self.baseline.get(name)
        baseline = float(entry["ratio"]) if entry else None
        floor = baseline * (1 - MARGIN) if baseline is not None else None
        attempts: list[Speedup] = []
        for _ in range(ATTEMPTS):
            ratio, compiled_s, reference_s = _measure_once(compiled, reference, rounds)
            attempts.append(Speedup(name, ratio, compiled_s * 1e9, reference_s * 1e9, baseline, floor))
            if not UPDATE_BASELINE and self._passes(attempts[-1], minimum):
                break
        # A refresh records the middle of its attempts; a check keeps its best one.
        attempts.sort(key=lambda a: a.ratio)
        result = attempts[len(attempts) // 2] if UPDATE_BASELINE else attempts[-1]
        self.measured[name] = result
        self.check(result, minimum, [a.ratio for a in attempts])
        return result

    @staticmethod
    def _passes(result: Speedup, minimum: float | None) -> bool:
        if minimum is not None and result.ratio < minimum:
            return False
        return result.floor is not None and result.ratio >= result.floor

    def check(self, result: Speedup, minimum: float | None, ratios: list[float]) -> None:
        figures = (
            f"compiled {result.compiled_ns:,.0f} ns, plain Python {result.reference_ns:,.0f} ns per call; "
            f"ratios of the attempts: {', '.join(f'{r:.2f}x' for r in ratios)}"
        )
        if minimum is not None and result.ratio < minimum:
            pytest.fail(
                f"{result.name}: compiled code is only {result.ratio:.2f}x faster than plain Python "
                f"({figures}); the target is at least {minimum}x"
            )
        if UPDATE_BASELINE:
            return
        if result.baseline is None or result.floor is None:
            pytest.fail(
                f"{result.name}: no baseline ratio in {BASELINE_PATH.name} (measured {result.ratio:.2f}x); "
                "record one with: SSE_FAST_UPDATE_BASELINE=1 pytest benchmarks"
            )
        if result.ratio < result.floor:
            pytest.fail(
                f"{result.name}: speed-up regressed to {result.ratio:.2f}x ({figures}); baseline "
                f"{result.baseline:.2f}x, floor {result.floor:.2f}x (margin {MARGIN:.0%}). If the change is "
                "intended, refresh: SSE_FAST_UPDATE_BASELINE=1 pytest benchmarks"
            )

    def write_baseline(self) -> None:
        try:
            document = json.loads(BASELINE_PATH.read_text())
        except FileNotFoundError:
            document = {}
        ratios = document.get("ratios", {})
        recorded = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        }
        for name, result in self.measured.items():
            ratios[name] = {
                "ratio": round(result.ratio, 2),
                "compiled_ns": round(result.compiled_ns),
                "reference_ns": round(result.reference_ns),
                **recorded,
            }
        document = {
            "about": (
                "Speed-up of the compiled core over plain Python (ratio of median times, same run), "
                "guarded by benchmarks/conftest.py: a run fails below ratio * (1 - margin). "
                "Times are for information only. Refresh: SSE_FAST_UPDATE_BASELINE=1 pytest benchmarks"
            ),
            "ratios": dict(sorted(ratios.items())),
        }
        BASELINE_PATH.write_text(json.dumps(document, indent=2) + "\n")


_registry: SpeedupRegistry | None = None


@pytest.fixture(scope="session")
def _speedup_registry() -> Iterator[SpeedupRegistry]:
    global _registry
    _registry = SpeedupRegistry()
    yield _registry
    if UPDATE_BASELINE and _registry.measured:
        _registry.write_baseline()


@pytest.fixture
def speedup(_speedup_registry: SpeedupRegistry) -> Callable[..., Speedup]:
    """``speedup(name, compiled=..., reference=..., minimum=None)``: measure, record, guard.

    ``compiled`` and ``reference`` are zero-argument callables doing the same
    unit of work.  Returns the :class:`Speedup`; fails the test when the ratio
    is below the baseline's floor (or below ``minimum``, a target that holds
    whatever the baseline says).
    """
    return _speedup_registry.measure


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _registry is None or not _registry.measured:
        return
    write = terminalreporter.write_line
    terminalreporter.section("speed-up vs plain Python (ratio of median times, alternating rounds)")
    for result in _registry.measured.values():
        base = "no baseline"
        if result.baseline is not None and result.floor is not None:
            base = f"baseline {result.baseline:.2f}x, floor {result.floor:.2f}x"
        write(
            f"{result.name:<24} {result.ratio:6.2f}x   compiled {result.compiled_ns:>11,.0f} ns"
            f"   python {result.reference_ns:>11,.0f} ns   ({base})"
        )
    if UPDATE_BASELINE:
        write(f"baseline written to {BASELINE_PATH}")
