"""REST conversation, the seed's contract: ``POST /api/orchestrator/conversation`` and its audio variant.

One request is one whole turn: the reply comes back when the turn is complete, with the reply
text, the user's text, the latency report, and the reply audio as a URL
(``GET /api/audio/{id}.wav``, kept ``reply_audio_ttl_s``) or inline (base64 WAV). An unknown
explicit ``session_id`` creates that session (the seed's behaviour); no ``session_id`` starts
a new one. Admission control answers 503 + Retry-After, the rate limiter 429 + Retry-After.
Upload parsing (size limits, format sniffing) lives here too; the polling routes reuse it.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal, cast

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from core.access import OPEN, Principal, principal_of
from core.conversation.types import Session, TurnRecord
from core.errors import InvalidArgument, NotFound, Overloaded, RequestRejected
from core.gateway.runtime import MainRuntime, runtime_of
from core.gateway.schemas import error_responses
from core.logs import session_id_var
from core.sessions import CollectingSink, TurnInProgress

router = APIRouter(prefix="/api", tags=["conversation"], responses=error_responses(400, 404, 409, 413, 503))
AudioMode = Literal["url", "inline", "none"]
#: Types that declare raw PCM16: believed whatever the body's first bytes look like.
_DECLARED_PCM = ("audio/pcm", "audio/l16", "audio/x-raw")
#: Types that declare nothing in particular: the body is sniffed, and PCM16 only if nothing matches.
_GENERIC_TYPES = ("application/octet-stream", "")
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"OggS", "ogg"), (0, b"fLaC", "flac"), (0, b"ID3", "mp3"), (0, b"\x1aE\xdf\xa3", "webm"),
    (4, b"ftyp", "mp4"), (0, b"#!AMR", "amr"), (0, b"caff", "caf"),
)
AUDIO_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}, "session_id": {"type": "string"},
                       "agent": {"type": "string"}, "voice_id": {"type": "string"}, "language": {"type": "string"},
                       "sample_rate": {"type": "string"}, "audio": {"type": "string"}},
    }},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}}}
"""``openapi_extra`` of the upload routes, which parse their body themselves (parse_upload): a multipart
``file`` or a raw body (any audio file, or PCM16 with Content-Type audio/pcm and ``?sample_rate=``)."""
FORMATS_HINT = "WAV, MP3, OGG/Opus, FLAC, WebM or M4A; or raw PCM16 with Content-Type audio/pcm and ?sample_rate="


class PayloadTooLarge(RequestRejected):
    code = "INVALID_ARGUMENT"
    http_status = 413


def sniff_audio(data: bytes) -> str | None:
    """The container an upload's first bytes announce, or None when they announce none."""
    if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"FORM" and data[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        return "mp3"  # MPEG audio / ADTS frame sync
    return next((name for off, magic, name in _MAGIC if data[off:off + len(magic)] == magic), None)


def check_text(text: str, limit: int, field: str = "message") -> str:
    if not text.strip():
        raise InvalidArgument(f"{field} is empty; send the user's words as a non-empty string")
    if len(text) > limit:
        raise InvalidArgument(
            f"{field} has {len(text)} characters; the limit is {limit} (conversation.max_text_chars)"
        )
    return text


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(int(declared), limit))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(_too_large(len(body), limit))
    return bytes(body)


def _too_large(size: int, limit: int) -> str:
    return f"the upload has {size} bytes or more; the limit is {limit} (conversation.max_audio_bytes)"


@dataclass(slots=True)
class Upload:
    audio: bytes
    sample_rate: int | None   # None: a container (WAV, MP3...) the STT service decodes
    fields: dict[str, str]


