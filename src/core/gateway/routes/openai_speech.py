"""OpenAI-compatible ``POST /v1/audio/speech`` and ``GET /v1/audio/voices`` through the hub.

The body is OpenAI's (model, input, voice, response_format, speed). ``pcm`` replies stream the
audio chunk by chunk as the TTS service synthesises each clause; container formats come whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from google.protobuf import json_format
from pydantic import BaseModel, Field

from core.gateway.runtime import runtime_of
from core.gateway.schemas import error_responses
from uvpb import tts_pb2

router = APIRouter(prefix="/v1", responses=error_responses(400, 503))
MAX_SAMPLE_RATE = 192_000
"""Highest ``sample_rate`` taken; past it a request is a 400 here, not an overflow of the proto's int32."""
_MEDIA = {
    "mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
    "wav": "audio/wav", "pcm": "audio/pcm",
}


class SpeechBody(BaseModel):
    model: str = Field("tts-1", description="Accepted for compatibility; the profile picks the engine.")
    input: str = Field(description="Text to speak.")
    voice: str = Field("", description="Voice id from GET /v1/audio/voices; empty uses the default.")
    response_format: str = Field("mp3", description="mp3, opus, flac, wav or pcm (PCM16 mono).")
    speed: float = Field(1.0, description="0.25 to 4.0.")
    language: str = Field("", description="Extension: en-us, pt-br... (empty: the voice's default).")
    sample_rate: int = Field(
        0, ge=0, le=MAX_SAMPLE_RATE, description="Extension: resample to this rate in Hz (0 keeps the engine's).",
    )


def _request(body: SpeechBody) -> tts_pb2.SynthesizeRequest:
    # OpenAI's pcm is 24 kHz PCM16 mono whatever the engine; keep that unless asked otherwise
    rate = body.sample_rate or (24000 if body.response_format == "pcm" else 0)
    return tts_pb2.SynthesizeRequest(
        text=body.input, voice=body.voice, language=body.language, speed=body.speed,
        format=body.response_format, sample_rate=rate,
    )


@router.post("/audio/speech", response_model=None)
async def speech(body: SpeechBody, request: Request) -> Response:
    rt = runtime_of(request)
    service = rt.service_for_role("tts")
    req = _request(body)
    if body.response_format != "pcm":
        resp = await rt.hub.call(service, "Synthesize", req)
        assert isinstance(resp, tts_pb2.SynthesizeResponse)
        return Response(resp.audio, media_type=_MEDIA.get(resp.format, "application/octet-stream"),
                        headers={"x-sample-rate": str(resp.sample_rate)})
    chunks = rt.hub.stream(service, "SynthesizeStream", req)
    first = await anext(chunks)  # errors before the first chunk become a proper 4xx/5xx
    assert isinstance(first, tts_pb2.SynthesisChunk)

    async def audio() -> AsyncIterator[bytes]:
        try:
            yield first.audio
            async for chunk in chunks:
                assert isinstance(chunk, tts_pb2.SynthesisChunk)
                yield chunk.audio
        finally:
            await chunks.aclose()

    return StreamingResponse(audio(), media_type="audio/pcm", headers={"x-sample-rate": str(first.sample_rate)})


@router.get("/audio/voices")
async def voices(request: Request, engine: str = "", language: str = "") -> dict[str, Any]:
    rt = runtime_of(request)
    resp = await rt.hub.call(
        rt.service_for_role("tts"), "ListVoices", tts_pb2.ListVoicesRequest(engine=engine, language=language)
    )
    out: dict[str, Any] = json_format.MessageToDict(resp, preserving_proto_field_name=True)
    return out
