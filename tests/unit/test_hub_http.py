"""The HTTP transport against httpx.MockTransport: wire contract, error mapping, client reuse."""

from __future__ import annotations

import asyncio
import json

import httpx
import msgpack
import pytest

from core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RequestRejected,
    ServiceFailed,
    ServiceUnavailable,
    TransportError,
    Unauthenticated,
)
from core.managers.hub import HttpClientPool, HttpTransport, UnaryCall
from core.wire import CONTROL_OPS, from_json, from_msgpack, to_json, to_msgpack
from tests.unit.hub_fakes import endpoint

ECHO = CONTROL_OPS["Echo"]


def _call(payload: bytes = b"\x00\xff", *, timeout: float = 5.0, port: int = 8001) -> UnaryCall:
    loop = asyncio.get_running_loop()
    return UnaryCall(
        endpoint(http_port=port),
        ECHO,
        ECHO.request(payload=payload),
        loop.time() + timeout,
        (("x-internal-token", "secret-token"), ("x-request-id", "rid-9")),
        connect_timeout_s=0.5,
    )


def _echo_handler(seen: list[httpx.Request]):  # type: ignore[no-untyped-def]
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        ctype = request.headers["content-type"]
        if ctype == "application/msgpack":
            req = from_msgpack(ECHO.request, request.content)
            return httpx.Response(
                200, content=to_msgpack(ECHO.response(payload=req.payload)), headers={"content-type": ctype}
            )
        req = from_json(ECHO.request, request.content)
        return httpx.Response(
            200, content=to_json(ECHO.response(payload=req.payload)), headers={"content-type": ctype}
        )

    return handle


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_posts_the_operation_with_token_request_id_and_content_type(codec: str) -> None:
    seen: list[httpx.Request] = []
    t = HttpTransport(codec, pool=HttpClientPool(transport=httpx.MockTransport(_echo_handler(seen))))
    resp = await t.unary(_call(bytes(range(256))))
    assert resp.payload == bytes(range(256))
    (req,) = seen
    assert req.method == "POST"
    assert str(req.url) == "http://127.0.0.1:8001/rpc/ultravox.v1.Control/Echo"
    assert req.headers["content-type"] == f"application/{codec}"
    assert req.headers["x-internal-token"] == "secret-token"
    assert req.headers["x-request-id"] == "rid-9"
    await t.close()


async def test_msgpack_body_keeps_bytes_raw() -> None:
    seen: list[httpx.Request] = []
    t = HttpTransport("msgpack", pool=HttpClientPool(transport=httpx.MockTransport(_echo_handler(seen))))
    await t.unary(_call(b"\x01\x02"))
    assert msgpack.unpackb(seen[0].content) == {"payload": b"\x01\x02"}
    await t.close()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": {"code": "INVALID_ARGUMENT", "message": "garbage audio"}}, InvalidArgument),
        (401, {"error": {"code": "UNAUTHENTICATED", "message": "bad token"}}, Unauthenticated),
        (500, {"error": {"code": "INTERNAL", "message": "engine crashed"}}, ServiceFailed),
        (503, {"error": {"code": "UNAVAILABLE", "message": "draining"}}, ServiceUnavailable),
        (404, None, NotFound),
        (504, None, DeadlineExceeded),
        (418, None, RequestRejected),
        (502, None, ServiceFailed),
    ],
)
@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_error_bodies_and_statuses_map_to_core_errors(
    codec: str, status: int, body: dict[str, object] | None, expected: type[Exception]
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, content=b"<html>oops</html>", headers={"content-type": "text/html"})
        raw = msgpack.packb(body) if codec == "msgpack" else json.dumps(body).encode()
        return httpx.Response(status, content=raw, headers={"content-type": f"application/{codec}"})

    t = HttpTransport(codec, pool=HttpClientPool(transport=httpx.MockTransport(handle)))
    with pytest.raises(expected) as info:
        await t.unary(_call())
    assert type(info.value) is expected
    if body is not None:
        assert info.value.message == body["error"]["message"]  # type: ignore[index]
    await t.close()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), TransportError),
        (httpx.RemoteProtocolError("server disconnected"), TransportError),
        (httpx.ReadError("reset"), TransportError),
        (httpx.WriteError("broken pipe"), TransportError),
        (httpx.ConnectTimeout("slow connect"), TransportError),
        (httpx.ReadTimeout("slow reply"), DeadlineExceeded),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.__name__,
)
async def test_network_failures_map_to_transport_error_or_deadline(
    exc: Exception, expected: type[Exception]
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise exc

    t = HttpTransport("msgpack", pool=HttpClientPool(transport=httpx.MockTransport(handle)))
    with pytest.raises(expected) as info:
        await t.unary(_call())
    assert info.value.__cause__ is exc
    await t.close()


async def test_malformed_success_body_is_a_service_failure_not_our_rejection() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=b"\xc1not msgpack", headers={"content-type": "application/msgpack"}
        )

    t = HttpTransport("msgpack", pool=HttpClientPool(transport=httpx.MockTransport(handle)))
    with pytest.raises(ServiceFailed, match="malformed msgpack reply"):
        await t.unary(_call())
    await t.close()


async def test_deadline_already_passed_sends_nothing() -> None:
    seen: list[httpx.Request] = []
    t = HttpTransport("json", pool=HttpClientPool(transport=httpx.MockTransport(_echo_handler(seen))))
    with pytest.raises(DeadlineExceeded):
        await t.unary(_call(timeout=-1.0))
    assert seen == []
    await t.close()


async def test_one_client_per_service_shared_by_both_codecs_and_rebuilt_on_port_change() -> None:
    pool = HttpClientPool(transport=httpx.MockTransport(_echo_handler([])))
    mp, js = HttpTransport("msgpack", pool=pool), HttpTransport("json", pool=pool)
    await mp.unary(_call())
    await js.unary(_call())
    first = pool.client(endpoint())
    assert pool.client(endpoint()) is first
    await mp.unary(_call(port=9009))
    assert pool.client(endpoint(http_port=9009)) is not first
    await mp.close()
    await js.close()  # idempotent on the shared pool
    with pytest.raises(TransportError, match="closed"):
        await mp.unary(_call())


def test_unknown_codec_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown HTTP codec"):
        HttpTransport("xml")
