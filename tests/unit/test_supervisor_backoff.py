"""Backoff, jitter and flapping arithmetic (pure: no clock, no sleeping)."""

from __future__ import annotations

import random

import pytest

from core.config import RestartPolicy
from core.managers.supervisor.backoff import Backoff, FlappingDetector, backoff_bounds, backoff_delay


@pytest.mark.parametrize("attempt", range(12))
def test_delay_stays_within_jitter_bounds(attempt: int) -> None:
    rng = random.Random(attempt)
    lo, hi = backoff_bounds(attempt, 0.5, 30.0, 0.2)
    raw = min(30.0, 0.5 * 2**attempt)
    assert lo == pytest.approx(raw * 0.8) and hi == pytest.approx(raw * 1.2)
    samples = [backoff_delay(attempt, 0.5, 30.0, 0.2, rng) for _ in range(500)]
    assert all(lo <= s <= hi for s in samples)
    # jitter actually spreads the delays (no herd), on both sides of the raw delay
    assert min(samples) < raw < max(samples)


def test_delay_doubles_then_caps_without_jitter() -> None:
    rng = random.Random(0)
    got = [backoff_delay(n, 0.5, 30.0, 0.0, rng) for n in range(9)]
    assert got == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_huge_attempt_does_not_overflow() -> None:
    assert backoff_delay(10_000, 0.5, 30.0, 0.0, random.Random(0)) == 30.0


def test_negative_attempt_is_rejected() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1, 0.5, 30.0, 0.0, random.Random(0))


def test_backoff_counts_up_and_resets_after_healthy_uptime() -> None:
    pol = RestartPolicy(backoff_base_s=1.0, backoff_cap_s=100.0, jitter=0.0, reset_after_s=60.0)
    b = Backoff(pol, random.Random(0))
    assert [b.next_delay() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert b.note_uptime(59.9) is False and b.attempt == 4  # not healthy long enough
    assert b.note_uptime(60.0) is True and b.attempt == 0
    assert b.next_delay() == 1.0


def test_flapping_trips_only_above_the_limit_inside_the_window() -> None:
    f = FlappingDetector(window_s=120.0, max_restarts=5)
    assert [f.record(t) for t in (0, 1, 2, 3, 4)] == [False] * 5
    assert f.record(5) is True and f.count == 6


def test_flapping_window_slides() -> None:
    f = FlappingDetector(window_s=10.0, max_restarts=2)
    assert not f.record(0) and not f.record(5)
    assert not f.record(11)  # the restart at t=0 fell out of the window
    assert f.count == 2
    assert f.record(12)  # 5, 11, 12: three inside 10 s
    f.reset()
    assert f.count == 0 and not f.record(13)


def test_slow_restarts_never_flap() -> None:
    f = FlappingDetector(window_s=60.0, max_restarts=1)
    assert not any(f.record(t * 61.0) for t in range(50))
