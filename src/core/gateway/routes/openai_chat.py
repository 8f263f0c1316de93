"""OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models`` through the hub.

Streamed replies are Server-Sent Events in OpenAI's chunk format, ending with ``[DONE]``; the
remote generation is cancelled when the client goes away. Token usage is always reported.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from core.errors import CallError, InvalidArgument
from core.gateway.runtime import runtime_of
from core.gateway.schemas import error_responses
from uvpb import llm_pb2

router = APIRouter(prefix="/v1", responses=error_responses(400, 503))
INT32_MAX = 2**31 - 1
"""Token counts travel as int32 (llm.proto); a larger one is a 400 here rather than an overflow."""


class ContentPart(BaseModel):
    """One part of ``messages[].content``; only ``{"type": "text", "text": "..."}`` is served."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description='"text" (image and audio parts are refused with a 400).')
    text: str | None = Field(None, description="The words of a text part.")


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if any(p.type != "text" or p.text is None for p in self.content):
            raise InvalidArgument(
                'only text content parts are supported in messages[].content: {"type": "text", "text": "..."}'
            )
        return "".join(p.text or "" for p in self.content)


class ChatBody(BaseModel):
    model: str = ""
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1, description="Any 64-bit integer.")
    stream_options: dict[str, Any] | None = None


def _request(body: ChatBody) -> llm_pb2.GenerateRequest:
    req = llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text())
                  for m in body.messages],
        max_tokens=body.max_completion_tokens or body.max_tokens or 0,
        stop=[body.stop] if isinstance(body.stop, str) else list(body.stop or []),
        model=body.model,
    )
    if body.temperature is not None:
        req.temperature = body.temperature
    if body.top_p is not None:
        req.top_p = body.top_p
    if body.seed is not None:
        req.seed = body.seed
    return req


def _usage(u: Any) -> dict[str, int]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatBody, request: Request) -> JSONResponse | StreamingResponse:
    rt = runtime_of(request)
    chunks = rt.hub.stream(rt.service_for_role("llm"), "Generate", _request(body))
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    first = await anext(chunks)  # errors before the first token become a proper 4xx/5xx
    assert isinstance(first, llm_pb2.GenerateChunk)
    model = first.model or body.model
    if not body.stream:
        text, last = [first.delta], first
        async for c in chunks:
            assert isinstance(c, llm_pb2.GenerateChunk)
            text.append(c.delta)
            last = c
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                         "finish_reason": last.finish_reason or "stop"}],
            "usage": _usage(last.usage),
        })

    def frame(delta: dict[str, Any], finish: str | None, usage: Any = None) -> str:
        out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage is not None:
            out["usage"] = _usage(usage)
        return f"data: {json.dumps(out)}\n\n"

    async def sse() -> AsyncIterator[str]:
        c = first
        try:
            yield frame({"role": "assistant", "content": c.delta}, c.finish_reason or None,
                        c.usage if c.finish_reason else None)
            async for c in chunks:
                assert isinstance(c, llm_pb2.GenerateChunk)
                yield frame({"content": c.delta} if c.delta else {}, c.finish_reason or None,
                            c.usage if c.finish_reason else None)
        except CallError as e:
            yield f"data: {json.dumps({'error': e.to_dict()})}\n\n"
        finally:
            await chunks.aclose()
        yield "data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream")


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    resp = await rt.hub.call(rt.service_for_role("llm"), "ListModels", llm_pb2.ListModelsRequest())
    assert isinstance(resp, llm_pb2.ListModelsResponse)
    return {"object": "list", "data": [
        {"id": m.id, "object": "model", "created": 0, "owned_by": m.owned_by or m.engine} for m in resp.models
    ]}
