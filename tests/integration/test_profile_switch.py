"""A running main switches profile (local-pc -> local-fast -> local-pc) while a reply streams.

Real main, real services, a real /ws/voice client. The switch replaces STT (base -> tiny.en),
TTS (Kokoro+Piper -> Piper alone) and the LLM (max_tokens) blue-green: the reply in flight
completes, the next turn is heard and spoken by the new instances (new pids, new engines), no
error event reaches the client, and at the end there is one instance per service and the old
processes are gone. A switch to a profile whose service cannot start leaves the old one serving
and says why; a switch that needs a restart (a GPU profile here, a remote one) is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.helpers.speech import convert, speech_bytes
from tests.helpers.stack import ROOT, MainProcess, running_main, stack_env
from tests.helpers.text import word_error_rate
from tests.helpers.voice_client import VoiceClient as Client
from tests.helpers.voice_client import silence

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]
OUT_RATE = 24000
STORY = "Tell me a short story about a brave knight."
QUESTION = "What is the capital of France?"
TIMEOUT = httpx.Timeout(900.0, connect=10.0)


def speech(text: str) -> bytes:
    return convert(speech_bytes(text), 16000, 1).data


@pytest.fixture(scope="module")
def main_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainProcess]:
    tmp = tmp_path_factory.mktemp("switch")
    cfg = tmp / "config"
    shutil.copytree(ROOT / "config", cfg)
    doc = yaml.safe_load((cfg / "profiles.yaml").read_text())
    doc["profiles"]["broken-tts"] = {"description": "TTS with a model file that does not exist", "device": "cpu",
                                     "services": {"tts": {"model": str(tmp / "missing.onnx")}}}
    (cfg / "profiles.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with running_main(tmp / "var", stack_env(tmp / "var", cfg), "profile_switch") as m:
        yield m


def save(report: dict[str, Any]) -> None:
    """Keep the switch's timings and memory for the record (var/test-logs/profile-switch-report.json)."""
    keep = Path(os.environ.get("UV_TEST_LOG_DIR", ROOT / "var" / "test-logs"))
    keep.mkdir(parents=True, exist_ok=True)
    (keep / "profile-switch-report.json").write_text(json.dumps(report, indent=1))


def services(m: MainProcess) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in httpx.get(f"{m.url}/services", timeout=30).json()}


def info(m: MainProcess, service: str) -> dict[str, Any]:
    r = httpx.post(f"{m.url}/call", json={"service": service, "method": "Info"}, timeout=60)
    assert r.status_code == 200, r.text
    return dict(r.json()["response"])


