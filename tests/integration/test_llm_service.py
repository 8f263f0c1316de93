"""The real LLM service subprocess (its own venv, llama.cpp, the embedded Qwen2.5-Coder-0.5B GGUF).

One llama.cpp service serves the call tests, with ``max_queue: 1`` so overflow is easy to reach.
It answers over gRPC (Generate stream), the runtime's HTTP frames, and OpenAI's API through the
real ``openai`` SDK. A second service with engine ``openai`` proxies the first, which is the
real local OpenAI-compatible server the remote engine is tested against (there is no internet).
No assertion is on wall-clock speed; streaming order and cancellation are checked by content,
token counts and the service's own log.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import grpc
import httpx
import msgpack
import openai
import psutil
import pytest

from core.config import load_settings
from core.context import Paths
from core.managers.supervisor import VenvBuilder
from core.managers.supervisor.venv import source_builds
from core.wire import CONTROL_OPS, operation
from services.runtime import EXIT_STARTUP
from tests.helpers.service_process import SERVING, ServiceProcess, eventually, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

GEN = operation("llm", "Generate")
MODELS = operation("llm", "ListModels")
RPC = "/rpc/ultravox.v1.LanguageModel"
MODEL = "embedded:qwen2.5-coder-0.5b-instruct-q4_k_m"
FRANCE = "What is the capital of France? Answer in one word."
COUNT = "Count from 1 to 200, separated by commas. Do not stop early."
Logs = Callable[[Callable[[], str]], None]


@dataclass
class LlmProcess(ServiceProcess):
    """``python -m services.llm``, with the real ``openai`` SDK on its OpenAI routes."""

    service: str = "llm"
    timeout: float = 300
    token_header: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.openai = openai.OpenAI(base_url=f"http://127.0.0.1:{self.http_port}/v1", api_key=self.token,
                                    max_retries=0, timeout=300)

    def wait_serving(self, timeout: float = 600) -> Self:
        return super().wait_serving(timeout)

    def generate(self, text: str = FRANCE, timeout: float = 300, **fields: Any) -> Any:
        """A gRPC Generate stream (iterate it; ``cancel()`` cancels the call)."""
        return self.server_stream("Generate", GEN.request(messages=[{"role": "user", "content": text}], **fields),
                                  timeout)

    def log_events(self, message: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            if message in line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return [e for e in out if e.get("msg", e.get("message")) == message]

    def rss_mb(self) -> float:
        assert self.proc is not None
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        self.openai.close()
        return super().stop(sig, timeout)


@pytest.fixture(scope="module")
def llm(llm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmProcess]:
    with LlmProcess(llm_python, tmp_path_factory.mktemp("llm"), options={"max_queue": 1}).running() as proc:
        yield proc


def drain(stream: Any) -> tuple[str, Any]:
    chunks = list(stream)
    assert chunks and chunks[-1].finish_reason, "the stream must end with a finish chunk"
    assert all(not c.finish_reason for c in chunks[:-1])
    return "".join(c.delta for c in chunks), chunks[-1]


def test_llama_build_is_the_portable_one_from_the_keyed_cache(llm_python: str) -> None:
    """Regression guard: a -march=native (AMX) llama.cpp segfaults on any prompt over one token."""
    cfg = load_settings(env={}).services["llm"]
    assert "-DGGML_NATIVE=OFF" in cfg.env["CMAKE_ARGS"]
    b = VenvBuilder(Paths.from_env())
    assert [p.spec for p in source_builds(b.locked(cfg), cfg.env)] == ["llama-cpp-python==0.3.36"]
    house = b.wheelhouse(cfg)
    assert house is not None
    wheels = sorted(house.glob("llama_cpp_python-0.3.36-*.whl"))
    assert wheels, f"no compiled llama-cpp-python wheel in {house}"
    # the venv's CPU backend must be the one from the keyed (GGML_NATIVE=OFF) wheel, byte for byte
    with zipfile.ZipFile(wheels[-1]) as whl:
        lib = next(n for n in whl.namelist() if n.startswith("llama_cpp/") and n.endswith("libggml-cpu.so"))
        built = whl.read(lib)
    site = subprocess.run(
        [llm_python, "-c", "import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()
    installed = Path(site).parent / lib
    assert installed.read_bytes() == built, f"{installed} is not the library from {wheels[-1]}"
    code = ("from llama_cpp import Llama; from llama_cpp.llama_chat_format import Jinja2ChatFormatter; "
            "print('ok')")
    out = subprocess.run([llm_python, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_info_models_and_load(llm: LlmProcess) -> None:
    info = llm.call("Info", CONTROL_OPS["Info"].request())
    assert info.ready and info.role == "llm" and info.engine == "llama.cpp" and info.model == MODEL
    assert info.details["model_path"].endswith("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    assert info.details["max_queue"] == "1" and info.details["n_ctx"] == "4096"
    card = llm.call("ListModels", MODELS.request()).models[0]
    assert (card.id, card.engine, card.context_length, card.owned_by) == (MODEL, "llama.cpp", 4096, "llama.cpp")
    ready = llm.http.get("/readyz").json()
    print(f"\nLLM load_time_s={ready['load_time_s']:.2f} rss_mb={llm.rss_mb():.0f}")


def test_capital_of_france_over_grpc(llm: LlmProcess) -> None:
    text, last = drain(llm.generate(temperature=0.0))
    assert "paris" in text.lower()
    assert last.finish_reason == "stop" and last.model == MODEL
    u = last.usage
    assert u.prompt_tokens > 10 and 1 <= u.completion_tokens < 20
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert last.time_to_first_token_s > 0
    print(f"\nFrance: {text!r} ttft={last.time_to_first_token_s:.3f}s usage={u.prompt_tokens}/{u.completion_tokens}")


def test_stream_arrives_in_order_and_matches_the_non_streamed_reply(llm: LlmProcess) -> None:
    ask = "Name the four seasons of the year, in order, separated by commas."
    chunks = list(llm.generate(ask, temperature=0.0, max_tokens=40))
    pieces = [c.delta for c in chunks[:-1]]
    last = chunks[-1]
    assert len(pieces) >= 5 and all(pieces), "one chunk per token, none empty"
    streamed = "".join(pieces)
    for season in ("spring", "summer", "autumn", "winter"):
        assert season in streamed.lower() or (season == "autumn" and "fall" in streamed.lower())
    # Same prompt, greedy, through OpenAI's non-streamed route: the same text, the same counts.
    reply = llm.openai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": ask}],
                                               temperature=0, max_tokens=40)
    assert reply.choices[0].message.content == streamed
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        last.usage.prompt_tokens, last.usage.completion_tokens)
    assert last.tokens_per_s > 0
    print(f"\nseasons: ttft={last.time_to_first_token_s:.3f}s {last.tokens_per_s:.1f} tok/s "
          f"{last.usage.completion_tokens} tokens")


def test_max_tokens_cut_is_length_with_exact_count(llm: LlmProcess) -> None:
    text, last = drain(llm.generate(COUNT, temperature=0.0, max_tokens=7))
    assert last.finish_reason == "length" and last.usage.completion_tokens == 7
    assert text.startswith("1")


def test_cancel_mid_stream_stops_the_engine_and_frees_the_slot(llm: LlmProcess) -> None:
    cancelled_before = llm.metric("uv_llm_generations_total", finish_reason="cancelled")
    seen_before = len(llm.log_events("generation cancelled"))
    stream = llm.generate(COUNT, temperature=0.0, max_tokens=256)
    got = [next(stream).delta for _ in range(4)]
    assert "".join(got).startswith("1")
    stream.cancel()
    with pytest.raises(grpc.RpcError) as ei:
        list(stream)
    assert ei.value.code() == grpc.StatusCode.CANCELLED
    # The slot is free: the next request is admitted (max_queue is 1, so a stuck slot would
    # queue it behind ~250 more tokens) and completes.
    text, last = drain(llm.generate(temperature=0.0))
    assert "paris" in text.lower() and last.finish_reason == "stop"
    eventually(lambda: len(llm.log_events("generation cancelled")) > seen_before, 30, "the engine's cancel log")
    event = llm.log_events("generation cancelled")[-1]
    # stopped long before max_tokens (the client read 4; the gap is how far the server ran ahead of
    # the reader before the cancel arrived; the unit tests pin the flag-to-stop lag at a token or two)
    assert 4 <= event["completion_tokens"] < 60, event
    assert llm.metric("uv_llm_generations_total", finish_reason="cancelled") == cancelled_before + 1
    assert llm.metric("uv_llm_generations_running") == 0


def test_an_http_client_that_gives_up_cancels_its_generation(llm: LlmProcess) -> None:
    seen = len(llm.log_events("generation cancelled"))
    body = {"messages": [{"role": "user", "content": COUNT}], "max_tokens": 256, "temperature": 0}
    auth = {"authorization": f"Bearer {llm.token}"}
    base = f"http://127.0.0.1:{llm.http_port}"
    # Not streamed: nothing is sent until the reply is done, so the client times out and hangs up.
    with httpx.Client(base_url=base, timeout=httpx.Timeout(300, read=1.5), headers=auth) as c, \
            pytest.raises(httpx.ReadTimeout):
        c.post("/v1/chat/completions", json=body)
    # Streamed: the client reads the first events and closes the connection.
    with httpx.Client(base_url=base, timeout=300, headers=auth) as c, \
            c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
    for n in (seen + 1, seen + 2):
        eventually(lambda n=n: len(llm.log_events("generation cancelled")) >= n, 60, "the engine's cancel log")
    assert all(e["completion_tokens"] < 200 for e in llm.log_events("generation cancelled")[seen:])
    eventually(lambda: llm.metric("uv_llm_generations_running") == 0, 30, "the slot released")


def test_queue_overflow_is_429_with_retry_after_on_every_protocol(llm: LlmProcess) -> None:
    running = llm.generate(COUNT, temperature=0.0, max_tokens=256)
    next(running)  # it holds the slot now
    waiting = llm.generate(COUNT, temperature=0.0, max_tokens=256)
    first_of_waiting: list[Any] = []
    t = threading.Thread(target=lambda: first_of_waiting.append(next(waiting)), daemon=True)
    t.start()
    try:
        eventually(lambda: llm.metric("uv_llm_queue_depth") == 1, 30, "one request waiting")
        with pytest.raises(grpc.RpcError) as ei:
            list(llm.generate())
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_queue = 1" in (ei.value.details() or "")
        r = llm.http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
        assert r.json()["error"]["type"] == "rate_limit_error"
        r = llm.http.post(f"{RPC}/Generate", content=msgpack.packb({"messages": [{"role": "user", "content": "hi"}]}),
                          headers={"content-type": "application/msgpack"})
        assert r.status_code == 429 and msgpack.unpackb(r.content)["error"]["code"] == "RESOURCE_EXHAUSTED"
        with pytest.raises(openai.RateLimitError):
            llm.openai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    finally:
        running.cancel()
        t.join(120)
        waiting.cancel()
    assert first_of_waiting, "the waiting request got the slot once the running one was cancelled"
    eventually(lambda: llm.metric("uv_llm_generations_running") == 0 and llm.metric("uv_llm_queue_depth") == 0,
               60, "slots released")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"messages": []}, "messages is empty"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "messages[0].role is 'narrator'"),
        ({"messages": [{"role": "user", "content": "   "}]}, "every message's content is empty"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 100_000}, "max_tokens 100000 is more"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature must be between 0 and 2"),
    ],
)
def test_malformed_message_lists_get_clear_errors_and_the_service_keeps_serving(
    llm: LlmProcess, body: dict[str, Any], reason: str
) -> None:
    stub = llm.channel.unary_stream(GEN.grpc_path, request_serializer=GEN.request.SerializeToString,
                                    response_deserializer=GEN.response.FromString)
    with pytest.raises(grpc.RpcError) as ei:
        list(stub(GEN.request(**body), metadata=llm.metadata, timeout=60))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason in (ei.value.details() or "")
    r = llm.http.post(f"{RPC}/Generate", json=body)
    assert r.status_code == 400 and reason in r.json()["error"]["message"]
    r = llm.http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and reason in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert llm.health() == SERVING


def test_non_string_content_over_json_and_openai(llm: LlmProcess) -> None:
    r = llm.http.post(f"{RPC}/Generate", json={"messages": [{"role": "user", "content": 42}]})
    assert r.status_code == 400, r.text
    r = llm.http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": {"text": "x"}}]})
    assert r.status_code == 400 and "messages[0].content must be a string" in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="messages is empty"):
        llm.openai.chat.completions.create(model=MODEL, messages=[])


def test_a_prompt_over_the_context_is_refused_with_its_token_count(llm: LlmProcess) -> None:
    with pytest.raises(grpc.RpcError) as ei:
        list(llm.generate("word " * 5000))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not fit this model's context of 4096 tokens" in (ei.value.details() or "")
    assert llm.health() == SERVING


def test_openai_sdk_chat_streamed_and_not_and_models(llm: LlmProcess) -> None:
    models = llm.openai.models.list()
    assert [m.id for m in models.data] == [MODEL]
    messages: Any = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": FRANCE}]
    reply = llm.openai.chat.completions.create(model=MODEL, messages=messages, temperature=0)
    assert "paris" in (reply.choices[0].message.content or "").lower()
    assert reply.choices[0].finish_reason == "stop" and reply.usage is not None and reply.usage.total_tokens > 0
    stream = llm.openai.chat.completions.create(model=MODEL, messages=messages, temperature=0, stream=True,
                                                stream_options={"include_usage": True})
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == reply.choices[0].message.content and finish == "stop"
    assert usage is not None and usage.completion_tokens == reply.usage.completion_tokens
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{llm.http_port}/v1", api_key="wrong", max_retries=0).models.list()


def test_metrics_are_exported(llm: LlmProcess) -> None:
    text = llm.http.get("/metrics").text
    for name in ("uv_llm_prompt_tokens_total", "uv_llm_completion_tokens_total",
                 "uv_llm_time_to_first_token_seconds_bucket", "uv_llm_tokens_per_second_bucket",
                 "uv_llm_queue_depth", "uv_llm_generations_total"):
        assert name in text
    assert llm.metric("uv_llm_completion_tokens_total") > 0


def test_openai_engine_proxies_the_llama_service(
    llm: LlmProcess, llm_python: str, tmp_path: Path, service_logs: Logs
) -> None:
    proxy = LlmProcess(
        llm_python, tmp_path / "proxy",
        options={"base_url": f"http://127.0.0.1:{llm.http_port}/v1", "api_key_env": "UPSTREAM_LLM_KEY",
                 "max_concurrency": 4},
        overrides={"engine": "openai", "model": MODEL, "env": {"UPSTREAM_LLM_KEY": llm.token}},
    )
    service_logs(proxy.log_text)
    proxy.start()
    try:
        proxy.wait_serving(120)
        card = proxy.call("ListModels", MODELS.request()).models[0]
        assert (card.id, card.engine, card.owned_by) == (MODEL, "openai", "openai-compatible")
        text, last = drain(proxy.generate(temperature=0.0))
        direct_text, direct = drain(llm.generate(temperature=0.0))
        assert "paris" in text.lower() and text == direct_text
        assert last.finish_reason == "stop" and last.usage.prompt_tokens == direct.usage.prompt_tokens
        assert last.usage.completion_tokens == direct.usage.completion_tokens
        reply = proxy.openai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": FRANCE}],
                                                     temperature=0)
        assert "paris" in (reply.choices[0].message.content or "").lower()
        # A cancel through the proxy reaches the llama.cpp service, which stops generating.
        seen = len(llm.log_events("generation cancelled"))
        stream = proxy.generate(COUNT, temperature=0.0, max_tokens=256)
        next(stream), next(stream), next(stream)
        stream.cancel()
        eventually(lambda: len(llm.log_events("generation cancelled")) > seen, 60, "the upstream's cancel")
        assert llm.log_events("generation cancelled")[-1]["completion_tokens"] < 60
        # Upstream refusals come back as the same kind of error.
        with pytest.raises(grpc.RpcError) as ei:
            list(proxy.generate("x", max_tokens=100_000))
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert llm.token not in proxy.log_text()  # the key is never logged
    finally:
        proxy.stop()


def test_unreachable_upstream_fails_startup_with_a_clear_reason(llm_python: str, tmp_path: Path) -> None:
    proxy = LlmProcess(llm_python, tmp_path / "bad", options={"base_url": f"http://127.0.0.1:{free_port()}/v1"},
                       overrides={"engine": "openai", "model": "m"}).start()
    try:
        assert proxy.proc is not None
        rc = proxy.proc.wait(120)
        assert rc != 0
        log = proxy.log_text()
        assert "services.llm.model" in log and "cannot reach" in log
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "a hub id needs internet"),  # no internet here: a clear error
        ("/nonexistent/model.gguf", "neither an existing .gguf file nor a hub id"),
    ],
)
def test_unusable_models_fail_startup_with_a_clear_reason(
    llm_python: str, tmp_path: Path, model: str, reason: str
) -> None:
    bad = LlmProcess(llm_python, tmp_path / "bad", overrides={"model": model}).start()
    try:
        assert bad.proc is not None
        assert bad.proc.wait(300) == EXIT_STARTUP
        log = bad.log_text()
        assert "services.llm.model" in log and reason in log
    finally:
        bad.stop()
