"""The bounded line: one generation runs, max_queue wait, the next is refused at once with Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import ResourceExhausted
from services.llm.admission import Admission


async def hold(adm: Admission, release: asyncio.Event, order: list[int], i: int) -> None:
    async with adm.slot():
        order.append(i)
        await release.wait()


async def test_one_runs_queue_waits_overflow_is_refused_immediately() -> None:
    seen: list[tuple[int, int]] = []
    adm = Admission(1, 2, on_change=lambda w, r: seen.append((w, r)))
    release = asyncio.Event()
    order: list[int] = []
    tasks = [asyncio.create_task(hold(adm, release, order, i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert adm.running == 1 and adm.waiting == 2 and order == [0]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ResourceExhausted) as ei:
        async with adm.slot():
            pass
    assert loop.time() - t0 < 0.05  # refused at once, not after waiting
    err = ei.value
    assert err.http_status == 429 and err.code == "RESOURCE_EXHAUSTED"
    assert "1 generation(s) running and 2 waiting" in err.message and "max_queue = 2" in err.message
    assert err.retry_after_s >= 1 and err.retry_after_s == int(err.retry_after_s)
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]  # first come, first served
    assert adm.running == 0 and adm.waiting == 0 and seen[-1] == (0, 0)
    assert max(w for w, _ in seen) == 2


async def test_retry_after_follows_how_long_slots_are_held() -> None:
    adm = Admission(1, 0)
    assert adm.retry_after_s() == 2.0  # first guess before any generation
    for _ in range(30):
        async with adm.slot():
            pass
    assert adm.hold_s < 0.05 and adm.retry_after_s() == 1.0  # never below one second
    adm.hold_s = 3.2
    adm.waiting = 2
    assert adm.retry_after_s() == 10.0  # three generations of ~3.2 s ahead


async def test_max_queue_zero_refuses_while_busy_and_a_cancelled_waiter_leaves_the_line() -> None:
    adm = Admission(1, 1)
    release = asyncio.Event()
    first = asyncio.create_task(hold(adm, release, [], 0))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold(adm, release, [], 1))
    await asyncio.sleep(0.01)
    assert adm.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert adm.waiting == 0
    release.set()
    await first
    async with adm.slot():
        assert adm.running == 1
