"""The HTTP transport's streams against httpx.MockTransport: frames in and out, errors, broken bodies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack
import pytest

from core.errors import InvalidArgument, ResourceExhausted, ServiceFailed, TransportError
from core.managers.hub import HttpClientPool, HttpTransport
from core.managers.hub.transports import StreamCall
from core.wire import CONTROL_OPS, Operation
from core.wire.frames import FrameReader, data_frame, error_frame
from tests.unit.hub_fakes import endpoint

REPEAT, ECHO_STREAM = CONTROL_OPS["EchoRepeat"], CONTROL_OPS["EchoStream"]
MD = (("x-internal-token", "secret-token"), ("x-request-id", "rid-7"))


def _call(op: Operation, request: Any = None, requests: AsyncIterator[Any] | None = None) -> StreamCall:
    deadline = asyncio.get_running_loop().time() + 5.0
    return StreamCall(endpoint(), op, request, requests, deadline, MD, 0.5)


class _Body(httpx.AsyncByteStream):
    """A streamed response body (``content=`` would be pre-read): ``chunks``, then maybe a reset."""

    def __init__(self, chunks: list[bytes], fail: bool = False) -> None:
        self.chunks, self.fail = chunks, fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for c in self.chunks:
            yield c
        if self.fail:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def _transport(codec: str, handler: Any) -> HttpTransport:
    return HttpTransport(codec, pool=HttpClientPool(transport=httpx.MockTransport(handler)))


async def _read(t: HttpTransport, call: StreamCall) -> list[Any]:
    return [m async for m in t.stream(call)]


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_server_stream_frames_split_anywhere(codec: str) -> None:
    fmt = "msgpack" if codec == "msgpack" else "json"
    body = b"".join(data_frame(REPEAT.response(payload=bytes([i]) * 3), fmt) for i in range(4))  # type: ignore[arg-type]
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=_Body([body[i:i + 5] for i in range(0, len(body), 5)]))

    got = await _read(_transport(codec, handle), _call(REPEAT, REPEAT.request(count=4)))
    assert [m.payload for m in got] == [bytes([i]) * 3 for i in range(4)]
    req = seen[0]
    assert req.url.path == REPEAT.http_path
    assert req.headers["x-internal-token"] == "secret-token" and req.headers["x-request-id"] == "rid-7"
    assert req.headers["accept"] == ("application/msgpack" if codec == "msgpack" else "application/x-ndjson")


async def test_bidi_requests_go_out_as_frames() -> None:
    bodies: list[bytes] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(await request.aread())
        assert request.headers["content-type"] == "application/x-ndjson"
        frames = FrameReader("json").feed(bodies[-1])
        out = b"".join(data_frame(ECHO_STREAM.response(payload=f.data["payload"].encode()), "json")
                       for f in frames if f.data)
        return httpx.Response(200, stream=_Body([out]))

    async def requests() -> AsyncIterator[Any]:
        for p in (b"a", b"bc"):
            yield ECHO_STREAM.request(payload=p)

    got = await _read(_transport("json", handle), _call(ECHO_STREAM, requests=requests()))
    assert [json.loads(line) for line in bodies[0].splitlines()] == [
        {"data": {"payload": "YQ=="}}, {"data": {"payload": "YmM="}}
    ]
    assert [m.payload for m in got] == [b"YQ==", b"YmM="]


async def test_an_error_reply_before_any_frame_is_the_error() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, content=msgpack.packb({"error": {"code": "RESOURCE_EXHAUSTED", "message": "full"}}),
                              headers={"content-type": "application/msgpack"})

    with pytest.raises(ResourceExhausted, match="full"):
        await _read(_transport("msgpack", handle), _call(REPEAT, REPEAT.request()))


async def test_a_final_error_frame_ends_the_stream_with_that_error() -> None:
    body = data_frame(REPEAT.response(payload=b"1"), "msgpack") + error_frame("INVALID_ARGUMENT", "bad", "msgpack")
    t = _transport("msgpack", lambda r: httpx.Response(200, stream=_Body([body])))
    got: list[Any] = []
    with pytest.raises(InvalidArgument, match="bad"):
        async for m in t.stream(_call(REPEAT, REPEAT.request())):
            got.append(m.payload)
    assert got == [b"1"]


async def test_a_body_cut_short_is_a_transport_error() -> None:
    first = data_frame(REPEAT.response(payload=b"1"), "msgpack")
    t = _transport("msgpack", lambda r: httpx.Response(200, stream=_Body([first], fail=True)))
    got: list[Any] = []
    with pytest.raises(TransportError, match="broke: RemoteProtocolError"):
        async for m in t.stream(_call(REPEAT, REPEAT.request())):
            got.append(m.payload)
    assert got == [b"1"]


@pytest.mark.parametrize("body", [b"\xc1", msgpack.packb({"data": {"nope": 1}}), msgpack.packb({"data": {}})[:-1]])
async def test_a_malformed_stream_is_service_failed(body: bytes) -> None:
    t = _transport("msgpack", lambda r: httpx.Response(200, stream=_Body([body])))
    with pytest.raises(ServiceFailed, match="malformed msgpack stream"):
        await _read(t, _call(REPEAT, REPEAT.request()))


async def test_a_refused_connection_is_a_transport_error() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(TransportError, match="ConnectError"):
        await _read(_transport("json", handle), _call(REPEAT, REPEAT.request()))
