"""Hub retries, deadlines and the circuit breaker, driven through CommunicationManager with fakes;
and the resilience controls on top of them: the per-service view, the last failure, retry counts
and an operator's breaker reset."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from core.errors import CircuitOpen, DeadlineExceeded, InvalidArgument, NotFound, ServiceUnavailable, TransportError
from core.managers.hub import BreakerState, CircuitBreaker
from tests.unit.hub_fakes import HANG, Block, ManualClock, Rig, endpoint, fast_config


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


# ---- resilience controls: last failure, reset, retry counts, the view ---------------------------


async def test_breaker_records_the_last_transient_failure_not_a_rejection() -> None:
    rig = Rig(config=fast_config(max_retries=0), grpc=[*_down(1), InvalidArgument("no")], msgpack=_down(1),
              json=_down(1))
    before = time.time()
    await _fail_calls(rig, 1)
    b = rig.hub.resilience()[_index(rig, "stt")]["breaker"]
    assert b["state"] == "closed" and b["consecutive_failures"] == 1
    assert b["last_failure"].startswith("Echo: ServiceUnavailable: ") and "refused" in b["last_failure"]
    assert before <= b["last_failure_at"] <= time.time()
    rig.clock.advance(5.0)
    with pytest.raises(InvalidArgument):
        await rig.hub.call("stt", "Echo")
    after = rig.hub.resilience()[_index(rig, "stt")]["breaker"]
    assert after["consecutive_failures"] == 0  # an answer, even a no, is a success
    assert after["last_failure_at"] == b["last_failure_at"]  # the last failure is history


def _index(rig: Rig, service: str) -> int:
    return [v["service"] for v in rig.hub.resilience()].index(service)


def _view(rig: Rig, service: str = "stt") -> dict[str, Any]:
    view: dict[str, Any] = rig.hub.resilience()[_index(rig, service)]
    return view


async def test_open_breaker_view_has_opened_at_probe_time_refusals_and_down_marks() -> None:
    rig = Rig(config=fast_config(max_retries=0), grpc=_down(3), msgpack=_down(3), json=_down(3))
    await _fail_calls(rig, 3)
    with pytest.raises(CircuitOpen):
        await rig.hub.call("stt", "Echo")
    rig.clock.advance(4.0)
    v = _view(rig)
    assert set(v) == {"service", "breaker", "protocols", "retries"}
    b = v["breaker"]
    assert b["state"] == "open" and b["consecutive_failures"] == 3 and b["failure_threshold"] == 3
    assert b["opened_at"] == b["last_failure_at"] and b["probe_in_s"] == pytest.approx(6.0)
    assert b["refused"] == 1 and b["reset_s"] == 10.0
    rows = {p["protocol"]: p for p in v["protocols"]}
    assert list(rows) == ["grpc", "msgpack", "json"]  # the fallback order; no "none" row
    # the marks last 1 s (transport_down_s) and 4 s passed since: no longer down
    assert rows["grpc"] == {"protocol": "grpc", "down": False, "down_for_s": 0.0, "calls": 3, "failures": 3,
                            "outcomes": {"transport_error": 3}}
    assert v["retries"] == {"attempted": 0, "succeeded": 0, "exhausted": 0}
    rig.clock.advance(6.0)
    assert _view(rig)["breaker"]["state"] == "half_open" and _view(rig)["breaker"]["probe_in_s"] is None


async def test_protocol_marked_down_shows_in_the_view() -> None:
    rig = Rig(grpc=_down(1))
    await rig.hub.call("stt", "Echo")
    rows = {p["protocol"]: p for p in _view(rig)["protocols"]}
    assert rows["grpc"]["down"] and rows["grpc"]["down_for_s"] == pytest.approx(1.0)
    assert rows["msgpack"] == {"protocol": "msgpack", "down": False, "down_for_s": 0.0, "calls": 1, "failures": 0,
                               "outcomes": {"ok": 1}}


async def test_retry_counters_attempted_succeeded_exhausted() -> None:
    rig = Rig(grpc=_down(1), msgpack=_down(1), json=_down(1))
    await rig.hub.call("stt", "Echo")  # round 1 fails everywhere, round 2 answers
    assert _view(rig)["retries"] == {"attempted": 1, "succeeded": 1, "exhausted": 0}
    rig = Rig(grpc=_down(3), msgpack=_down(3), json=_down(3))  # max_retries 2: 3 rounds, all fail
    with pytest.raises(ServiceUnavailable):
        await rig.hub.call("stt", "Echo")
    assert _view(rig)["retries"] == {"attempted": 2, "succeeded": 0, "exhausted": 1}
    assert rig.sample("ultravox_hub_retries_total", service="stt") == 2  # the existing Prometheus counter
    assert rig.hub.snapshot()["stt"]["retries_exhausted"] == 1


async def test_a_call_answered_in_its_first_round_is_no_retry_success() -> None:
    rig = Rig(grpc=_down(1))
    await rig.hub.call("stt", "Echo")  # falls back within round 1
    assert _view(rig)["retries"] == {"attempted": 0, "succeeded": 0, "exhausted": 0}


async def test_no_retries_configured_counts_no_exhaustion() -> None:
    rig = Rig(config=fast_config(max_retries=0), grpc=_down(1), msgpack=_down(1), json=_down(1))
    with pytest.raises(ServiceUnavailable):
        await rig.hub.call("stt", "Echo")
    assert _view(rig)["retries"] == {"attempted": 0, "succeeded": 0, "exhausted": 0}


async def test_reset_closes_an_open_breaker_and_clears_down_marks(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(config=fast_config(max_retries=0), grpc=_down(3), msgpack=_down(3), json=_down(3))
    await _fail_calls(rig, 3)
    assert rig.hub.breaker_state("stt") == "open"
    assert rig.hub.rounds.down("stt", rig.hub.protocols) == ["grpc", "msgpack", "json"]
    with caplog.at_level(logging.WARNING):
        r = rig.hub.reset_breaker("stt")
    assert r["service"] == "stt" and r["previous_state"] == "open" and r["previous_failures"] == 3
    assert r["cleared_down"] == ["grpc", "json", "msgpack"]
    assert r["now"]["breaker"]["state"] == "closed" and r["now"]["breaker"]["consecutive_failures"] == 0
    assert r["now"]["breaker"]["last_failure"]  # kept: history, not state
    assert not any(p["down"] for p in r["now"]["protocols"])
    assert rig.hub.breaker_state("stt") == "closed" and _breaker_gauge(rig) == 0
    assert any(rec.levelno == logging.WARNING and "stt" in rec.getMessage() and "reset" in rec.getMessage()
               for rec in caplog.records)
    before = rig.count()
    await rig.hub.call("stt", "Echo")  # no CircuitOpen, and gRPC is tried first again
    assert rig.count() == {**before, "grpc": before["grpc"] + 1}


async def test_reset_of_a_half_open_breaker_with_its_probe_in_flight() -> None:
    block = Block()
    rig = Rig(config=fast_config(max_retries=0), grpc=[*_down(3), block], msgpack=_down(3), json=_down(3))
    await _fail_calls(rig, 3)
    rig.clock.advance(10.0)
    probe = asyncio.create_task(rig.hub.call("stt", "Echo"))
    await block.entered.wait()
    assert rig.hub.reset_breaker("stt")["previous_state"] == "half_open"
    await rig.hub.call("stt", "Echo")  # closed: no longer blocked behind the probe
    block.release()
    await probe
    assert rig.hub.breaker_state("stt") == "closed"


async def test_reset_of_a_known_service_the_hub_never_called() -> None:
    rig = Rig()
    known = {c.name for c in rig.ctx.settings.enabled_services()}
    name = sorted(known - {"stt"})[0]
    r = rig.hub.reset_breaker(name)
    assert r == {"service": name, "previous_state": "closed", "previous_failures": 0, "cleared_down": [],
                 "now": _view(rig, name)}
    assert r["now"]["breaker"]["state"] == "closed" and r["now"]["breaker"]["last_failure"] is None
    assert all(p["calls"] == 0 for p in r["now"]["protocols"])


async def test_reset_of_an_unknown_service_is_not_found_and_says_where_to_look() -> None:
    rig = Rig()
    with pytest.raises(NotFound) as info:
        rig.hub.reset_breaker("nosuch")
    msg = info.value.message
    assert "'nosuch'" in msg and "GET /api/resilience" in msg and "sm breakers" in msg
    assert "nosuch" not in rig.hub.known_services()


async def test_view_lists_enabled_services_and_extra_names_sorted() -> None:
    rig = Rig()
    names = [v["service"] for v in rig.hub.resilience(["zz-extra"])]
    assert names == sorted(names) and "zz-extra" in names and "stt" in names
    assert {c.name for c in rig.ctx.settings.enabled_services()} <= set(names)


def test_breaker_unit_reset_and_probe_time() -> None:
    clock = ManualClock()
    changes: list[BreakerState] = []
    b = CircuitBreaker("x", failure_threshold=2, reset_s=5.0, clock=clock, wall=lambda: 42.0,
                       on_change=changes.append)
    assert b.probe_in_s() is None and b.last_failure == "" and b.last_failure_at is None
    b.failure("boom")
    b.failure("bang")
    assert b.state is BreakerState.OPEN and b.last_failure == "bang" and b.opened_at_wall == 42.0
    clock.advance(2.0)
    assert b.probe_in_s() == pytest.approx(3.0)
    b.reset()
    assert b.state is BreakerState.CLOSED and b.consecutive_failures == 0 and b.probe_in_s() is None
    assert changes == [BreakerState.OPEN, BreakerState.CLOSED]
    b.acquire()  # closed: lets the call through
