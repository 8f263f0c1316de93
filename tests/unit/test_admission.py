"""Admission control (bounded turns in flight, bounded wait, bounded line) and the per-client rate limiter."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from core.errors import Overloaded
from core.sessions import Admission


async def hold(adm: Admission, entered: list[int], release: asyncio.Event, i: int) -> None:
    async with adm.slot():
        entered.append(i)
        await release.wait()


async def test_turns_beyond_capacity_are_refused_within_wait_s() -> None:
    reg = CollectorRegistry()
    adm = Admission(2, 0.2, reg)
    release, entered = asyncio.Event(), []
    tasks = [asyncio.create_task(hold(adm, entered, release, i)) for i in range(2)]
    await asyncio.sleep(0.01)
    assert adm.in_flight == 2 and adm.full and reg.get_sample_value("ultravox_turns_in_flight") == 2
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(Overloaded) as ei:
        async with adm.slot():
            pass
    waited = loop.time() - t0
    assert 0.15 <= waited < 1.0
    err = ei.value
    assert err.http_status == 503 and err.retry_after_s >= 1 and "max_concurrent_turns = 2" in err.message
    assert reg.get_sample_value("ultravox_admission_rejections_total") == 1 and adm.rejections == 1
    release.set()
    await asyncio.gather(*tasks)
    assert adm.in_flight == 0 and adm.waiting == 0 and not adm.full


async def test_a_waiter_gets_the_slot_released_within_wait_s_in_order() -> None:
    adm = Admission(1, 1.0, None)
    release, entered = asyncio.Event(), []
    first = asyncio.create_task(hold(adm, entered, release, 0))
    await asyncio.sleep(0.01)
    waiters = [asyncio.create_task(hold(adm, entered, asyncio.Event(), i)) for i in (1, 2)]
    await asyncio.sleep(0.01)
    assert adm.waiting == 2
    release.set()
    await first
    await asyncio.sleep(0.01)
    assert entered == [0, 1] and adm.in_flight == 1  # the slot went straight to the first waiter
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert adm.in_flight == 0 and adm.waiting == 0  # a cancelled holder and a cancelled waiter leak nothing


async def test_the_line_is_bounded_refusal_is_immediate_past_it() -> None:
    adm = Admission(1, 2.0, None, max_waiting=2)
    release, entered = asyncio.Event(), []
    tasks = [asyncio.create_task(hold(adm, entered, release, i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert adm.in_flight == 1 and adm.waiting == 2
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(Overloaded):
        async with adm.slot():
            pass
    assert loop.time() - t0 < 0.1  # never queued: refused at once
    release.set()
    await asyncio.gather(*tasks)
    assert entered == [0, 1, 2]


async def test_many_callers_never_grow_an_unbounded_queue() -> None:
    adm = Admission(2, 0.05, None)
    release = asyncio.Event()
    peak = 0

    async def one(i: int) -> str:
        nonlocal peak
        try:
            async with adm.slot():
                peak = max(peak, adm.waiting)
                await release.wait()
                return "ran"
        except Overloaded:
            peak = max(peak, adm.waiting)
            return "refused"

    tasks = [asyncio.create_task(one(i)) for i in range(200)]
    await asyncio.sleep(0.2)
    release.set()
    results = await asyncio.gather(*tasks)
    assert results.count("ran") == 2 and results.count("refused") == 198
    assert peak <= adm.max_waiting == 4 and adm.in_flight == 0


async def test_zero_wait_refuses_at_once_and_a_failing_turn_frees_its_slot() -> None:
    adm = Admission(1, 0.0, None)
    with pytest.raises(RuntimeError):
        async with adm.slot():
            raise RuntimeError("turn blew up")
    assert adm.in_flight == 0
    release = asyncio.Event()
    task = asyncio.create_task(hold(adm, [], release, 0))
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded):
        async with adm.slot():
            pass
    release.set()
    await task


async def test_retry_after_follows_how_long_turns_hold_a_slot() -> None:
    adm = Admission(1, 0.0, None)
    adm.hold_s = 7.2
    assert adm.retry_after_s() == 8.0
    adm.hold_s = 0.1
    assert adm.retry_after_s() == 1.0
    assert adm.snapshot()["max_concurrent_turns"] == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now
