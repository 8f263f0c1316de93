"""Hub fallback rules with fake transports: fall back only on TransportError, in order, never on a 'no'."""

from __future__ import annotations

import pytest

from core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceFailed,
    ServiceUnavailable,
    TransportError,
    Unauthenticated,
)
from core.managers.hub import CommunicationManager
from core.wire import CONTROL_OPS
from tests.unit.hub_fakes import FakeTransport, Rig, StaticResolver, endpoint, fast_config, process_context

ECHO_RESPONSE = CONTROL_OPS["Echo"].response


async def test_grpc_first_when_it_works() -> None:
    rig = Rig()
    resp = await rig.hub.call("stt", "Echo", {"payload": b"\x00\x01\xff"})
    assert isinstance(resp, ECHO_RESPONSE)
    assert resp.payload == b"\x00\x01\xff"
    assert rig.count() == {"grpc": 1, "msgpack": 0, "json": 0}


async def test_accepts_a_message_or_a_mapping_or_nothing() -> None:
    rig = Rig()
    req = CONTROL_OPS["Echo"].request(payload=b"m")
    assert (await rig.hub.call("stt", "Echo", req)).payload == b"m"
    assert (await rig.hub.call("stt", "Echo")).payload == b""
    assert rig.t["grpc"].calls[0].request is req


async def test_transport_error_falls_back_to_msgpack() -> None:
    rig = Rig(grpc=[TransportError("refused")])
    resp = await rig.hub.call("stt", "Echo", {"payload": b"x"})
    assert resp.payload == b"x"
    assert rig.count() == {"grpc": 1, "msgpack": 1, "json": 0}
    assert (
        rig.sample("ultravox_hub_fallbacks_total", service="stt", from_protocol="grpc", to_protocol="msgpack")
        == 1
    )


async def test_falls_through_to_json_when_grpc_and_msgpack_fail() -> None:
    rig = Rig(grpc=[TransportError("refused")], msgpack=[TransportError("reset")])
    assert (await rig.hub.call("stt", "Echo", {"payload": b"j"})).payload == b"j"
    assert rig.count() == {"grpc": 1, "msgpack": 1, "json": 1}
    assert (
        rig.sample("ultravox_hub_fallbacks_total", service="stt", from_protocol="msgpack", to_protocol="json")
        == 1
    )


