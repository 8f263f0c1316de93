"""The runtime's gRPC side in-process: generic handlers, status mapping, token, size limit, binding."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from core.errors import PortInUse
from core.wire import CONTROL_OPS, Operation
from services.runtime.dispatch import bind_handlers
from services.runtime.grpc_server import build_grpc_server
from services.runtime.lifecycle import bind_http_socket
from tests.helpers.fake_service import TOKEN, TRANSCRIBE, Runtime, make_runtime

AUTH = (("x-internal-token", TOKEN),)


class Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    async def call(self, op: Operation, request: Any, metadata: Any = AUTH) -> Any:
        stub = self.channel.unary_unary(
            op.grpc_path,
            request_serializer=op.request.SerializeToString,
            response_deserializer=op.response.FromString,
        )
        return await stub(request, metadata=metadata, timeout=10)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Runtime, Client]]:
    rt = make_runtime(max_request_bytes=64 * 1024)
    server, port = build_grpc_server(rt.dispatcher, health_aio.HealthServicer(), "127.0.0.1", 0, 64 * 1024)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield rt, Client(channel)
    finally:
        await channel.close()
        await server.stop(0)


async def test_unary_call_through_generic_handler(served: tuple[Runtime, Client]) -> None:
    rt, client = served
    req = TRANSCRIBE.request(audio={"data": b"\x00" * 10}, language="de")
    reply = await client.call(TRANSCRIBE, req, (*AUTH, ("x-request-id", "grpc-rid")))
    assert (reply.text, reply.language) == ("10 bytes", "de")
    call = rt.service.calls[0]
    assert (call.protocol, call.request_id, call.method) == ("grpc", "grpc-rid", "Transcribe")
    assert call.deadline is not None and call.time_left() is not None  # the client set a timeout
    assert rt.sample("uv_service_calls_total", method="Transcribe", protocol="grpc", outcome="ok") == 1


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [((), "missing internal token"), ((("x-internal-token", "x"),), "token is wrong")],
)
async def test_token_required(served: tuple[Runtime, Client], metadata: Any, fragment: str) -> None:
    rt, client = served
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.call(TRANSCRIBE, TRANSCRIBE.request(), metadata)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert fragment in (e.value.details() or "")
    assert rt.service.calls == []


async def test_rejection_and_crash_map_to_status_codes(served: tuple[Runtime, Client]) -> None:
    rt, client = served
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.call(TRANSCRIBE, TRANSCRIBE.request(language="bad"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ISO-639-1" in (e.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.call(TRANSCRIBE, TRANSCRIBE.request(language="boom"))
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert "ZeroDivisionError" in (e.value.details() or "")
    ok = await client.call(TRANSCRIBE, TRANSCRIBE.request())
    assert ok.text == "0 bytes"
    assert rt.sample("uv_service_calls_total", method="Transcribe", protocol="grpc", outcome="internal") == 1


async def test_message_over_max_request_bytes_is_resource_exhausted(served: tuple[Runtime, Client]) -> None:
    _, client = served
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.call(TRANSCRIBE, TRANSCRIBE.request(audio={"data": b"\x00" * (65 * 1024)}))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await client.call(TRANSCRIBE, TRANSCRIBE.request())).text == "0 bytes"


async def test_not_ready_is_unavailable_but_control_answers(served: tuple[Runtime, Client]) -> None:
    rt, client = served
    rt.state.loading()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.call(TRANSCRIBE, TRANSCRIBE.request())
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "loading its model" in (e.value.details() or "")
    echo = await client.call(CONTROL_OPS["Echo"], CONTROL_OPS["Echo"].request(payload=b"ping"))
    assert echo.payload == b"ping"
    info = await client.call(CONTROL_OPS["Info"], CONTROL_OPS["Info"].request())
    assert (info.service, info.ready) == ("fake", False)


async def test_health_service_is_registered(served: tuple[Runtime, Client]) -> None:
    _, client = served
    reply = await health_pb2_grpc.HealthStub(client.channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING  # the servicer's default; runner sets it


def test_service_must_handle_exactly_its_operations() -> None:
    async def h(req: Any, call: Any) -> Any:
        return None

    with pytest.raises(TypeError, match=r"missing \['ListModels'\]"):
        bind_handlers("llm", {"Generate": h})
    with pytest.raises(TypeError, match=r"unexpected \['Speak'\]"):
        bind_handlers("llm", {"ListModels": h, "Speak": h})


async def test_taken_ports_name_the_service_and_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=rf"'fake'.*port {port}"):
            build_grpc_server(make_runtime().dispatcher, health_aio.HealthServicer(), "127.0.0.1", port, 1024)
        with pytest.raises(PortInUse, match=rf"'stt'.*http port {port}"):
            bind_http_socket("stt", "127.0.0.1", port)
