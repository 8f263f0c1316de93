"""Hub streams with fake transports: fallback only before the first message, bidi replay, cancel, deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.errors import (
    CircuitOpen,
    DeadlineExceeded,
    InvalidArgument,
    ServiceFailed,
    ServiceUnavailable,
    TransportError,
)
from core.managers.hub.replay import ReplayBuffer
from core.wire import CONTROL_OPS
from tests.unit.hub_fakes import HANG, Rig, StreamStep, fast_config

ECHO_REQ = CONTROL_OPS["EchoStream"].request


async def collect(rig: Rig, method: str, payload: Any, **kw: Any) -> list[bytes]:
    return [m.payload async for m in rig.hub.stream("stt", method, payload, **kw)]


def streams(rig: Rig) -> dict[str, int]:
    return {p: len(t.stream_calls) for p, t in rig.t.items()}


async def test_server_stream_goes_over_grpc_and_counts_messages() -> None:
    rig = Rig()
    assert await collect(rig, "EchoRepeat", {"payload": b"x", "count": 3}) == [b"x"] * 3
    assert streams(rig) == {"grpc": 1, "msgpack": 0, "json": 0}
    labels = {"service": "stt", "method": "EchoRepeat", "protocol": "grpc"}
    assert rig.sample("ultravox_hub_stream_messages_total", **labels) == 3
    assert rig.calls("grpc", "ok", method="EchoRepeat") == 1
    assert rig.sample("ultravox_hub_stream_first_message_seconds_count", **labels) == 1
    assert rig.t["grpc"].stream_ends == ["end"]


async def test_transport_error_before_the_first_message_falls_back() -> None:
    rig = Rig(streams={"grpc": [TransportError("refused")]})
    assert await collect(rig, "EchoRepeat", {"payload": b"y", "count": 2}) == [b"y", b"y"]
    assert streams(rig) == {"grpc": 1, "msgpack": 1, "json": 0}
    assert rig.sample(
        "ultravox_hub_fallbacks_total", service="stt", from_protocol="grpc", to_protocol="msgpack"
    ) == 1
    assert rig.calls("grpc", "transport_error", method="EchoRepeat") == 1


async def test_transport_error_after_the_first_message_is_raised_not_restarted() -> None:
    rig = Rig(streams={"grpc": [StreamStep(messages=2, then=TransportError("connection reset"))]})
    got: list[bytes] = []
    with pytest.raises(TransportError, match=r"broke after 2 message\(s\).*not restarted.*connection reset"):
        async for m in rig.hub.stream("stt", "EchoRepeat", {"payload": b"z", "count": 5}):
            got.append(m.payload)
    assert got == [b"z", b"z"]
    assert streams(rig) == {"grpc": 1, "msgpack": 0, "json": 0}
    assert rig.hub.snapshot()["stt"]["consecutive_failures"] == 1  # a broken live stream counts
    assert rig.calls("grpc", "transport_error", method="EchoRepeat") == 1


async def test_a_rejection_is_never_resent() -> None:
    rig = Rig(streams={"grpc": [InvalidArgument("count too big")]})
    with pytest.raises(InvalidArgument, match="count too big"):
        await collect(rig, "EchoRepeat", {"count": 1})
    assert streams(rig) == {"grpc": 1, "msgpack": 0, "json": 0}
    assert rig.hub.breaker_state("stt") == "closed"


async def test_unavailable_before_the_first_message_is_retried() -> None:
    unavailable = [ServiceUnavailable("loading")] * 3
    rig = Rig(config=fast_config(max_retries=2), streams={"grpc": unavailable, "msgpack": unavailable})
    with pytest.raises(ServiceUnavailable, match="after 3 attempt"):
        await collect(rig, "EchoRepeat", {"count": 1})
    assert rig.sample("ultravox_hub_retries_total", service="stt") == 2


async def test_bidi_fallback_replays_the_requests_sent_so_far() -> None:
    rig = Rig(streams={"grpc": [StreamStep(read=2, then=TransportError("reset before any reply"))]})
    pulled: list[int] = []

    async def requests() -> AsyncIterator[dict[str, bytes]]:
        for i in range(4):
            pulled.append(i)
            yield {"payload": bytes([i])}

    got = await collect(rig, "EchoStream", requests())
    assert got == [bytes([i]) for i in range(4)]
    assert rig.t["grpc"].seen == [[b"\x00", b"\x01"]]
    assert rig.t["msgpack"].seen == [[bytes([i]) for i in range(4)]]  # from the first request again
    assert pulled == [0, 1, 2, 3]  # the caller's iterator was read once


async def test_bidi_after_the_first_message_never_falls_back() -> None:
    rig = Rig(streams={"grpc": [StreamStep(messages=1, then=TransportError("reset"))]})
    with pytest.raises(TransportError, match="broke after 1 message"):
        await collect(rig, "EchoStream", [{"payload": b"a"}, {"payload": b"b"}])
    assert streams(rig) == {"grpc": 1, "msgpack": 0, "json": 0}


async def test_bidi_accepts_plain_iterables_of_messages_or_dicts() -> None:
    rig = Rig()
    assert await collect(rig, "EchoStream", [ECHO_REQ(payload=b"m"), {"payload": b"d"}]) == [b"m", b"d"]
    assert await collect(rig, "EchoStream", iter([])) == []


@pytest.mark.parametrize("payload", [None, {"payload": b"x"}, ECHO_REQ(payload=b"x"), b"raw", 42])
async def test_bidi_needs_an_iterable_of_requests(payload: Any) -> None:
    rig = Rig()
    with pytest.raises(InvalidArgument, match="bidirectional stream: pass its requests as an iterable"):
        await collect(rig, "EchoStream", payload)
    assert streams(rig) == {"grpc": 0, "msgpack": 0, "json": 0}


async def test_a_bad_request_item_is_invalid_argument() -> None:
    rig = Rig()
    with pytest.raises(InvalidArgument, match=r"invalid ultravox\.v1\.EchoRequest"):
        await collect(rig, "EchoStream", [{"payload": b"ok"}, {"nope": 1}])


async def test_the_callers_own_iterator_error_reaches_the_consumer() -> None:
    async def requests() -> AsyncIterator[dict[str, bytes]]:
        yield {"payload": b"a"}
        raise ValueError("microphone unplugged")

    rig = Rig(streams={"grpc": [StreamStep(read=2, messages=1)]})
    with pytest.raises(ValueError, match="microphone unplugged"):
        await collect(rig, "EchoStream", requests())
    assert streams(rig) == {"grpc": 1, "msgpack": 0, "json": 0}


async def test_closing_the_stream_closes_the_transport_stream() -> None:
    rig = Rig(streams={"grpc": [StreamStep(messages=100, interval_s=0.001)]})
    stream = rig.hub.stream("stt", "EchoRepeat", {"payload": b"c", "count": 100})
    assert (await anext(stream)).payload == b"c"
    await stream.aclose()
    assert rig.t["grpc"].stream_ends == ["closed"]
    assert rig.calls("grpc", "cancelled", method="EchoRepeat") == 1
    assert rig.hub.breaker_state("stt") == "closed"


async def test_breaking_out_with_aclosing_closes_the_transport_stream() -> None:
    rig = Rig()
    async with contextlib.aclosing(rig.hub.stream("stt", "EchoRepeat", {"count": 50})) as stream:
        async for _ in stream:
            break
    assert rig.t["grpc"].stream_ends == ["closed"]


async def test_the_deadline_covers_the_whole_stream() -> None:
    rig = Rig(streams={"grpc": [StreamStep(messages=10_000, interval_s=0.02)]})
    got = 0
    with pytest.raises(DeadlineExceeded):
        async for _ in rig.hub.stream("stt", "EchoRepeat", {"count": 1}, deadline_s=0.2):
            got += 1
    assert 1 <= got < 10_000
    assert rig.t["grpc"].stream_ends == ["closed"]  # the timeout cancelled the transport's read
    assert streams(rig) == {"grpc": 1, "msgpack": 0, "json": 0}


async def test_a_deadline_before_the_first_message_does_not_fall_back() -> None:
    rig = Rig(streams={"grpc": [HANG]})
    with pytest.raises(DeadlineExceeded):
        await collect(rig, "EchoRepeat", {"count": 1}, deadline_s=0.05)
    assert streams(rig) == {"grpc": 1, "msgpack": 0, "json": 0}


async def test_an_empty_stream_ends_cleanly() -> None:
    rig = Rig(streams={"grpc": [StreamStep(messages=0)]})
    assert await collect(rig, "EchoRepeat", {"count": 0}) == []
    assert rig.calls("grpc", "ok", method="EchoRepeat") == 1


async def test_a_forced_protocol_never_falls_back() -> None:
    rig = Rig(config=fast_config(max_retries=0), streams={"json": [TransportError("refused")]})
    with pytest.raises(ServiceUnavailable, match="over json: refused"):
        await collect(rig, "EchoRepeat", {"count": 1}, protocol="json")
    assert streams(rig) == {"grpc": 0, "msgpack": 0, "json": 1}


async def test_an_open_breaker_refuses_streams() -> None:
    rig = Rig(config=fast_config(max_retries=0, breaker_failure_threshold=1),
              streams={p: [TransportError("down")] for p in ("grpc", "msgpack", "json")})
    with pytest.raises(ServiceUnavailable):
        await collect(rig, "EchoRepeat", {"count": 1})
    with pytest.raises(CircuitOpen):
        await collect(rig, "EchoRepeat", {"count": 1})


async def test_call_and_stream_refuse_the_wrong_kind() -> None:
    rig = Rig()
    with pytest.raises(InvalidArgument, match=r"EchoRepeat is a server_stream operation; use stream\(\)"):
        await rig.hub.call("stt", "EchoRepeat", {"count": 1})
    with pytest.raises(InvalidArgument, match=r"EchoStream is a bidi_stream operation; use stream\(\)"):
        await rig.hub.call("stt", "EchoStream")
    with pytest.raises(InvalidArgument, match=r"stt.Echo is a unary operation; use call\(\)"):
        await collect(rig, "Echo", {"payload": b"x"})
    assert rig.count() == {"grpc": 0, "msgpack": 0, "json": 0}
    assert streams(rig) == {"grpc": 0, "msgpack": 0, "json": 0}


async def test_a_malformed_stream_from_the_service_is_service_failed() -> None:
    rig = Rig(streams={"grpc": [StreamStep(messages=1, then=ServiceFailed("malformed frame"))]})
    with pytest.raises(ServiceFailed, match="malformed frame"):
        await collect(rig, "EchoRepeat", {"count": 3})


async def test_replay_buffer_drops_requests_once_committed() -> None:
    buf = ReplayBuffer([{"payload": bytes([i])} for i in range(5)], lambda d: ECHO_REQ(**d))
    first = buf.view()
    assert [(await anext(first)).payload for _ in range(2)] == [b"\x00", b"\x01"]
    live = buf.view()  # a fallback attempt starts over
    assert [(await anext(live)).payload for _ in range(3)] == [b"\x00", b"\x01", b"\x02"]
    assert len(buf._items) == 3  # kept for another replay
    buf.commit()  # the first response came: no more replays
    assert [m.payload async for m in live] == [b"\x03", b"\x04"]
    assert buf._items == []  # nothing is kept once read
    assert buf.pulled == 5


async def test_replay_buffer_survives_a_cancelled_reader() -> None:
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[dict[str, bytes]]:
        await gate.wait()
        yield {"payload": b"late"}

    buf = ReplayBuffer(slow(), lambda d: ECHO_REQ(**d))
    reader = asyncio.ensure_future(anext(buf.view()))
    await asyncio.sleep(0.01)
    reader.cancel()  # a failed attempt's reader goes away while the caller's iterator is mid-read
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    gate.set()
    assert (await anext(buf.view())).payload == b"late"  # the next attempt gets it
    await buf.aclose()
