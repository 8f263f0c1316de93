"""The runtime's streaming side in-process: handler shapes, the dispatcher, gRPC streams and HTTP frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import msgpack
import pytest
from grpc_health.v1.health import aio as health_aio

from core.errors import InvalidArgument, ServiceFailed, ServiceUnavailable, SupervisorError, Unauthenticated
from core.wire import CONTROL_OPS, Operation
from core.wire.frames import FrameReader
from services.runtime.api import CallInfo
from services.runtime.binding import HandlerMismatch, bind_handlers
from services.runtime.grpc_server import build_grpc_server
from tests.helpers.fake_service import RECOGNIZE, TOKEN, Runtime, make_runtime

AUTH = (("x-internal-token", TOKEN),)
REPEAT, ECHO_STREAM = CONTROL_OPS["EchoRepeat"], CONTROL_OPS["EchoStream"]


def call_info(method: str, protocol: Any = "grpc") -> CallInfo:
    return CallInfo(method=method, protocol=protocol, request_id="rid-s")


async def _aiter(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


# ---- handler shapes -------------------------------------------------------------------------

async def _unary(req: Any, call: Any) -> Any:
    return None


async def _gen(req: Any, call: Any) -> AsyncIterator[Any]:
    yield None


def test_a_unary_handler_for_a_streaming_op_is_refused_naming_the_op() -> None:
    with pytest.raises(HandlerMismatch, match="Generate is server_stream and needs an async generator") as e:
        bind_handlers("llm", {"Generate": _unary, "ListModels": _unary})
    assert "its handler is a coroutine function" in str(e.value)
    assert isinstance(e.value, SupervisorError)  # the process exits EXIT_STARTUP with this message


def test_a_generator_for_a_unary_op_and_a_plain_function_are_refused() -> None:
    with pytest.raises(HandlerMismatch, match="ListModels is unary and needs an 'async def' coroutine"):
        bind_handlers("llm", {"Generate": _gen, "ListModels": _gen})
    with pytest.raises(HandlerMismatch, match=r"Generate .* a plain callable \(function\)"):
        bind_handlers("llm", {"Generate": lambda r, c: None, "ListModels": _unary})


def test_handlers_of_the_right_shapes_bind() -> None:
    assert set(bind_handlers("llm", {"Generate": _gen, "ListModels": _unary})) == {"Generate", "ListModels"}


# ---- dispatcher -----------------------------------------------------------------------------

async def test_stream_counts_messages_and_leaves_no_call_in_flight() -> None:
    rt = make_runtime()
    reqs = _aiter([RECOGNIZE.request(audio=b"abc"), RECOGNIZE.request(audio=b"de")])
    stream = rt.dispatcher.stream("StreamingRecognize", reqs, call_info("StreamingRecognize"), TOKEN)
    out = [m.text async for m in stream]
    assert out == ["3 bytes", "2 bytes"]
    labels = {"method": "StreamingRecognize", "protocol": "grpc"}
    assert rt.sample("uv_service_stream_messages_total", direction="in", **labels) == 2
    assert rt.sample("uv_service_stream_messages_total", direction="out", **labels) == 2
    assert rt.sample("uv_service_stream_first_message_seconds_count", **labels) == 1
    assert rt.sample("uv_service_calls_total", outcome="ok", **labels) == 1
    assert rt.sample("uv_service_calls_in_flight", method="StreamingRecognize") == 0
    assert rt.dispatcher.in_flight == 0
    assert rt.service.closed == ["end"]


async def test_closing_the_stream_closes_the_handler_and_counts_cancelled() -> None:
    rt = make_runtime()
    stream = rt.dispatcher.stream(
        "StreamingRecognize", _aiter([RECOGNIZE.request(audio=b"endless")]), call_info("StreamingRecognize"), TOKEN
    )
    for _ in range(3):
        await anext(stream)
    assert rt.dispatcher.in_flight == 1
    await stream.aclose()
    assert rt.service.closed == ["GeneratorExit"]
    assert rt.service.produced == 3
    assert rt.dispatcher.in_flight == 0
    assert rt.sample("uv_service_calls_total", method="StreamingRecognize", protocol="grpc", outcome="cancelled") == 1


async def test_stream_refusals_and_failures() -> None:
    rt = make_runtime()

    async def run(method: str, request: Any, token: str | None = TOKEN) -> list[Any]:
        return [m async for m in rt.dispatcher.stream(method, request, call_info(method), token)]

    with pytest.raises(Unauthenticated):
        await run("EchoRepeat", REPEAT.request(count=1), token=None)
    with pytest.raises(InvalidArgument, match="unary operation; call it with one request"):
        await run("Echo", CONTROL_OPS["Echo"].request())
    with pytest.raises(InvalidArgument, match="open it as a stream"):
        await rt.dispatcher.invoke("EchoRepeat", REPEAT.request(count=1), call_info("EchoRepeat"), TOKEN)
    with pytest.raises(ServiceFailed, match=r"ZeroDivisionError: kaboom.*request_id rid-s"):
        await run("StreamingRecognize", _aiter([RECOGNIZE.request(audio=b"x"), RECOGNIZE.request(audio=b"crash")]))
    assert rt.dispatcher.in_flight == 0


async def test_role_streams_wait_for_the_model_but_control_streams_do_not() -> None:
    rt = make_runtime(ready=False)
    with pytest.raises(ServiceUnavailable, match=r"loading its model|starting its servers"):
        async for _ in rt.dispatcher.stream("StreamingRecognize", _aiter([]), call_info("StreamingRecognize"), TOKEN):
            pass
    got = [m async for m in rt.dispatcher.stream("EchoRepeat", REPEAT.request(count=2), call_info("EchoRepeat"), TOKEN)]
    assert len(got) == 2


async def test_a_handler_yielding_the_wrong_type_is_service_failed() -> None:
    rt = make_runtime()

    async def wrong(req: Any, call: CallInfo) -> AsyncIterator[Any]:
        yield CONTROL_OPS["Info"].response()

    rt.dispatcher._handlers["EchoRepeat"] = wrong
    with pytest.raises(ServiceFailed, match=r"returned InfoResponse, not ultravox\.v1\.EchoResponse"):
        async for _ in rt.dispatcher.stream("EchoRepeat", REPEAT.request(), call_info("EchoRepeat"), TOKEN):
            pass


@pytest.mark.parametrize(("count", "interval"), [(-1, 0), (10_001, 0), (1, -5), (1, 60_001)])
async def test_echo_repeat_limits(count: int, interval: int) -> None:
    rt = make_runtime()
    with pytest.raises(InvalidArgument, match="must be between"):
        async for _ in rt.dispatcher.stream(
            "EchoRepeat", REPEAT.request(count=count, interval_ms=interval), call_info("EchoRepeat"), TOKEN
        ):
            pass


# ---- gRPC -----------------------------------------------------------------------------------

@pytest.fixture
async def grpc_served() -> AsyncIterator[tuple[Runtime, grpc.aio.Channel]]:
    rt = make_runtime()
    server, port = build_grpc_server(rt.dispatcher, health_aio.HealthServicer(), "127.0.0.1", 0, 1 << 20)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield rt, channel
    finally:
        await channel.close()
        await server.stop(0)


def _mc(channel: grpc.aio.Channel, op: Operation, bidi: bool) -> Any:
    factory = channel.stream_stream if bidi else channel.unary_stream
    return factory(op.grpc_path, request_serializer=op.request.SerializeToString,
                   response_deserializer=op.response.FromString)


async def test_grpc_server_stream_and_bidi(grpc_served: tuple[Runtime, grpc.aio.Channel]) -> None:
    rt, ch = grpc_served
    got = [m.payload async for m in _mc(ch, REPEAT, False)(REPEAT.request(payload=b"p", count=4), metadata=AUTH)]
    assert got == [b"p"] * 4
    reqs = _aiter([ECHO_STREAM.request(payload=bytes([i])) for i in range(3)])
    assert [m.payload async for m in _mc(ch, ECHO_STREAM, True)(reqs, metadata=AUTH)] == [b"\x00", b"\x01", b"\x02"]
    assert rt.sample("uv_service_calls_total", method="EchoStream", protocol="grpc", outcome="ok") == 1


async def test_grpc_mid_stream_error_is_the_status_after_the_messages(
    grpc_served: tuple[Runtime, grpc.aio.Channel]
) -> None:
    _, ch = grpc_served
    reqs = _aiter([RECOGNIZE.request(audio=b"ab"), RECOGNIZE.request(audio=b"reject")])
    call = _mc(ch, RECOGNIZE, True)(reqs, metadata=AUTH)
    assert (await call.read()).text == "2 bytes"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call.read()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "audio frame 'reject' refused" in (e.value.details() or "")


async def test_grpc_streams_need_the_token(grpc_served: tuple[Runtime, grpc.aio.Channel]) -> None:
    _, ch = grpc_served
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in _mc(ch, REPEAT, False)(REPEAT.request(count=1)):
            pass
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_client_cancel_stops_the_handler_promptly(grpc_served: tuple[Runtime, grpc.aio.Channel]) -> None:
    rt, ch = grpc_served
    gate = asyncio.Event()

    async def reqs() -> AsyncIterator[Any]:
        yield RECOGNIZE.request(audio=b"endless")
        await gate.wait()

    call = _mc(ch, RECOGNIZE, True)(reqs(), metadata=AUTH)
    received = 0
    while received < 10:
        await call.read()
        received += 1
    call.cancel()
    for _ in range(200):
        if rt.service.closed:
            break
        await asyncio.sleep(0.01)
    assert rt.service.closed == ["CancelledError"]
    assert rt.service.produced - received <= 2
    gate.set()


# ---- HTTP frames ----------------------------------------------------------------------------

@pytest.fixture
async def http(grpc_served: tuple[Runtime, grpc.aio.Channel]) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    rt = grpc_served[0]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app), base_url="http://svc") as c:
        yield rt, c


def _mp_frames(*payloads: dict[str, Any]) -> bytes:
    return b"".join(msgpack.packb({"data": p}, use_bin_type=True) for p in payloads)


async def test_json_server_stream_is_ndjson(http: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, c = http
    r = await c.post(REPEAT.http_path, json={"payload": "AAE=", "count": 2}, headers=dict(AUTH))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in r.text.splitlines()] == [{"data": {"payload": "AAE="}}] * 2


async def test_msgpack_bidi_frames_in_and_out(http: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, c = http
    body = _mp_frames({"config": {"language": "en"}}, {"audio": b"\x00" * 7}, {"audio": b"xy"})
    r = await c.post(RECOGNIZE.http_path, content=body,
                     headers={**dict(AUTH), "content-type": "application/x-msgpack"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-msgpack"
    frames = FrameReader("msgpack").feed(r.content)
    assert [f.data["text"] for f in frames if f.data] == ["7 bytes", "2 bytes"]


async def test_ndjson_bidi_body(http: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, c = http
    body = b'{"data": {"audio": "AAAA"}}\n\n{"data": {"audio": "AA=="}}'  # blank line, no final newline
    r = await c.post(RECOGNIZE.http_path, content=body, headers={**dict(AUTH), "content-type": "application/x-ndjson"})
    assert [json.loads(x)["data"]["text"] for x in r.text.splitlines()] == ["3 bytes", "1 bytes"]


async def test_an_error_before_the_first_message_is_the_http_status(http: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, c = http
    r = await c.post(REPEAT.http_path, json={"count": 20000}, headers=dict(AUTH))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "INVALID_ARGUMENT"
    body = msgpack.packb({"data": {"config": {"language": "bad"}}})
    r = await c.post(RECOGNIZE.http_path, content=body, headers={**dict(AUTH), "content-type": "application/msgpack"})
    assert r.status_code == 400
    assert "not a language" in msgpack.unpackb(r.content)["error"]["message"]
    r = await c.post(REPEAT.http_path, json={"count": 1})
    assert r.status_code == 401


async def test_an_error_after_the_first_message_is_a_final_error_frame(
    http: tuple[Runtime, httpx.AsyncClient]
) -> None:
    _, c = http
    body = _mp_frames({"audio": b"ok"}, {"audio": b"reject"}, {"audio": b"never"})
    r = await c.post(RECOGNIZE.http_path, content=body, headers={**dict(AUTH), "content-type": "application/msgpack"})
    assert r.status_code == 200
    frames = FrameReader("msgpack").feed(r.content)
    assert frames[0].data == {"type": "PARTIAL", "utterance": 1, "text": "2 bytes"}
    assert frames[1].error == ("INVALID_ARGUMENT", "audio frame 'reject' refused (test hook)")
    assert len(frames) == 2


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb([1, 2]), "is not a {'data'"),
        (msgpack.packb({"data": {"nope": 1}}), "StreamingRecognizeRequest"),
        (msgpack.packb({"data": {"audio": b"x"}})[:-1], "ends inside frame"),
        (msgpack.packb({"error": {"code": "X"}}), "only {'data': ...} frames"),
    ],
)
async def test_malformed_request_frames_are_400(
    http: tuple[Runtime, httpx.AsyncClient], body: bytes, fragment: str
) -> None:
    _, c = http
    r = await c.post(RECOGNIZE.http_path, content=body, headers={**dict(AUTH), "content-type": "application/msgpack"})
    assert r.status_code == 400
    assert fragment in msgpack.unpackb(r.content)["error"]["message"]


async def test_content_types(http: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, c = http
    r = await c.post(REPEAT.http_path, content=b"{}", headers={**dict(AUTH), "content-type": "text/plain"})
    assert r.status_code == 415 and "application/x-ndjson" in r.json()["error"]["message"]
    r = await c.post(CONTROL_OPS["Echo"].http_path, content=b"{}",
                     headers={**dict(AUTH), "content-type": "application/x-ndjson"})
    assert r.status_code == 415  # unary bodies are one message, not a stream


async def test_kit_stream_serves_service_routes(http: tuple[Runtime, httpx.AsyncClient]) -> None:
    """HttpKit.stream is what an OpenAI SSE route uses; here through the dispatcher directly."""
    rt, _ = http
    from services.runtime.http_app import HttpKit

    kit = HttpKit(rt.dispatcher)

    class _Req:
        def __init__(self) -> None:
            self.headers = {"x-internal-token": TOKEN}

    async with contextlib.aclosing(kit.stream(_Req(), call_info("EchoRepeat", "openai"),  # type: ignore[arg-type]
                                              REPEAT.request(payload=b"k", count=2))) as s:
        assert [m.payload async for m in s] == [b"k", b"k"]
