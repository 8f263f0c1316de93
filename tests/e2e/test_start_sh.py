"""End to end: ./start.sh in the background, then the sm CLI and the openai SDK against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.stack import ROOT, MainProcess, dump_logs, free_port, pid_alive, stack_env
from tests.helpers.text import word_error_rate

pytestmark = pytest.mark.e2e
SENTENCE = "Could you tell me what the weather will be like tomorrow morning?"
SM = str(ROOT / ".venv" / "bin" / "sm")


def _sm(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([SM, "--url", url, *args], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"sm {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Any:
    var = tmp_path_factory.mktemp("e2e")
    m = MainProcess(var, stack_env(var), cmd=[str(ROOT / "start.sh")])
    m.start()
    ok = False
    try:
        m.wait_healthy(1200)
        yield m
        ok = True
    finally:
        m.stop(signal.SIGINT)
        if not ok:
            print(m.main_log())
            dump_logs(var, "e2e")


def test_sm_list_and_health(started: MainProcess) -> None:
    out = _sm(started.url, "list").stdout
    assert "stt" in out and "RUNNING" in out
    rows = {r["name"]: r for r in json.loads(_sm(started.url, "--json", "list").stdout)}
    assert {n: r["state"] for n, r in rows.items()} == {"stt": "RUNNING", "tts": "RUNNING", "llm": "RUNNING"}
    assert all(r["rss_bytes"] > 0 for r in rows.values())
    health = _sm(started.url, "health", "--all")
    assert "main: ok" in health.stdout and "stt" in health.stdout
    info = json.loads(_sm(started.url, "call", "stt", "Info", "--protocol", "msgpack").stdout)
    assert info["ready"] is True
    desc = _sm(started.url, "describe", "stt").stdout
    assert "faster-whisper" in desc
    logs = _sm(started.url, "logs", "stt", "-n", "5").stdout
    assert logs.strip()
    profiles = _sm(started.url, "profile", "list").stdout
    assert "* local-pc" in profiles and "  gpu-machine" in profiles
    shown = json.loads(_sm(started.url, "--json", "profile", "show", "gpu-machine").stdout)
    assert shown["changes"]["llm"]["engine"] == {"active": "llama.cpp", "new": "vllm"}
    assert "would change llm" in _sm(started.url, "profile", "show", "gpu-machine").stdout


def test_openai_sdk_transcribes_chats_and_speaks_through_main(started: MainProcess, speech_wav: Any) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{started.url}/v1", api_key="local")
    out = client.audio.transcriptions.create(model="whisper-1", file=("q.wav", speech_wav(SENTENCE), "audio/wav"))
    assert word_error_rate(SENTENCE, out.text) <= 0.2, out.text
    reply = client.chat.completions.create(
        model="local", temperature=0, max_tokens=16,
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    )
    assert "paris" in (reply.choices[0].message.content or "").lower()
    # a sentence long enough that one misheard word (Kokoro's "Paris is" came back as "Pair issues"
    # once in a while) does not decide the round trip
    said = "The capital of France is Paris, a large and beautiful city in Europe."
    audio = client.audio.speech.create(model="tts-1", voice="", input=said, response_format="wav")
    heard = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio.content, "audio/wav"))
    assert word_error_rate(said, heard.text) <= 0.2, heard.text


def test_sm_restart_brings_the_service_back(started: MainProcess) -> None:
    before = json.loads(_sm(started.url, "--json", "describe", "stt").stdout)
    _sm(started.url, "restart", "stt")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        now = json.loads(_sm(started.url, "--json", "describe", "stt").stdout)
        if now["state"] == "RUNNING" and now["pid"] != before["pid"]:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"stt did not come back: {now}")
    assert not pid_alive(before["pid"])
    assert _sm(started.url, "health").returncode == 0


def test_sm_errors_are_plain(started: MainProcess) -> None:
    r = _sm(started.url, "describe", "nope", check=False)
    assert r.returncode == 1 and "unknown service 'nope'" in r.stderr
    dead = _sm(f"http://127.0.0.1:{free_port()}", "list", check=False)
    assert dead.returncode == 3 and "main is not running" in dead.stderr


def test_second_start_is_fast_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """A re-run changes nothing (bootstrap is a no-op) and SIGINT stops main and its services."""
    env = stack_env(tmp_path)
    r = subprocess.run([str(ROOT / "scripts" / "bootstrap.sh"), "main"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "installing" not in r.stderr, r.stderr
    m = MainProcess(tmp_path, env, cmd=[str(ROOT / "start.sh")]).start()
    try:
        m.wait_healthy(600)
        import httpx

        pids = [s["pid"] for s in httpx.get(f"{m.url}/services").json() if s["pid"]]
        assert m.stop(signal.SIGINT) == 0
        assert not any(pid_alive(p) for p in pids)
    finally:
        m.stop(signal.SIGKILL)
        if os.environ.get("CI"):
            dump_logs(tmp_path, "restart-start")
