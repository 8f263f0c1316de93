"""Per-client token buckets for the REST routes: ``rate_per_minute`` requests, refilled smoothly.

A client (its API key when one is sent, else its address) may burst up to ``burst`` requests
(a minute's worth by default), then gets :class:`~core.errors.ResourceExhausted` (429) with the
seconds until its next token as Retry-After. Buckets of clients that went quiet are dropped, so
memory stays bounded however many addresses call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from core.errors import ResourceExhausted

MAX_CLIENTS = 10_000


class RateLimiter:
    def __init__(
        self, rate_per_minute: int, *, burst: int | None = None, registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic, max_clients: int = MAX_CLIENTS,
    ) -> None:
        if rate_per_minute < 1:
            raise ValueError("rate_per_minute must be at least 1")
        self.rate_per_minute = rate_per_minute
        self.per_s = rate_per_minute / 60.0
        self.burst = float(burst or rate_per_minute)
        self._clock, self._max_clients = clock, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._limited = Counter(
            "ultravox_rate_limited_total", "REST requests refused by the per-client rate limiter (429).",
            registry=registry,
        )

    def check(self, key: str) -> None:
        """Take one token for ``key``, or raise ResourceExhausted saying when to retry."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_s)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            self._limited.inc()
            wait = (1.0 - tokens) / self.per_s
            raise ResourceExhausted(
                f"too many requests from this client: the limit is {self.rate_per_minute} per minute "
                f"(conversation.rate_limit_per_minute); retry in {wait:.1f} s",
                retry_after_s=wait,
            )
        self._buckets[key] = (tokens - 1.0, now)   # most recent last
        self._prune(now)

    def _prune(self, now: float) -> None:
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)   # the least recently seen client
        # buckets idle long enough to be full again carry no state worth keeping
        refill_s = self.burst / self.per_s
        while self._buckets:
            key, (_, at) = next(iter(self._buckets.items()))
            if now - at < refill_s:
                break
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
