"""Retry arithmetic: how long to wait before the next round of attempts.

Exponential backoff with "equal jitter": the n-th retry (n = 0, 1, ...) waits a random time in
``[c/2, c]`` where ``c = min(cap_s, base_s * 2**n)``. Half of the delay is guaranteed, so
retries really back off; the random half spreads out callers that failed together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

_MAX_EXPONENT = 62  # beyond this base * 2**n only overflows; the cap applies long before


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int
    """Rounds after the first one; 0 disables retries."""
    base_s: float
    cap_s: float
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def ceiling(self, retry: int) -> float:
        """The upper bound of the delay before retry number ``retry`` (0-based)."""
        if retry < 0:
            raise ValueError(f"retry number must be >= 0, got {retry}")
        return min(self.cap_s, self.base_s * float(2 ** min(retry, _MAX_EXPONENT)))

    def delay(self, retry: int) -> float:
        """A jittered delay in ``[ceiling/2, ceiling]`` before retry number ``retry`` (0-based)."""
        c = self.ceiling(retry)
        return c / 2 + self.rng.uniform(0.0, c / 2)
