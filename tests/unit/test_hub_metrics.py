"""Hub metrics land in the process registry with Prometheus names, and snapshot() mirrors them."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from core.errors import InvalidArgument, TransportError
from core.managers.hub.metrics import LATENCY_BUCKETS
from tests.unit.hub_fakes import Rig


async def test_attempts_are_counted_per_protocol_and_outcome() -> None:
    rig = Rig(grpc=[TransportError("refused")], msgpack=[None, InvalidArgument("bad")])
    await rig.hub.call("stt", "Echo")
    rig.clock.advance(5.0)
    await rig.hub.call("stt", "Echo")  # grpc works again
    rig.t["grpc"].script.append(TransportError("refused"))
    with pytest.raises(InvalidArgument):
        await rig.hub.call("stt", "Echo")
    assert rig.calls("grpc", "transport_error") == 2
    assert rig.calls("grpc", "ok") == 1
    assert rig.calls("msgpack", "ok") == 1
    assert rig.calls("msgpack", "invalid_argument") == 1
    assert (
        rig.sample("ultravox_hub_call_duration_seconds_count", service="stt", method="Echo", protocol="grpc")
        == 1
    )
    assert (
        rig.sample(
            "ultravox_hub_call_duration_seconds_count", service="stt", method="Echo", protocol="msgpack"
        )
        == 1
    )


async def test_snapshot_reports_breaker_counts_and_fallbacks() -> None:
    rig = Rig(grpc=[TransportError("refused")])
    await rig.hub.call("stt", "Echo")
    snap = rig.hub.snapshot()
    assert snap["stt"]["breaker"] == "closed"
    assert snap["stt"]["calls"] == {"grpc": {"transport_error": 1}, "msgpack": {"ok": 1}}
    assert snap["stt"]["fallbacks"] == {"grpc->msgpack": 1}
    assert snap["stt"]["retries"] == 0
    assert "refused" in snap["stt"]["last_error"]
    assert rig.hub.breaker_state("never-called") == "closed"


async def test_exposition_has_help_text_and_sub_millisecond_buckets() -> None:
    rig = Rig()
    await rig.hub.call("stt", "Echo")
    text = generate_latest(rig.ctx.registry).decode()
    for name in (
        "ultravox_hub_calls_total",
        "ultravox_hub_call_duration_seconds",
        "ultravox_hub_fallbacks_total",
        "ultravox_hub_retries_total",
        "ultravox_hub_breaker_state",
    ):
        assert f"# HELP {name}" in text
    assert min(LATENCY_BUCKETS) <= 0.0001
    assert 'le="0.00025"' in text


async def test_two_managers_keep_separate_registries() -> None:
    a, b = Rig(), Rig()
    await a.hub.call("stt", "Echo")
    assert a.calls("grpc", "ok") == 1
    assert b.calls("grpc", "ok") == 0