@pytest.mark.parametrize(
    "err",
    [
        InvalidArgument("bad audio"),
        Unauthenticated("bad token"),
        NotFound("no such model"),
        ResourceExhausted("busy"),
        ServiceFailed("engine crashed"),
        DeadlineExceeded("too slow"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_no_fallback_and_no_retry_when_the_service_answered(err: Exception) -> None:
    rig = Rig(grpc=[err])
    with pytest.raises(type(err)) as info:
        await rig.hub.call("stt", "Echo", {"payload": b"x"})
    assert info.value is err
    assert rig.count() == {"grpc": 1, "msgpack": 0, "json": 0}
    assert rig.sample("ultravox_hub_retries_total", service="stt") == 0


async def test_rejection_after_a_fallback_is_not_sent_to_json() -> None:
    rig = Rig(grpc=[TransportError("refused")], msgpack=[InvalidArgument("bad")])
    with pytest.raises(InvalidArgument):
        await rig.hub.call("stt", "Echo", {"payload": b"x"})
    assert rig.count() == {"grpc": 1, "msgpack": 1, "json": 0}


async def test_errors_name_service_method_and_protocol() -> None:
    rig = Rig(grpc=[InvalidArgument("bad")])
    with pytest.raises(InvalidArgument) as info:
        await rig.hub.call("stt", "Echo")
    assert (info.value.service, info.value.method, info.value.protocol) == ("stt", "Echo", "grpc")


async def test_forced_protocol_uses_only_that_transport() -> None:
    rig = Rig()
    await rig.hub.call("stt", "Echo", {"payload": b"x"}, protocol="json")
    assert rig.count() == {"grpc": 0, "msgpack": 0, "json": 1}
    assert rig.t["json"].calls[0].fail_fast is False


async def test_forced_protocol_never_falls_back() -> None:
    rig = Rig(msgpack=[TransportError("refused")] * 10)
    with pytest.raises(ServiceUnavailable) as info:
        await rig.hub.call("stt", "Echo", protocol="msgpack")
    assert isinstance(info.value.__cause__, TransportError)
    assert rig.count() == {"grpc": 0, "msgpack": 3, "json": 0}  # first try + max_retries=2


async def test_unknown_protocol_is_invalid_argument_before_any_io() -> None:
    rig = Rig()
    with pytest.raises(InvalidArgument, match="unknown protocol 'carrier-pigeon'"):
        await rig.hub.call("stt", "Echo", protocol="carrier-pigeon")
    assert rig.count() == {"grpc": 0, "msgpack": 0, "json": 0}


async def test_unknown_method_is_not_found_before_any_io() -> None:
    rig = Rig()
    with pytest.raises(NotFound, match="no method 'Synthesize'"):
        await rig.hub.call("stt", "Synthesize")
    assert rig.count() == {"grpc": 0, "msgpack": 0, "json": 0}


async def test_unknown_service_is_not_found() -> None:
    rig = Rig()
    with pytest.raises(NotFound):
        await rig.hub.call("nope", "Echo")


async def test_resolver_key_error_becomes_not_found() -> None:
    class DictResolver:
        def endpoint(self, service: str):  # type: ignore[no-untyped-def]
            return {}[service]

    hub = CommunicationManager(
        process_context(), DictResolver(), config=fast_config(), transports={"grpc": FakeTransport()}
    )
    with pytest.raises(NotFound, match="unknown service 'ghost'"):
        await hub.call("ghost", "Echo")


async def test_bad_payload_is_invalid_argument_before_any_io() -> None:
    rig = Rig()
    with pytest.raises(InvalidArgument):
        await rig.hub.call("stt", "Echo", {"no_such_field": 1})
    assert rig.count() == {"grpc": 0, "msgpack": 0, "json": 0}


async def test_only_last_live_transport_waits_for_a_connection() -> None:
    rig = Rig(grpc=[TransportError("refused")], msgpack=[TransportError("refused")])
    await rig.hub.call("stt", "Echo")
    assert [t.calls[0].fail_fast for t in rig.t.values()] == [True, True, False]


async def test_a_failed_transport_is_skipped_for_a_while_then_tried_again() -> None:
    rig = Rig(grpc=[TransportError("refused")])
    await rig.hub.call("stt", "Echo")
    await rig.hub.call("stt", "Echo")  # grpc is marked down: straight to msgpack
    assert rig.count() == {"grpc": 1, "msgpack": 2, "json": 0}
    assert rig.hub.snapshot()["stt"]["down"] == ["grpc"]
    assert (
        rig.sample("ultravox_hub_fallbacks_total", service="stt", from_protocol="grpc", to_protocol="msgpack")
        == 2
    )
    rig.clock.advance(1.5)
    await rig.hub.call("stt", "Echo")
    assert rig.count() == {"grpc": 2, "msgpack": 2, "json": 0}
    assert rig.hub.snapshot()["stt"]["down"] == []


async def test_forced_protocol_ignores_the_down_mark() -> None:
    rig = Rig(grpc=[TransportError("refused")])
    await rig.hub.call("stt", "Echo")
    await rig.hub.call("stt", "Echo", protocol="grpc")
    assert rig.count()["grpc"] == 2


async def test_when_every_transport_is_marked_down_all_are_tried() -> None:
    rig = Rig(
        config=fast_config(max_retries=0),
        grpc=[TransportError("a")],
        msgpack=[TransportError("b")],
        json=[TransportError("c")],
    )
    with pytest.raises(ServiceUnavailable):
        await rig.hub.call("stt", "Echo")
    await rig.hub.call("stt", "Echo")
    assert rig.count() == {"grpc": 2, "msgpack": 1, "json": 1}


async def test_metadata_carries_token_request_id_and_caller_keys() -> None:
    rig = Rig()
    await rig.hub.call(
        "stt", "Echo", metadata={"X-Request-Id": "rid-1", "X-Session": "s1", "x-internal-token": "forged"}
    )
    md = dict(rig.t["grpc"].calls[0].metadata)
    assert md == {"x-internal-token": "secret-token", "x-request-id": "rid-1", "x-session": "s1"}
    await rig.hub.call("stt", "Echo")
    assert dict(rig.t["grpc"].calls[1].metadata)["x-request-id"]  # generated


async def test_transports_and_order_follow_config() -> None:
    hub = CommunicationManager(
        process_context(),
        StaticResolver(endpoint()),
        config=fast_config(protocols=("msgpack", "grpc")),
        transports={"grpc": FakeTransport(), "msgpack": FakeTransport(), "json": FakeTransport()},
    )
    assert hub.protocols == ("msgpack", "grpc")
    with pytest.raises(ValueError, match="no transport"):
        CommunicationManager(
            process_context(),
            StaticResolver(endpoint()),
            config=fast_config(protocols=("json",)),
            transports={"grpc": FakeTransport()},
        )


async def test_close_closes_transports_and_refuses_calls() -> None:
    rig = Rig()
    async with rig.hub:
        await rig.hub.call("stt", "Echo")
    assert all(t.closed for t in rig.t.values())
    with pytest.raises(ServiceUnavailable, match="closed"):
        await rig.hub.call("stt", "Echo")
    await rig.hub.close()  # idempotent
