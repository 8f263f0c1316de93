"""/v1/chat/completions and /v1/models in-process, a fake engine behind the real service and runtime."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.llm.service import LlmService
from services.runtime import HttpKit
from services.runtime.dispatch import Dispatcher
from services.runtime.http_app import build_http_app
from services.runtime.metrics import RuntimeMetrics
from services.runtime.state import ServiceState
from tests.helpers.fake_llm import FakeLlmEngine, make_service

ROUTE = "/v1/chat/completions"
ASK = {"model": "anything", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
Client = tuple[httpx.AsyncClient, LlmService, FakeLlmEngine]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    svc, engine = make_service(tmp_path, max_queue=0)
    state = ServiceState("llm")
    state.loaded(0.1)
    registry = CollectorRegistry()
    dispatcher = Dispatcher(service_name="llm", service=svc, token=svc.ctx.token, state=state,
                            metrics=RuntimeMetrics(registry, "llm"), version="test")
    kit = HttpKit(dispatcher)
    app = build_http_app(kit, state, registry, 1 << 20, svc.http_routes(kit))
    headers = {"authorization": f"Bearer {svc.ctx.token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s", headers=headers) as c:
        yield c, svc, engine
    svc.close()


def events(text: str) -> list[Any]:
    out: list[Any] = []
    for block in text.split("\n\n"):
        if block:
            assert block.startswith("data: ")
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_non_streamed_completion_has_openai_shape_and_usage(client: Client) -> None:
    c, _, engine = client
    r = await c.post(ROUTE, json={**ASK, "temperature": 0, "max_tokens": 50, "stop": ["\n"], "seed": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "fake-model" and body["id"].startswith("chatcmpl-")
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                                "finish_reason": "stop", "logprobs": None}]
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}
    sampling = engine.calls[0][1]
    assert (sampling.temperature, sampling.max_tokens, sampling.stop, sampling.seed) == (0.0, 50, ("\n",), 7)


async def test_streamed_completion_is_sse_chunks_then_done(client: Client) -> None:
    c, _, _ = client
    r = await c.post(ROUTE, json={**ASK, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    ev = events(r.text)
    assert ev[-1] == "[DONE]"
    chunks = ev[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [ch["choices"][0]["delta"].get("content") for ch in chunks[1:4]] == ["Par", "is", "."]
    assert chunks[4]["choices"][0]["finish_reason"] == "stop" and chunks[4]["usage"]["total_tokens"] == 9
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["completion_tokens"] == 3
    assert all(ch["object"] == "chat.completion.chunk" and ch["id"] == chunks[0]["id"] for ch in chunks)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"messages": []}, 400, "messages is empty"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role is 'wizard'"),
        ({"messages": [{"role": "user", "content": ""}]}, 400, "every message's content is empty"),
        ({"messages": [{"role": "user", "content": None}]}, 400, "messages[0].content must be a string"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10_000}, 400, "max_tokens 10000 is more"),
    ],
)
async def test_bad_requests_get_openai_error_json(client: Client, body: dict[str, Any], status: int,
                                                  reason: str) -> None:
    c, _, engine = client
    r = await c.post(ROUTE, json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert reason in err["message"] and err["type"] == "invalid_request_error" and err["code"] == "invalid_argument"
    assert engine.calls == []


async def test_not_json_and_no_token(client: Client) -> None:
    c, _, _ = client
    r = await c.post(ROUTE, content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = await c.post(ROUTE, json=ASK, headers={"authorization": ""})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = await c.get("/v1/models", headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401 and "internal token is wrong" in r.json()["error"]["message"]


async def test_busy_service_answers_429_with_retry_after(client: Client) -> None:
    c, svc, engine = client
    engine.gate = asyncio.Event()
    busy = asyncio.create_task(c.post(ROUTE, json=ASK))
    await engine.started.wait()
    r = await c.post(ROUTE, json={**ASK, "stream": True})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error" and "max_queue = 0" in r.json()["error"]["message"]
    engine.gate.set()
    assert (await busy).status_code == 200
    assert svc.admission.running == 0


async def test_models_lists_the_served_model(client: Client) -> None:
    c, _, _ = client
    r = await c.get("/v1/models")
    assert r.status_code == 200
    assert r.json() == {"object": "list", "data": [
        {"id": "fake-model", "object": "model", "created": 0, "owned_by": "test", "context_length": 2048}]}


async def test_generic_generate_route_streams_ndjson_frames(client: Client) -> None:
    c, svc, _ = client
    r = await c.post(svc.op.http_path, json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    frames = [json.loads(line) for line in r.text.splitlines() if line]
    assert [f["data"].get("delta", "") for f in frames] == ["Par", "is", ".", ""]
    assert frames[-1]["data"]["finish_reason"] == "stop" and frames[-1]["data"]["usage"]["total_tokens"] == 4
