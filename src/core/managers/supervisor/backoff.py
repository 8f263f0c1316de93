"""Restart arithmetic, pure and clock-free: exponential backoff with jitter, and flapping.

The state machine owns the clock and passes ``now`` in, so every rule here is tested with
plain numbers. Delay for the n-th consecutive restart (n from 0)::

    delay = min(cap, base * 2**n) * (1 + uniform(-jitter, +jitter))

The exponent resets once a run stays healthy for ``reset_after_s``. Flapping follows circus
and systemd's start limit: more than ``max_restarts`` restarts inside ``window_s`` means stop
trying (FATAL).
"""

from __future__ import annotations

import random
from collections import deque

from core.config import RestartPolicy


def backoff_delay(attempt: int, base: float, cap: float, jitter: float, rng: random.Random) -> float:
    """Seconds to wait before restart number ``attempt`` (0-based), jittered by +/- ``jitter``."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    # 2**attempt overflows float for huge attempts; past 64 doublings the cap has long won.
    raw = cap if attempt >= 64 else min(cap, base * (2**attempt))
    factor = 1.0 + rng.uniform(-jitter, jitter) if jitter > 0 else 1.0
    return max(0.0, raw * factor)


def backoff_bounds(attempt: int, base: float, cap: float, jitter: float) -> tuple[float, float]:
    """Smallest and largest delay ``backoff_delay`` can return for ``attempt``."""
    raw = cap if attempt >= 64 else min(cap, base * (2**attempt))
    return max(0.0, raw * (1.0 - jitter)), raw * (1.0 + jitter)


class Backoff:
    """The consecutive-restart exponent of one service."""

    def __init__(self, policy: RestartPolicy, rng: random.Random) -> None:
        self._policy, self._rng = policy, rng
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay for the next restart; each call raises the exponent by one."""
        p = self._policy
        delay = backoff_delay(self.attempt, p.backoff_base_s, p.backoff_cap_s, p.jitter, self._rng)
        self.attempt += 1
        return delay

    def note_uptime(self, healthy_s: float) -> bool:
        """Reset the exponent if the last run stayed healthy long enough; return whether it did."""
        if healthy_s >= self._policy.reset_after_s and self.attempt:
            self.attempt = 0
            return True
        return False

    def reset(self) -> None:
        self.attempt = 0


class FlappingDetector:
    """Counts restarts in a sliding window; ``record`` says when there have been too many."""

    def __init__(self, window_s: float, max_restarts: int) -> None:
        self.window_s, self.max_restarts = window_s, max_restarts
        self._times: deque[float] = deque()

    def record(self, now: float) -> bool:
        """Record a restart at ``now``; True when the window now holds more than ``max_restarts``."""
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        return len(self._times) > self.max_restarts

    @property
    def count(self) -> int:
        """Restarts recorded in the window as of the last ``record`` call."""
        return len(self._times)

    def reset(self) -> None:
        self._times.clear()
