"""Every /metrics of a real stack passes ``promtool check metrics`` and has its families.

One main.py with the real STT, LLM and TTS services, an API key, and one spoken REST turn.
Then, as Prometheus would: the targets come from ``GET /api/monitoring/targets`` (http_sd,
which needs the key), each target's /metrics goes through promtool, and the families each
part of the system promises are on the right target. The turn's session and turn ids reach
the services' log lines through the hub's call metadata.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.stack import MainProcess, running_main, stack_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(shutil.which("promtool") is None,
                       reason="promtool not installed: apt-get install prometheus (Debian ships promtool with it)"),
]

API_KEY = "exposition-test-key-5f1c0a"
AUTH = {"authorization": f"Bearer {API_KEY}"}
QUESTION = "What is the capital of France?"
TIMEOUT = httpx.Timeout(180.0, connect=10.0)

MAIN_FAMILIES = {
    "ultravox_build_info", "ultravox_alert_threshold", "ultravox_errors", "ultravox_turns",
    "ultravox_turn_stage_seconds", "ultravox_voice_to_voice_seconds", "ultravox_turn_degraded", "ultravox_barge_ins",
    "ultravox_sessions_active", "ultravox_sessions_created", "ultravox_sessions_evicted",
    "ultravox_admission_rejections", "ultravox_turns_in_flight", "ultravox_hub_calls", "ultravox_hub_failed_calls",
    "ultravox_hub_call_duration_seconds", "ultravox_hub_fallbacks", "ultravox_hub_retries",
    "ultravox_hub_breaker_state", "ultravox_hub_stream_first_message_seconds", "ultravox_service_state",
    "ultravox_service_up", "ultravox_service_restarts", "ultravox_service_uptime_seconds",
    "ultravox_service_resident_memory_bytes", "ultravox_service_cpu_percent", "ultravox_service_cpu_seconds",
    "ultravox_service_health_check_failures",
}
SERVICE_FAMILIES = {
    "uv_service_calls", "uv_service_call_duration_seconds", "uv_service_errors", "uv_service_calls_in_flight",
    "uv_service_ready", "uv_service_model_load_seconds",
}
ROLE_FAMILIES = {
    "stt": {"uv_stt_audio_seconds", "uv_stt_real_time_factor", "uv_stt_streams_active"},
    "tts": {"uv_tts_characters", "uv_tts_audio_seconds", "uv_tts_time_to_first_audio_seconds"},
    "llm": {"uv_llm_prompt_tokens", "uv_llm_completion_tokens", "uv_llm_time_to_first_token_seconds",
            "uv_llm_tokens_per_second", "uv_llm_queue_depth"},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, speech_wav: Any) -> Iterator[tuple[MainProcess, dict[str, Any]]]:
    var = tmp_path_factory.mktemp("exposition")
    with running_main(var, stack_env(var, UV_API_KEY=API_KEY), "metrics_exposition") as m:
        r = httpx.post(f"{m.url}/api/orchestrator/conversation/audio", headers=AUTH, timeout=TIMEOUT,
                       files={"file": ("q.wav", speech_wav(QUESTION), "audio/wav")},
                       data={"session_id": "exposition", "audio": "none"})
        assert r.status_code == 200, r.text
        yield m, r.json()


def scrape(target: str) -> str:
    r = httpx.get(f"http://{target}/metrics", timeout=30)
    assert r.status_code == 200, (target, r.text[:300])
    return r.text


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    found = [s.value for s in fams[family].samples if s.name == sample and all(s.labels.get(k) == v
                                                                               for k, v in labels.items())]
    assert found, f"no {sample}{labels} in {family}"
    return float(sum(found))


def test_targets_need_the_key_and_list_main_and_every_service(stack: tuple[MainProcess, dict[str, Any]]) -> None:
    m, _ = stack
    assert httpx.get(f"{m.url}/api/monitoring/targets", timeout=30).status_code == 401
    assert httpx.get(f"{m.url}/metrics", timeout=30).status_code == 200  # scraping itself needs no key
    groups = httpx.get(f"{m.url}/api/monitoring/targets", headers=AUTH, timeout=30).json()
    services = {s["name"]: s for s in httpx.get(f"{m.url}/services", headers=AUTH, timeout=30).json()}
    profile = httpx.get(f"{m.url}/health", timeout=30).json()["profile"]
    expected = [{"targets": [f"127.0.0.1:{m.port}"],
                 "labels": {"component": "main", "role": "gateway", "profile": profile}}]
    expected += [{"targets": [f"127.0.0.1:{s['http_port']}"],
                  "labels": {"component": name, "role": s["role"], "profile": profile}} for name, s in services.items()]
    assert groups == expected
    assert {g["labels"]["role"] for g in groups} == {"gateway", "stt", "tts", "llm"}


def test_every_target_passes_promtool_and_has_its_families(stack: tuple[MainProcess, dict[str, Any]]) -> None:
    m, turn = stack
    groups = httpx.get(f"{m.url}/api/monitoring/targets", headers=AUTH, timeout=30).json()
    for group in groups:
        (target,) = group["targets"]
        role = group["labels"]["role"]
        text = scrape(target)
        lint = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True,
                              timeout=60, check=False)
        assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), (
            group, lint.stdout.decode(), lint.stderr.decode())
        fams = families(text)
        if role == "gateway":
            assert set(fams) >= MAIN_FAMILIES, MAIN_FAMILIES - set(fams)
            assert not any(name.startswith("uv_") for name in fams)
            check_main(fams, turn)
        else:
            want = SERVICE_FAMILIES | ROLE_FAMILIES[role]
            assert want <= set(fams), (role, want - set(fams))
            others = set().union(*(f for r, f in ROLE_FAMILIES.items() if r != role))
            assert not others & set(fams), role
            assert value(fams, "uv_service_ready", "uv_service_ready") == 1
            check_service(role, fams)


def check_main(fams: dict[str, Any], turn: dict[str, Any]) -> None:
    assert turn["outcome"] == "ok"
    assert value(fams, "ultravox_turns", "ultravox_turns_total", outcome="ok") >= 1
    for outcome in ("interrupted", "degraded", "rejected"):
        value(fams, "ultravox_turns", "ultravox_turns_total", outcome=outcome)  # present, at 0 or more
    assert value(fams, "ultravox_voice_to_voice_seconds", "ultravox_voice_to_voice_seconds_count") >= 1
    assert value(fams, "ultravox_errors", "ultravox_errors_total", source="gateway", type="UNAUTHENTICATED") >= 1
    (info,) = fams["ultravox_build_info"].samples
    assert info.value == 1 and info.labels["stt_engine"] and info.labels["tts_engine"] and info.labels["llm_engine"]
    assert value(fams, "ultravox_alert_threshold", "ultravox_alert_threshold", alert="VoiceToVoiceP95High") > 0
    for service in ("stt", "tts", "llm"):
        assert value(fams, "ultravox_service_up", "ultravox_service_up", service=service) == 1
        assert value(fams, "ultravox_service_cpu_seconds", "ultravox_service_cpu_seconds_total", service=service) > 0
        assert value(fams, "ultravox_service_resident_memory_bytes", "ultravox_service_resident_memory_bytes",
                     service=service) > 0
        assert value(fams, "ultravox_hub_breaker_state", "ultravox_hub_breaker_state", service=service) == 0
    assert value(fams, "ultravox_hub_calls", "ultravox_hub_calls_total", service="llm", outcome="ok") >= 1


def check_service(role: str, fams: dict[str, Any]) -> None:
    if role == "stt":
        assert value(fams, "uv_stt_audio_seconds", "uv_stt_audio_seconds_total") > 0
    elif role == "tts":
        assert value(fams, "uv_tts_characters", "uv_tts_characters_total") > 0
        assert value(fams, "uv_tts_audio_seconds", "uv_tts_audio_seconds_total") > 0
    else:
        assert value(fams, "uv_llm_prompt_tokens", "uv_llm_prompt_tokens_total") > 0
        assert value(fams, "uv_llm_completion_tokens", "uv_llm_completion_tokens_total") > 0
        assert value(fams, "uv_llm_time_to_first_token_seconds", "uv_llm_time_to_first_token_seconds_count") >= 1


def test_the_turns_ids_reach_the_service_logs(stack: tuple[MainProcess, dict[str, Any]]) -> None:
    m, turn = stack
    for service in ("stt", "llm", "tts"):
        lines = [json.loads(line) for line in (m.var_dir / "log" / f"{service}.log").read_text().splitlines()
                 if line.startswith("{")]
        calls = [rec for rec in lines if rec.get("msg") == "call ok" and rec.get("turn_id") == turn["turn_id"]]
        assert calls, f"no 'call ok' line of turn {turn['turn_id']} in {service}.log"
        assert all(rec["session_id"] == "exposition" and rec["request_id"] for rec in calls), calls
    main_lines = [json.loads(line) for line in (m.var_dir / "log" / "main.log").read_text().splitlines()]
    (latency,) = [rec for rec in main_lines if rec["msg"] == "turn latency" and rec.get("turn_id") == turn["turn_id"]]
    assert latency["session_id"] == "exposition" and latency["service"] == "main" and latency["total_s"] > 0
