"""RunPod serverless workers with the real models, driven through the hub's RunPod transport.

Two servers around the same worker handler (``services.runtime.runpod_worker``), both on 127.0.0.1:

- the runpod SDK's own local API server (``--rp_serve_api``): every path it has (``/runsync``,
  ``/run`` + ``/stream``), POST only, no endpoint prefix, no cancel or health;
- ``tests/helpers/runpod_api.py``, which follows RunPod's production API (GET status and stream,
  incremental chunks, cancel, health, bearer key, queueing and cold starts), for the paths the
  SDK's server lacks. The runpod SDK's own client (``runpod.Endpoint``, which cannot target the
  local server: it polls with GET) is run against it too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import load_settings
from core.config.models import HubConfig, RemoteEndpoint
from core.context import GlobalContext, ProcessContext
from core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ServiceUnavailable,
    TransportError,
    Unauthenticated,
)
from core.managers.endpoint import Endpoint
from core.managers.hub import CommunicationManager
from core.managers.remote import RemoteServices, RemoteState
from tests.helpers.runpod_workers import KEY, ROOT, RunpodWorker, worker_python

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

HUB = HubConfig(default_deadline_s=60.0, max_retries=1, retry_base_s=0.05, retry_cap_s=0.2,
                breaker_failure_threshold=50, breaker_reset_s=1.0)
LONG_TEXT = ("This is a long answer with many sentences. " * 6).strip()


def log_dir() -> Path:
    import os

    return Path(os.environ.get("UV_TEST_LOG_DIR", ROOT / "var" / "test-logs")) / "runpod"


@pytest.fixture(scope="module")
def workers() -> Iterator[dict[str, RunpodWorker]]:
    """TTS, STT and the LLM under the SDK's local server, TTS under the production double."""
    ws = {
        "tts-sdk": RunpodWorker("tts", log_dir() / "tts-sdk.log"),
        "stt-sdk": RunpodWorker("stt", log_dir() / "stt-sdk.log"),
        "llm-sdk": RunpodWorker("llm", log_dir() / "llm-sdk.log"),
        # a slowish worker (0.3 s after each chunk): jobs are reliably still running when cancelled
        "tts-prod": RunpodWorker("tts", log_dir() / "tts-prod.log", api="production", chunk_delay_s=0.3),
    }
    try:
        for w in ws.values():
            w.start()
        for w in ws.values():
            w.wait_ready()
        yield ws
    finally:
        for w in ws.values():
            w.stop()


class Resolver:
    def __init__(self, eps: dict[str, Endpoint]) -> None:
        self.eps = eps

    def endpoint(self, service: str) -> Endpoint:
        try:
            return self.eps[service]
        except KeyError as e:
            raise NotFound(f"unknown service {service!r}") from e


def endpoint(name: str, role: str, w: RunpodWorker, **over: Any) -> Endpoint:
    local = w.api == "sdk"
    fields: dict[str, Any] = {"endpoint_id": "" if local else f"ep-{role}", "local_api": local,
                              "api_key_env": "RUNPOD_API_KEY", "poll_interval_s": 0.05, **over}
    remote = RemoteEndpoint(kind="runpod", base_url=w.base_url, **fields)
    return Endpoint(name, role, "", 0, 0, "unused", remote=remote, api_key="" if local else KEY)


@pytest.fixture
async def hub(workers: dict[str, RunpodWorker]) -> AsyncIterator[CommunicationManager]:
    eps = {
        "tts-sdk": endpoint("tts-sdk", "tts", workers["tts-sdk"]),
        "stt-sdk": endpoint("stt-sdk", "stt", workers["stt-sdk"]),
        "llm-sdk": endpoint("llm-sdk", "llm", workers["llm-sdk"]),
        "tts-prod": endpoint("tts-prod", "tts", workers["tts-prod"]),
        "tts-badkey": dataclasses.replace(endpoint("tts-badkey", "tts", workers["tts-prod"]), api_key="wrong"),
        "tts-noid": endpoint("tts-noid", "tts", workers["tts-prod"], endpoint_id="ep-nope"),
        "tts-poll": endpoint("tts-poll", "tts", workers["tts-prod"], runsync_wait_s=1.0),
    }
    ctx = ProcessContext(GlobalContext.create(load_settings()), "runpod-it")
    async with CommunicationManager(ctx, Resolver(eps), config=HUB) as h:
        yield h


def pcm_of(chunks: list[Any]) -> bytes:
    return b"".join(c.audio for c in chunks)


# ---- the SDK's local API server -----------------------------------------------------------------

