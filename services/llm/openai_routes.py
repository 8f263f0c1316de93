"""OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models`` on the service's HTTP port.

They need the internal token like every call (``Authorization: Bearer <token>``, i.e. the
OpenAI SDK's api_key, or ``X-Internal-Token``) and go through the runtime's dispatcher as
Generate / ListModels, so they share metrics, limits, draining and cancellation. A streamed
reply is Server-Sent Events (``data: {chunk}`` ... ``data: [DONE]``); the generation is
cancelled when the client goes away. Errors use OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, and a 429 carries Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message as ProtoMessage
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from core.errors import CallError, InvalidArgument, ResourceExhausted
from services.llm.chat_body import parse_chat_body
from services.runtime import HttpKit
from services.runtime.decode import load_json

if TYPE_CHECKING:
    from services.llm.service import LlmService

T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499  # nginx's code; nobody reads it
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
    429: "rate_limit_error", 503: "service_unavailable", 504: "timeout",
}


class ClientGone(Exception):
    """The HTTP client disconnected before its reply was ready."""


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _while_connected(request: Request, aw: Awaitable[T]) -> T:
    """Await ``aw`` unless the client disconnects first; then cancel it, and so the generation."""
    work = asyncio.ensure_future(aw)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)  # the stream is closed before we go on
    if work.cancelled():
        raise ClientGone
    return work.result()


def openai_error(err: CallError, request_id: str = "") -> JSONResponse:
    body = {"error": {"message": err.message, "type": ERROR_TYPES.get(err.http_status, "server_error"),
                      "param": None, "code": err.code.lower()}}
    headers = {"x-request-id": request_id} if request_id else {}
    if isinstance(err, ResourceExhausted):
        headers["Retry-After"] = str(max(1, round(err.retry_after_s)))
    return JSONResponse(body, status_code=err.http_status, headers=headers)


class SseResponse(StreamingResponse):
    """StreamingResponse that always closes its source, so a disconnect cancels the generation."""

    def __init__(self, events: AsyncGenerator[bytes, None], headers: dict[str, str]) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"cache-control": "no-cache", **headers})
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()


def _sse(payload: object) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _usage(u: Any) -> dict[str, int]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


def openai_routes(kit: HttpKit, service: LlmService) -> list[BaseRoute]:
    list_op = service.list_op

    async def chat_completions(request: Request) -> Response:
        call = kit.call_info(request, "Generate", "openai")
        try:
            kit.authenticate(request)
            raw = load_json(await request.body(), "an OpenAI chat request")
            body = parse_chat_body(raw, service.op.request)
        except CallError as err:
            kit.dispatcher.refuse(call, err)
            return openai_error(err, call.request_id)
        chunks = kit.stream(request, call, body.request)
        try:
            # errors before the first token get their own status; a client that leaves while
            # queued or generating cancels the generation (the response never started)
            first = await _while_connected(request, anext(chunks))
            meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": first.model}
            headers = {"x-request-id": call.request_id}
            if body.stream:
                return SseResponse(_events(first, chunks, meta, body.include_usage), headers)
            return JSONResponse(await _while_connected(request, _complete(first, chunks, meta)), headers=headers)
        except CallError as err:
            return openai_error(err, call.request_id)
        except StopAsyncIteration:
            return openai_error(InvalidArgument("the generation produced nothing"), call.request_id)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        finally:
            if not body.stream:
                await chunks.aclose()

    async def models(request: Request) -> Response:
        call = kit.call_info(request, "ListModels", "openai")
        try:
            kit.authenticate(request)
        except CallError as err:
            kit.dispatcher.refuse(call, err)
            return openai_error(err, call.request_id)
        try:
            reply: Any = await kit.invoke(request, call, list_op.request())
        except CallError as err:
            return openai_error(err, call.request_id)
        data = [{"id": m.id, "object": "model", "created": 0, "owned_by": m.owned_by,
                 "context_length": m.context_length} for m in reply.models]
        return JSONResponse({"object": "list", "data": data}, headers={"x-request-id": call.request_id})

    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]


async def _complete(first: Any, chunks: AsyncIterator[ProtoMessage], meta: dict[str, Any]) -> dict[str, Any]:
    text, last = [first.delta], first
    async for chunk in chunks:
        text.append(getattr(chunk, "delta", ""))
        last = chunk
    return {
        **meta, "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                     "finish_reason": last.finish_reason or "stop", "logprobs": None}],
        "usage": _usage(last.usage),
        "ultravox": {"time_to_first_token_s": last.time_to_first_token_s, "tokens_per_s": last.tokens_per_s},
    }


async def _events(
    first: Any, chunks: AsyncGenerator[ProtoMessage, None], meta: dict[str, Any], include_usage: bool
) -> AsyncGenerator[bytes, None]:
    base = {**meta, "object": "chat.completion.chunk"}

    def event(delta: dict[str, str], finish: str | None = None, **extra: object) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _sse({**base, "choices": [choice], **extra})

    try:
        yield event({"role": "assistant", "content": ""})
        chunk: Any = first
        while True:
            if chunk.finish_reason:
                usage = _usage(chunk.usage)
                yield event({}, chunk.finish_reason, usage=usage)
                if include_usage:
                    yield _sse({**base, "choices": [], "usage": usage})
                break
            if chunk.delta:
                yield event({"content": chunk.delta})
            nxt = await anext(chunks, None)
            if nxt is None:
                break
            chunk = nxt
        yield b"data: [DONE]\n\n"
    except CallError as err:  # after the first token: the status is already 200
        yield _sse({"error": {"message": err.message, "type": ERROR_TYPES.get(err.http_status, "server_error"),
                              "code": err.code.lower()}})
    finally:
        await chunks.aclose()
