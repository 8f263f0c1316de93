"""OpenAI-compatible ``POST /v1/audio/speech`` and ``GET /v1/audio/voices`` on the HTTP port.

The speech body is OpenAI's JSON: ``input``, ``voice``, ``response_format`` (mp3, opus, flac,
wav, pcm; aac is refused), ``speed`` and ``model``. ``model`` names an engine when it is
``kokoro`` or ``piper``; OpenAI's names (tts-1, gpt-4o-mini-tts...) leave the choice to the
voice or the service default. Extensions: ``language``, ``sample_rate``, ``engine``. As with
OpenAI, ``pcm`` is 24 kHz PCM16 unless ``sample_rate`` says otherwise, and it streams chunk by
chunk as each clause is synthesised; the other formats come back whole. Both routes need the
internal token (the OpenAI SDK's ``api_key``) and go through the dispatcher, so they share the
operations' metrics, limits and errors.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from typing import Any

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from core.errors import CallError, InvalidArgument
from core.wire import Operation
from services.runtime import JSON_TYPE, HttpKit
from services.runtime.decode import load_json
from services.tts.audio import FORMATS, writable_formats

OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
OPENAI_PCM_RATE = 24_000
ENGINE_MODELS = ("kokoro", "piper")
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": str, "input": str, "voice": str, "response_format": str, "speed": (int, float), "language": str,
    "sample_rate": int, "engine": str, "instructions": str, "stream_format": str,
}


def default_format() -> str:
    """OpenAI's default, mp3, when this libsndfile writes it; else wav."""
    return "mp3" if "mp3" in writable_formats() else "wav"


def openai_routes(kit: HttpKit, ops: Mapping[str, Operation]) -> list[BaseRoute]:
    async def speech(request: Request) -> Response:
        call = kit.call_info(request, "Synthesize", "openai")
        try:
            kit.authenticate(request)
            message = speech_request(await _json(request), ops["Synthesize"])
        except CallError as err:
            return kit.refused(call, err)
        headers = {"x-request-id": call.request_id}
        if message.format != "pcm":
            try:
                reply: Any = await kit.invoke(request, call, message)
            except CallError as err:
                return kit.render(err, JSON_TYPE, call.request_id)
            headers["x-sample-rate"] = str(reply.sample_rate)
            return Response(reply.audio, media_type=FORMATS[reply.format].media_type, headers=headers)
        stream_call = kit.call_info(request, "SynthesizeStream", "openai")
        chunks = kit.stream(request, stream_call, message)
        try:
            first: Any = await anext(chunks)
        except CallError as err:
            await chunks.aclose()
            return kit.render(err, JSON_TYPE, call.request_id)
        headers["x-sample-rate"] = str(first.sample_rate)
        return StreamingResponse(_rest(first.audio, chunks), media_type="audio/pcm", headers=headers)

    async def voices(request: Request) -> Response:
        call = kit.call_info(request, "ListVoices", "openai")
        try:
            kit.authenticate(request)
        except CallError as err:
            return kit.refused(call, err)
        message = ops["ListVoices"].request(
            engine=request.query_params.get("engine", ""), language=request.query_params.get("language", "")
        )
        try:
            reply = await kit.invoke(request, call, message)
        except CallError as err:
            return kit.render(err, JSON_TYPE, call.request_id)
        body = json_format.MessageToDict(reply, preserving_proto_field_name=True)
        return JSONResponse(body, headers={"x-request-id": call.request_id})

    return [
        Route("/v1/audio/speech", speech, methods=["POST"]),
        Route("/v1/audio/voices", voices, methods=["GET"]),
    ]


async def _rest(first: bytes, chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """The first chunk's audio, then the others'; a mid-stream error (already logged) ends the body."""
    try:
        yield first
        async for chunk in chunks:
            yield chunk.audio
    except CallError:
        return
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def _json(request: Request) -> dict[str, Any]:
    body = load_json(await request.body(), '{"input": ..., "voice": ...}')
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a JSON object like {\"model\": \"tts-1\", \"input\": \"Hello\"}")
    return body


def speech_request(body: dict[str, Any], synthesize: Operation) -> Any:
    """OpenAI's speech body as a SynthesizeRequest; a 400 for anything OpenAI would refuse too."""
    for key, kind in _FIELDS.items():
        value = body.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise InvalidArgument(f"'{key}' has the wrong type ({type(value).__name__})")
    if "input" not in body:
        raise InvalidArgument("missing 'input': the text to speak")
    fmt = (body.get("response_format") or default_format()).strip().lower()
    if fmt not in OPENAI_FORMATS:
        raise InvalidArgument(f"response_format {fmt!r} is not one of {', '.join(OPENAI_FORMATS)}")
    if fmt == "aac":
        usable = ", ".join(writable_formats())
        raise InvalidArgument(f"response_format 'aac' is not supported here; use one of {usable}")
    if (body.get("stream_format") or "audio") != "audio":
        raise InvalidArgument("stream_format 'sse' is not supported; use 'audio' (pcm streams as raw audio)")
    try:
        speed = float(body.get("speed") or 1.0)
    except OverflowError:  # an integer too large for a float
        speed = math.inf
    if not math.isfinite(speed):
        raise InvalidArgument(f"speed must be 0.25..4.0, got {body.get('speed')}")
    model = (body.get("model") or "").strip().lower()
    engine = body.get("engine") or (model if model in ENGINE_MODELS else "")
    rate = body.get("sample_rate") or (OPENAI_PCM_RATE if fmt == "pcm" else 0)
    try:
        return synthesize.request(
            text=body["input"], voice=body.get("voice") or "", language=body.get("language") or "", speed=speed,
            format=fmt, sample_rate=rate, engine=engine,
        )
    except ValueError as e:  # protobuf: an int out of int32 range, a string with unpaired surrogates
        raise InvalidArgument(f"the speech request has a value this service cannot take: {e}") from e
