"""OpenAI-compatible ``POST /v1/audio/transcriptions``, routed through the hub to the STT service.

Accepts the same multipart form as OpenAI (file, model, language, prompt, response_format,
temperature) so the official ``openai`` SDK works unchanged against main.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from core.errors import InvalidArgument
from core.gateway.runtime import runtime_of
from core.gateway.schemas import error_responses
from uvpb import common_pb2, stt_pb2

router = APIRouter(prefix="/v1", responses=error_responses(400, 503))
_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


def _ts(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _subtitles(resp: stt_pb2.TranscribeResponse, fmt: str) -> str:
    sep = "," if fmt == "srt" else "."
    lines = ["WEBVTT", ""] if fmt == "vtt" else []
    for i, seg in enumerate(resp.segments, 1):
        if fmt == "srt":
            lines.append(str(i))
        lines += [f"{_ts(seg.start_s, sep)} --> {_ts(seg.end_s, sep)}", seg.text.strip(), ""]
    return "\n".join(lines)


@router.post("/audio/transcriptions", response_model=None)
async def transcriptions(
    request: Request,
    file: UploadFile = File(..., description="Audio file (WAV, FLAC, MP3, OGG...)."),
    model: str = Form("whisper-1", description="Accepted for compatibility; the profile picks the model."),
    language: str = Form("", description="ISO-639-1 code; empty uses the service default."),
    prompt: str = Form("", description="Text that primes the decoder."),
    response_format: str = Form("json"),
    temperature: float = Form(0.0),
) -> Response:
    if response_format not in _FORMATS:
        raise InvalidArgument(f"response_format {response_format!r} is not supported; use one of {', '.join(_FORMATS)}")
    rt = runtime_of(request)
    data = await file.read()
    if not data:
        raise InvalidArgument("the uploaded file is empty; send an audio file in the 'file' form field")
    req = stt_pb2.TranscribeRequest(
        audio=common_pb2.Audio(data=data, encoding=common_pb2.AUDIO_ENCODING_UNSPECIFIED),
        language=language, initial_prompt=prompt,
    )
    rid = request.headers.get("x-request-id")
    resp = await rt.hub.call(
        rt.service_for_role("stt"), "Transcribe", req, metadata={"x-request-id": rid} if rid else None
    )
    assert isinstance(resp, stt_pb2.TranscribeResponse)
    if response_format == "text":
        return PlainTextResponse(resp.text)
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(_subtitles(resp, response_format))
    body: dict[str, Any] = {"text": resp.text}
    if response_format == "verbose_json":
        body |= {
            "task": "transcribe",
            "language": resp.language,
            "duration": resp.audio_duration_s,
            "segments": [
                {"id": i, "start": s.start_s, "end": s.end_s, "text": s.text,
                 "avg_logprob": s.avg_logprob, "no_speech_prob": s.no_speech_prob}
                for i, s in enumerate(resp.segments)
            ],
        }
    return JSONResponse(body)
