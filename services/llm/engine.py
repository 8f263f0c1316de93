"""The LLM engine protocol: what every language-model adapter provides.

The service speaks only this protocol. An engine streams a reply as text pieces followed by one
:class:`Finish` (reason and token counts), counts prompt tokens when it has a tokenizer, and
stops promptly when the call's :class:`threading.Event` is set or its async iterator is closed.
llama.cpp (``llama_engine``), any OpenAI-compatible API (``openai_engine``) and vLLM
(``vllm_engine``) are the adapters; another engine plugs in by implementing these five members
and registering in ``service.ENGINES``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from core.config import ServiceConfig
    from core.context import Paths
    from services.llm.options import LlmOptions

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled"]


class ModelLoadError(Exception):
    """The engine could not load its model; the message says why and what to configure instead."""


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """Decoding parameters, already validated and defaulted by the service."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """The last item of a stream."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    context_length: int
    owned_by: str


class LlmEngine(Protocol):
    def load(self) -> None:
        """Load or connect to the model (blocking, in a worker thread); ModelLoadError on failure."""
        ...

    def info(self) -> ModelInfo:
        """The model it serves (valid after load)."""
        ...

    def count_tokens(self, messages: Sequence[Message]) -> int | None:
        """Prompt tokens of ``messages`` with the chat template applied; None without a tokenizer."""
        ...

    def generate(
        self, messages: Sequence[Message], sampling: Sampling, cancel: threading.Event
    ) -> AsyncGenerator[str | Finish, None]:
        """Text pieces in order, then one Finish. Stops within a token once ``cancel`` is set or the
        iterator is closed; raises ``core.errors`` CallErrors for refusals and upstream failures."""
        ...

    def close(self) -> None: ...


EngineFactory = Callable[["ServiceConfig", "LlmOptions", "Paths"], LlmEngine]
"""(service config, options, paths) -> an unloaded engine."""
