"""The runtime's HTTP side in-process: content types, token, error mapping, limits, probes, metrics."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import msgpack
import pytest

from tests.helpers.fake_service import TOKEN, TRANSCRIBE, Runtime, make_runtime

PATH = TRANSCRIBE.http_path
AUTH = {"x-internal-token": TOKEN}


@pytest.fixture
def rt() -> Runtime:
    return make_runtime()


@pytest.fixture
async def client(rt: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=rt.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        yield c


def _mp(body: dict[str, object]) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize("ctype", ["application/msgpack", "application/x-msgpack"])
async def test_msgpack_round_trip_keeps_bytes_raw_and_replies_in_kind(
    client: httpx.AsyncClient, ctype: str
) -> None:
    r = await client.post(
        PATH, content=_mp({"audio": {"data": b"\x00\x01" * 50}}), headers={**AUTH, "content-type": ctype}
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == ctype
    assert msgpack.unpackb(r.content) == {"text": "100 bytes", "language": "en"}


async def test_json_round_trip_uses_base64_bytes(client: httpx.AsyncClient) -> None:
    body = {"audio": {"data": base64.b64encode(b"abc").decode()}, "language": "pt"}
    r = await client.post(PATH, json=body, headers={**AUTH, "x-request-id": "rid-1"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"text": "3 bytes", "language": "pt"}
    assert r.headers["x-request-id"] == "rid-1"


async def test_request_id_and_protocol_reach_the_handler(client: httpx.AsyncClient, rt: Runtime) -> None:
    await client.post(PATH, json={}, headers={**AUTH, "x-request-id": "abc"})
    await client.post(PATH, content=_mp({}), headers={**AUTH, "content-type": "application/msgpack"})
    first = rt.service.calls[0]
    assert (first.request_id, first.protocol) == ("abc", "json")
    assert rt.service.calls[1].protocol == "msgpack"
    assert rt.service.calls[1].request_id  # generated when the caller sent none


@pytest.mark.parametrize("ctype", ["text/plain", "", "application/octet-stream"])
async def test_unknown_content_type_is_415_in_json(client: httpx.AsyncClient, ctype: str) -> None:
    headers = {**AUTH, "content-type": ctype} if ctype else AUTH
    r = await client.post(PATH, content=b"x", headers=headers)
    assert r.status_code == 415
    err = r.json()["error"]
    assert err["code"] == "INVALID_ARGUMENT"
    assert "application/msgpack" in err["message"] and "application/json" in err["message"]


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing internal token"),
        ({"x-internal-token": "nope"}, "token is wrong"),
        ({"authorization": "Bearer nope"}, "token is wrong"),
    ],
)
async def test_token_is_required(
    client: httpx.AsyncClient, rt: Runtime, headers: dict[str, str], fragment: str
) -> None:
    r = await client.post(PATH, content=_mp({}), headers={**headers, "content-type": "application/msgpack"})
    assert r.status_code == 401
    err = msgpack.unpackb(r.content)["error"]  # error body in the request's content type
    assert err["code"] == "UNAUTHENTICATED"
    assert fragment in err["message"]
    assert TOKEN not in err["message"]
    assert rt.service.calls == []
    assert (
        rt.sample(
            "uv_service_calls_total", method="Transcribe", protocol="msgpack", outcome="unauthenticated"
        )
        == 1
    )


async def test_bearer_token_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post(PATH, json={}, headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200


async def test_handler_rejection_maps_to_400_with_reason(client: httpx.AsyncClient, rt: Runtime) -> None:
    r = await client.post(PATH, json={"language": "bad"}, headers=AUTH)
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "code": "INVALID_ARGUMENT",
            "message": "language 'bad' is not a language; use an ISO-639-1 code such as 'en'",
        }
    }
    assert (
        rt.sample("uv_service_calls_total", method="Transcribe", protocol="json", outcome="invalid_argument")
        == 1
    )


async def test_unexpected_exception_is_500_naming_the_type_and_service_keeps_serving(
    client: httpx.AsyncClient, rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    r = await client.post(PATH, json={"language": "boom"}, headers=AUTH)
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "INTERNAL"
    assert "ZeroDivisionError" in err["message"] and "kaboom" in err["message"]
    assert any(rec.exc_info for rec in caplog.records if rec.getMessage() == "call failed")
    ok = await client.post(PATH, json={}, headers=AUTH)
    assert ok.status_code == 200
    assert rt.dispatcher.in_flight == 0


async def test_wrong_response_type_is_an_internal_error(client: httpx.AsyncClient) -> None:
    r = await client.post(PATH, json={"language": "wrongtype"}, headers=AUTH)
    assert r.status_code == 500
    assert "ultravox.v1.TranscribeResponse" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/json", b"{not json"),
        ("application/msgpack", b"\xc1"),
        ("application/json", b'{"no_such_field": 1}'),
    ],
)
async def test_malformed_body_is_400(client: httpx.AsyncClient, ctype: str, body: bytes) -> None:
    r = await client.post(PATH, content=body, headers={**AUTH, "content-type": ctype})
    assert r.status_code == 400
    decoded = msgpack.unpackb(r.content) if "msgpack" in ctype else r.json()
    assert decoded["error"]["code"] == "INVALID_ARGUMENT"


async def test_body_over_the_limit_is_413_declared_or_streamed() -> None:
    rt = make_runtime(max_request_bytes=1000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app), base_url="http://svc") as c:
        big = _mp({"audio": {"data": b"\x00" * 2000}})
        r = await c.post(PATH, content=big, headers={**AUTH, "content-type": "application/msgpack"})
        assert r.status_code == 413
        assert "max_request_bytes" in msgpack.unpackb(r.content)["error"]["message"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"\x00" * 400

        r = await c.post(PATH, content=chunks(), headers={**AUTH, "content-type": "application/json"})
        assert r.status_code == 413
        ok = await c.post(PATH, json={}, headers=AUTH)
        assert ok.status_code == 200
    assert rt.service.calls and all(call.method == "Transcribe" for call in rt.service.calls)


async def test_probes_need_no_token_and_follow_readiness() -> None:
    rt = make_runtime(ready=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app), base_url="http://svc") as c:
        rt.state.loading()
        assert (await c.get("/livez")).status_code == 200
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert "loading its model" in r.json()["reason"]
        busy = await c.post(PATH, json={}, headers=AUTH)
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "UNAVAILABLE"
        echo = await c.post("/rpc/ultravox.v1.Control/Echo", json={"payload": "aGk="}, headers=AUTH)
        assert echo.json() == {"payload": "aGk="}  # control calls work during the load
        rt.state.loaded(0.5)
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.post(PATH, json={}, headers=AUTH)).status_code == 200
        rt.state.draining()
        assert (await c.get("/readyz")).status_code == 503


async def test_info_reports_the_service(client: httpx.AsyncClient) -> None:
    r = await client.post("/rpc/ultravox.v1.Control/Info", json={}, headers=AUTH)
    info = r.json()
    assert info["service"] == "fake" and info["role"] == "stt" and info["ready"] is True
    assert info["engine"] == "fake" and info["details"] == {"k": "v"}


async def test_metrics_use_the_process_registry(client: httpx.AsyncClient) -> None:
    await client.post(PATH, json={}, headers=AUTH)
    text = (await client.get("/metrics")).text
    assert (
        'uv_service_calls_total{method="Transcribe",outcome="ok",protocol="json",service="fake"} 1.0' in text
    )
    assert "uv_service_call_duration_seconds_bucket" in text
    assert "uv_service_calls_in_flight" in text
    assert "python_gc_objects_collected_total" not in text  # not the global default registry


async def test_unknown_route_is_a_json_404_listing_routes(client: httpx.AsyncClient) -> None:
    r = await client.get("/rpc/nope")
    assert r.status_code == 404
    assert PATH in r.json()["error"]["message"]
    r = await client.get(PATH)
    assert r.status_code == 405
    assert json.loads(r.content)["error"]["code"] == "NOT_FOUND"
