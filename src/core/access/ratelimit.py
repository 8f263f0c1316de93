"""Rate limits per API key and per client address: a token bucket per window (minute, hour).

Each key (a token counts against the key that minted it) and each client address has its own
budget in every window: ``per_minute`` requests, refilled smoothly over the minute (so a burst
of a minute's worth is allowed), and ``per_hour`` the same over the hour. A request takes one
token from every bucket that applies, or none when any is empty: it then gets
:class:`~core.errors.ResourceExhausted` (429) with the seconds until it would pass as
Retry-After. Addresses and key names on the allowlist are not limited. Buckets that went quiet
are dropped, so memory stays bounded however many addresses call.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter

from core.config.models import RateLimits
from core.errors import ResourceExhausted

MAX_CLIENTS = 10_000
WINDOWS: tuple[tuple[str, float], ...] = (("minute", 60.0), ("hour", 3600.0))


class RateLimiter:
    def __init__(
        self, defaults: RateLimits, *, allowlist: Sequence[str] = (), registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic, max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.defaults = defaults
        self._nets = [ipaddress.ip_network(a, strict=False) for a in allowlist if not a.startswith("key:")]
        self._keys = {a[4:] for a in allowlist if a.startswith("key:")}
        self._clock, self._max_clients = clock, max_clients
        # (who, window) -> (tokens, at)
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._limited = Counter(
            "ultravox_rate_limited_total",
            "Requests refused by the rate limiter (429), by key name ('-': by client address) and window.",
            ["key", "window"], registry=registry,
        )
        for window, _ in WINDOWS:   # the address budgets' series exist from the start (0), for dashboards
            self._limited.labels("-", window)

    def allowed(self, address: str, key: str | None) -> bool:
        """On the allowlist: not limited at all."""
        if key is not None and key in self._keys:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._nets)

    def check(self, address: str, key: str | None = None, limits: RateLimits | None = None) -> None:
        """Take one request for ``address`` (and ``key``, with its own limits), or raise ResourceExhausted."""
        if self.allowed(address, key):
            return
        now = self._clock()
        wanted: list[tuple[tuple[str, str], float, float]] = []   # (bucket, tokens now, refill per s)
        budgets = [(f"addr:{address}", self.defaults)]
        if key is not None:
            budgets.append((f"key:{key}", limits or self.defaults))
        worst: tuple[float, str, str] | None = None
        for who, lim in budgets:
            for window, span in WINDOWS:
                cap = float(lim.per_minute if window == "minute" else lim.per_hour)
                if cap <= 0:
                    continue
                per_s = cap / span
                tokens, at = self._buckets.get((who, window), (cap, now))
                tokens = min(cap, tokens + (now - at) * per_s)
                wanted.append(((who, window), tokens, per_s))
                if tokens < 1.0:
                    wait = (1.0 - tokens) / per_s
                    if worst is None or wait > worst[0]:
                        worst = (wait, who, window)
        if worst is not None:
            for bucket, tokens, _ in wanted:
                self._buckets[bucket] = (tokens, now)
            wait, who, window = worst
            self._limited.labels(key or "-", window).inc()
            whose = f"API key {key!r}" if who.startswith("key:") else "this client address"
            lim = limits or self.defaults if who.startswith("key:") else self.defaults
            n = lim.per_minute if window == "minute" else lim.per_hour
            raise ResourceExhausted(
                f"too many requests from {whose}: the limit is {n} per {window} "
                f"(gateway.auth.rate_limits, or the key's own); retry in {wait:.1f} s",
                retry_after_s=wait,
            )
        for bucket, tokens, _ in wanted:
            self._buckets.pop(bucket, None)
            self._buckets[bucket] = (tokens - 1.0, now)   # most recent last
        self._prune(now)

    def _prune(self, now: float) -> None:
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)   # the least recently seen
        # the oldest buckets idle for an hour are full again in either window: no state worth keeping
        while self._buckets:
            _, (_, at) = next(iter(self._buckets.items()))
            if now - at < 3600.0:
                break
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
