"""Turns a GenerateRequest into validated messages and sampling, or a clear InvalidArgument.

Every refusal says which field was wrong and what to send instead, so a client (or a person
with curl) can fix the call from the message alone. Defaults and caps come from LlmOptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from core.errors import InvalidArgument
from services.llm.engine import Message, Role, Sampling
from services.llm.options import LlmOptions

if TYPE_CHECKING:
    from uvpb.llm_pb2 import GenerateRequest

ROLES: tuple[Role, ...] = ("system", "user", "assistant")
MAX_STOP = 4
MAX_STOP_CHARS = 200
EXAMPLE = '[{"role": "user", "content": "Hello"}]'


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: tuple[Message, ...]
    sampling: Sampling


def validate_messages(raw: Sequence[tuple[object, object]], options: LlmOptions) -> tuple[Message, ...]:
    """(role, content) pairs -> Messages; InvalidArgument naming the first bad one."""
    if not raw:
        raise InvalidArgument(f"messages is empty; send at least one message, e.g. {EXAMPLE}")
    if len(raw) > options.max_messages:
        raise InvalidArgument(
            f"{len(raw)} messages is more than this service accepts ({options.max_messages}, "
            "options.max_messages); drop or summarise older turns"
        )
    out: list[Message] = []
    total = 0
    for i, (role, content) in enumerate(raw):
        if not isinstance(role, str) or role.strip().lower() not in ROLES:
            raise InvalidArgument(
                f"messages[{i}].role is {role!r}; it must be one of {', '.join(ROLES)}"
            )
        if not isinstance(content, str):
            raise InvalidArgument(
                f"messages[{i}].content is a {type(content).__name__}; it must be a string of text"
            )
        total += len(content)
        out.append(Message(cast(Role, role.strip().lower()), content))
    if all(not m.content.strip() for m in out):
        raise InvalidArgument(
            f"every message's content is empty; put the text to answer in a user message, e.g. {EXAMPLE}"
        )
    if total > options.max_prompt_chars:
        raise InvalidArgument(
            f"the messages hold {total} characters, more than this service accepts "
            f"({options.max_prompt_chars}, options.max_prompt_chars); shorten the conversation"
        )
    return tuple(out)


def validate_sampling(
    *,
    options: LlmOptions,
    temperature: float | None,
    max_tokens: int,
    stop: Sequence[str],
    top_p: float | None,
    seed: int | None,
) -> Sampling:
    """Checks ranges and fills defaults; ``max_tokens`` 0 means the service default (its cap)."""
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise InvalidArgument(f"temperature must be between 0 and 2 (0 is greedy), got {temperature:g}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidArgument(f"top_p must be in (0, 1], got {top_p:g}")
    if max_tokens < 0:
        raise InvalidArgument(f"max_tokens must be positive (0 for the default), got {max_tokens}")
    if max_tokens > options.max_tokens:
        raise InvalidArgument(
            f"max_tokens {max_tokens} is more than this service allows ({options.max_tokens}, "
            "options.max_tokens); ask for fewer"
        )
    if len(stop) > MAX_STOP:
        raise InvalidArgument(f"at most {MAX_STOP} stop sequences are allowed, got {len(stop)}")
    for i, s in enumerate(stop):
        if not s or len(s) > MAX_STOP_CHARS:
            raise InvalidArgument(
                f"stop[{i}] must be a non-empty string of at most {MAX_STOP_CHARS} characters"
            )
    return Sampling(
        max_tokens=max_tokens or options.max_tokens,
        temperature=options.temperature if temperature is None else temperature,
        top_p=options.top_p if top_p is None else top_p,
        stop=tuple(stop),
        seed=seed,
    )


def from_request(req: GenerateRequest, options: LlmOptions) -> Prompt:
    """The validated prompt of a Generate call."""
    messages = validate_messages([(m.role, m.content) for m in req.messages], options)
    sampling = validate_sampling(
        options=options,
        temperature=req.temperature if req.HasField("temperature") else None,
        max_tokens=req.max_tokens,
        stop=list(req.stop),
        top_p=req.top_p if req.HasField("top_p") else None,
        seed=req.seed if req.HasField("seed") else None,
    )
    return Prompt(messages, sampling)
