"""The circuit breaker state machine, against a manual clock."""

from __future__ import annotations

import pytest

from core.errors import CircuitOpen
from core.managers.hub import BreakerState, CircuitBreaker
from tests.unit.hub_fakes import ManualClock


def _breaker(clock: ManualClock, changes: list[BreakerState] | None = None) -> CircuitBreaker:
    return CircuitBreaker(
        "stt",
        failure_threshold=3,
        reset_s=5.0,
        clock=clock,
        on_change=None if changes is None else changes.append,
    )


def test_opens_after_threshold_consecutive_failures() -> None:
    clock, changes = ManualClock(), []
    b = _breaker(clock, changes)
    for _ in range(2):
        b.acquire()
        b.failure()
    assert b.state is BreakerState.CLOSED
    b.acquire()
    b.failure()
    assert b.state is BreakerState.OPEN
    assert changes == [BreakerState.OPEN]
    with pytest.raises(CircuitOpen, match=r"next probe in 5\.00 s"):
        b.acquire()


def test_success_resets_the_count() -> None:
    b = _breaker(ManualClock())
    for outcome in ("f", "f", "s", "f", "f"):
        b.acquire()
        b.failure() if outcome == "f" else b.success()
    assert b.state is BreakerState.CLOSED
    assert b.consecutive_failures == 2


def test_half_open_after_reset_time_admits_one_probe() -> None:
    clock, changes = ManualClock(), []
    b = _breaker(clock, changes)
    for _ in range(3):
        b.failure()
    clock.advance(4.9)
    assert b.state is BreakerState.OPEN
    clock.advance(0.1)
    assert b.state is BreakerState.HALF_OPEN
    b.acquire()  # the probe
    with pytest.raises(CircuitOpen, match="probe"):
        b.acquire()
    b.success()
    assert b.state is BreakerState.CLOSED
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
    b.acquire()


def test_failed_probe_reopens_for_a_full_reset_period() -> None:
    clock = ManualClock()
    b = _breaker(clock)
    for _ in range(3):
        b.failure()
    clock.advance(5.0)
    b.acquire()
    b.failure()
    assert b.state is BreakerState.OPEN
    clock.advance(4.0)
    assert b.state is BreakerState.OPEN
    clock.advance(1.0)
    assert b.state is BreakerState.HALF_OPEN


def test_released_probe_lets_the_next_call_probe() -> None:
    clock = ManualClock()
    b = _breaker(clock)
    for _ in range(3):
        b.failure()
    clock.advance(5.0)
    b.acquire()
    b.release()
    assert b.state is BreakerState.HALF_OPEN
    b.acquire()
    b.success()
    assert b.state is BreakerState.CLOSED
