"""Circuit breaker per service: stop calling a service that keeps failing, probe it now and then.

    CLOSED ──(failure_threshold consecutive failed calls)──▶ OPEN
    OPEN ──(reset_s passed; the next call becomes the probe)──▶ HALF_OPEN
    HALF_OPEN ──(probe succeeds)──▶ CLOSED
    HALF_OPEN ──(probe fails)──▶ OPEN (for another reset_s)

Only transient failures count (the service is unreachable, unavailable or too slow); a
rejected request or a handler error proves the service is alive and counts as a success.
While OPEN, and while a HALF_OPEN probe is in flight, calls fail at once with CircuitOpen.
A probe that is cancelled gives its slot back, so the next call probes instead.

``reset()`` is the operator's override (``sm breakers reset``): any state -> CLOSED with no
failures counted. The last failure (its message and wall-clock time) is kept for the views
(``GET /api/resilience``) and survives successes and resets: it is history, not state.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from core.errors import CircuitOpen


class BreakerState(enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


class CircuitBreaker:
    """The breaker of one service. Not thread-safe: use it from one event loop."""

    def __init__(
        self,
        service: str,
        *,
        failure_threshold: int,
        reset_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        """``clock`` times the open period; ``wall`` stamps the last failure and the opening for views."""
        self.service = service
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._wall = wall
        self.opened_at_wall: float | None = None
        """Wall-clock time the breaker last opened (None: never opened)."""
        self.last_failure: str = ""
        """Message of the last failure counted against the service ("" if none yet)."""
        self.last_failure_at: float | None = None
        """Wall-clock time of that failure."""

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose reset time passed reads as HALF_OPEN."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_s:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def probe_in_s(self) -> float | None:
        """Seconds until an OPEN breaker lets a probe through; None unless OPEN."""
        if self.state is not BreakerState.OPEN:
            return None
        return max(self.reset_s - (self._clock() - self._opened_at), 0.0)

    def acquire(self) -> None:
        """Let a call through, or raise CircuitOpen. Pair with one of success/failure/release."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return
        if state is BreakerState.OPEN:
            wait = self.reset_s - (self._clock() - self._opened_at)
            raise CircuitOpen(
                f"circuit breaker for service {self.service!r} is open after {self._failures} consecutive "
                f"failures; next probe in {max(wait, 0.0):.2f} s",
                service=self.service,
            )
        raise CircuitOpen(
            f"circuit breaker for service {self.service!r} is half-open and its probe call is in flight",
            service=self.service,
        )

    def success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failure(self, reason: str = "") -> None:
        """A call failed transiently; ``reason`` (the error's message) is kept as the last failure."""
        self._failures += 1
        self.last_failure, self.last_failure_at = reason or "failure", self._wall()
        was_probe, self._probe_in_flight = self._probe_in_flight, False
        if was_probe or self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self.opened_at_wall = self.last_failure_at
            self._set(BreakerState.OPEN)

    def reset(self) -> None:
        """Close the breaker now and forget the consecutive failures (an operator's override).
        A probe in flight loses its slot; its verdict then counts like any closed-state call."""
        self._failures = 0
        self._probe_in_flight = False
        self._set(BreakerState.CLOSED)

    def release(self) -> None:
        """The call ended without a verdict (cancelled): free the probe slot, change nothing else."""
        self._probe_in_flight = False

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
