"""The OpenAI-compatible engine's edges: upstream errors mapped to core.errors, the API key's env var."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from core.config import load_settings
from core.context import Paths
from core.errors import DeadlineExceeded, InvalidArgument, NotFound, ResourceExhausted, ServiceUnavailable
from services.llm.engine import ModelLoadError
from services.llm.openai_engine import NO_KEY, OpenAICompatEngine, upstream_error
from services.llm.options import LlmOptions

URL = "http://127.0.0.1:9/v1"


def status_error(status: int, message: str, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx.Request("POST", f"{URL}/chat/completions")
    body = {"error": {"message": message, "type": "x"}}
    response = httpx.Response(status, json=body, headers=headers or {}, request=request)
    cls = {400: openai.BadRequestError, 401: openai.AuthenticationError, 404: openai.NotFoundError,
           429: openai.RateLimitError}.get(status, openai.InternalServerError)
    return cls(message, response=response, body=body)


@pytest.mark.parametrize(
    ("status", "kind", "text"),
    [
        (400, InvalidArgument, "refused the request (400): context too long"),
        (401, ServiceUnavailable, "rejected this service's API key (401"),
        (404, NotFound, "answered 404"),
        (500, ServiceUnavailable, "failed (500)"),
    ],
)
def test_status_errors_map_to_core_errors(status: int, kind: type, text: str) -> None:
    err = upstream_error(status_error(status, "context too long"), URL)
    assert isinstance(err, kind) and text in err.message and URL in err.message


def test_rate_limit_keeps_upstream_retry_after() -> None:
    err = upstream_error(status_error(429, "slow down", {"retry-after": "7"}), URL)
    assert isinstance(err, ResourceExhausted) and err.retry_after_s == 7.0 and "slow down" in err.message


def test_connection_and_timeout() -> None:
    request = httpx.Request("POST", URL)
    assert isinstance(upstream_error(openai.APITimeoutError(request=request), URL), DeadlineExceeded)
    err = upstream_error(openai.APIConnectionError(request=request), URL)
    assert isinstance(err, ServiceUnavailable) and "cannot reach" in err.message


def engine(tmp_path: Path, **options: object) -> OpenAICompatEngine:
    cfg = load_settings(env={}).services["llm"].model_copy(
        update={"engine": "openai", "model": "m", "options": options})
    return OpenAICompatEngine(cfg, LlmOptions.from_config(cfg), Paths(tmp_path, tmp_path, tmp_path, tmp_path))


def test_key_comes_from_the_named_env_var_and_is_required_when_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert engine(tmp_path)._key() == NO_KEY
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    with pytest.raises(ModelLoadError, match="names MY_LLM_KEY, but that env var is unset"):
        engine(tmp_path, api_key_env="MY_LLM_KEY")._key()
    monkeypatch.setenv("MY_LLM_KEY", " sk-123 ")
    assert engine(tmp_path, api_key_env="MY_LLM_KEY")._key() == "sk-123"


def test_load_without_base_url_or_with_nothing_listening_is_a_clear_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"engine openai needs options\.base_url"):
        engine(tmp_path).load()
    with pytest.raises(ModelLoadError, match=r"cannot use http://127\.0\.0\.1:9/v1: cannot reach"):
        engine(tmp_path, base_url=URL).load()
