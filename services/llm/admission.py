"""The bounded line in front of the engine: ``concurrency`` generations run, ``max_queue`` wait.

A request that finds every slot busy and the line full is refused at once with
RESOURCE_EXHAUSTED (HTTP 429) and a Retry-After estimated from how long recent generations held
a slot, instead of piling up behind a model that serves one reply at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable

from core.errors import ResourceExhausted

EMA_WEIGHT = 0.3
FIRST_GUESS_S = 2.0


class Admission:
    def __init__(
        self, concurrency: int, max_queue: int, *, on_change: Callable[[int, int], None] | None = None
    ) -> None:
        self.concurrency, self.max_queue = concurrency, max_queue
        self.waiting = 0
        self.running = 0
        self.hold_s = FIRST_GUESS_S  # moving average of how long a generation holds a slot
        self._slots = asyncio.Semaphore(concurrency)
        self._on_change = on_change

    def retry_after_s(self) -> float:
        """Seconds until a slot is likely free for one more request: whole seconds, at least 1."""
        ahead = self.waiting + 1
        return float(max(1, math.ceil(self.hold_s * ahead / self.concurrency)))

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body; ResourceExhausted at once when the line is full."""
        if self._slots.locked() and self.waiting >= self.max_queue:
            raise ResourceExhausted(
                f"the model is busy: {self.running} generation(s) running and {self.waiting} waiting "
                f"(options.max_queue = {self.max_queue}); retry after the Retry-After seconds",
                retry_after_s=self.retry_after_s(),
            )
        self.waiting += 1
        self._changed()
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self._changed()
        started = time.monotonic()
        try:
            yield
        finally:
            held = time.monotonic() - started
            self.hold_s += EMA_WEIGHT * (held - self.hold_s)
            self.running -= 1
            self._slots.release()
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.waiting, self.running)
