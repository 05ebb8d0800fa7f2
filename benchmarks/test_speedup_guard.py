"""The speed-up guard itself: it must fail on a regression and pass otherwise.

These use their own registry with a made-up baseline, so they neither read
nor write ``baseline.json``.
"""

from __future__ import annotations

from typing import Any

import pytest


def busy(n: int) -> Any:
    return lambda: sum(range(n))


@pytest.fixture
def registry(_speedup_registry: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    cls = type(_speedup_registry)
    # Judge against the baseline even in a SSE_FAST_UPDATE_BASELINE=1 run.
    monkeypatch.setitem(cls.check.__globals__, "UPDATE_BASELINE", False)
    fresh = cls()
    fresh.baseline = {"fast": {"ratio": 4.0}}
    return fresh


def test_guard_passes_at_the_baseline(registry: Any) -> None:
    result = registry.measure("fast", compiled=busy(100), reference=busy(400), rounds=5)
    assert result.floor == pytest.approx(2.4)
    assert result.ratio > result.floor


def test_guard_fails_below_the_floor(registry: Any) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"fast: speed-up regressed to .*floor 2\.40x"):
        registry.measure("fast", compiled=busy(400), reference=busy(400), rounds=5)


def test_guard_fails_without_a_baseline(registry: Any) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"no baseline ratio .* SSE_FAST_UPDATE_BASELINE=1"):
        registry.measure("new", compiled=busy(100), reference=busy(400), rounds=3)


def test_guard_enforces_a_minimum_whatever_the_baseline(registry: Any) -> None:
    registry.baseline = {"fast": {"ratio": 1.0}}
    with pytest.raises(pytest.fail.Exception, match=r"the target is at least 50x"):
        registry.measure("fast", compiled=busy(100), reference=busy(400), minimum=50, rounds=3)


def test_a_name_is_measured_once_per_session(registry: Any) -> None:
    registry.measure("fast", compiled=busy(100), reference=busy(400), rounds=3)
    with pytest.raises(ValueError, match="measured twice"):
        registry.measure("fast", compiled=busy(100), reference=busy(400), rounds=3)