async def parse_upload(request: Request, max_bytes: int, sample_rate: int | None) -> Upload:
    """A multipart ``file`` (any container) or a raw body (PCM16 with ``sample_rate``, or a file)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        body = await read_capped(request, max_bytes + 64 * 1024)

        async def once() -> AsyncGenerator[bytes, None]:
            yield body
        try:
            form = await MultiPartParser(request.headers, once(), max_files=1, max_fields=16).parse()
        except MultiPartException as e:
            raise InvalidArgument(f"malformed multipart body: {e.message}") from e
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidArgument("multipart upload has no 'file' part; send the audio as -F file=@question.wav")
        data = await file.read()
        part_type = (file.content_type or "").split(";")[0].strip().lower()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        await form.close()
        if len(data) > max_bytes:
            raise PayloadTooLarge(_too_large(len(data), max_bytes))
        rate = _rate(fields.get("sample_rate"), sample_rate)
    else:
        data = await read_capped(request, max_bytes)
        fields, rate, part_type = {}, sample_rate, ctype
    if not data:
        raise InvalidArgument(f"the audio upload is empty; send {FORMATS_HINT}")
    declared_pcm = part_type in _DECLARED_PCM
    # A declared PCM body with its rate is PCM: its first samples may look like a frame sync
    # (FF Ex is a small negative sample) or a magic number. Sniffing is for the undeclared.
    if not (declared_pcm and rate is not None) and sniff_audio(data) is not None:
        return Upload(data, None, fields)
    raw_pcm = declared_pcm or part_type in _GENERIC_TYPES
    if rate is None or not (raw_pcm or ctype == "multipart/form-data"):
        if raw_pcm:
            raise InvalidArgument("raw PCM needs its rate: add ?sample_rate=16000 (PCM16 mono little-endian)")
        raise InvalidArgument(f"the upload is not a recognised audio file; send {FORMATS_HINT}")
    if len(data) % 2:
        raise InvalidArgument(f"raw PCM16 must have an even number of bytes (got {len(data)})")
    return Upload(data, rate, fields)


def _rate(form_value: str | None, query_value: int | None) -> int | None:
    if not form_value:
        return query_value
    if not form_value.isdigit() or not 8000 <= int(form_value) <= 48000:
        raise InvalidArgument(f"sample_rate {form_value!r} must be a whole number of Hz from 8000 to 48000")
    return int(form_value)


def session_for(
    rt: MainRuntime, session_id: str | None, *, agent: str | None, voice: str | None, language: str | None,
    by: Principal = OPEN,
) -> Session:
    """The session a conversation request names (created when unknown), configured for this turn.

    An empty voice or language (the seed sends ``"voice_id": ""``) keeps the session's own.
    """
    voice, language = voice or None, language or None
    if session_id:
        try:
            s = rt.sessions.get(session_id, by=by)
        except NotFound:
            s = rt.sessions.create(session_id=session_id, agent=agent, voice=voice, language=language, by=by)
    else:
        s = rt.sessions.create(agent=agent, voice=voice, language=language, by=by)
    if agent and agent != s.agent.name:
        raise InvalidArgument(f"session {s.id!r} uses agent {s.agent.name!r}; an agent is fixed per session")
    rt.sessions.configure(s, voice=voice, language=language)
    session_id_var.set(s.id)
    if s.turn_lock.locked():
        raise TurnInProgress(f"a turn is already running in session {s.id!r}; wait for its reply")
    return s


def rejected(record: TurnRecord, errors: list[dict[str, Any]], rt: MainRuntime) -> Overloaded | None:
    """Admission refused the turn (the orchestrator reported it rather than raising): 503."""
    if record.outcome != "rejected":
        return None
    err = errors[-1] if errors else {}
    return Overloaded(
        str(err.get("message") or record.error or "the server is busy; retry after the Retry-After seconds"),
        retry_after_s=float(err.get("retry_after_s") or rt.admission.retry_after_s()),
    )


def reply(rt: MainRuntime, record: TurnRecord, sink: CollectingSink, audio: AudioMode) -> dict[str, Any]:
    if (busy := rejected(record, sink.errors, rt)) is not None:
        raise busy
    body: dict[str, Any] = {
        "session_id": record.session_id, "turn_id": record.turn_id,
        "text": record.assistant_text or sink.text, "user_text": record.user_text or sink.user_text,
        "outcome": record.outcome, "interrupted": record.interrupted, "degraded": record.degraded,
        "errors": sink.errors, "latency": record.latency or sink.latency, "sample_rate": sink.sample_rate,
        "audio_duration_s": round(len(sink.audio) / 2 / sink.sample_rate, 3),
    }
    if sink.audio and audio == "url":
        body["audio_url"] = f"/api/audio/{rt.replies.put(sink.wav())}.wav"
    elif sink.audio and audio == "inline":
        body["audio_base64"] = base64.b64encode(sink.wav()).decode("ascii")
    return body


class ConversationBody(BaseModel):
    session_id: str | None = Field(None, description="Continue this session; unknown ids are created.")
    message: str = Field(description="The user's words.")
    voice_id: str | None = Field(None, description="TTS voice for this and later turns of the session.")
    agent: str | None = Field(None, description="Agent config for a new session (GET /api/agents).")
    language: str | None = Field(None, description="en, pt...: for this and later turns.")
    audio: AudioMode = Field("url", description="url: audio_url to GET; inline: audio_base64 (WAV); none.")
    sample_rate: int | None = Field(None, ge=8000, le=48000, description="Reply audio rate (PCM16 WAV).")


@router.post("/orchestrator/conversation")
async def conversation(body: ConversationBody, request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    conf = rt.sessions.config
    text = check_text(body.message, conf.max_text_chars)
    s = session_for(rt, body.session_id, agent=body.agent, voice=body.voice_id, language=body.language,
                    by=principal_of(request))
    out_rate = body.sample_rate or conf.output_sample_rate
    sink = CollectingSink(out_rate)
    record = await rt.orchestrator.text_turn(s, text, sink, out_rate=out_rate)
    return reply(rt, record, sink, body.audio)


@router.post("/orchestrator/conversation/audio", openapi_extra=AUDIO_BODY)
async def conversation_audio(
    request: Request,
    session_id: str | None = Query(None), voice_id: str | None = Query(None), agent: str | None = Query(None),
    language: str | None = Query(None), audio: AudioMode = Query("url"),
    sample_rate: int | None = Query(None, ge=8000, le=48000, description="Rate of a raw PCM16 body."),
    out_sample_rate: int | None = Query(None, ge=8000, le=48000, description="Reply audio rate."),
) -> dict[str, Any]:
    """One spoken turn: multipart ``file`` or a raw body; form fields may carry the query's options."""
    rt = runtime_of(request)
    conf = rt.sessions.config
    up = await parse_upload(request, conf.max_audio_bytes, sample_rate)
    f = up.fields
    s = session_for(
        rt, f.get("session_id") or session_id, agent=f.get("agent") or agent,
        voice=f.get("voice_id") or voice_id, language=f.get("language") or language, by=principal_of(request),
    )
    mode = audio
    if "audio" in f:
        if f["audio"] not in ("url", "inline", "none"):
            raise InvalidArgument(f"audio {f['audio']!r} must be url, inline or none")
        mode = cast(AudioMode, f["audio"])
    out_rate = _rate(f.get("out_sample_rate"), out_sample_rate) or conf.output_sample_rate
    sink = CollectingSink(out_rate)
    record = await rt.orchestrator.audio_turn(s, up.audio, sample_rate=up.sample_rate, sink=sink, out_rate=out_rate)
    return reply(rt, record, sink, mode)


@router.get("/audio/{audio_id}.wav")
async def reply_audio(audio_id: str, request: Request) -> Response:
    wav = runtime_of(request).replies.get(audio_id)
    if wav is None:
        raise NotFound(
            f"no reply audio {audio_id!r}: it expired (conversation.reply_audio_ttl_s) or never existed; "
            "ask for audio=inline to get it in the reply"
        )
    return Response(wav, media_type="audio/wav")
