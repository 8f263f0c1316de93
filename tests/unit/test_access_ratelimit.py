"""The rate limiter: per key and per address, per minute and per hour, allowlist, bounded memory."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from core.access.ratelimit import RateLimiter
from core.config.models import RateLimits
from core.errors import ResourceExhausted


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_per_address_bucket_refills_smoothly() -> None:
    clock, reg = Clock(), CollectorRegistry()
    rl = RateLimiter(RateLimits(per_minute=3, per_hour=0), registry=reg, clock=clock)
    for _ in range(3):
        rl.check("10.0.0.1")
    with pytest.raises(ResourceExhausted) as ei:
        rl.check("10.0.0.1")
    assert ei.value.http_status == 429 and 19.9 <= ei.value.retry_after_s <= 20.0
    assert "3 per minute" in ei.value.message and "client address" in ei.value.message
    rl.check("10.0.0.2")  # other addresses have their own bucket
    clock.now += 20.0  # one request back (3 per minute)
    rl.check("10.0.0.1")
    with pytest.raises(ResourceExhausted):
        rl.check("10.0.0.1")
    assert reg.get_sample_value("ultravox_rate_limited_total", {"key": "-", "window": "minute"}) == 2


def test_hour_window_limits_after_minute_budget_refills() -> None:
    clock, reg = Clock(), CollectorRegistry()
    rl = RateLimiter(RateLimits(per_minute=60, per_hour=100), registry=reg, clock=clock)
    passed = 0
    with pytest.raises(ResourceExhausted) as ei:
        while passed < 200:
            rl.check("10.0.0.1")
            passed += 1
            clock.now += 1.0   # 60/min never trips at one a second
    assert 100 <= passed <= 103   # 100, plus what an hour's budget refills in ~100 s
    assert "100 per hour" in ei.value.message
    assert reg.get_sample_value("ultravox_rate_limited_total", {"key": "-", "window": "hour"}) == 1


def test_key_has_its_own_limits_and_name_in_metrics() -> None:
    clock, reg = Clock(), CollectorRegistry()
    rl = RateLimiter(RateLimits(per_minute=100, per_hour=0), registry=reg, clock=clock)
    tight = RateLimits(per_minute=2, per_hour=0)
    rl.check("10.0.0.1", "web", tight)
    rl.check("10.0.0.2", "web", tight)   # the key's budget is shared across addresses
    with pytest.raises(ResourceExhausted) as ei:
        rl.check("10.0.0.3", "web", tight)
    assert "API key 'web'" in ei.value.message and "2 per minute" in ei.value.message
    assert reg.get_sample_value("ultravox_rate_limited_total", {"key": "web", "window": "minute"}) == 1
    rl.check("10.0.0.3", "other", tight)   # another key is not affected


def test_refused_request_takes_nothing() -> None:
    clock = Clock()
    rl = RateLimiter(RateLimits(per_minute=100, per_hour=0), clock=clock)
    tight = RateLimits(per_minute=1, per_hour=0)
    rl.check("10.0.0.1", "k", tight)
    for _ in range(5):
        with pytest.raises(ResourceExhausted):
            rl.check("10.0.0.1", "k", tight)
    rl.check("10.0.0.1", "other")   # the address lost only the one request that passed
    assert len(rl) >= 2


def test_allowlist_of_networks_and_key_names() -> None:
    rl = RateLimiter(RateLimits(per_minute=1, per_hour=1), allowlist=["10.1.0.0/16", "key:batch"], clock=Clock())
    for _ in range(10):
        rl.check("10.1.2.3")
        rl.check("192.168.0.9", "batch")
    rl.check("192.168.0.9")
    with pytest.raises(ResourceExhausted):
        rl.check("192.168.0.9")


def test_memory_is_bounded() -> None:
    clock = Clock()
    rl = RateLimiter(RateLimits(per_minute=60, per_hour=0), clock=clock, max_clients=100)
    for i in range(1000):
        rl.check(f"10.0.{i // 250}.{i % 250}")
    assert len(rl) == 100
    clock.now += 3600  # quiet clients' buckets are full again: nothing worth keeping
    rl.check("10.9.9.9")
    assert len(rl) == 1
