"""The STT service: Transcribe over gRPC/msgpack/JSON and OpenAI's /v1/audio/transcriptions.

One engine instance serves every call. Decoding and transcription run in a small thread pool
(``max_concurrency`` workers) so the event loop keeps answering health and other calls; calls
beyond that wait in a bounded line (``max_queue``) and the rest are refused at once with
RESOURCE_EXHAUSTED rather than piling up.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import Counter, Histogram

from core.context import ServiceContext
from core.errors import ConfigError, InvalidArgument, ResourceExhausted
from core.wire import operation
from services.runtime import CallInfo, Handler, HttpKit, ModelDescription
from services.stt.audio import DecodedAudio, Encoding, decode_audio
from services.stt.engine import DecodeOptions, EngineFactory, ModelLoadError, SttEngine, Transcript
from services.stt.model_store import resolve_model
from services.stt.openai_routes import openai_routes
from services.stt.options import SttOptions
from services.stt.whisper_engine import FasterWhisperEngine

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from uvpb.stt_pb2 import TranscribeRequest, TranscribeResponse

ENGINES: Mapping[str, EngineFactory] = {"faster-whisper": FasterWhisperEngine}
ENCODINGS: Mapping[str, Encoding] = {
    "AUDIO_ENCODING_UNSPECIFIED": "auto", "PCM_S16LE": "pcm_s16le", "WAV": "wav",
}
MAX_PROMPT_CHARS = 2000
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Result:
    audio: DecodedAudio
    transcript: Transcript
    seconds: float


class SttMetrics:
    def __init__(self, ctx: ServiceContext) -> None:
        registry, self.service = ctx.process.registry, ctx.config.name
        self.audio_seconds = Counter(
            "uv_stt_audio_seconds_total", "Seconds of audio transcribed.", ["service"], registry=registry
        )
        self.rtf = Histogram(
            "uv_stt_real_time_factor", "Processing time divided by audio duration, per transcription.",
            ["service"], buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0),
            registry=registry,
        )

    def observe(self, result: Result) -> None:
        self.audio_seconds.labels(self.service).inc(result.audio.duration_s)
        if result.audio.duration_s > 0:
            self.rtf.labels(self.service).observe(result.seconds / result.audio.duration_s)


class SttService:
    """Declares Transcribe and the OpenAI route; the runtime does the serving."""

    role = "stt"

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx, self.cfg = ctx, ctx.config
        self.options = SttOptions.from_config(ctx.config)
        factory = ENGINES.get(self.cfg.engine)
        if factory is None:
            raise ConfigError(
                "config/services.yaml", f"services.{self.cfg.name}.engine",
                f"unknown STT engine {self.cfg.engine!r}; available: {', '.join(ENGINES)}",
            )
        self.engine: SttEngine = factory(self.options, self.cfg.device, str(ctx.paths.models / "hub"))
        self.op = operation("stt", "Transcribe")
        self.metrics = SttMetrics(ctx)
        self.model_path = ""
        self._pool = ThreadPoolExecutor(self.options.max_concurrency, f"{self.cfg.name}-work")
        self._slots = asyncio.Semaphore(self.options.max_concurrency)
        self._waiting = 0

    def handlers(self) -> Mapping[str, Handler]:
        return {"Transcribe": self.transcribe}

    def load(self) -> None:
        resolved = resolve_model(self.cfg.model, self.ctx.paths.models, self.cfg.name)
        try:
            self.engine.load(resolved.ref)
        except ModelLoadError as e:
            where = "config/services.yaml (or the profile in config/profiles.yaml)"
            raise ConfigError(where, f"services.{self.cfg.name}.model", str(e)) from e
        self.model_path = resolved.ref

    def describe(self) -> ModelDescription:
        o = self.options
        return ModelDescription(
            engine=self.cfg.engine, model=self.cfg.model, device=self.cfg.device,
            details={
                "model_path": self.model_path, "compute_type": o.compute_type,
                "cpu_threads": str(o.cpu_threads),
                "beam_size": str(o.beam_size), "language": o.language, "max_audio_s": f"{o.max_audio_s:g}",
                "max_concurrency": str(o.max_concurrency),
            },
        )

    def http_routes(self, kit: HttpKit) -> Sequence[BaseRoute]:
        return openai_routes(kit, self.op)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()

    async def transcribe(self, req: TranscribeRequest, call: CallInfo) -> TranscribeResponse:
        options = self.decode_options(req.language, req.beam_size, req.initial_prompt)
        audio = req.audio
        enum = audio.DESCRIPTOR.fields_by_name["encoding"].enum_type.values_by_number.get(audio.encoding)
        encoding = ENCODINGS.get(enum.name) if enum is not None else None
        if encoding is None:
            raise InvalidArgument(
                f"unknown audio encoding {audio.encoding}; use WAV, PCM_S16LE or leave it unspecified"
            )
        data, rate, channels = audio.data, audio.sample_rate, audio.channels
        result = await self._run(lambda: self._work(data, encoding, rate, channels, options))
        self.metrics.observe(result)
        return self.to_response(result)

    def decode_options(self, language: str, beam_size: int, prompt: str) -> DecodeOptions:
        lang = (language or self.options.language).strip().lower()
        if not 0 <= beam_size <= 20:
            raise InvalidArgument(f"beam_size must be 1..20 (0 for the service default), got {beam_size}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidArgument(
                f"initial_prompt is {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS} (Whisper "
                "uses only the last ~220 tokens anyway)"
            )
        return DecodeOptions(
            language=None if lang == "auto" else lang, beam_size=beam_size or self.options.beam_size,
            initial_prompt=prompt or None, vad_filter=self.options.vad_filter,
        )

    def _work(self, data: bytes, encoding: Encoding, rate: int, channels: int, opts: DecodeOptions) -> Result:
        started = time.perf_counter()
        audio = decode_audio(data, encoding, sample_rate=rate, channels=channels,
                             max_audio_s=self.options.max_audio_s)
        transcript = self.engine.transcribe(audio.samples, opts)
        return Result(audio, transcript, time.perf_counter() - started)

    async def _run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker once a slot is free; refuse at once when the line is full."""
        if self._slots.locked() and self._waiting >= self.options.max_queue:
            raise ResourceExhausted(
                f"STT is busy: {self.options.max_concurrency} transcription(s) running and "
                f"{self._waiting} waiting (options.max_queue); retry shortly",
                retry_after_s=1.0,
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            ctx = contextvars.copy_context()  # keeps the request id on log lines from the worker
            return await asyncio.get_running_loop().run_in_executor(self._pool, ctx.run, fn)
        finally:
            self._slots.release()

    def to_response(self, result: Result) -> TranscribeResponse:
        t = result.transcript
        resp: TranscribeResponse = self.op.response(
            text=t.text, language=t.language, language_probability=t.language_probability,
            audio_duration_s=result.audio.duration_s, processing_time_s=result.seconds, model=self.cfg.model,
        )
        for s in t.segments:
            resp.segments.add(
                start_s=s.start_s, end_s=s.end_s, text=s.text, avg_logprob=s.avg_logprob,
                no_speech_prob=s.no_speech_prob,
            )
        return resp
