"""The TTS service: Synthesize, SynthesizeStream and ListVoices, plus OpenAI's /v1/audio/speech and /voices.

Every engine in ``options.engines`` is loaded at start; a request picks one by name or by voice,
else the service's ``engine`` serves it. Both operations split the text the same way
(``text_split``) and synthesise piece by piece (``synth``): Synthesize joins the pieces into
one clip, SynthesizeStream sends each piece as soon as it is ready, so the first chunk comes
after the first short clause, not after the whole text.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from core.context import ServiceContext
from core.errors import ConfigError, InvalidArgument
from core.wire import operation
from services.runtime import CallInfo, Handler, HttpKit, ModelDescription
from services.runtime.options import WHERE
from services.tts.audio import encode, writable_formats
from services.tts.engine import EngineFactory, EngineInfo, ModelLoadError, TtsEngine, canonical_language
from services.tts.kokoro_engine import KokoroEngine
from services.tts.metrics import TtsMetrics
from services.tts.openai_routes import openai_routes
from services.tts.options import TtsOptions
from services.tts.piper_engine import PiperEngine
from services.tts.requests import Plan, plan_request
from services.tts.synth import RenderedPiece, Runner, render_pieces

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from uvpb.tts_pb2 import (
        ListVoicesRequest,
        ListVoicesResponse,
        SynthesisChunk,
        SynthesizeRequest,
        SynthesizeResponse,
    )

ENGINES: Mapping[str, EngineFactory] = {"kokoro": KokoroEngine, "piper": PiperEngine}


class TtsService:
    """Declares the TTS operations and the OpenAI routes; the runtime does the serving."""

    role = "tts"

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx, self.cfg = ctx, ctx.config
        self.options = TtsOptions.from_config(ctx.config)
        models_dir = str(ctx.paths.models)
        self.engines: dict[str, TtsEngine] = {
            name: ENGINES[name](self.options, self.cfg.model, models_dir, self.cfg.name)
            for name in self.options.engines
        }
        self.infos: dict[str, EngineInfo] = {}
        self.metrics = TtsMetrics(ctx.process.registry, self.cfg.name, self.options.engines)
        self.runner = Runner(self.options.max_concurrency, self.options.max_queue, self.cfg.name)
        self.ops = {name: operation("tts", name) for name in ("Synthesize", "SynthesizeStream", "ListVoices")}

    def handlers(self) -> Mapping[str, Handler]:
        return {
            "Synthesize": self.synthesize, "SynthesizeStream": self.synthesize_stream,
            "ListVoices": self.list_voices,
        }

    def load(self) -> None:
        writable_formats()  # import soundfile and probe libsndfile now, not on the first request
        for name, engine in self.engines.items():
            try:
                self.infos[name] = engine.load()
            except ModelLoadError as e:
                key = "model" if name == "kokoro" else "options.piper_model"
                raise ConfigError(WHERE, f"services.{self.cfg.name}.{key}", str(e)) from e

    def describe(self) -> ModelDescription:
        o = self.options
        details = {
            "engines": ",".join(o.engines), "default_engine": self.cfg.engine,
            "intra_op_threads": str(o.intra_op_threads), "max_text_chars": str(o.max_text_chars),
            "max_concurrency": str(o.max_concurrency), "formats": ",".join(writable_formats()),
        }
        for name, info in self.infos.items():
            details[f"{name}.sample_rate"] = str(info.sample_rate)
            details[f"{name}.default_voice"] = info.default_voice
            details[f"{name}.voices"] = ",".join(v.id for v in info.voices)
            details |= {f"{name}.{k}": v for k, v in info.details.items()}
        return ModelDescription(engine=self.cfg.engine, model=self.cfg.model, device=self.cfg.device, details=details)

    def http_routes(self, kit: HttpKit) -> Sequence[BaseRoute]:
        return openai_routes(kit, self.ops)

    def close(self) -> None:
        self.runner.close()
        for engine in self.engines.values():
            engine.close()

    def plan(self, req: SynthesizeRequest) -> Plan:
        return plan_request(
            req.text, voice=req.voice, language=req.language, speed=req.speed, audio_format=req.format,
            sample_rate=req.sample_rate, engine=req.engine, engines=self.infos, default_engine=self.cfg.engine,
            options=self.options,
        )

    def _render(self, plan: Plan, *, encode_each: bool) -> contextlib.aclosing[AsyncGenerator[RenderedPiece, None]]:
        """The plan's pieces as they are ready; leaving the ``async with`` stops the rest."""
        pieces = render_pieces(
            plan, self.engines[plan.engine], self.runner, encode_each=encode_each,
            on_piece=lambda: self.metrics.piece(plan.engine),
        )
        return contextlib.aclosing(pieces)

    async def synthesize(self, req: SynthesizeRequest, call: CallInfo) -> SynthesizeResponse:
        started = time.perf_counter()
        plan = self.plan(req)
        with self.runner.admit():
            self.metrics.accepted(plan.engine, plan.chars)
            parts: list[np.ndarray] = []
            async with self._render(plan, encode_each=False) as pieces:
                async for rendered in pieces:
                    parts.append(rendered.samples)
            samples = np.concatenate(parts)
            audio = await self.runner.run(lambda: encode(samples, plan.sample_rate, plan.format))
        elapsed = time.perf_counter() - started
        duration = len(samples) / plan.sample_rate
        self.metrics.first(plan.engine, call.method, elapsed)
        self.metrics.audio(plan.engine, duration)
        self.metrics.finished(plan.engine, elapsed, duration)
        response: SynthesizeResponse = self.ops["Synthesize"].response(
            audio=audio, format=plan.format.name, sample_rate=plan.sample_rate, audio_duration_s=duration,
            processing_time_s=elapsed, voice=plan.voice, engine=plan.engine,
        )
        return response

    async def synthesize_stream(self, req: SynthesizeRequest, call: CallInfo) -> AsyncIterator[SynthesisChunk]:
        started = time.perf_counter()
        plan = self.plan(req)
        last = len(plan.pieces) - 1
        chunk_type = self.ops["SynthesizeStream"].response
        with self.runner.admit():
            self.metrics.accepted(plan.engine, plan.chars)
            total = 0.0
            async with self._render(plan, encode_each=True) as pieces:
                async for r in pieces:
                    elapsed = time.perf_counter() - started
                    duration = r.duration_s(plan.sample_rate)
                    if r.index == 0:
                        self.metrics.first(plan.engine, call.method, elapsed)
                    self.metrics.audio(plan.engine, duration)
                    total += duration
                    chunk: SynthesisChunk = chunk_type(
                        audio=r.audio, format=plan.format.name, sample_rate=plan.sample_rate, index=r.index,
                        text=r.piece.text, audio_duration_s=duration, elapsed_s=elapsed, final=r.index == last,
                    )
                    yield chunk
            self.metrics.finished(plan.engine, time.perf_counter() - started, total)

    async def list_voices(self, req: ListVoicesRequest, call: CallInfo) -> ListVoicesResponse:
        name = req.engine.strip().lower()
        if name and name not in self.infos:
            loaded = ", ".join(self.infos)
            raise InvalidArgument(f"engine {req.engine!r} is not loaded here; available engines: {loaded}")
        lang = canonical_language(req.language) if req.language.strip() else ""
        response: ListVoicesResponse = self.ops["ListVoices"].response(
            default_voice=self.infos[name or self.cfg.engine].default_voice
        )
        for info in self.infos.values():
            if name and info.name != name:
                continue
            for v in info.voices:
                if not lang or lang in v.languages:
                    response.voices.add(
                        id=v.id, engine=v.engine, languages=v.languages, gender=v.gender, description=v.description
                    )
        return response
