"""Admission control: at most ``max_turns`` turns in flight across all sessions, never a long line.

A turn that finds every slot busy waits at most ``wait_s`` (config ``admission_wait_s``, at most
2 s) for one to free up, then is refused with :class:`~core.errors.Overloaded`, which the REST
routes answer with 503 + Retry-After and the WebSocket with an ``error`` event. The line itself
is bounded too (``max_waiting``): past it, a turn is refused at once instead of queueing.

Retry-After comes from how long recent turns held a slot (a moving average), so a client backs
off for about as long as one slot takes to free.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry

from core.errors import Overloaded
from core.sessions.metrics import AdmissionMetrics

EMA_WEIGHT = 0.3
FIRST_GUESS_S = 3.0


class Admission:
    def __init__(
        self, max_turns: int, wait_s: float, registry: CollectorRegistry | None, *, max_waiting: int | None = None
    ) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.max_turns, self.wait_s = max_turns, max(0.0, wait_s)
        self.max_waiting = max_turns * 2 if max_waiting is None else max_waiting
        self.in_flight = 0
        self.rejections = 0
        self.hold_s = FIRST_GUESS_S   # moving average of how long a turn holds its slot
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._metrics = AdmissionMetrics(registry)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def full(self) -> bool:
        """True when a new turn could not start right now (it would wait or be refused)."""
        return self.in_flight >= self.max_turns

    def retry_after_s(self) -> float:
        """Whole seconds (at least 1) until a slot is likely free for one more turn."""
        return float(max(1, math.ceil(self.hold_s * (self.waiting + 1) / self.max_turns)))

    def snapshot(self) -> dict[str, float | int]:
        return {
            "max_concurrent_turns": self.max_turns, "in_flight": self.in_flight, "waiting": self.waiting,
            "rejections": self.rejections, "mean_turn_s": round(self.hold_s, 3),
        }

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body; :class:`Overloaded` within ``wait_s`` when none frees up."""
        await self._acquire()
        started = time.monotonic()
        try:
            yield
        finally:
            self.hold_s += EMA_WEIGHT * (time.monotonic() - started - self.hold_s)
            self._release()

    async def _acquire(self) -> None:
        t0 = time.monotonic()
        if self.in_flight < self.max_turns and not self._waiters:
            self._take()
            return
        if self.wait_s <= 0 or len(self._waiters) >= self.max_waiting:
            raise self._reject()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._metrics.waiting.set(len(self._waiters))
        try:
            async with asyncio.timeout(self.wait_s):
                await fut
        except TimeoutError:
            if not (fut.done() and not fut.cancelled()):
                raise self._reject() from None
            # the slot was handed over just as the wait timed out: it is ours
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # handed over while our caller went away: pass it on
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            self._metrics.waiting.set(len(self._waiters))
        self._metrics.wait.observe(time.monotonic() - t0)

    def _take(self) -> None:
        self.in_flight += 1
        self._metrics.in_flight.set(self.in_flight)
        self._metrics.wait.observe(0.0)

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot moves to the waiter; in_flight is unchanged
                return
        self.in_flight -= 1
        self._metrics.in_flight.set(self.in_flight)

    def _reject(self) -> Overloaded:
        self.rejections += 1
        self._metrics.rejections.inc()
        return Overloaded(
            f"the server is busy: {self.in_flight} turn(s) in flight (max_concurrent_turns = {self.max_turns}) "
            f"and {self.waiting} waiting; retry after the Retry-After seconds",
            retry_after_s=self.retry_after_s(),
        )
