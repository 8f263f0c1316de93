"""Hub retries, deadlines and the circuit breaker, driven through CommunicationManager with fakes."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import CircuitOpen, DeadlineExceeded, InvalidArgument, ServiceUnavailable, TransportError
from tests.unit.hub_fakes import HANG, Block, Rig, endpoint, fast_config


def _down(n: int) -> list[TransportError]:
    return [TransportError("refused") for _ in range(n)]


# ---- retries ---------------------------------------------------------------------------------


async def test_all_transports_down_then_up_retries_and_succeeds() -> None:
    rig = Rig(grpc=_down(1), msgpack=_down(1), json=_down(1))
    resp = await rig.hub.call("stt", "Echo", {"payload": b"again"})
    assert resp.payload == b"again"
    assert rig.count() == {"grpc": 2, "msgpack": 1, "json": 1}  # round 2 starts with gRPC again
    assert rig.sample("ultravox_hub_retries_total", service="stt") == 1


async def test_retries_exhausted_gives_service_unavailable_chained_to_the_last_failure() -> None:
    rig = Rig(grpc=_down(9), msgpack=_down(9), json=_down(9))
    with pytest.raises(ServiceUnavailable) as info:
        await rig.hub.call("stt", "Echo")
    assert not isinstance(info.value, TransportError)
    assert isinstance(info.value.__cause__, TransportError)
    assert "grpc: " in info.value.message and "json: " in info.value.message
    assert rig.count() == {"grpc": 3, "msgpack": 3, "json": 3}
    assert rig.sample("ultravox_hub_retries_total", service="stt") == 2


async def test_unavailable_answer_is_retried_but_not_sent_to_the_next_protocol() -> None:
    rig = Rig(grpc=_down(1), msgpack=[ServiceUnavailable("draining")])
    resp = await rig.hub.call("stt", "Echo")
    assert resp is not None
    # round 1: grpc (transport) -> msgpack (503, stop); round 2: grpc still marked down -> msgpack
    assert rig.count() == {"grpc": 1, "msgpack": 2, "json": 0}
    assert rig.sample("ultravox_hub_retries_total", service="stt") == 1


async def test_max_retries_zero_means_one_round() -> None:
    rig = Rig(config=fast_config(max_retries=0), grpc=_down(1), msgpack=_down(1), json=_down(1))
    with pytest.raises(ServiceUnavailable):
        await rig.hub.call("stt", "Echo")
    assert rig.count() == {"grpc": 1, "msgpack": 1, "json": 1}


async def test_endpoint_is_resolved_again_before_a_retry() -> None:
    rig = Rig(grpc=_down(1), msgpack=_down(1), json=_down(1))
    moved = endpoint(grpc_port=60001)

    class Moving:
        def __init__(self) -> None:
            self.n = 0

        def endpoint(self, service: str):  # type: ignore[no-untyped-def]
            self.n += 1
            return endpoint() if self.n == 1 else moved

    rig.hub._resolver = Moving()
    await rig.hub.call("stt", "Echo")
    assert rig.t["grpc"].calls[0].endpoint.grpc_port == 50051
    assert rig.t["grpc"].calls[1].endpoint is moved


# ---- deadlines -------------------------------------------------------------------------------


async def test_hanging_transport_is_cut_at_the_deadline_without_fallback() -> None:
    rig = Rig(grpc=[HANG])
    with pytest.raises(DeadlineExceeded) as info:
        await rig.hub.call("stt", "Echo", deadline_s=0.05)
    assert info.value.protocol == "grpc"
    assert rig.count() == {"grpc": 1, "msgpack": 0, "json": 0}
    assert rig.calls("grpc", "deadline_exceeded") == 1


async def test_transport_gets_the_absolute_deadline() -> None:
    rig = Rig()
    loop = asyncio.get_running_loop()
    before = loop.time()
    await rig.hub.call("stt", "Echo", deadline_s=2.0)
    call = rig.t["grpc"].calls[0]
    assert before < call.deadline <= loop.time() + 2.0
    assert call.connect_timeout_s == 0.05


async def test_default_deadline_from_config() -> None:
    rig = Rig(config=fast_config(default_deadline_s=7.0))
    loop = asyncio.get_running_loop()
    await rig.hub.call("stt", "Echo")
    assert 6.0 < rig.t["grpc"].calls[0].deadline - loop.time() <= 7.0


async def test_no_retry_past_the_deadline() -> None:
    rig = Rig(
        config=fast_config(retry_base_s=30.0, retry_cap_s=60.0),
        grpc=_down(3),
        msgpack=_down(3),
        json=_down(3),
    )
    with pytest.raises(DeadlineExceeded) as info:
        await rig.hub.call("stt", "Echo", deadline_s=1.0)
    assert isinstance(info.value.__cause__, TransportError)
    assert rig.count() == {"grpc": 1, "msgpack": 1, "json": 1}


@pytest.mark.parametrize("bad", [0.0, -1.0])
async def test_non_positive_deadline_is_invalid(bad: float) -> None:
    rig = Rig()
    with pytest.raises(InvalidArgument):
        await rig.hub.call("stt", "Echo", deadline_s=bad)


# ---- circuit breaker -------------------------------------------------------------------------


async def _fail_calls(rig: Rig, n: int) -> None:
    for _ in range(n):
        with pytest.raises(ServiceUnavailable):
            await rig.hub.call("stt", "Echo")


def _breaker_gauge(rig: Rig) -> float:
    return rig.sample("ultravox_hub_breaker_state", service="stt")


async def test_breaker_opens_fails_fast_then_half_opens_and_closes() -> None:
    rig = Rig(config=fast_config(max_retries=0), grpc=_down(3), msgpack=_down(3), json=_down(3))
    assert rig.hub.breaker_state("stt") == "closed"
    await _fail_calls(rig, 3)
    assert rig.hub.breaker_state("stt") == "open"
    assert _breaker_gauge(rig) == 2

    before = rig.count()
    with pytest.raises(CircuitOpen):
        await rig.hub.call("stt", "Echo")
    assert rig.count() == before  # failed fast, no I/O
    assert rig.calls("none", "circuit_open") == 1

    rig.clock.advance(10.0)
    assert rig.hub.breaker_state("stt") == "half_open"
    assert _breaker_gauge(rig) == 1
    await rig.hub.call("stt", "Echo")  # the probe; the fakes' scripts are spent, so it succeeds
    assert rig.hub.breaker_state("stt") == "closed"
    assert _breaker_gauge(rig) == 0


async def test_failed_probe_opens_the_breaker_again() -> None:
    rig = Rig(config=fast_config(max_retries=0), grpc=_down(4), msgpack=_down(4), json=_down(4))
    await _fail_calls(rig, 3)
    rig.clock.advance(10.0)
    await _fail_calls(rig, 1)
    assert rig.hub.breaker_state("stt") == "open"
    with pytest.raises(CircuitOpen):
        await rig.hub.call("stt", "Echo")


async def test_half_open_lets_exactly_one_probe_through() -> None:
    block = Block()
    rig = Rig(config=fast_config(max_retries=0), grpc=[*_down(3), block], msgpack=_down(3), json=_down(3))
    await _fail_calls(rig, 3)
    rig.clock.advance(10.0)
    probe = asyncio.create_task(rig.hub.call("stt", "Echo"))
    await block.entered.wait()
    with pytest.raises(CircuitOpen, match="probe"):
        await rig.hub.call("stt", "Echo")
    block.release()
    await probe
    assert rig.hub.breaker_state("stt") == "closed"


async def test_cancelled_probe_frees_the_probe_slot() -> None:
    block = Block()
    rig = Rig(config=fast_config(max_retries=0), grpc=[*_down(3), block], msgpack=_down(3), json=_down(3))
    await _fail_calls(rig, 3)
    rig.clock.advance(10.0)
    probe = asyncio.create_task(rig.hub.call("stt", "Echo"))
    await block.entered.wait()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    await rig.hub.call("stt", "Echo")  # becomes the new probe
    assert rig.hub.breaker_state("stt") == "closed"


async def test_rejections_never_open_the_breaker() -> None:
    rig = Rig(config=fast_config(max_retries=0), grpc=[InvalidArgument("no")] * 10)
    for _ in range(10):
        with pytest.raises(InvalidArgument):
            await rig.hub.call("stt", "Echo")
    assert rig.hub.breaker_state("stt") == "closed"


async def test_a_success_resets_the_consecutive_failures() -> None:
    rig = Rig(
        config=fast_config(max_retries=0), grpc=[*_down(2), None, *_down(2)], msgpack=_down(4), json=_down(4)
    )
    await _fail_calls(rig, 2)
    rig.clock.advance(5.0)  # let the down marks expire so the call tries gRPC first
    await rig.hub.call("stt", "Echo")
    rig.clock.advance(5.0)
    await _fail_calls(rig, 2)
    assert rig.hub.breaker_state("stt") == "closed"
    assert rig.hub.snapshot()["stt"]["consecutive_failures"] == 2


async def test_deadline_failures_count_against_the_breaker() -> None:
    rig = Rig(config=fast_config(max_retries=0), grpc=[HANG] * 3)
    for _ in range(3):
        with pytest.raises(DeadlineExceeded):
            await rig.hub.call("stt", "Echo", deadline_s=0.01)
    assert rig.hub.breaker_state("stt") == "open"
