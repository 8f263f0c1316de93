"""Parses an OpenAI chat-completions body into a GenerateRequest, with errors that name the field.

Accepted: ``messages`` (roles system, developer (= system), user, assistant; content a string
or a list of ``{"type": "text", "text": ...}`` parts), ``model`` (ignored: one model is
served), ``stream``, ``stream_options.include_usage``, ``temperature``, ``top_p``,
``max_tokens`` / ``max_completion_tokens``, ``stop`` (string or list), ``seed`` and ``n`` (1).
Range checks and defaults are left to Generate's own validation, so both paths agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from core.errors import InvalidArgument

EXAMPLE = '{"messages": [{"role": "user", "content": "Hello"}]}'


@dataclass(frozen=True, slots=True)
class ChatBody:
    request: Any  # uvpb.llm_pb2.GenerateRequest
    stream: bool
    include_usage: bool


def _content(i: int, content: object) -> object:
    """A string stays; text parts are joined; anything else is returned for the validator to name."""
    if not isinstance(content, list):
        return content
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidArgument(
                f"messages[{i}].content[{j}] is not a text part; only {{\"type\": \"text\", \"text\": ...}} "
                "parts are supported (no images or audio)"
            )
        texts.append(part["text"])
    return "".join(texts)


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{key} must be a number, got {value!r}")
    return float(value)


def _integer(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{key} must be an integer, got {value!r}")
    return value


def _refuse_unsupported(body: dict[str, Any]) -> None:
    unsupported = [k for k in ("tools", "functions", "logprobs", "top_logprobs") if body.get(k)]
    unsupported += [k for k in ("tool_choice", "function_call") if body.get(k) not in (None, "none", "auto")]
    if body.get("response_format") not in (None, {"type": "text"}):
        unsupported.append("response_format")
    if unsupported:
        raise InvalidArgument(f"{', '.join(unsupported)} not supported by this service; leave them out")


def parse_chat_body(body: object, request_type: type[ProtoMessage]) -> ChatBody:
    try:
        return _parse(body, request_type)
    except UnicodeEncodeError as e:  # protobuf refuses a str with an unpaired surrogate ("\\ud800" in JSON)
        raise InvalidArgument(f"the chat request has text that is not valid Unicode: {e}") from e


def _parse(body: object, request_type: type[ProtoMessage]) -> ChatBody:
    if not isinstance(body, dict):
        raise InvalidArgument(f"the body must be a JSON object like {EXAMPLE}")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidArgument(f"'messages' must be a list of {{role, content}} objects, e.g. {EXAMPLE}")
    _refuse_unsupported(body)
    if body.get("n") not in (None, 1):
        raise InvalidArgument(f"n must be 1 (one choice per request), got {body.get('n')!r}")
    req: Any = request_type()
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidArgument(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = m.get("role"), _content(i, m.get("content"))
        if role == "developer":
            role = "system"
        if not isinstance(role, str):
            raise InvalidArgument(f"messages[{i}].role must be one of system, user, assistant, got {role!r}")
        if not isinstance(content, str):
            raise InvalidArgument(
                f"messages[{i}].content must be a string (or a list of text parts), got {content!r}"
            )
        req.messages.add(role=role, content=content)
    max_tokens = _integer(body, "max_completion_tokens") or _integer(body, "max_tokens")
    if max_tokens is not None:
        if max_tokens < 1:
            raise InvalidArgument(f"max_tokens must be at least 1, got {max_tokens}")
        req.max_tokens = min(max_tokens, 2**31 - 1)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidArgument(f"stop must be a string or a list of strings, got {stop!r}")
    req.stop.extend(stops)
    for key in ("temperature", "top_p"):
        value = _number(body, key)
        if value is not None:
            setattr(req, key, value)
    seed = _integer(body, "seed")
    if seed is not None:
        if not -(2**63) <= seed < 2**63:
            raise InvalidArgument(f"seed must fit in 64 bits, got {seed}")
        req.seed = seed
    model = body.get("model")
    if isinstance(model, str):
        req.model = model
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidArgument(f"stream must be true or false, got {stream!r}")
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
    return ChatBody(req, stream, include_usage)