async def test_sdk_server_unary_and_stream_through_the_hub(hub: CommunicationManager, speech_wav: Any) -> None:
    voices = await hub.call("tts-sdk", "ListVoices", {})
    assert len(voices.voices) >= 2
    chunks = [c async for c in hub.stream("tts-sdk", "SynthesizeStream", {"text": "Hello there. How are you today?"})]
    assert len(chunks) >= 2 and len(pcm_of(chunks)) > 16000  # the stream arrives whole here, as several chunks
    text = (await hub.call("stt-sdk", "Transcribe", {"audio": {"data": speech_wav("The capital of France is Paris.")},
                                                      "language": "en"})).text
    assert "paris" in text.lower()
    assert hub.metrics.stats["stt-sdk"].calls["runpod"]["ok"] >= 1  # counted under protocol runpod


async def test_sdk_server_bad_input_is_a_job_error_and_the_worker_keeps_serving(hub: CommunicationManager) -> None:
    with pytest.raises(InvalidArgument, match=r"text is empty|empty"):
        await hub.call("tts-sdk", "Synthesize", {"text": ""})
    with pytest.raises(InvalidArgument, match=r"could not decode the audio"):
        await hub.call("stt-sdk", "Transcribe", {"audio": {"data": b"not audio at all" * 10}})
    assert (await hub.call("stt-sdk", "Info", {})).ready


async def test_sdk_server_llm_generate_streams_tokens(hub: CommunicationManager) -> None:
    chunks = [c async for c in hub.stream("llm-sdk", "Generate", {
        "messages": [{"role": "user", "content": "What is the capital of France? One short sentence."}],
        "max_tokens": 24, "temperature": 0})]
    text = "".join(c.delta for c in chunks)
    assert len(chunks) >= 3 and "paris" in text.lower() and chunks[-1].finish_reason, text


OPS = {"stt": "Transcribe", "tts": "Synthesize", "llm": "Generate"}


@pytest.mark.parametrize("role", ["stt", "tts", "llm"])
def test_raw_bad_jobs_never_kill_the_worker(workers: dict[str, RunpodWorker], role: str) -> None:
    base = workers[f"{role}-sdk"].base_url
    bad = [{"op": "Nope"}, {"body": {}}, {"op": "Info", "body": "text"}, {"op": "StreamingRecognize"},
           {"op": OPS[role], "body": {"no_such_field": 1}}, {"op": OPS[role], "body": {}}, "just a string"]
    for inp in bad:
        r = httpx.post(f"{base}/runsync", json={"input": inp}, timeout=60, trust_env=False)
        if not isinstance(inp, dict):  # the SDK's own server refuses a non-object input itself
            assert r.status_code == 422, r.text
            continue
        assert r.status_code == 200, r.text
        (out,) = r.json()["output"]
        assert set(out["error"]) == {"code", "message"} and out["error"]["message"], out
    r = httpx.post(f"{base}/runsync", json={"input": {"op": "Info"}}, timeout=60, trust_env=False)
    assert r.json()["output"][0]["message"]["ready"] is True


# ---- RunPod's production API (the double) ---------------------------------------------------------

async def test_production_api_unary_stream_and_errors(
    hub: CommunicationManager, workers: dict[str, RunpodWorker]
) -> None:
    info = await hub.call("tts-prod", "Info", {})
    assert info.ready and info.engine
    got: list[float] = []
    t0 = time.monotonic()
    async for c in hub.stream("tts-prod", "SynthesizeStream", {"text": LONG_TEXT}):
        got.append(time.monotonic() - t0)
        assert c.audio
    assert len(got) >= 3 and got[0] < got[-1]  # chunks arrive as they are made, not all at the end
    # /runsync gives up after 1 s with the job IN_PROGRESS; the transport polls GET /status to the end
    long = await hub.call("tts-poll", "Synthesize", {"text": LONG_TEXT * 2, "format": "pcm"})
    assert len(long.audio) > 24000 * 2 * 5
    async with httpx.AsyncClient(trust_env=False) as c:
        recent = (await c.get(f"http://127.0.0.1:{workers['tts-prod'].port}/stats")).json()["recent"]
    assert any(j["op"] == "Synthesize" and j["executionTime"] > 1000 for j in recent), recent  # it outlived /runsync
    with pytest.raises(InvalidArgument, match=r"RunPod job .* at http://127.0.0.1:\d+/v2/ep-tts"):
        await hub.call("tts-prod", "Synthesize", {"text": ""})
    with pytest.raises(Unauthenticated, match=r"refused the API key.*RUNPOD_API_KEY"):
        await hub.call("tts-badkey", "Info", {})
    with pytest.raises(NotFound, match=r"ep-nope.*endpoint id"):
        await hub.call("tts-noid", "Info", {})


