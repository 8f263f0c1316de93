"""Hub series exist before the first call, and a failed call counts once in ultravox_errors_total
and in ultravox_hub_failed_calls_total (per service: the HighErrorRate alert's numerator)."""

from __future__ import annotations

import pytest

from core.errors import CircuitOpen, InvalidArgument, ServiceUnavailable, TransportError
from tests.unit.hub_fakes import Rig, StreamStep, fast_config


def errors(rig: Rig, kind: str) -> float:
    return rig.sample("ultravox_errors_total", source="hub", type=kind)


def failed(rig: Rig, code: str, method: str = "Echo", service: str = "stt") -> float:
    value = rig.ctx.registry.get_sample_value(
        "ultravox_hub_failed_calls_total", {"service": service, "method": method, "code": code})
    return value or 0.0


def ended(rig: Rig, method: str = "Echo") -> float:
    """Calls that ended without failing: one ``ok`` or ``cancelled`` attempt each, over any protocol."""
    return sum(rig.calls(p, o, method=method) for p in ("grpc", "msgpack", "json") for o in ("ok", "cancelled"))


def test_every_configured_service_has_its_series_at_zero() -> None:
    rig = Rig()
    services = {c.name: c.role for c in rig.ctx.settings.enabled_services()}
    assert services  # the repo's config enables stt, tts and llm
    for service, role in services.items():
        method = {"stt": "Transcribe", "tts": "SynthesizeStream", "llm": "Generate"}[role]
        for protocol in ("grpc", "msgpack", "json"):
            labels = {"service": service, "method": method, "protocol": protocol, "outcome": "ok"}
            assert rig.ctx.registry.get_sample_value("ultravox_hub_calls_total", labels) == 0
        assert rig.sample("ultravox_hub_breaker_state", service=service) == 0
        assert rig.ctx.registry.get_sample_value("ultravox_hub_retries_total", {"service": service}) == 0
        fb = {"service": service, "from_protocol": "grpc", "to_protocol": "msgpack"}
        assert rig.ctx.registry.get_sample_value("ultravox_hub_fallbacks_total", fb) == 0
    assert rig.ctx.registry.get_sample_value("ultravox_errors_total", {"source": "hub", "type": "INTERNAL"}) == 0


async def test_a_call_that_fell_back_and_succeeded_is_no_error() -> None:
    rig = Rig(grpc=[TransportError("refused")])
    await rig.hub.call("stt", "Echo")
    assert rig.calls("grpc", "transport_error") == 1
    assert errors(rig, "UNAVAILABLE") == 0
    assert failed(rig, "UNAVAILABLE") == 0 and ended(rig) == 1  # one call, not failed: a failure share of 0


async def test_a_failed_call_counts_once_whatever_its_attempts() -> None:
    down = [TransportError("refused")] * 3
    rig = Rig(config=fast_config(max_retries=1, breaker_failure_threshold=10), grpc=down, msgpack=down, json=down)
    with pytest.raises(ServiceUnavailable):
        await rig.hub.call("stt", "Echo")
    assert sum(rig.count().values()) == 6  # two rounds of three transports
    assert errors(rig, "UNAVAILABLE") == 1
    assert failed(rig, "UNAVAILABLE") == 1 and ended(rig) == 0  # one call, failed: a failure share of 1


async def test_rejections_and_open_breakers_are_counted_by_code() -> None:
    rig = Rig(config=fast_config(max_retries=0, breaker_failure_threshold=1), grpc=[InvalidArgument("bad")])
    with pytest.raises(InvalidArgument):
        await rig.hub.call("stt", "Echo")
    assert errors(rig, "INVALID_ARGUMENT") == 1
    down = [TransportError("refused")]
    for t in rig.t.values():
        t.script.extend(down)
    with pytest.raises(ServiceUnavailable):
        await rig.hub.call("stt", "Echo")  # opens the breaker (threshold 1)
    with pytest.raises(CircuitOpen):
        await rig.hub.call("stt", "Echo")
    assert errors(rig, "UNAVAILABLE") == 2
    assert failed(rig, "UNAVAILABLE") == 2 and failed(rig, "INVALID_ARGUMENT") == 1
    assert rig.sample("ultravox_hub_breaker_state", service="stt") == 2


async def test_a_live_stream_that_breaks_counts_once_and_a_fallback_before_it_does_not() -> None:
    rig = Rig(streams={"grpc": [TransportError("refused")],
                       "msgpack": [StreamStep(messages=1, then=TransportError("connection reset"))]})
    with pytest.raises(TransportError):
        async for _ in rig.hub.stream("stt", "EchoRepeat", {"payload": b"z", "count": 3}):
            pass
    assert rig.calls("grpc", "transport_error", method="EchoRepeat") == 1  # the fallback: no error of the call
    assert errors(rig, "UNAVAILABLE") == 1  # the break the consumer saw
    assert failed(rig, "UNAVAILABLE", "EchoRepeat") == 1 and ended(rig, "EchoRepeat") == 0
