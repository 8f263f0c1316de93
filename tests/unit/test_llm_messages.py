"""Generate's request validation and the OpenAI body parser: every refusal names the field."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import InvalidArgument
from core.wire import operation
from services.llm.chat_body import parse_chat_body
from services.llm.engine import Message, Sampling
from services.llm.messages import from_request, validate_messages
from services.llm.options import LlmOptions

OPTS = LlmOptions(max_tokens=128, temperature=0.5, top_p=0.9, max_queue=2, max_messages=4, max_prompt_chars=50)
GEN = operation("llm", "Generate")


def req(messages: list[tuple[str, str]], **fields: Any) -> Any:
    return GEN.request(messages=[{"role": r, "content": c} for r, c in messages], **fields)


def test_valid_request_gets_defaults_and_lowercased_roles() -> None:
    p = from_request(req([("System", "be brief"), ("user", "hi")]), OPTS)
    assert p.messages == (Message("system", "be brief"), Message("user", "hi"))
    assert p.sampling == Sampling(max_tokens=128, temperature=0.5, top_p=0.9, stop=(), seed=None)


def test_request_fields_override_defaults_and_zero_temperature_is_kept() -> None:
    p = from_request(req([("user", "hi")], temperature=0.0, max_tokens=7, stop=["\n"], top_p=0.5, seed=3), OPTS)
    assert p.sampling == Sampling(max_tokens=7, temperature=0.0, top_p=0.5, stop=("\n",), seed=3)


@pytest.mark.parametrize(
    ("messages", "fields", "reason"),
    [
        ([], {}, "messages is empty"),
        ([("robot", "hi")], {}, "messages[0].role is 'robot'; it must be one of system, user, assistant"),
        ([("user", "hi"), ("", "x")], {}, "messages[1].role is ''"),
        ([("user", "  "), ("assistant", "")], {}, "every message's content is empty"),
        ([("user", "x")] * 5, {}, "5 messages is more than this service accepts (4"),
        ([("user", "x" * 51)], {}, "51 characters, more than this service accepts (50"),
        ([("user", "hi")], {"max_tokens": 129}, "max_tokens 129 is more than this service allows (128"),
        ([("user", "hi")], {"max_tokens": -1}, "max_tokens must be positive"),
        ([("user", "hi")], {"temperature": 2.5}, "temperature must be between 0 and 2"),
        ([("user", "hi")], {"top_p": 0.0}, "top_p must be in (0, 1]"),
        ([("user", "hi")], {"stop": ["a", "b", "c", "d", "e"]}, "at most 4 stop sequences"),
        ([("user", "hi")], {"stop": [""]}, "stop[0] must be a non-empty string"),
    ],
)
def test_bad_requests_say_what_is_wrong(
    messages: list[tuple[str, str]], fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidArgument) as ei:
        from_request(req(messages, **fields), OPTS)
    assert reason in ei.value.message


def test_non_string_content_and_role_are_named() -> None:
    with pytest.raises(InvalidArgument, match=r"messages\[0\]\.content is a int"):
        validate_messages([("user", 5)], OPTS)
    with pytest.raises(InvalidArgument, match=r"messages\[0\]\.role is None"):
        validate_messages([(None, "x")], OPTS)


def test_openai_body_maps_to_generate_request() -> None:
    body = parse_chat_body({
        "model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "developer", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}],
        "max_completion_tokens": 9, "stop": "\n", "temperature": 0, "top_p": 1, "seed": 42,
    }, GEN.request)
    r = body.request
    assert body.stream and body.include_usage
    assert [(m.role, m.content) for m in r.messages] == [("system", "be brief"), ("user", "Hello")]
    assert r.max_tokens == 9 and list(r.stop) == ["\n"] and r.model == "gpt-4o-mini"
    assert r.HasField("temperature") and r.temperature == 0 and r.top_p == 1 and r.seed == 42
    plain = parse_chat_body({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}, GEN.request)
    assert not plain.stream and not plain.include_usage and plain.request.max_tokens == 5
    assert not plain.request.HasField("temperature")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "the body must be a JSON object"),
        ({}, "'messages' must be a list"),
        ({"messages": "hi"}, "'messages' must be a list"),
        ({"messages": ["hi"]}, "messages[0] must be an object"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content must be a string"),
        ({"messages": [{"role": "user"}]}, "messages[0].content must be a string"),
        ({"messages": [{"role": 1, "content": "x"}]}, "messages[0].role must be one of"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         "messages[0].content[0] is not a text part"),
        ({"messages": [], "n": 2}, "n must be 1"),
        ({"messages": [], "tools": [{"type": "function"}]}, "tools not supported"),
        ({"messages": [], "response_format": {"type": "json_object"}}, "response_format not supported"),
        ({"messages": [], "max_tokens": "10"}, "max_tokens must be an integer"),
        ({"messages": [], "max_tokens": 0}, "max_tokens must be at least 1"),
        ({"messages": [], "temperature": "hot"}, "temperature must be a number"),
        ({"messages": [], "stop": [1]}, "stop must be a string or a list of strings"),
        ({"messages": [], "stream": "yes"}, "stream must be true or false"),
        ({"messages": [], "seed": 2**70}, "seed must fit in 64 bits"),
    ],
)
def test_bad_openai_bodies_say_what_is_wrong(body: object, reason: str) -> None:
    with pytest.raises(InvalidArgument) as ei:
        parse_chat_body(body, GEN.request)
    assert reason in ei.value.message
