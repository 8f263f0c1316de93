"""WorkerPool: round-robin across keys when busy, low-priority calls last, refusal, cancellation, no leaks.

Real threads run a blocking function held by a gate, so the order calls are served in is exact.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from functools import partial

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
    """One session queues six finals before two others speak: each of the others waits one decode, not six."""
    pool, gate = WorkerPool(1, 16, "t", "T"), Gate()
    busy = asyncio.create_task(pool.run(lambda: gate.job("first"), key="a"))
    await asyncio.sleep(0.05)
    calls = [("a", f"a{i}") for i in range(6)] + [("b", "b0"), ("c", "c0"), ("b", "b1"), ("c", "c1")]
    tasks = []
    for key, name in calls:
        tasks.append(asyncio.create_task(pool.run(partial(gate.job, name), key=key, admit=False)))
        await asyncio.sleep(0.005)
    await queued(pool, len(calls))
    assert (pool.waiting_for("a"), pool.waiting_for("b"), pool.waiting_for("c")) == (6, 2, 2)
    gate.release.set()
    assert await asyncio.gather(*tasks) == [name for _, name in calls]  # each caller gets its own value
    await busy
    assert gate.order == ["first", "a0", "b0", "c0", "a1", "b1", "c1", "a2", "a3", "a4", "a5"]
    assert pool.waiting == 0 and pool.waiting_for("a") == 0 and not pool.saturated
    pool.close()


async def test_calls_without_a_key_take_turns_like_keys() -> None:
    pool, gate = WorkerPool(1, 16, "t", "T"), Gate()
    busy = asyncio.create_task(pool.run(lambda: gate.job("first")))
    await asyncio.sleep(0.05)
    tasks = []
    for key, name in [("a", "a0"), ("a", "a1"), (None, "one-shot"), ("a", "a2")]:
        tasks.append(asyncio.create_task(pool.run(partial(gate.job, name), key=key, admit=False)))
        await asyncio.sleep(0.005)
    await queued(pool, 4)
    gate.release.set()
    await asyncio.gather(busy, *tasks)
    assert gate.order == ["first", "a0", "one-shot", "a1", "a2"]
    pool.close()


async def test_low_calls_wait_for_every_other_call() -> None:
    pool, gate = WorkerPool(1, 16, "t", "T"), Gate()
    busy = asyncio.create_task(pool.run(lambda: gate.job("first")))
    await asyncio.sleep(0.05)
    low = asyncio.create_task(pool.run(lambda: gate.job("partial-a"), key="a", low=True))
    await asyncio.sleep(0.01)
    low2 = asyncio.create_task(pool.run(lambda: gate.job("partial-b"), key="b", low=True, admit=False))
    await asyncio.sleep(0.01)
    finals = [asyncio.create_task(pool.run(partial(gate.job, n), key=n)) for n in ("x", "y", "a")]
    await queued(pool, 5)
    assert pool.saturated and pool.waiting_for("a") == 2
    gate.release.set()
    await asyncio.gather(busy, low, low2, *finals)
    assert gate.order == ["first", "x", "y", "a", "partial-a", "partial-b"]
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
    gone_low = asyncio.create_task(pool.run(lambda: gate.job("gone-low"), key="a", low=True))
    kept = asyncio.create_task(pool.run(lambda: gate.job("kept"), key="b"))
    await queued(pool, 3)
    gone.cancel()
    gone_low.cancel()
    await asyncio.gather(gone, gone_low, return_exceptions=True)
    assert pool.waiting == 1 and pool.waiting_for("a") == 0
    gate.release.set()
    await asyncio.gather(busy, kept)
    assert gate.order == ["first", "kept"] and pool.waiting == 0 and not pool.saturated
    assert await asyncio.gather(*(pool.run(lambda: 1) for _ in range(3))) == [1, 1, 1]
    assert pool._free == 1  # the slot count itself is what must not leak
    pool.close()


async def test_a_caller_cancelled_as_its_turn_came_passes_the_slot_on() -> None:
    """The slot is handed over and the caller is cancelled before it wakes: the next caller must get it."""
    pool, gate = WorkerPool(1, 8, "t", "T"), Gate()
    waiter: asyncio.Task[str] | None = None

    async def holder() -> str:
        try:
            return await pool.run(lambda: gate.job("first"))
        finally:  # runs right after run() handed the slot to ``waiter``, before ``waiter`` resumes
            assert waiter is not None
            waiter.cancel()

    busy = asyncio.create_task(holder())
    await asyncio.sleep(0.05)
    waiter = asyncio.create_task(pool.run(lambda: gate.job("cancelled"), key="a"))
    after = asyncio.create_task(pool.run(lambda: gate.job("after"), key="b"))
    await queued(pool, 2)
    gate.release.set()
    assert await busy == "first"
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await after == "after"
    assert gate.order == ["first", "after"] and pool.waiting == 0 and not pool.saturated
    assert pool._free == 1
    pool.close()


async def test_a_failing_job_frees_its_slot() -> None:
    pool, gate = WorkerPool(1, 8, "t", "T"), Gate()

    def boom() -> None:
        gate.order.append("boom")
        gate.release.wait(10)
        raise RuntimeError("engine fell over")

    failing = asyncio.create_task(pool.run(boom))
    await asyncio.sleep(0.05)
    behind = asyncio.create_task(pool.run(lambda: gate.job("behind"), key="b"))
    await queued(pool, 1)
    gate.release.set()
    with pytest.raises(RuntimeError, match="engine fell over"):
        await failing
    assert await behind == "behind"
    with pytest.raises(RuntimeError, match="engine fell over"):
        await pool.run(boom)
    assert await pool.run(lambda: 42) == 42 and not pool.saturated
    assert pool._free == 1
    pool.close()


async def test_on_wait_reports_the_time_in_line() -> None:
    pool, gate = WorkerPool(1, 8, "t", "T"), Gate()
    waits: dict[str, float] = {}
    busy = asyncio.create_task(pool.run(lambda: gate.job("first"), on_wait=lambda s: waits.__setitem__("first", s)))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(
        pool.run(lambda: gate.job("second"), key="a", on_wait=lambda s: waits.__setitem__("second", s))
    )
    await queued(pool, 1)
    await asyncio.sleep(0.1)
    gate.release.set()
    await asyncio.gather(busy, second)
    assert waits["first"] == 0.0 and 0.09 < waits["second"] < 5
    pool.close()


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def test_the_worker_sees_the_callers_context() -> None:
    pool = WorkerPool(2, 8, "t", "T")

    async def call(rid: str) -> tuple[str, str]:
        request_id.set(rid)
        return await pool.run(lambda: (request_id.get(), threading.current_thread().name), key=rid)

    got = await asyncio.gather(call("r1"), call("r2"))
    assert [rid for rid, _ in got] == ["r1", "r2"]
    assert all(thread.startswith("t") and thread != threading.current_thread().name for _, thread in got)
    pool.close()