async def test_closing_a_stream_cancels_the_job(hub: CommunicationManager, workers: dict[str, RunpodWorker]) -> None:
    base = workers["tts-prod"].base_url
    stream = hub.stream("tts-prod", "SynthesizeStream", {"text": LONG_TEXT * 2})
    first = await stream.__anext__()
    assert first.audio
    await stream.aclose()  # a barge-in
    async with httpx.AsyncClient(trust_env=False, headers={"authorization": f"Bearer {KEY}"}) as c:
        for _ in range(50):
            health = (await c.get(f"{base}/ep-tts/health")).json()
            if health["jobs"]["inProgress"] == 0:
                break
            await asyncio.sleep(0.1)
    assert health["jobs"]["inProgress"] == 0 and health["jobs"]["completed"] >= 0
    log = workers["tts-prod"].tail(400)
    assert "cancelled" in log.lower()  # the worker's dispatcher saw the call cancelled


async def test_a_cold_start_past_the_queue_timeout_says_so() -> None:
    w = RunpodWorker("tts", log_dir() / "tts-cold.log", api="production", cold_start_s=4.0)
    try:
        await asyncio.to_thread(w.start)
        await asyncio.to_thread(w.wait_ready)
        ctx = ProcessContext(GlobalContext.create(load_settings()), "runpod-cold")
        ep = endpoint("tts-cold", "tts", w, queue_timeout_s=1.0)
        remote = RemoteServices(ctx)
        remote._endpoints["tts-cold"] = ep  # one endpoint under test, outside any profile
        from core.managers.remote.services import RemoteStatus

        remote._status["tts-cold"] = RemoteStatus("tts-cold", "tts", RemoteState.UNKNOWN, "runpod", w.base_url)
        assert (await remote.probe("tts-cold")).state is RemoteState.COLD
        async with CommunicationManager(ctx, Resolver({"tts-cold": ep}), config=HUB) as h:
            with pytest.raises(ServiceUnavailable, match=r"IN_QUEUE.*cold start.*queue_timeout_s"):
                await h.call("tts-cold", "Info", {}, deadline_s=30)
            await asyncio.sleep(4.0)
            assert (await h.call("tts-cold", "Info", {})).ready  # warm now
        st = await remote.probe("tts-cold")
        assert st.state is RemoteState.READY and st.workers["idle"] == 1
        await remote.close()
    finally:
        w.stop()


async def test_a_worker_killed_mid_job_fails_the_call_promptly() -> None:
    w = RunpodWorker("tts", log_dir() / "tts-killed.log")
    await asyncio.to_thread(w.start)
    await asyncio.to_thread(w.wait_ready)
    ctx = ProcessContext(GlobalContext.create(load_settings()), "runpod-kill")
    async with CommunicationManager(ctx, Resolver({"k": endpoint("k", "tts", w)}), config=HUB) as h:
        task = asyncio.create_task(h.call("k", "Synthesize", {"text": LONG_TEXT * 3}, deadline_s=120))
        await asyncio.sleep(1.0)
        w.kill()
        t0 = time.monotonic()
        with pytest.raises((TransportError, ServiceUnavailable, DeadlineExceeded)):
            await task
        assert time.monotonic() - t0 < 60  # the call ended on the broken connection, not the 120 s deadline


def test_the_sdk_client_drives_the_production_double(workers: dict[str, RunpodWorker]) -> None:
    """runpod.Endpoint (the SDK's own client) against our production-API server: run, status, stream, health."""
    script = f"""
import json, runpod
runpod.api_key = {KEY!r}
runpod.endpoint_url_base = {workers["tts-prod"].base_url!r}
ep = runpod.Endpoint("ep-tts")
out = ep.run_sync({{"input": {{"op": "Info"}}}}, timeout=60)
job = ep.run({{"input": {{"op": "SynthesizeStream", "body": {{"text": "One. Two. Three."}}}}}})
chunks = list(job.stream())
print(json.dumps({{"info": out, "status": job.status(), "chunks": len(chunks), "health": ep.health()}}))
"""
    res = subprocess.run([worker_python("tts"), "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["info"][0]["message"]["ready"] is True
    assert got["status"] == "COMPLETED" and got["chunks"] >= 2
    assert got["health"]["workers"]["ready"] == 1
