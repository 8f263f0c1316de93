"""The STT service: Transcribe, StreamingRecognize and DetectSpeech, plus /v1/audio/transcriptions and /detect.

One Whisper engine serves every call. Decoding and transcription run in a small worker pool
(``max_concurrency`` workers) so the event loop keeps answering health and other calls; one-shot
calls beyond that wait in a bounded line (``max_queue``) and the rest are refused at once with
RESOURCE_EXHAUSTED. Streams are admitted up to ``max_streams``; their finals then wait for the
engine without being refused. The Silero VAD (streams and DetectSpeech) has its own small pool.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.context import ServiceContext
from core.errors import ConfigError, InvalidArgument, ResourceExhausted
from core.wire import operation
from services.runtime import CallInfo, Handler, HttpKit, ModelDescription
from services.stt.audio import DecodedAudio, Encoding, decode_audio
from services.stt.detect import detect_routes, speech_segments
from services.stt.engine import DecodeOptions, EngineFactory, ModelLoadError, SttEngine, Transcript
from services.stt.metrics import SttMetrics
from services.stt.model_store import resolve_model
from services.stt.openai_routes import openai_routes
from services.stt.options import SttOptions
from services.stt.ray_engine import RayServeEngine
from services.stt.smart_turn import TurnModel, TurnModelMissing
from services.stt.stream_config import read_config, stream_settings
from services.stt.streaming import StreamSession
from services.stt.vad import SileroVad, VadModel, locate_model
from services.stt.vad_config import resolve_vad
from services.stt.whisper_engine import FasterWhisperEngine
from services.stt.workers import WorkerPool

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from uvpb.stt_pb2 import (
        DetectSpeechRequest,
        DetectSpeechResponse,
        StreamingRecognizeRequest,
        StreamingRecognizeResponse,
        TranscribeRequest,
        TranscribeResponse,
    )

ENGINES: Mapping[str, EngineFactory] = {"faster-whisper": FasterWhisperEngine, "ray-serve": RayServeEngine}
ENCODINGS: Mapping[str, Encoding] = {
    "AUDIO_ENCODING_UNSPECIFIED": "auto", "PCM_S16LE": "pcm_s16le", "WAV": "wav",
}
MAX_PROMPT_CHARS = 2000
VAD_WORKERS = 2
WHERE = "config/services.yaml (or the profile in config/profiles.yaml)"


@dataclass(frozen=True, slots=True)
class Result:
    audio: DecodedAudio
    transcript: Transcript
    seconds: float


class SttService:
    """Declares the handlers and routes; the runtime does the serving."""

    role = "stt"

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx, self.cfg = ctx, ctx.config
        self.options = o = SttOptions.from_config(ctx.config)
        factory = ENGINES.get(self.cfg.engine)
        if factory is None:
            raise ConfigError(
                "config/services.yaml", f"services.{self.cfg.name}.engine",
                f"unknown STT engine {self.cfg.engine!r}; available: {', '.join(ENGINES)}",
            )
        self.engine: SttEngine = factory(o, self.cfg.device, str(ctx.paths.models / "hub"))
        if isinstance(self.engine, RayServeEngine):
            self.engine.token = ctx.token   # the cluster's deployments check the run's token
        self.vad: VadModel | None = None
        self.turn_model: TurnModel | None = None
        self.turn_model_path = ""
        self.op = operation("stt", "Transcribe")
        self.stream_op = operation("stt", "StreamingRecognize")
        self.detect_op = operation("stt", "DetectSpeech")
        self.metrics = SttMetrics(ctx)
        self.model_path = self.vad_path = ""
        self.whisper = WorkerPool(o.max_concurrency, o.max_queue, f"{self.cfg.name}-work", "STT")
        self.vad_pool = WorkerPool(VAD_WORKERS, o.max_queue, f"{self.cfg.name}-vad", "The VAD")
        self.streams = 0

    def handlers(self) -> Mapping[str, Handler]:
        return {
            "Transcribe": self.transcribe,
            "StreamingRecognize": self.streaming_recognize,
            "DetectSpeech": self.detect_speech,
        }

    def load(self) -> None:
        resolved = resolve_model(self.cfg.model, self.ctx.paths.models, self.cfg.name)
        try:
            self.engine.load(resolved.ref)
        except ModelLoadError as e:
            raise ConfigError(WHERE, f"services.{self.cfg.name}.model", str(e)) from e
        self.model_path = resolved.ref
        path = locate_model(self.options.vad.model_path, f"{WHERE}: services.{self.cfg.name}")
        try:
            self.vad = SileroVad(path, self.options.vad.threads)
        except Exception as e:
            raise ConfigError(
                WHERE, f"services.{self.cfg.name}.options.vad.model_path",
                f"could not load the Silero VAD from {path} ({type(e).__name__}: {e})",
            ) from e
        self.vad_path = str(path)
        self._load_turn_model()

    def _load_turn_model(self) -> None:
        """The semantic end-of-turn model; without it, semantic streams fall back to VAD (logged once)."""
        turn = self.options.turn
        try:
            self.turn_model = TurnModel.load(turn.model_path, turn.threads)
        except TurnModelMissing as e:
            if turn.model_path:  # a path the operator set must exist
                raise ConfigError(WHERE, f"services.{self.cfg.name}.options.turn.model_path", str(e)) from e
            self.ctx.process.log.warning("no end-of-turn model (%s); semantic turn detection falls back to VAD", e)
            return
        except Exception as e:  # a file that is not an ONNX model onnxruntime can open
            raise ConfigError(
                WHERE, f"services.{self.cfg.name}.options.turn.model_path",
                f"could not load the end-of-turn model ({type(e).__name__}: {e}); point it at a Smart Turn v3 "
                ".onnx file, or leave it empty for the one in the pipecat-ai wheel",
            ) from e
        self.turn_model_path = str(getattr(self.turn_model, "path", turn.model_path))

    def describe(self) -> ModelDescription:
        o = self.options
        return ModelDescription(
            engine=self.cfg.engine, model=self.cfg.model, device=self.cfg.device,
            details={
                "model_path": self.model_path, "compute_type": o.compute_type,
                "cpu_threads": str(o.cpu_threads),
                "beam_size": str(o.beam_size), "language": o.language, "max_audio_s": f"{o.max_audio_s:g}",
                "max_concurrency": str(o.max_concurrency), "max_streams": str(o.max_streams),
                "vad_model": self.vad_path, "vad_threshold": f"{o.vad.threshold:g}",
                "vad_min_speech_ms": str(o.vad.min_speech_ms), "vad_end_silence_ms": str(o.vad.end_silence_ms),
                "vad_pre_roll_ms": str(o.vad.pre_roll_ms),
                "turn_detection": o.turn.detection, "turn_model": self.turn_model_path or "none (VAD only)",
                "turn_pause_ms": str(o.turn.pause_ms), "turn_max_wait_ms": str(o.turn.max_wait_ms),
                "turn_threshold": f"{o.turn.threshold:g}", "turn_speculation": str(o.turn.speculation).lower(),
            },
        )

    def http_routes(self, kit: HttpKit) -> Sequence[BaseRoute]:
        return [*openai_routes(kit, self.op), *detect_routes(kit, self.detect_op)]

    def close(self) -> None:
        self.whisper.close()
        self.vad_pool.close()
        self.engine.close()

    async def transcribe(self, req: TranscribeRequest, call: CallInfo) -> TranscribeResponse:
        options = self.decode_options(req.language, req.beam_size, req.initial_prompt)
        encoding = self.encoding(req.audio)
        data, rate, channels = req.audio.data, req.audio.sample_rate, req.audio.channels
        result = await self.whisper.run(lambda: self._work(data, encoding, rate, channels, options))
        self.metrics.transcribed(result.audio.duration_s, result.seconds)
        return self.to_response(result)

    async def streaming_recognize(
        self, requests: AsyncIterator[StreamingRecognizeRequest], call: CallInfo
    ) -> AsyncIterator[StreamingRecognizeResponse]:
        if self.streams >= self.options.max_streams:
            raise ResourceExhausted(
                f"STT has {self.streams} streams open, its limit (options.max_streams); retry shortly",
                retry_after_s=1.0,
            )
        gauge = self.metrics.streams_active.labels(self.cfg.name)
        self.streams += 1
        gauge.inc()
        try:
            config = await read_config(requests)
            settings = stream_settings(
                config, self.options, self.decode_options, self.engine.languages(),
                have_turn_model=self.turn_model is not None,
            )
            session = StreamSession(
                settings, self._vad().stream(), self.engine, self.whisper, self.vad_pool, self.metrics,
                self.stream_op.response, turn_model=self.turn_model, key=call.session_id or call.request_id,
            )
            async for event in session.events(requests):
                yield event
        finally:
            self.streams -= 1
            gauge.dec()

    async def detect_speech(self, req: DetectSpeechRequest, call: CallInfo) -> DetectSpeechResponse:
        v = req.vad
        settings = resolve_vad(
            self.options.vad, threshold=v.threshold, min_speech_ms=v.min_speech_ms,
            end_silence_ms=v.end_silence_ms, pre_roll_ms=v.pre_roll_ms, where="vad",
        )
        encoding = self.encoding(req.audio)
        data, rate, channels = req.audio.data, req.audio.sample_rate, req.audio.channels
        model = self._vad()

        def work() -> tuple[DecodedAudio, list[tuple[float, float]], int, float]:
            started = time.perf_counter()
            audio = decode_audio(data, encoding, sample_rate=rate, channels=channels,
                                 max_audio_s=self.options.max_audio_s)
            found, frames = speech_segments(model, audio.samples, settings)
            return audio, found, frames, time.perf_counter() - started

        audio, found, frames, took = await self.vad_pool.run(work)
        self.metrics.frames(frames)
        resp: DetectSpeechResponse = self.detect_op.response(
            audio_duration_s=audio.duration_s, processing_time_s=took
        )
        for start, end in found:
            resp.segments.add(start_s=start, end_s=end)
        return resp

    def _vad(self) -> VadModel:
        if self.vad is None:
            raise RuntimeError("the VAD is used before load(); the runtime gates calls on readiness")
        return self.vad

    @staticmethod
    def encoding(audio: Any) -> Encoding:
        enum = audio.DESCRIPTOR.fields_by_name["encoding"].enum_type.values_by_number.get(audio.encoding)
        encoding = ENCODINGS.get(enum.name) if enum is not None else None
        if encoding is None:
            raise InvalidArgument(
                f"unknown audio encoding {audio.encoding}; use WAV, PCM_S16LE or leave it unspecified"
            )
        return encoding

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
