"""Any OpenAI-compatible chat API (OpenAI, Groq, vLLM, llama.cpp servers) behind LlmEngine.

The service proxies ``POST {base_url}/chat/completions`` with ``stream=true`` through the
``openai`` SDK's AsyncOpenAI and asks for usage in the last chunk (``stream_options``). Closing
the iterator closes the upstream response, so the remote server sees the cancel too. The key is
read from the env var named in ``options.api_key_env`` and never logged. Upstream errors map to
``core.errors``: its 400 -> InvalidArgument, 404 -> NotFound, 429 -> ResourceExhausted (with its
Retry-After), a rejected key or 5xx -> ServiceUnavailable, a timeout -> DeadlineExceeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from core.config import ServiceConfig
from core.context import Paths
from core.errors import (
    CallError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceFailed,
    ServiceUnavailable,
)
from services.llm.engine import Finish, FinishReason, Message, ModelInfo, ModelLoadError, Sampling
from services.llm.options import LlmOptions

NO_KEY = "not-needed"  # the SDK insists on some key; servers without auth ignore it
PROBE_TIMEOUT_S = 10.0
log = logging.getLogger("ultravox.llm.openai")


def upstream_error(e: Exception, base_url: str) -> CallError:
    """An ``openai`` SDK exception as the core.errors class a caller can act on."""
    import openai  # noqa: PLC0415 - the SDK is only in the llm venvs

    where = f"the upstream API at {base_url}"
    if isinstance(e, openai.APITimeoutError):
        return DeadlineExceeded(f"{where} did not answer in time (options.request_timeout_s)")
    if isinstance(e, openai.APIConnectionError):
        return ServiceUnavailable(f"cannot reach {where}: {e}; check options.base_url and the network")
    if isinstance(e, openai.APIStatusError):
        detail = _detail(e)
        status = e.status_code
        if status == 429:
            retry = _retry_after(e.response.headers.get("retry-after"))
            return ResourceExhausted(f"{where} is rate-limiting: {detail}", retry_after_s=retry)
        if status in (401, 403):
            return ServiceUnavailable(
                f"{where} rejected this service's API key ({status}: {detail}); fix the key in the env var "
                "named by options.api_key_env"
            )
        if status == 404:
            return NotFound(f"{where} answered 404: {detail}")
        if 400 <= status < 500:
            return InvalidArgument(f"{where} refused the request ({status}): {detail}")
        return ServiceUnavailable(f"{where} failed ({status}): {detail}")
    return ServiceFailed(f"{where}: {type(e).__name__}: {e}")


def _detail(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(getattr(e, "message", e))


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0


class OpenAICompatEngine:
    """Streams from a remote OpenAI-compatible API; many calls may run at once."""

    owned_by = "openai-compatible"

    def __init__(
        self, cfg: ServiceConfig, options: LlmOptions, paths: Paths, *, base_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self.cfg, self.options = cfg, options
        self.base_url = (base_url if base_url is not None else options.base_url).rstrip("/")
        self._api_key = api_key
        self.model = cfg.model
        self._context_length = 0
        self._client: Any = None

    def _key(self) -> str:
        if self._api_key is not None:
            return self._api_key
        name = self.options.api_key_env
        if not name:
            return NO_KEY
        key = os.environ.get(name, "").strip()
        if not key:
            raise ModelLoadError(
                f"options.api_key_env names {name}, but that env var is unset or empty; export the API key "
                f"there (or in the service's env) before starting"
            )
        return key

    def load(self) -> None:
        import openai  # noqa: PLC0415

        if not self.base_url:
            raise ModelLoadError(
                "engine openai needs options.base_url (e.g. https://api.groq.com/openai/v1 or "
                "http://127.0.0.1:8103/v1)"
            )
        key = self._key()
        probe = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=PROBE_TIMEOUT_S, max_retries=0)
        try:
            models = {m.id: m for m in probe.models.list()}
        except openai.NotFoundError:
            models = {}  # some servers have no /models; the first call will tell
        except openai.OpenAIError as e:
            raise ModelLoadError(f"cannot use {self.base_url}: {upstream_error(e, self.base_url).message}") from e
        finally:
            probe.close()
        if models and self.model not in models:
            raise ModelLoadError(
                f"{self.base_url} does not serve model {self.model!r}; it serves {', '.join(sorted(models))} "
                "(set the service's model to one of them)"
            )
        card = models.get(self.model)
        self._context_length = int(getattr(card, "context_length", 0) or getattr(card, "max_model_len", 0) or 0)
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=key, timeout=self.options.request_timeout_s, max_retries=0
        )
        log.info("upstream ready", extra={"base_url": self.base_url, "model": self.model})

    def info(self) -> ModelInfo:
        return ModelInfo(id=self.model, context_length=self._context_length, owned_by=self.owned_by)

    def count_tokens(self, messages: Sequence[Message]) -> int | None:
        return None  # the remote tokenizer is not available here; usage comes back with the reply

    async def generate(
        self, messages: Sequence[Message], sampling: Sampling, cancel: threading.Event
    ) -> AsyncGenerator[str | Finish, None]:
        import openai  # noqa: PLC0415

        if self._client is None:
            raise RuntimeError("OpenAICompatEngine used before load()")
        extra: dict[str, Any] = {}
        if sampling.stop:
            extra["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            extra["seed"] = sampling.seed
        reason: FinishReason = "length"
        prompt_tokens = completion_tokens = pieces = 0
        try:
            stream = await self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": m.role, "content": m.content} for m in messages],
                max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
                stream=True, stream_options={"include_usage": True}, **extra,
            )
            async with stream:
                async for chunk in stream:
                    if cancel.is_set():
                        reason = "cancelled"
                        break
                    if chunk.usage is not None:
                        prompt_tokens = chunk.usage.prompt_tokens
                        completion_tokens = chunk.usage.completion_tokens
                    for choice in chunk.choices[:1]:
                        if choice.delta.content:
                            pieces += 1
                            yield choice.delta.content
                        if choice.finish_reason:
                            reason = "length" if choice.finish_reason == "length" else "stop"
        except openai.OpenAIError as e:
            raise upstream_error(e, self.base_url) from e
        if cancel.is_set():
            reason = "cancelled"
        yield Finish(reason, prompt_tokens, completion_tokens or pieces)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: the process is exiting anyway
            asyncio.get_running_loop().create_task(client.close())
