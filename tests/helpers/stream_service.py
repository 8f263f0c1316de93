"""A small real service for the runtime's streaming tests, run as ``python -m tests.helpers.stream_service``.

It serves role ``llm`` with simple real handlers (no model):

* ``Generate`` (server stream) yields the words of the last message, one GenerateChunk per word,
  ``options.interval_ms`` apart, then a last chunk with ``finish_reason="stop"`` and usage.
  Test hooks in the text: first word ``reject`` is refused (INVALID_ARGUMENT) before any chunk;
  the word ``FAIL`` refuses mid-stream; ``CRASH`` raises an unexpected error mid-stream;
  ``forever`` streams chunks every ``interval_ms`` until the client goes away.
* ``ListModels`` (unary) lists one model.

``uv_test_generate_closed_total{how}`` counts how each Generate handler ended (``end``,
``CancelledError``, ``GeneratorExit``, an error name), so a test can see from outside that a
client's cancel reached the handler. With ``options.broken_shape: true`` the service registers
Generate as a plain coroutine, which the runtime must refuse at startup.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import Counter
from starlette.routing import BaseRoute

from core.context import ServiceContext
from core.errors import InvalidArgument
from core.wire import operation
from services.runtime import CallInfo, Handler, HttpKit, ModelDescription, service_main

GENERATE = operation("llm", "Generate")
LIST_MODELS = operation("llm", "ListModels")


class ScriptedLlm:
    role = "llm"

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.interval_s = float(ctx.config.options.get("interval_ms", 5)) / 1000
        self.broken_shape = bool(ctx.config.options.get("broken_shape", False))
        self.closed = Counter(
            "uv_test_generate_closed_total", "How Generate handlers ended.", ["how"], registry=ctx.process.registry
        )

    def handlers(self) -> Mapping[str, Handler]:
        if self.broken_shape:
            return {"Generate": self.list_models, "ListModels": self.list_models}
        return {"Generate": self.generate, "ListModels": self.list_models}

    async def generate(self, req: Any, call: CallInfo) -> AsyncIterator[Any]:
        text = req.messages[-1].content if req.messages else ""
        words = text.split()
        if words and words[0] == "reject":
            raise InvalidArgument("the first word is 'reject' (test hook); send other text")
        how = "end"
        try:
            sent = 0
            for word in _words(words):
                if word == "FAIL":
                    raise InvalidArgument(f"refused after {sent} chunks at the word FAIL (test hook)")
                if word == "CRASH":
                    raise RuntimeError("crashed mid-stream (test hook)")
                if sent:
                    await asyncio.sleep(self.interval_s)
                sent += 1
                yield GENERATE.response(delta=(" " if sent > 1 else "") + word, model="scripted")
                if req.max_tokens and sent >= req.max_tokens:
                    break
            usage = {"prompt_tokens": len(words), "completion_tokens": sent, "total_tokens": len(words) + sent}
            yield GENERATE.response(finish_reason="stop", usage=usage, model="scripted")
        except BaseException as e:
            how = type(e).__name__
            raise
        finally:
            self.closed.labels(how).inc()

    async def list_models(self, req: Any, call: CallInfo) -> Any:
        return LIST_MODELS.response(models=[{"id": "scripted", "engine": "scripted", "owned_by": "tests"}])

    def load(self) -> None:
        return None

    def describe(self) -> ModelDescription:
        return ModelDescription(engine="scripted", model="scripted", device="cpu")

    def http_routes(self, kit: HttpKit) -> Sequence[BaseRoute]:
        return []

    def close(self) -> None:
        return None


def _words(words: list[str]) -> Iterator[str]:
    if words[:1] == ["forever"]:
        return (f"w{n}" for n in itertools.count(1))
    return iter(words)


if __name__ == "__main__":
    raise SystemExit(service_main("scripted-llm", ScriptedLlm))
