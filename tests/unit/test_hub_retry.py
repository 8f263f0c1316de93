"""Backoff arithmetic: exponential, capped, with equal jitter."""

from __future__ import annotations

import random

import pytest

from core.managers.hub import RetryPolicy


def test_ceiling_doubles_then_caps() -> None:
    p = RetryPolicy(max_retries=5, base_s=0.05, cap_s=1.0)
    assert [p.ceiling(n) for n in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]


def test_delay_stays_between_half_and_full_ceiling() -> None:
    p = RetryPolicy(max_retries=5, base_s=0.05, cap_s=1.0, rng=random.Random(7))
    for n in range(8):
        c = p.ceiling(n)
        delays = [p.delay(n) for _ in range(200)]
        assert all(c / 2 <= d <= c for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_huge_retry_numbers_do_not_overflow() -> None:
    p = RetryPolicy(max_retries=10_000, base_s=0.05, cap_s=2.0)
    assert p.ceiling(5_000) == 2.0


def test_zero_base_means_no_wait() -> None:
    assert RetryPolicy(max_retries=3, base_s=0.0, cap_s=1.0).delay(2) == 0.0


def test_negative_retry_number_is_an_error() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=1, base_s=0.1, cap_s=1.0).ceiling(-1)
