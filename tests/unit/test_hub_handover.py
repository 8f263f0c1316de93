"""A turn in progress stays on the instance it started on while that instance is handed over."""

from __future__ import annotations

import asyncio

from tests.unit.hub_fakes import Rig, endpoint

OLD, NEW = endpoint(grpc_port=50051), endpoint(grpc_port=50999)


async def test_pinned_turns_keep_the_old_instance_until_they_end() -> None:
    rig = Rig()
    hub = rig.hub
    turn_started, turn_may_end = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    async def turn() -> None:
        with hub.pinned(["stt"]):
            turn_started.set()
            await turn_may_end.wait()
            seen.append(hub.endpoint("stt").grpc_port)  # a call late in the turn

    task = asyncio.create_task(turn())
    await turn_started.wait()
    released = asyncio.Event()

    async def switch() -> None:
        async with hub.handing_over("stt", OLD, within_s=5.0):
            rig.resolver.endpoints["stt"] = NEW  # new calls go to the new instance from here
        released.set()

    switching = asyncio.create_task(switch())
    await asyncio.sleep(0.05)
    assert hub.endpoint("stt").grpc_port == NEW.grpc_port  # a new turn (not pinned) uses the new one
    assert not released.is_set()  # the handover waits for the turn in progress
    turn_may_end.set()
    await asyncio.wait_for(switching, 5)
    await task
    assert seen == [OLD.grpc_port]  # the turn finished on the instance it started on
    with hub.pinned(["stt"]):  # no handover now: pins are not consulted
        assert hub.endpoint("stt").grpc_port == NEW.grpc_port


async def test_a_turn_that_outlasts_the_wait_does_not_block_the_switch() -> None:
    rig = Rig()
    hub = rig.hub
    with hub.pinned(["stt"]):
        async with hub.handing_over("stt", OLD, within_s=0.05):
            rig.resolver.endpoints["stt"] = NEW
        assert hub.endpoint("stt").grpc_port == NEW.grpc_port  # released after the wait
