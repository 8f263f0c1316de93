"""A fake LLM engine and an LlmService built around it, for tests that need no model."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from core.config import load_settings
from core.context import GlobalContext, Paths, ProcessContext, ServiceContext
from services.llm.engine import Finish, Message, ModelInfo, Sampling
from services.llm.service import LlmService


class FakeLlmEngine:
    """Yields ``pieces`` one per ``delay_s``; ``gate`` (when set) holds every piece until opened."""

    def __init__(self, pieces: Sequence[str] = ("Par", "is", ".")) -> None:
        self.pieces = list(pieces)
        self.delay_s = 0.0
        self.gate: asyncio.Event | None = None
        self.calls: list[tuple[tuple[Message, ...], Sampling]] = []
        self.endings: list[str] = []  # per call: finished, flag (cancel set), or closed (cancelled/aclose)
        self.active = 0
        self.started = asyncio.Event()
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def info(self) -> ModelInfo:
        return ModelInfo(id="fake-model", context_length=2048, owned_by="test")

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return sum(len(m.content.split()) for m in messages)

    async def generate(
        self, messages: Sequence[Message], sampling: Sampling, cancel: threading.Event
    ) -> AsyncGenerator[str | Finish, None]:
        self.calls.append((tuple(messages), sampling))
        self.active += 1
        self.started.set()
        sent = 0
        ending = "closed"
        try:
            for piece in self.pieces[: sampling.max_tokens]:
                if self.gate is not None:
                    await self.gate.wait()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if cancel.is_set():
                    ending = "flag"
                    yield Finish("cancelled", self.count_tokens(messages), sent)
                    return
                sent += 1
                yield piece
            reason = "stop" if sent == len(self.pieces) else "length"
            ending = "finished"
            yield Finish(reason, self.count_tokens(messages), sent)
        finally:
            self.active -= 1
            self.endings.append("flag" if ending == "closed" and cancel.is_set() else ending)

    def close(self) -> None:
        return None


def make_service(tmp_path: Path, engine: Any = None, **options: Any) -> tuple[LlmService, FakeLlmEngine]:
    settings = load_settings(env={})
    cfg = settings.services["llm"]
    cfg = cfg.model_copy(update={"options": {**cfg.options, **options}})
    g = GlobalContext.create(settings, Paths(root=tmp_path, var=tmp_path, cache=tmp_path, venvs=tmp_path))
    fake = engine if engine is not None else FakeLlmEngine()
    ctx = ServiceContext(process=ProcessContext(global_=g, name="llm"), config=cfg, grpc_port=0, http_port=0)
    return LlmService(ctx, engine=fake), fake
