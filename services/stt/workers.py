"""A bounded worker pool for blocking engine work, so the event loop keeps serving, and fair across callers.

``run`` waits for one of ``workers`` slots and runs the function in a thread. Callers that may be
refused (one-shot calls) get RESOURCE_EXHAUSTED at once when ``max_queue`` calls already wait;
a stream's finals pass ``admit=False``: the stream was admitted already, and its line is
bounded by the stream itself. ``saturated`` lets optional work (partials) stand aside.

When every worker is busy, waiting calls are served **round-robin across keys** (a stream passes
its session, so each conversation gets its turn; a call without a key is a key of its own), FIFO
within a key: one chatty session with several finals queued cannot hold the others back. Calls
marked ``low`` (partials, speculative extras) are served only when no other call waits.
``on_wait`` reports how long a call stood in line (0.0 when a worker was free), for stream metrics.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from core.errors import ResourceExhausted

T = TypeVar("T")
_anonymous = itertools.count()


class WorkerPool:
    def __init__(self, workers: int, max_queue: int, name: str, what: str) -> None:
        self.workers, self.max_queue, self.what = workers, max_queue, what
        self._pool = ThreadPoolExecutor(workers, name)
        self._free = workers
        self._lines: dict[str, deque[asyncio.Future[None]]] = {}
        self._turns: deque[str] = deque()
        """Keys with a call waiting, in the order they are served next."""
        self._low: deque[tuple[str, asyncio.Future[None]]] = deque()
        """Low calls (with their key), FIFO, served when no line above has a call."""
        self._waiting = 0

    @property
    def saturated(self) -> bool:
        """Every worker is busy (or someone is already waiting for one)."""
        return self._free == 0 or self._waiting > 0

    @property
    def waiting(self) -> int:
        return self._waiting

    def waiting_for(self, key: str) -> int:
        """Calls from ``key`` still waiting for a worker, low ones included."""
        line = self._lines.get(key, ())
        return sum(not t.done() for t in line) + sum(k == key and not t.done() for k, t in self._low)

    async def run(
        self,
        fn: Callable[[], T],
        *,
        admit: bool = True,
        key: str | None = None,
        low: bool = False,
        on_wait: Callable[[float], None] | None = None,
    ) -> T:
        """Run ``fn`` in a worker and return its value.

        ``key`` says whose turn it is in the line (None: a key of its own); ``low`` lets every other
        call go first; ``on_wait`` is called on the event loop with the seconds spent waiting, before
        ``fn`` starts.
        """
        if admit and self._free == 0 and self._waiting >= self.max_queue:
            raise ResourceExhausted(
                f"{self.what} is busy: {self.workers} running and {self._waiting} waiting "
                "(options.max_queue); retry shortly",
                retry_after_s=1.0,
            )
        waited = await self._acquire(key, low)
        try:
            if on_wait is not None:
                on_wait(waited)
            ctx = contextvars.copy_context()  # keeps the request id on log lines from the worker
            return await asyncio.get_running_loop().run_in_executor(self._pool, ctx.run, fn)
        finally:
            self._release()

    async def _acquire(self, key: str | None, low: bool) -> float:
        """Take a worker slot, waiting in line if none is free; returns the seconds waited."""
        if self._free > 0 and self._waiting == 0:
            self._free -= 1
            return 0.0
        start = time.perf_counter()
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        name = key if key is not None else f"call-{next(_anonymous)}"
        if low:
            self._low.append((name, ticket))
        else:
            line = self._lines.get(name)
            if line is None:
                line = self._lines[name] = deque()
                self._turns.append(name)
            line.append(ticket)
        self._waiting += 1
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._release()  # the slot was handed over just as the caller gave up: pass it on
            raise
        finally:
            self._waiting -= 1
        return time.perf_counter() - start

    def _release(self) -> None:
        """Hand the slot to the next caller (round-robin over keys, then the low line), or free it."""
        while self._turns:
            name = self._turns.popleft()
            line = self._lines[name]
            while line and line[0].done():  # callers that gave up
                line.popleft()
            if not line:
                del self._lines[name]
                continue
            ticket = line.popleft()
            if line:
                self._turns.append(name)  # its next call waits for a full round
            else:
                del self._lines[name]
            ticket.set_result(None)
            return
        while self._low:
            _, ticket = self._low.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self._free += 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
