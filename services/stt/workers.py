"""A bounded worker pool for blocking engine work, so the event loop keeps serving.

``run`` waits for one of ``workers`` slots and runs the function in a thread. Callers that may be
refused (one-shot calls) get RESOURCE_EXHAUSTED at once when ``max_queue`` calls already wait;
a stream's finals pass ``admit=False``: the stream was admitted already, and its line is
bounded by the stream itself. ``saturated`` lets optional work (partials) stand aside.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from core.errors import ResourceExhausted

T = TypeVar("T")


class WorkerPool:
    def __init__(self, workers: int, max_queue: int, name: str, what: str) -> None:
        self.workers, self.max_queue, self.what = workers, max_queue, what
        self._pool = ThreadPoolExecutor(workers, name)
        self._slots = asyncio.Semaphore(workers)
        self._waiting = 0

    @property
    def saturated(self) -> bool:
        """Every worker is busy (or someone is already waiting for one)."""
        return self._slots.locked() or self._waiting > 0

    async def run(self, fn: Callable[[], T], *, admit: bool = True) -> T:
        if admit and self._slots.locked() and self._waiting >= self.max_queue:
            raise ResourceExhausted(
                f"{self.what} is busy: {self.workers} running and {self._waiting} waiting "
                "(options.max_queue); retry shortly",
                retry_after_s=1.0,
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            ctx = contextvars.copy_context()  # keeps the request id on log lines from the worker
            return await asyncio.get_running_loop().run_in_executor(self._pool, ctx.run, fn)
        finally:
            self._slots.release()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
