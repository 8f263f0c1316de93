"""llama.cpp (llama-cpp-python) behind the LlmEngine protocol.

The prompt is built with the model's own chat template (the GGUF's ``tokenizer.chat_template``,
rendered by llama-cpp-python's Jinja2ChatFormatter exactly as ``create_chat_completion`` does)
and streamed with ``create_completion(stream=True)``. Driving the completion directly gives two
things the chat wrapper hides: an exact prompt token count, and a per-token stopping criterion
that counts sampled tokens and stops generation as soon as the call's cancel flag is set.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.config import ServiceConfig
from core.context import Paths
from core.errors import InvalidArgument
from services.llm.engine import Finish, FinishReason, Message, ModelInfo, ModelLoadError, Sampling
from services.llm.model_store import resolve_model
from services.llm.options import LlmOptions
from services.llm.streaming import Emit, stream_from_thread

log = logging.getLogger("ultravox.llm.llama")


class LlamaCppEngine:
    """One llama.cpp model; generations run one at a time on a dedicated thread."""

    def __init__(self, cfg: ServiceConfig, options: LlmOptions, paths: Paths) -> None:
        self.cfg, self.options, self.paths = cfg, options, paths
        self.model_path = ""
        self._llm: Any = None
        self._formatter: Any = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"{cfg.name}-llama")

    def load(self) -> None:
        resolved = resolve_model(self.cfg.model, self.paths.models, self.cfg.name)
        from llama_cpp import Llama  # noqa: PLC0415 - heavy native import, done in the load thread
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: PLC0415

        o = self.options
        kwargs: dict[str, Any] = {
            "n_ctx": o.n_ctx, "n_batch": o.n_batch, "n_gpu_layers": o.n_gpu_layers, "verbose": False,
        }
        if o.n_threads:
            kwargs["n_threads"] = o.n_threads
        try:
            if resolved.kind == "hub":
                llm = Llama.from_pretrained(
                    resolved.ref, o.hub_file, cache_dir=str(self.paths.models / "hub"), **kwargs
                )
            else:
                llm = Llama(model_path=resolved.ref, **kwargs)
        except Exception as e:
            hint = (
                "a hub id needs internet (and huggingface-hub) to download once; offline, use a local "
                ".gguf path or embedded:qwen2.5-coder-0.5b-instruct-q4_k_m"
                if resolved.kind == "hub" else "check that the file is a complete GGUF llama.cpp supports"
            )
            raise ModelLoadError(
                f"llama.cpp could not load {resolved.ref!r} ({type(e).__name__}: {e}); {hint}"
            ) from e
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            llm.close()
            raise ModelLoadError(
                f"{resolved.ref} has no chat template (tokenizer.chat_template); it is probably a base "
                "model, not an instruct one: use an instruct/chat GGUF"
            )
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=_token_text(llm, eos_id),
            bos_token=_token_text(llm, bos_id),
            stop_token_ids=[eos_id],
        )
        self._llm = llm
        self.model_path = getattr(llm, "model_path", resolved.ref)

    def info(self) -> ModelInfo:
        n_ctx = self._llm.n_ctx() if self._llm is not None else self.options.n_ctx
        return ModelInfo(id=self.cfg.model, context_length=n_ctx, owned_by="llama.cpp")

    def _prompt(self, messages: Sequence[Message]) -> tuple[list[int], Any]:
        if self._llm is None:
            raise RuntimeError("LlamaCppEngine used before load()")
        try:
            result = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        except Exception as e:  # the template may refuse an order of roles (raise_exception)
            raise InvalidArgument(f"the model's chat template refused these messages: {e}") from e
        tokens: list[int] = self._llm.tokenize(result.prompt.encode("utf-8"), add_bos=False, special=True)
        return tokens, result

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Exact prompt tokens (the tokenizer is read-only, so this is safe beside a generation)."""
        return len(self._prompt(messages)[0])

    def generate(
        self, messages: Sequence[Message], sampling: Sampling, cancel: threading.Event
    ) -> AsyncGenerator[str | Finish, None]:
        return stream_from_thread(self._pool, lambda emit: self._run(messages, sampling, cancel, emit), cancel)

    def _run(self, messages: Sequence[Message], sampling: Sampling, cancel: threading.Event, emit: Emit) -> Finish:
        from llama_cpp import StoppingCriteriaList  # noqa: PLC0415 - only importable in the llm venv

        tokens, fmt = self._prompt(messages)
        n_ctx = self._llm.n_ctx()
        room = n_ctx - len(tokens)
        if room < 1:
            raise InvalidArgument(
                f"the prompt is {len(tokens)} tokens, which fills this model's context of {n_ctx} tokens "
                "(options.n_ctx); shorten the conversation"
            )
        context = 0  # the longest context seen by the criterion: prompt + tokens sampled before

        def count_or_cancel(ids: Any, _logits: Any) -> bool:
            nonlocal context
            context = max(context, len(ids))
            return cancel.is_set()

        criteria = [count_or_cancel, *(fmt.stopping_criteria or [])]
        stream = self._llm.create_completion(
            prompt=tokens,
            max_tokens=min(sampling.max_tokens, room),
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=[*sampling.stop, *(fmt.stop if isinstance(fmt.stop, list) else [fmt.stop] if fmt.stop else [])],
            seed=sampling.seed if sampling.seed is not None else secrets.randbits(32),
            stopping_criteria=StoppingCriteriaList(criteria),
            stream=True,
        )
        reason: FinishReason = "length"
        try:
            for chunk in stream:
                if cancel.is_set():
                    break
                choice = chunk["choices"][0]
                if choice["text"]:
                    emit(choice["text"])
                if choice["finish_reason"] in ("stop", "length"):
                    reason = choice["finish_reason"]
        finally:
            stream.close()
        if cancel.is_set():
            reason = "cancelled"
        # The criterion runs after every sampling step with the context before that step (and
        # once more after the loop, with the same context), so the steps are context - prompt + 1.
        # After "stop" or "cancelled" the last sampled token is no text (end of turn, the end of a
        # stop string, or the one refused by the cancel), so it is not counted.
        steps = context - len(tokens) + 1 if context else 0
        completion = steps - 1 if reason != "length" and steps else steps
        if reason == "cancelled":
            log.info("generation cancelled", extra={"completion_tokens": completion,
                                                    "max_tokens": sampling.max_tokens})
        return Finish(reason, len(tokens), completion)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._llm is not None:
            self._llm.close()
            self._llm = None


def _token_text(llm: Any, token_id: int) -> str:
    if token_id < 0:
        return ""
    text: bytes = llm.detokenize([token_id], special=True)
    return text.decode("utf-8", errors="ignore")
