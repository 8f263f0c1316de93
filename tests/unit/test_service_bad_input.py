"""Malformed requests are client errors, never crashes: regressions found by tests/integration/test_service_fuzz.py.

* gRPC bodies that are not the method's message were UNKNOWN ("Exception deserializing request!"
  from grpcio) for unary and server-streaming calls, and INTERNAL for a bad message mid-way
  through a bidirectional stream; now INVALID_ARGUMENT naming the method and message type.
* HTTP JSON bodies that are not UTF-8 or nest too deeply were 500s; now 400.
* OpenAI routes: JSON nested too deeply, unpaired surrogates, ints beyond int32 or a float were 500s.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1.health import aio as health_aio

from core.errors import InvalidArgument
from core.wire import CONTROL_OPS, operation
from services.llm.chat_body import parse_chat_body
from services.runtime.decode import grpc_parser, load_json
from services.runtime.grpc_server import build_grpc_server
from services.tts.openai_routes import speech_request
from tests.helpers.fake_service import TOKEN, TRANSCRIBE, Runtime, make_runtime

AUTH = (("x-internal-token", TOKEN),)
ECHO, REPEAT, STREAM = CONTROL_OPS["Echo"], CONTROL_OPS["EchoRepeat"], CONTROL_OPS["EchoStream"]
GARBAGE = b"\xff\xff\xff"  # a field tag with no end: never a valid protobuf
DEEP_JSON = b"[" * 50_000 + b"]" * 50_000


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


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    rt = make_runtime()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app), base_url="http://svc",
                                 headers={"x-internal-token": TOKEN}) as c:
        yield c


async def test_grpc_unary_garbage_is_invalid_argument_naming_method_and_type(
    grpc_served: tuple[Runtime, grpc.aio.Channel],
) -> None:
    rt, channel = grpc_served
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await channel.unary_unary(TRANSCRIBE.grpc_path)(GARBAGE, metadata=AUTH, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = e.value.details() or ""
    assert TRANSCRIBE.grpc_path in details and "serialized ultravox.v1.TranscribeRequest" in details
    assert rt.service.calls == []
    outcome = {"method": "Transcribe", "protocol": "grpc", "outcome": "invalid_argument"}
    assert rt.sample("uv_service_calls_total", **outcome) == 1
    # the next good call is served as usual
    ok = await channel.unary_unary(TRANSCRIBE.grpc_path)(TRANSCRIBE.request().SerializeToString(), metadata=AUTH)
    assert TRANSCRIBE.response.FromString(ok).text == "0 bytes"


async def test_grpc_garbage_without_token_is_unauthenticated(grpc_served: tuple[Runtime, grpc.aio.Channel]) -> None:
    _, channel = grpc_served
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await channel.unary_unary(ECHO.grpc_path)(GARBAGE, timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_server_stream_garbage_is_invalid_argument(grpc_served: tuple[Runtime, grpc.aio.Channel]) -> None:
    _, channel = grpc_served
    call = channel.unary_stream(REPEAT.grpc_path)(GARBAGE, metadata=AUTH, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in call:
            pass
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ultravox.v1.EchoRepeatRequest" in (e.value.details() or "")


async def test_grpc_bidi_bad_message_midway_ends_the_stream_with_invalid_argument(
    grpc_served: tuple[Runtime, grpc.aio.Channel],
) -> None:
    _, channel = grpc_served
    good = ECHO.request(payload=b"one").SerializeToString()

    async def requests() -> AsyncIterator[bytes]:
        yield good
        yield GARBAGE

    call = channel.stream_stream(STREAM.grpc_path)(requests(), metadata=AUTH, timeout=10)
    got: list[bytes] = []
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for raw in call:
            got.append(ECHO.response.FromString(raw).payload)
    assert got == [b"one"]
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ultravox.v1.EchoRequest" in (e.value.details() or "")


def test_grpc_parser_accepts_what_from_string_accepts() -> None:
    parse = grpc_parser(TRANSCRIBE)
    msg = TRANSCRIBE.request(language="de", audio={"data": b"abc"})
    assert parse(msg.SerializeToString()) == msg
    with pytest.raises(InvalidArgument, match=r"must be a serialized ultravox\.v1\.TranscribeRequest"):
        parse(b"\x12\x02\xff\xfe")  # language (a string) that is not UTF-8


@pytest.mark.parametrize(
    ("ctype", "body", "fragment"),
    [
        ("application/json", b"\x92\x01\x02", "not UTF-8"),
        ("application/json", b'{"language": "\xff"}', "not UTF-8"),
        ("application/json", DEEP_JSON, "ultravox.v1.TranscribeRequest"),
        ("application/msgpack", b"\x91" * 5000 + b"\xc0", "not valid msgpack"),
    ],
)
async def test_http_undecodable_body_is_400(http: httpx.AsyncClient, ctype: str, body: bytes, fragment: str) -> None:
    resp = await http.post(TRANSCRIBE.http_path, content=body, headers={"content-type": ctype})
    assert resp.status_code == 400, resp.text
    err: dict[str, Any] = json.loads(resp.content)["error"] if ctype.endswith("json") else {}
    if err:
        assert err["code"] == "INVALID_ARGUMENT" and fragment in err["message"]


@pytest.mark.parametrize("body", [DEEP_JSON + b"\n", b'{"data": {"payload": "\xff"}}\n', b'\xff\xfe{"data"\n'])
async def test_http_bidi_bad_ndjson_frame_is_400(http: httpx.AsyncClient, body: bytes) -> None:
    resp = await http.post(STREAM.http_path, content=body, headers={"content-type": "application/x-ndjson"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "INVALID_ARGUMENT"


def test_openai_json_nested_too_deeply_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        load_json(DEEP_JSON, "an OpenAI chat request")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        load_json(b"\xff", "an OpenAI chat request")


@pytest.mark.parametrize("where", ["content", "role", "stop", "model"])
def test_chat_body_with_unpaired_surrogate_is_invalid_argument(where: str) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    if where in ("content", "role"):
        body["messages"][0][where] = "\ud800"
    else:
        body[where] = "\ud800"
    with pytest.raises(InvalidArgument, match="not valid Unicode"):
        parse_chat_body(body, operation("llm", "Generate").request)


@pytest.mark.parametrize(
    "extra",
    [{"input": "\ud800"}, {"sample_rate": 2**40}, {"speed": 10**400}, {"voice": "\udfff"}],
)
def test_speech_body_values_protobuf_refuses_are_invalid_argument(extra: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        speech_request({"input": "hi", "response_format": "wav", **extra}, operation("tts", "Synthesize"))
