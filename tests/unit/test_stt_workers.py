"""WorkerPool: round-robin across keys when busy, low-priority calls last, refusal, cancellation, no leaks.

Real threads run a blocking function held by a gate, so the order calls are served in is exact.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.errors import ResourceExhausted
from services.stt.workers import WorkerPool


class Gate:
    """A blocking job per call that records the order jobs started in."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.release = threading.Event()

    def job(self, name: str) -> str:
        self.order.append(name)
        self.release.wait(10)
        return name


async def queued(pool: WorkerPool, n: int) -> None:
    for _ in range(200):
        if pool.waiting >= n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{pool.waiting} waiting, expected {n}")


async def test_a_flooding_key_takes_turns_with_the_others() -> None:
    pool, gate = WorkerPool(1, 16, "t", "T"), Gate()
    busy = asyncio.create_task(pool.run(lambda: gate.job("first"), key="a"))
    await asyncio.sleep(0.05)
    calls = [("a", f"a{i}") for i in range(4)] + [("b", "b0"), ("c", "c0"), ("b", "b1")]
    tasks = []
    for key, name in calls:
        tasks.append(asyncio.create_task(pool.run(lambda n=name: gate.job(n), key=key, admit=False)))
        await asyncio.sleep(0.005)
    await queued(pool, len(calls))
    gate.release.set()
    await asyncio.gather(busy, *tasks)
    assert gate.order == ["first", "a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    pool.close()


async def test_low_calls_wait_for_every_other_call() -> None:
    pool, gate = WorkerPool(1, 16, "t", "T"), Gate()
    busy = asyncio.create_task(pool.run(lambda: gate.job("first")))
    await asyncio.sleep(0.05)
    low = asyncio.create_task(pool.run(lambda: gate.job("partial"), key="a", low=True))
    await asyncio.sleep(0.01)
    finals = [asyncio.create_task(pool.run(lambda n=n: gate.job(n), key=n)) for n in ("x", "y")]
    await queued(pool, 3)
    assert pool.saturated
    gate.release.set()
    await asyncio.gather(busy, low, *finals)
    assert gate.order == ["first", "x", "y", "partial"]
    pool.close()


async def test_a_full_line_refuses_admitted_calls_but_not_stream_finals() -> None:
    pool, gate = WorkerPool(1, 1, "t", "T"), Gate()
    busy = asyncio.create_task(pool.run(lambda: gate.job("first")))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(pool.run(lambda: gate.job("second")))
    await queued(pool, 1)
    with pytest.raises(ResourceExhausted, match=r"T is busy: 1 running and 1 waiting"):
        await pool.run(lambda: gate.job("third"))
    final = asyncio.create_task(pool.run(lambda: gate.job("final"), admit=False, key="s"))
    await queued(pool, 2)
    gate.release.set()
    await asyncio.gather(busy, waiting, final)
    pool.close()


async def test_a_caller_that_gives_up_leaves_no_slot_behind() -> None:
    pool, gate = WorkerPool(1, 8, "t", "T"), Gate()
    busy = asyncio.create_task(pool.run(lambda: gate.job("first")))
    await asyncio.sleep(0.05)
    gone = asyncio.create_task(pool.run(lambda: gate.job("gone"), key="a"))
    kept = asyncio.create_task(pool.run(lambda: gate.job("kept"), key="b"))
    await queued(pool, 2)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    gate.release.set()
    await asyncio.gather(busy, kept)
    assert gate.order == ["first", "kept"] and pool.waiting == 0 and not pool.saturated


async def test_a_failing_job_frees_its_slot() -> None:
    pool = WorkerPool(1, 8, "t", "T")

    def boom() -> None:
        raise RuntimeError("engine fell over")

    with pytest.raises(RuntimeError, match="engine fell over"):
        await pool.run(boom)
    assert await pool.run(lambda: 42) == 42 and not pool.saturated
    pool.close()
