"""Speech segments of a whole clip (DetectSpeech), and ``POST /detect`` for multipart uploads.

The clip is decoded like Transcribe's audio (WAV, raw PCM16, or any container FFmpeg reads),
resampled to 16 kHz, scored by the VAD and cut by the same segmenter as the streams, so a clip
and the same audio streamed give the same utterance boundaries. ``pre_roll_ms`` does not apply:
the segments are where the speech is.

``POST /detect`` takes ``file`` plus optional ``threshold``, ``min_speech_ms`` and
``end_silence_ms`` form fields, needs the internal token like every call, and goes through the
dispatcher as DetectSpeech (same metrics, limits and errors). It answers JSON::

    {"segments": [{"start_s": 0.42, "end_s": 2.9}], "audio_duration_s": 5.0, "processing_time_s": 0.01}
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from core.errors import CallError, InvalidArgument
from core.wire import Operation
from services.runtime import HttpKit
from services.stt.segmenter import segments
from services.stt.uploads import audio_form
from services.stt.vad import FRAME, VadModel
from services.stt.vad_config import SAMPLE_RATE, VadSettings

FORM_FIELDS: dict[str, type[float] | type[int]] = {"threshold": float, "min_speech_ms": int, "end_silence_ms": int}
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


Segments = list[tuple[float, float]]


def speech_segments(model: VadModel, samples: np.ndarray, settings: VadSettings) -> tuple[Segments, int]:
    """(segments in seconds, frames scored) of float32 mono 16 kHz ``samples``."""
    padded = np.pad(samples, (0, -len(samples) % FRAME))
    probs = model.stream().push(padded)
    pairs = segments(probs, settings, len(samples))
    return [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in pairs], int(probs.size)


def detect_routes(kit: HttpKit, detect: Operation) -> list[BaseRoute]:
    async def endpoint(request: Request) -> Response:
        call = kit.call_info(request, detect.name, "json")
        try:
            kit.authenticate(request)
            message = await _parse(request, detect)
        except CallError as err:
            return kit.refused(call, err)
        try:
            reply: Any = await kit.invoke(request, call, message)
        except CallError as err:
            return kit.render(err, "application/json", call.request_id)
        body = {
            "segments": [{"start_s": s.start_s, "end_s": s.end_s} for s in reply.segments],
            "audio_duration_s": reply.audio_duration_s,
            "processing_time_s": reply.processing_time_s,
        }
        return JSONResponse(body, headers={"x-request-id": call.request_id})

    return [Route("/detect", endpoint, methods=["POST"])]


async def _parse(request: Request, detect: Operation) -> Any:
    hint = f", and optionally {', '.join(FORM_FIELDS)}"
    async with audio_form(request, max_fields=16, hint=hint) as (form, upload):
        vad: dict[str, float | int] = {}
        for name, kind in FORM_FIELDS.items():
            raw = form.get(name)
            if isinstance(raw, str) and raw.strip():
                try:
                    value = kind(raw.strip())
                except ValueError as e:
                    raise InvalidArgument(f"form field {name!r} must be a {kind.__name__}, got {raw!r}") from e
                if kind is int and not INT32_MIN <= value <= INT32_MAX:
                    raise InvalidArgument(f"form field {name!r} is out of range: {raw!r} milliseconds")
                vad[name] = value
        data = await upload.read()
    return detect.request(audio={"data": data}, vad=vad)
