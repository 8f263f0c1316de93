"""The ``cluster`` profile end to end: a real main whose TTS and LLM are Ray Serve applications and
whose STT decodes run on the cluster's STT deployment, on a real two-node Ray cluster.

Inside a loopback-only network namespace: main (``PROFILE=cluster``) supervises the cluster
agent, which starts a Ray head on 127.0.0.1 and deploys STT, TTS and LLM (the embedded CPU
models); a second Ray node joins. Then:

- a spoken ``/ws/voice`` turn is answered, and the reply audio, transcribed back through main
  (its STT decodes on the cluster), says the reply text;
- ``sm list`` shows the deployments and ``sm scale stt 2`` adds a replica while REST turns run:
  every turn is answered;
- a TTS replica's process killed mid-turn: Ray replaces it, the turn ends (degraded or retried,
  never lost), the next turn is normal, and the restart shows in ``/api/cluster`` and the agent's
  metrics.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from core.cli.app import app as sm
from core.sessions import wav_bytes
from tests.helpers.cluster_stack import CLUSTER_ENV, RayPorts, cluster_config
from tests.helpers.netns import loopback_netns, netns_unavailable
from tests.helpers.ray_cluster import RayNode
from tests.helpers.service_process import service_python
from tests.helpers.speech import speech_bytes
from tests.helpers.stack import MainProcess, running_main, stack_env
from tests.helpers.text import word_error_rate
from tests.helpers.voice_client import VoiceClient, silence

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

PORTS = RayPorts(gcs=6391, client=10021, grpc=9191, http=8191)
QUESTION = "What is the capital of France?"
TIMEOUT = httpx.Timeout(240.0, connect=10.0)


@pytest.fixture(scope="module")
def cluster_main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainProcess]:
    if why := netns_unavailable():
        pytest.skip(f"needs a loopback network namespace: {why}")
    python = service_python("cluster")   # the cluster venv, built before the namespace (no network in it)
    speech_bytes(QUESTION)
    base = tmp_path_factory.mktemp("cluster-profile")
    temp_dir = f"/tmp/uvp{os.getpid()}"   # Ray's socket paths must stay short
    config = cluster_config(base / "config", PORTS, temp_dir)
    env = stack_env(base / "var", config, **CLUSTER_ENV)
    with loopback_netns("uvclu"), running_main(base / "var", env, "cluster_profile", timeout=900) as m:
        node = RayNode(Path(python).with_name("ray"), f"127.0.0.1:{PORTS.gcs}", base / "node2.log", num_cpus=1,
                       temp_dir=temp_dir)
        node.start()
        try:
            yield m
        finally:
            node.stop()


def status(m: MainProcess) -> dict[str, Any]:
    r = httpx.get(f"{m.url}/api/cluster", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return dict(r.json())


def deployment(m: MainProcess, role: str) -> dict[str, Any]:
    return next(d for d in status(m)["deployments"] if d["role"] == role)


def audio_turn(m: MainProcess, session: str) -> httpx.Response:
    return httpx.post(f"{m.url}/api/orchestrator/conversation/audio", timeout=TIMEOUT,
                      data={"session_id": session, "audio": "none"},
                      files={"file": ("q.wav", speech_bytes(QUESTION), "audio/wav")})


def test_a_spoken_turn_through_the_cluster(cluster_main: MainProcess) -> None:
    m = cluster_main
    services = {s["name"]: s for s in httpx.get(f"{m.url}/services", timeout=TIMEOUT).json()}
    assert services["tts"]["remote"] and services["tts"]["kind"] == "ray", services["tts"]
    assert services["cluster"]["state"] == "RUNNING"

    async def speak() -> tuple[dict[str, Any], bytes]:
        from tests.helpers.speech import convert
        pcm = convert(speech_bytes(QUESTION), 16000, 1).data
        async with VoiceClient.open(m, {"sample_rate": 16000}) as c:
            c.speak(silence(0.3) + pcm)
            done = await c.wait("turn_complete")
            return done, c.audio()

    done, reply = asyncio.run(speak())
    assert done["outcome"] == "ok" and "paris" in done["assistant_text"].lower(), done
    assert len(reply) > 16000, "no reply audio"
    heard = httpx.post(f"{m.url}/v1/audio/transcriptions", timeout=TIMEOUT, data={"model": "whisper-1"},
                       files={"file": ("reply.wav", wav_bytes(reply, 16000), "audio/wav")})
    assert heard.status_code == 200, heard.text
    assert word_error_rate(done["assistant_text"], heard.json()["text"]) <= 0.35, (done, heard.json())


def test_sm_list_and_scale_stt_while_turns_run(cluster_main: MainProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    m = cluster_main
    monkeypatch.setenv("SM_URL", m.url)
    listed = CliRunner().invoke(sm, ["list"])
    assert listed.exit_code == 0, listed.output
    assert "ray serve (local" in listed.output and "stt" in listed.output, listed.output
    assert deployment(m, "stt")["running"] == 1
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        turns = [pool.submit(audio_turn, m, f"scale-{i}") for i in range(4)]
        scaled = CliRunner().invoke(sm, ["scale", "stt", "2"])
        more = [pool.submit(audio_turn, m, f"scale-{i}") for i in range(4, 8)]
        results = [t.result(timeout=600) for t in [*turns, *more]]
    assert scaled.exit_code == 0, (scaled.output, scaled.exception)
    assert [r.status_code for r in results] == [200] * 8, [r.text[:200] for r in results]
    assert all("paris" in r.json()["text"].lower() for r in results), [r.json()["text"] for r in results]
    deadline = time.monotonic() + 180
    while (d := deployment(m, "stt"))["running"] < 2:
        assert time.monotonic() < deadline, f"stt never reached 2 running replicas: {d}"
        time.sleep(1)
    assert d["target_replicas"] == 2
    refused = httpx.post(f"{m.url}/api/cluster/deployments/stt/scale", json={"replicas": 500}, timeout=TIMEOUT)
    assert refused.status_code == 400, refused.text


def test_a_replica_killed_mid_turn_is_replaced_and_the_next_turn_is_normal(cluster_main: MainProcess) -> None:
    m = cluster_main
    before = deployment(m, "tts")
    pids = [r["pid"] for r in before["replica_list"] if r["pid"]]
    assert pids, before
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        turn = pool.submit(lambda: httpx.post(
            f"{m.url}/api/orchestrator/conversation", timeout=TIMEOUT,
            json={"session_id": "killed", "message": "Tell me a long story about a dragon and a knight.",
                  "audio": "inline"}))
        time.sleep(4.0)   # the reply is being spoken
        os.kill(pids[0], signal.SIGKILL)
        first = turn.result(timeout=600)
    assert first.status_code in (200, 503), first.text   # degraded or refused with a reason: never lost
    if first.status_code == 200:
        assert first.json()["text"], first.json()
    deadline = time.monotonic() + 300
    while True:
        d = deployment(m, "tts")
        if d["running"] >= 1 and d["restarts"] >= 1 and pids[0] not in [r["pid"] for r in d["replica_list"]]:
            break
        assert time.monotonic() < deadline, f"the killed replica was not replaced: {d}"
        time.sleep(1)
    nxt = httpx.post(f"{m.url}/api/orchestrator/conversation", timeout=TIMEOUT,
                     json={"session_id": "after", "message": QUESTION, "audio": "inline"})
    assert nxt.status_code == 200 and "paris" in nxt.json()["text"].lower(), nxt.text
    assert nxt.json().get("degraded", "") in ("", None), nxt.json()
