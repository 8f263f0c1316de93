"""The LLM service: Generate (server stream) and ListModels, plus OpenAI's chat routes.

One engine serves every call. Generate validates the request, waits for a slot in the bounded
line (RESOURCE_EXHAUSTED past ``max_queue``), streams one GenerateChunk per text piece, and
ends with a chunk that carries finish_reason, usage, time to first token and decode speed.
When the client cancels, the runtime cancels this generator: the engine's cancel flag is set
in ``finally`` and the slot is released only once the engine has stopped. A prompt that cannot
fit the context is refused before queueing. ``GenerateRequest.model`` is not checked: one model
is served, and every chunk names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

from core.context import ServiceContext
from core.errors import ConfigError, InvalidArgument, ServiceFailed
from core.wire import operation
from services.llm.admission import Admission
from services.llm.engine import EngineFactory, Finish, LlmEngine, ModelInfo, ModelLoadError
from services.llm.llama_engine import LlamaCppEngine
from services.llm.messages import Prompt, from_request
from services.llm.metrics import LlmMetrics
from services.llm.openai_engine import OpenAICompatEngine
from services.llm.openai_routes import openai_routes
from services.llm.options import LlmOptions
from services.llm.vllm_engine import VllmEngine
from services.runtime import CallInfo, Handler, HttpKit, ModelDescription
from services.runtime.options import WHERE

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from uvpb.llm_pb2 import GenerateChunk, GenerateRequest, ListModelsRequest, ListModelsResponse

ENGINES: Mapping[str, EngineFactory] = {
    "llama.cpp": LlamaCppEngine, "openai": OpenAICompatEngine, "vllm": VllmEngine,
}


def decode_rate(finish: Finish, first: float | None, end: float) -> float:
    """Tokens per second after the first token (the first one pays for the prompt)."""
    if first is None or finish.completion_tokens < 2 or end <= first:
        return 0.0
    return (finish.completion_tokens - 1) / (end - first)


class LlmService:
    """Declares Generate, ListModels and the OpenAI routes; the runtime does the serving."""

    role = "llm"

    def __init__(self, ctx: ServiceContext, engine: LlmEngine | None = None) -> None:
        self.ctx, self.cfg = ctx, ctx.config
        self.options = LlmOptions.from_config(ctx.config)
        if engine is None:
            factory = ENGINES.get(self.cfg.engine)
            if factory is None:
                raise ConfigError(
                    "config/services.yaml", f"services.{self.cfg.name}.engine",
                    f"unknown LLM engine {self.cfg.engine!r}; available: {', '.join(ENGINES)}",
                )
            engine = factory(self.cfg, self.options, ctx.paths)
        self.engine = engine
        self.op = operation("llm", "Generate")
        self.list_op = operation("llm", "ListModels")
        self.metrics = LlmMetrics(ctx)
        self.admission = Admission(
            self.options.max_concurrency, self.options.max_queue, on_change=self.metrics.slots
        )

    def handlers(self) -> Mapping[str, Handler]:
        return {"Generate": self.generate, "ListModels": self.list_models}

    def load(self) -> None:
        try:
            self.engine.load()
        except ModelLoadError as e:
            raise ConfigError(WHERE, f"services.{self.cfg.name}.model", str(e)) from e

    def describe(self) -> ModelDescription:
        o = self.options
        details = {
            "max_tokens": str(o.max_tokens), "max_queue": str(o.max_queue),
            "max_concurrency": str(o.max_concurrency), "temperature": f"{o.temperature:g}",
        }
        if self.cfg.engine == "llama.cpp":
            details |= {"n_ctx": str(o.n_ctx), "n_threads": str(o.n_threads),
                        "model_path": getattr(self.engine, "model_path", "")}
        elif self.cfg.engine == "openai":
            details |= {"base_url": o.base_url, "api_key_env": o.api_key_env}
        return ModelDescription(engine=self.cfg.engine, model=self.cfg.model, device=self.cfg.device,
                                details=details)

    def http_routes(self, kit: HttpKit) -> Sequence[BaseRoute]:
        return openai_routes(kit, self)

    def close(self) -> None:
        self.engine.close()

    def model_info(self) -> ModelInfo:
        return self.engine.info()

    async def list_models(self, req: ListModelsRequest, call: CallInfo) -> ListModelsResponse:
        info = self.engine.info()
        resp: ListModelsResponse = self.list_op.response()
        resp.models.add(id=info.id, engine=self.cfg.engine, context_length=info.context_length,
                        owned_by=info.owned_by)
        return resp

    async def generate(self, req: GenerateRequest, call: CallInfo) -> AsyncIterator[GenerateChunk]:
        started = time.perf_counter()
        prompt = from_request(req, self.options)
        await self.check_fits(prompt)
        async with contextlib.aclosing(self.run(prompt, started)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def check_fits(self, prompt: Prompt) -> None:
        """Refuse a prompt longer than the context now, rather than after a wait in the queue."""
        n = await asyncio.to_thread(self.engine.count_tokens, prompt.messages)  # tokenizer: read-only
        limit = self.engine.info().context_length
        if n is not None and limit and n >= limit:
            raise InvalidArgument(
                f"the prompt is {n} tokens, which does not fit this model's context of {limit} tokens "
                "(prompt and reply together); shorten the conversation"
            )

    async def run(self, prompt: Prompt, started: float) -> AsyncGenerator[GenerateChunk, None]:
        """Stream ``prompt``'s reply as GenerateChunks (shared by Generate and the OpenAI route)."""
        model = self.engine.info().id
        cancel = threading.Event()
        first: float | None = None
        finish: Finish | None = None
        admitted = False
        try:
            async with self.admission.slot():
                admitted = True
                pieces = self.engine.generate(prompt.messages, prompt.sampling, cancel)
                try:
                    async for item in pieces:
                        if isinstance(item, Finish):
                            finish = item
                            break
                        if first is None:
                            first = time.perf_counter()
                        yield self.op.response(delta=item, model=model)
                finally:
                    cancel.set()  # first, so the engine sees the flag while it is being closed
                    await pieces.aclose()  # returns once the engine has stopped; then the slot frees
        finally:
            cancel.set()
            if admitted and finish is None:  # the client went away (or the engine failed) mid-reply
                self.metrics.generations.labels(self.cfg.name, "cancelled").inc()
        end = time.perf_counter()
        if finish is None:
            raise ServiceFailed("the engine ended the reply without a finish; this is a bug in the engine")
        ttft = None if first is None else first - started
        rate = decode_rate(finish, first, end)
        self.metrics.finished(finish, ttft, rate)
        yield self.op.response(
            finish_reason=finish.reason, model=model, time_to_first_token_s=ttft or 0.0, tokens_per_s=rate,
            usage={"prompt_tokens": finish.prompt_tokens, "completion_tokens": finish.completion_tokens,
                   "total_tokens": finish.prompt_tokens + finish.completion_tokens},
        )
