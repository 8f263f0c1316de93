"""Service-side metrics: errors by method and code, series at 0 before the first call, promtool-clean.

The call path is the real runtime (dispatcher + HTTP app) around a fake STT handler; the
per-role metric classes are built on their own registries.
"""

from __future__ import annotations

import shutil
import subprocess
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from core.context import ServiceContext
from services.llm.metrics import LlmMetrics
from services.runtime.metrics import RuntimeMetrics
from services.stt.metrics import SttMetrics
from services.tts.metrics import TtsMetrics
from tests.helpers.fake_service import TOKEN, TRANSCRIBE, make_runtime

AUTH = {"x-internal-token": TOKEN}


async def test_failed_calls_count_as_errors_by_method_and_code() -> None:
    rt = make_runtime()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app), base_url="http://svc") as c:
        assert (await c.post(TRANSCRIBE.http_path, json={}, headers=AUTH)).status_code == 200
        assert (await c.post(TRANSCRIBE.http_path, json={"language": "bad"}, headers=AUTH)).status_code == 400
        assert (await c.post(TRANSCRIBE.http_path, json={"language": "boom"}, headers=AUTH)).status_code == 500
        assert (await c.post(TRANSCRIBE.http_path, json={})).status_code == 401
    for code in ("INVALID_ARGUMENT", "INTERNAL", "UNAUTHENTICATED"):
        assert rt.sample("uv_service_errors_total", method="Transcribe", code=code) == 1, code
    assert rt.sample("uv_service_calls_total", method="Transcribe", protocol="json", outcome="ok") == 1


def test_a_role_gives_every_operation_its_series_at_zero() -> None:
    reg = CollectorRegistry()
    RuntimeMetrics(reg, "stt", "stt")
    for method in ("Transcribe", "StreamingRecognize", "DetectSpeech"):
        for protocol in ("grpc", "msgpack", "json"):
            labels = {"service": "stt", "method": method, "protocol": protocol, "outcome": "ok"}
            assert reg.get_sample_value("uv_service_calls_total", labels) == 0
        assert reg.get_sample_value("uv_service_errors_total", {"service": "stt", "method": method,
                                                                "code": "INTERNAL"}) == 0
    assert reg.get_sample_value("uv_service_calls_total", {"service": "stt", "method": "Echo", "protocol": "grpc",
                                                           "outcome": "ok"}) is None  # control ops stay lazy


def fake_ctx(reg: CollectorRegistry, name: str) -> ServiceContext:
    ns = SimpleNamespace(process=SimpleNamespace(registry=reg), config=SimpleNamespace(name=name))
    return cast(ServiceContext, ns)


def test_role_metrics_exist_before_the_first_request() -> None:
    reg = CollectorRegistry()
    SttMetrics(fake_ctx(reg, "stt"))
    TtsMetrics(reg, "tts", ("kokoro", "piper"))
    LlmMetrics(fake_ctx(reg, "llm"))
    zero: list[tuple[str, dict[str, Any]]] = [
        ("uv_stt_audio_seconds_total", {"service": "stt"}),
        ("uv_stt_real_time_factor_count", {"service": "stt"}),
        ("uv_stt_partials_total", {"service": "stt", "outcome": "skipped"}),
        ("uv_tts_characters_total", {"service": "tts", "engine": "piper"}),
        ("uv_tts_audio_seconds_total", {"service": "tts", "engine": "kokoro"}),
        ("uv_tts_time_to_first_audio_seconds_count",
         {"service": "tts", "engine": "kokoro", "method": "SynthesizeStream"}),
        ("uv_llm_prompt_tokens_total", {"service": "llm"}),
        ("uv_llm_completion_tokens_total", {"service": "llm"}),
        ("uv_llm_time_to_first_token_seconds_count", {"service": "llm"}),
        ("uv_llm_tokens_per_second_count", {"service": "llm"}),
        ("uv_llm_queue_depth", {"service": "llm"}),
        ("uv_llm_generations_total", {"service": "llm", "finish_reason": "length"}),
    ]
    for name, labels in zero:
        assert reg.get_sample_value(name, labels) == 0, name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed: apt-get install prometheus")
def test_the_exposition_passes_promtool() -> None:
    reg = CollectorRegistry()
    RuntimeMetrics(reg, "stt", "stt").observe("Transcribe", "grpc", "unavailable", 0.1)
    SttMetrics(fake_ctx(reg, "stt"))
    TtsMetrics(reg, "tts", ("kokoro",))
    LlmMetrics(fake_ctx(reg, "llm"))
    out = subprocess.run(["promtool", "check", "metrics"], input=generate_latest(reg), capture_output=True,
                         timeout=60, check=False)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out