async def activate(m: MainProcess, name: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        return await http.post(f"{m.url}/api/profiles/{name}/activate", json={})


async def test_a_switch_while_a_reply_streams_drops_nothing(main_proc: MainProcess) -> None:
    before = services(main_proc)
    assert info(main_proc, "stt")["model"] == "embedded:whisper-base"
    async with Client.open(main_proc, {"sample_rate": OUT_RATE}) as c:
        c.speak(silence(0.3) + speech(STORY))
        await c.wait("audio_start", timeout=240)
        switched = await activate(main_proc, "local-fast")  # while the reply streams
        first = await c.wait("turn_complete", timeout=240)
        at = len(c.items)
        c.speak(silence(0.5) + speech(QUESTION))
        second = await c.wait("turn_complete", 2, timeout=240)
    report = switched.json()
    save(report)
    assert switched.status_code == 200 and report["outcome"] == "ok", report
    assert report["from"] == "local-pc" and report["active_profile"] == "local-fast"
    assert set(report["services"]) == {"stt", "tts", "llm"} and report["memory"]["peak_used_bytes"] > 0
    assert all(s["ok"] and s["start_s"] > 0 and s["new_pid"] != s["old_pid"] for s in report["services"].values())
    assert first["outcome"] == "ok" and first["assistant_text"], first  # the reply in flight completed
    assert not c.events("error"), c.events("error")  # nothing reached the client as an error
    final = [e for e in c.events("transcript", at) if e["final"]][-1]
    assert word_error_rate(QUESTION, final["text"]) <= 0.25 and second["outcome"] == "ok", (final, second)
    after = services(main_proc)
    for name in ("stt", "tts", "llm"):
        assert after[name]["state"] == "RUNNING" and after[name]["pid"] != before[name]["pid"]
        assert not psutil.pid_exists(before[name]["pid"]), f"old {name} pid {before[name]['pid']} is still alive"
    assert info(main_proc, "stt")["model"] == "embedded:whisper-tiny-en"
    assert info(main_proc, "tts")["details"]["engines"] == "piper"
    async with httpx.AsyncClient(timeout=30) as http:
        health = (await http.get(f"{main_proc.url}/health")).json()
        metrics = (await http.get(f"{main_proc.url}/metrics")).text
    assert health["status"] == "ok" and health["profile"] == "local-fast"
    assert 'ultravox_profile_switches_total{from="local-pc",outcome="ok",to="local-fast"} 1.0' in metrics
    assert 'ultravox_active_profile{profile="local-fast"} 1.0' in metrics


async def test_switching_back_with_sm_leaves_one_instance_per_service(main_proc: MainProcess) -> None:
    before = services(main_proc)
    sm = [str(ROOT / "sm"), "--url", main_proc.url]
    async with Client.open(main_proc, {"sample_rate": OUT_RATE}) as c:  # again while a reply streams
        c.speak(silence(0.3) + speech(STORY))
        await c.wait("audio_start", timeout=240)
        out = await asyncio.to_thread(subprocess.run, [*sm, "--json", "profile", "activate", "local-pc"],
                                      capture_output=True, text=True, timeout=900)
        done = await c.wait("turn_complete", timeout=240)
    assert done["outcome"] == "ok" and not c.events("error"), (done, c.events("error"))
    await asyncio.to_thread(check_back_on_local_pc, out, before, sm, main_proc)


def check_back_on_local_pc(out: subprocess.CompletedProcess[str], before: dict[str, dict[str, Any]],
                           sm: list[str], main_proc: MainProcess) -> None:
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["outcome"] == "ok" and report["active_profile"] == "local-pc"
    listed = subprocess.run([*sm, "--json", "list"], capture_output=True, text=True, timeout=60)
    rows = json.loads(listed.stdout)
    assert sorted(r["name"] for r in rows) == ["llm", "stt", "tts"] and all(r["state"] == "RUNNING" for r in rows)
    assert all(not psutil.pid_exists(before[n]["pid"]) for n in ("stt", "tts", "llm"))
    assert info(main_proc, "tts")["details"]["engines"] == "kokoro,piper"
    again = subprocess.run([*sm, "profile", "activate", "local-pc"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "unchanged" in again.stdout  # nothing to do: nothing touched


async def test_a_new_instance_that_cannot_start_leaves_the_old_one_serving(main_proc: MainProcess) -> None:
    before = services(main_proc)["tts"]
    r = await activate(main_proc, "broken-tts")
    report = r.json()
    assert r.status_code == 503 and report["outcome"] == "failed" and report["active_profile"] == "local-pc"
    tts = report["services"]["tts"]
    assert not tts["ok"] and "did not start" in tts["error"]
    assert any("missing.onnx" in line for line in tts["log_tail"]), tts["log_tail"]
    now = services(main_proc)["tts"]
    assert now["pid"] == before["pid"] and now["state"] == "RUNNING"  # the old one still serves
    assert info(main_proc, "tts")["ready"]


def test_switches_that_need_a_restart_are_refused_with_what_to_do(main_proc: MainProcess) -> None:
    def activate_now(name: str) -> httpx.Response:
        return httpx.post(f"{main_proc.url}/api/profiles/{name}/activate", json={}, timeout=TIMEOUT)

    gpu = activate_now("gpu-machine")
    assert gpu.status_code == 400 and "no NVIDIA GPU" in gpu.json()["error"]["message"]
    remote = activate_now("runpod")
    assert remote.status_code == 400 and "./start.sh runpod" in remote.json()["error"]["message"]
    assert activate_now("nope").status_code == 404
    assert activate_now("local-fast").status_code == 200  # main is still switchable


