"""LlmService with a fake engine: streaming shape, usage and timing, cancellation, queue, metrics."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from core.config import load_settings
from core.context import GlobalContext, Paths, ProcessContext, ServiceContext
from core.errors import ConfigError, InvalidArgument, ResourceExhausted
from services.llm.service import LlmService
from services.runtime import CallInfo
from tests.helpers.fake_llm import make_service

CALL = CallInfo(method="Generate", protocol="grpc", request_id="r1")


def ask(svc: LlmService, text: str = "What is the capital of France?", **fields: Any) -> Any:
    return svc.op.request(messages=[{"role": "user", "content": text}], **fields)


async def collect(svc: LlmService, request: Any) -> list[Any]:
    return [c async for c in svc.generate(request, CALL)]


async def test_stream_is_deltas_in_order_then_one_final_chunk(tmp_path: Path) -> None:
    svc, engine = make_service(tmp_path)
    chunks = await collect(svc, ask(svc, temperature=0.0, max_tokens=10, stop=["\n"], seed=1))
    assert [c.delta for c in chunks[:-1]] == ["Par", "is", "."]
    assert all(not c.finish_reason for c in chunks[:-1]) and all(c.model == "fake-model" for c in chunks)
    last = chunks[-1]
    assert last.delta == "" and last.finish_reason == "stop"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (6, 3, 9)
    assert last.time_to_first_token_s > 0 and last.tokens_per_s > 0
    messages, sampling = engine.calls[0]
    assert messages[0].content == "What is the capital of France?"
    assert (sampling.temperature, sampling.max_tokens, sampling.stop, sampling.seed) == (0.0, 10, ("\n",), 1)
    reg = svc.ctx.process.registry
    labels = {"service": "llm"}
    assert reg.get_sample_value("uv_llm_prompt_tokens_total", labels) == 6
    assert reg.get_sample_value("uv_llm_completion_tokens_total", labels) == 3
    assert reg.get_sample_value("uv_llm_time_to_first_token_seconds_count", labels) == 1
    assert reg.get_sample_value("uv_llm_tokens_per_second_count", labels) == 1
    assert reg.get_sample_value("uv_llm_generations_total", {**labels, "finish_reason": "stop"}) == 1
    assert reg.get_sample_value("uv_llm_queue_depth", labels) == 0


async def test_max_tokens_cut_reports_length(tmp_path: Path) -> None:
    svc, _ = make_service(tmp_path)
    chunks = await collect(svc, ask(svc, max_tokens=2))
    assert "".join(c.delta for c in chunks) == "Paris" and chunks[-1].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 2


async def test_invalid_request_is_refused_before_the_engine_runs(tmp_path: Path) -> None:
    svc, engine = make_service(tmp_path)
    with pytest.raises(InvalidArgument, match="messages is empty"):
        await collect(svc, svc.op.request())
    assert engine.calls == []


async def test_cancel_mid_stream_signals_the_engine_and_frees_the_slot(tmp_path: Path) -> None:
    svc, engine = make_service(tmp_path)
    engine.pieces = [f"t{i} " for i in range(1000)]
    engine.delay_s = 0.005
    gen = svc.generate(ask(svc), CALL)
    got = [await anext(gen) for _ in range(3)]
    assert [c.delta for c in got] == ["t0 ", "t1 ", "t2 "]
    assert svc.admission.running == 1
    await gen.aclose()  # what the runtime does when the client cancels
    assert engine.endings == ["flag"] and engine.active == 0  # the cancel flag was up when it closed
    assert svc.admission.running == 0
    reg = svc.ctx.process.registry
    assert reg.get_sample_value("uv_llm_generations_total", {"service": "llm", "finish_reason": "cancelled"}) == 1
    engine.pieces = ["ok"]
    chunks = await asyncio.wait_for(collect(svc, ask(svc)), 5)
    assert chunks[-1].finish_reason == "stop" and chunks[0].delta == "ok"


async def test_task_cancellation_reaches_the_engine(tmp_path: Path) -> None:
    svc, engine = make_service(tmp_path)
    engine.gate = asyncio.Event()
    task = asyncio.create_task(collect(svc, ask(svc)))
    await engine.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.endings == ["closed"] and engine.active == 0 and svc.admission.running == 0


async def test_queue_overflow_is_resource_exhausted_before_any_chunk(tmp_path: Path) -> None:
    svc, engine = make_service(tmp_path, max_queue=1)
    engine.gate = asyncio.Event()
    running = asyncio.create_task(collect(svc, ask(svc)))
    await engine.started.wait()
    waiting = asyncio.create_task(collect(svc, ask(svc)))
    await asyncio.sleep(0.01)
    assert svc.admission.waiting == 1
    assert svc.ctx.process.registry.get_sample_value("uv_llm_queue_depth", {"service": "llm"}) == 1
    with pytest.raises(ResourceExhausted) as ei:
        await anext(svc.generate(ask(svc), CALL))
    assert ei.value.retry_after_s >= 1
    engine.gate.set()
    first, second = await asyncio.gather(running, waiting)
    assert first[-1].finish_reason == second[-1].finish_reason == "stop"


async def test_list_models_and_describe(tmp_path: Path) -> None:
    svc, _ = make_service(tmp_path)
    resp = await svc.list_models(svc.list_op.request(), CALL)
    card = resp.models[0]
    assert (card.id, card.engine, card.context_length, card.owned_by) == ("fake-model", "llama.cpp", 2048, "test")
    d = svc.describe()
    assert d.engine == "llama.cpp" and d.details["max_queue"] == "4" and d.details["n_ctx"] == "4096"


def context(tmp_path: Path, **update: Any) -> ServiceContext:
    settings = load_settings(env={})
    cfg = settings.services["llm"].model_copy(update=update)
    g = GlobalContext.create(settings, Paths(root=tmp_path, var=tmp_path, cache=tmp_path, venvs=tmp_path))
    return ServiceContext(process=ProcessContext(global_=g, name="llm"), config=cfg, grpc_port=0, http_port=0)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"services\.llm\.engine.*unknown LLM engine 'gpt'.*llama\.cpp, openai, vllm"):
        LlmService(context(tmp_path, engine="gpt"))
    with pytest.raises(ConfigError, match=r"options\.max_concurrency.*not re-entrant"):
        LlmService(context(tmp_path, options={"max_concurrency": 2}))
    with pytest.raises(ConfigError, match=r"options\.n_ctxx.*known options"):
        LlmService(context(tmp_path, options={"n_ctxx": 1}))
    svc = LlmService(context(tmp_path, engine="openai", options={"max_concurrency": 8}))
    assert svc.admission.concurrency == 8


def test_engine_load_failure_becomes_a_config_error(tmp_path: Path) -> None:
    svc = LlmService(context(tmp_path, model="embedded:nope"))
    with pytest.raises(ConfigError, match=r"unknown embedded model 'embedded:nope'"):
        svc.load()
    svc.close()
    svc = LlmService(context(tmp_path, engine="openai"))
    with pytest.raises(ConfigError, match=r"services\.llm\.model.*needs options\.base_url"):
        svc.load()
    with contextlib.suppress(Exception):
        svc.close()


async def test_a_prompt_longer_than_the_context_is_refused_before_queueing(tmp_path: Path) -> None:
    svc, engine = make_service(tmp_path, max_queue=0)
    engine.gate = asyncio.Event()
    busy = asyncio.create_task(collect(svc, ask(svc)))
    await engine.started.wait()
    with pytest.raises(InvalidArgument, match=r"the prompt is 2100 tokens.*context of 2048 tokens"):
        await anext(svc.generate(ask(svc, "word " * 2100), CALL))  # 400, not 429: it would never fit
    engine.gate.set()
    await busy
