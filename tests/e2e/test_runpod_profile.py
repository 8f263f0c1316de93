"""End to end: ``./start.sh runpod`` with its endpoints pointed at local servers on 127.0.0.1.

What a RunPod user sets is what this test sets: ``RUNPOD_API_KEY``, ``UV_TTS_ENDPOINT_ID`` (plus
``UV_TTS_BASE_URL``, here a local server) and ``UV_LLM_BASE_URL``:

- TTS is this project's RunPod worker (the real Kokoro handler) behind a server that follows
  RunPod's production job API (``tests/helpers/runpod_api.py``: bearer key, ``/run``, ``GET
  /stream``, ``/cancel``, ``/health``);
- the LLM is RunPod's OpenAI-compatible route as main reaches it (engine openai), here served by
  this project's own LLM service, standalone, on its ``/v1`` routes;
- STT runs locally, as the profile says (live turn-taking needs its bidirectional stream).

Then a spoken ``/ws/voice`` turn whose reply audio Whisper hears as the reply text, a barge-in
that cancels the TTS job, and ``sm list`` / ``sm health`` showing the remote endpoint.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.runpod_workers import KEY, OpenAIUpstream, RunpodWorker
from tests.helpers.speech import Pcm, convert, pcm_to_wav, speech_bytes
from tests.helpers.stack import ROOT, MainProcess, dump_logs, stack_env
from tests.helpers.text import word_error_rate
from tests.helpers.voice_client import VoiceClient as Client
from tests.helpers.voice_client import silence

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]
SM = str(ROOT / "sm")
OUT_RATE = 24000
QUESTION = "What is the capital of France?"
STORY = "Tell me a long story about a brave knight and a dragon."
FOLLOW_UP = "What is the capital of Italy?"


def speech(text: str) -> bytes:
    return convert(speech_bytes(text), 16000, 1).data


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MainProcess, RunpodWorker]]:
    var = tmp_path_factory.mktemp("runpod-e2e")
    # a slow worker (1 s after each chunk): a barge-in then always finds its TTS job still running
    tts = RunpodWorker("tts", var / "log" / "runpod-tts-worker.log", api="production", chunk_delay_s=1.0).start()
    llm = OpenAIUpstream(var / "log" / "runpod-llm-upstream.log")
    main: MainProcess | None = None
    ok = False
    try:
        tts.wait_ready()
        env = stack_env(var, RUNPOD_API_KEY=KEY, UV_TTS_BASE_URL=tts.base_url, UV_TTS_ENDPOINT_ID="ep-tts",
                        UV_LLM_BASE_URL=llm.base_url, UV_LLM_MODEL=llm.model())
        main = MainProcess(var, env, cmd=[str(ROOT / "start.sh"), "runpod"]).start()
        main.wait_healthy(1200)
        yield main, tts
        ok = True
    finally:
        if main is not None:
            main.stop(signal.SIGINT)
            if not ok:
                print(main.main_log())
        tts.stop()
        llm.stop()
        if not ok:
            dump_logs(var, "runpod-e2e")


def sm(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SM, "--url", url, *args], capture_output=True, text=True, timeout=120)


def test_sm_shows_the_remote_endpoint(stack: tuple[MainProcess, RunpodWorker]) -> None:
    main, tts = stack
    out = sm(main.url, "list")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("tts"))
    assert "REMOTE_READY" in line and f"{tts.base_url}/ep-tts" in line and "workers idle 1" in line, line
    rows = {r["name"]: r for r in json.loads(sm(main.url, "--json", "list").stdout)}
    assert rows["stt"]["state"] == rows["llm"]["state"] == "RUNNING" and rows["tts"]["remote"] is True
    health = sm(main.url, "health", "--all")
    assert health.returncode == 0 and "main: ok (profile runpod)" in health.stdout, health.stdout
    metrics = httpx.get(f"{main.url}/metrics", timeout=30).text
    assert 'ultravox_remote_state{endpoint="' in metrics and 'state="REMOTE_READY"} 1.0' in metrics
    assert KEY not in (Path(main.var_dir) / "log" / "main.log").read_text()  # the key never reaches a log


async def test_a_spoken_turn_is_answered_with_tts_from_the_runpod_worker(
    stack: tuple[MainProcess, RunpodWorker],
) -> None:
    main, _ = stack
    # Piper's English voice (the worker loads Kokoro and Piper): Whisper hears it word for word
    async with Client.open(main, {"sample_rate": OUT_RATE, "voice": "en_US-joe-medium"}) as c:
        c.speak(silence(0.3) + speech(QUESTION))
        done = await c.wait("turn_complete", timeout=240)
    final = c.events("transcript")[-1]
    assert final["final"] and word_error_rate(QUESTION, final["text"]) <= 0.25, final
    reply = c.text()
    assert done["outcome"] == "ok" and reply.strip(), done
    audio = c.audio()
    assert len(audio) > OUT_RATE
    wav = pcm_to_wav(Pcm(audio, OUT_RATE, 1))
    async with httpx.AsyncClient(timeout=180) as http:
        r = await http.post(f"{main.url}/v1/audio/transcriptions", data={"language": "en"},
                            files={"file": ("reply.wav", wav, "audio/wav")})
        assert r.status_code == 200, r.text
        assert word_error_rate(reply, r.json()["text"]) <= 0.35, (reply, r.json()["text"])
        metrics = (await http.get(f"{main.url}/metrics")).text
    assert 'ultravox_hub_calls_total{method="SynthesizeStream",outcome="ok",protocol="runpod",service="tts"}' in metrics


async def test_a_barge_in_cancels_the_tts_job(stack: tuple[MainProcess, RunpodWorker]) -> None:
    main, tts = stack
    async with httpx.AsyncClient(timeout=10, trust_env=False, base_url=f"http://127.0.0.1:{tts.port}") as http:
        before = (await http.get("/stats")).json()["cancelled"]
        async with Client.open(main, {"sample_rate": OUT_RATE}) as c:
            c.speak(silence(0.3) + speech(STORY))
            start = await c.wait("audio_start", timeout=240)
            c.speak(speech(FOLLOW_UP))
            await c.wait("flush", since=c.index(start), timeout=120)
            first = await c.wait("turn_complete", timeout=240)
            await c.wait("turn_complete", 2, timeout=240)
        assert first["outcome"] == "interrupted", first
        got: dict[str, Any] = {}
        for _ in range(100):  # the cancel is sent as the stream closes; the job ends just after
            got = (await http.get("/stats")).json()
            if got["cancelled"] > before and got["inProgress"] == 0:
                break
            await asyncio.sleep(0.1)
    assert got["cancelled"] > before and got["inProgress"] == 0, got
