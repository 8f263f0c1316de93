"""OpenAI-compatible ``POST /v1/audio/transcriptions`` (multipart), served on the HTTP port.

Takes ``file`` (any format the service decodes), ``model`` (accepted and ignored: this service
has one model), ``language``, ``prompt``, ``response_format`` (json, text, verbose_json) and
``temperature`` (ignored). It needs the internal token like every call, as ``X-Internal-Token``
or ``Authorization: Bearer <token>`` (the OpenAI SDK's api_key), and goes through the same
dispatcher as Transcribe, so it shares its metrics, limits and errors.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from core.errors import CallError, InvalidArgument
from core.wire import Operation
from services.runtime import HttpKit
from services.stt.uploads import audio_form

FORMATS = ("json", "text", "verbose_json")


def openai_routes(kit: HttpKit, transcribe: Operation) -> list[BaseRoute]:
    async def transcriptions(request: Request) -> Response:
        call = kit.call_info(request, "Transcribe", "openai")
        try:
            kit.authenticate(request)
            message, response_format = await _parse(request, transcribe)
        except CallError as err:
            return kit.refused(call, err)
        try:
            reply: Any = await kit.invoke(request, call, message)
        except CallError as err:
            return kit.render(err, "application/json", call.request_id)
        headers = {"x-request-id": call.request_id}
        if response_format == "text":
            return PlainTextResponse(reply.text, headers=headers)
        if response_format == "json":
            return JSONResponse({"text": reply.text}, headers=headers)
        return JSONResponse(_verbose(reply), headers=headers)

    return [Route("/v1/audio/transcriptions", transcriptions, methods=["POST"])]


async def _parse(request: Request, transcribe: Operation) -> tuple[Any, str]:
    async with audio_form(
        request, max_fields=32, hint=" (as openai.audio.transcriptions.create(file=...) does)"
    ) as (form, upload):
        response_format = _text(form.get("response_format")) or "json"
        if response_format not in FORMATS:
            raise InvalidArgument(
                f"response_format {response_format!r} is not supported; use one of {', '.join(FORMATS)}"
            )
        data = await upload.read()
    message = transcribe.request(
        audio={"data": data},
        language=_text(form.get("language")),
        initial_prompt=_text(form.get("prompt")),
    )
    return message, response_format


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _verbose(reply: Any) -> dict[str, Any]:
    return {
        "task": "transcribe",
        "language": reply.language,
        "duration": reply.audio_duration_s,
        "text": reply.text,
        "segments": [
            {
                "id": i, "seek": 0, "start": s.start_s, "end": s.end_s, "text": s.text, "tokens": [],
                "temperature": 0.0, "avg_logprob": s.avg_logprob, "compression_ratio": 0.0,
                "no_speech_prob": s.no_speech_prob,
            }
            for i, s in enumerate(reply.segments)
        ],
    }
