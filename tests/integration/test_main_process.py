"""main.py as a real process: control API, hub over HTTP, OpenAI route, and no orphans on SIGKILL."""

from __future__ import annotations

import base64
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.stack import MainProcess, dump_logs, pid_alive, running_main, stack_env
from tests.helpers.text import word_error_rate

pytestmark = pytest.mark.integration
SENTENCE = "Please book a table by the window for tonight."


@pytest.fixture(scope="module")
def main_proc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    var = tmp_path_factory.mktemp("main")
    with running_main(var, stack_env(var), "main_process") as m:
        yield m


def test_services_and_health_report_a_running_stt(main_proc: MainProcess) -> None:
    health = httpx.get(f"{main_proc.url}/health").json()
    assert health["status"] == "ok" and health["services"]["stt"] == "RUNNING"
    svc = next(s for s in httpx.get(f"{main_proc.url}/services").json() if s["name"] == "stt")
    assert svc["name"] == "stt" and svc["state"] == "RUNNING"
    assert svc["pid"] and svc["grpc_port"] and svc["http_port"] and svc["rss_bytes"] > 10_000_000
    assert svc["restarts"] == 0 and svc["uptime_s"] >= 0
    desc = httpx.get(f"{main_proc.url}/services/stt").json()
    assert desc["config"]["engine"] == "faster-whisper"
    missing = httpx.get(f"{main_proc.url}/services/nope")
    assert missing.status_code == 404 and "configured services are:" in missing.json()["error"]["message"]


def test_call_and_proxy_go_through_the_hub(main_proc: MainProcess, speech_wav: Any) -> None:
    wav = speech_wav(SENTENCE)
    for proto in ("grpc", "msgpack", "json"):
        r = httpx.post(
            f"{main_proc.url}/call",
            json={"service": "stt", "method": "Transcribe", "protocol": proto,
                  "payload": {"audio": {"data": base64.b64encode(wav).decode(), "encoding": "WAV"}}},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert word_error_rate(SENTENCE, r.json()["response"]["text"]) <= 0.2
    info = httpx.post(f"{main_proc.url}/call", json={"service": "stt", "method": "Info"}).json()["response"]
    assert info["ready"] is True and info["engine"] == "faster-whisper"
    bad = httpx.post(f"{main_proc.url}/call", json={"service": "stt", "method": "Speak"})
    assert bad.status_code == 404 and "available methods" in bad.json()["error"]["message"]
    garbage = httpx.post(
        f"{main_proc.url}/call",
        json={"service": "stt", "method": "Transcribe", "payload": {"audio": {"data": "AAAA", "encoding": "WAV"}}},
    )
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "INVALID_ARGUMENT"
    ready = httpx.get(f"{main_proc.url}/proxy/stt/readyz")
    assert ready.status_code == 200


def test_openai_transcriptions_route(main_proc: MainProcess, speech_wav: Any) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{main_proc.url}/v1", api_key="unused-on-loopback")
    out = client.audio.transcriptions.create(model="whisper-1", file=("q.wav", speech_wav(SENTENCE), "audio/wav"))
    assert word_error_rate(SENTENCE, out.text) <= 0.2
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("q.wav", speech_wav(SENTENCE), "audio/wav"), response_format="verbose_json"
    )
    assert verbose.duration > 1.0
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=("x.wav", b"not audio" * 20, "audio/wav"))


def test_metrics_and_logs(main_proc: MainProcess) -> None:
    text = httpx.get(f"{main_proc.url}/metrics").text
    assert 'ultravox_service_up{service="stt"} 1.0' in text
    assert "ultravox_service_restarts_total" in text
    logs = httpx.get(f"{main_proc.url}/services/stt/logs", params={"tail": 20}).json()
    assert logs["lines"], "the STT service log must not be empty"
    more = httpx.get(f"{main_proc.url}/services/stt/logs", params={"offset": logs["offset"]}).json()
    assert more["offset"] >= logs["offset"]


def test_sigkill_of_main_leaves_no_service_behind(tmp_path: Path) -> None:
    m = MainProcess(tmp_path, stack_env(tmp_path)).start()
    try:
        m.wait_healthy(600)
        pids = [s["pid"] for s in httpx.get(f"{m.url}/services").json() if s["pid"]]
        assert pids and all(pid_alive(p) for p in pids)
        m.stop(signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.1)
        assert not any(pid_alive(p) for p in pids), f"orphaned service processes: {pids}"
    except BaseException:
        print(m.main_log())
        dump_logs(tmp_path, "sigkill")
        raise
    finally:
        m.stop(signal.SIGKILL)


def test_graceful_stop_of_main_stops_services(tmp_path: Path) -> None:
    m = MainProcess(tmp_path, stack_env(tmp_path)).start()
    try:
        m.wait_healthy(600)
        pids = [s["pid"] for s in httpx.get(f"{m.url}/services").json() if s["pid"]]
        assert m.stop(signal.SIGINT) == 0
        assert not any(pid_alive(p) for p in pids)
    except BaseException:
        print(m.main_log())
        dump_logs(tmp_path, "graceful")
        raise
    finally:
        m.stop(signal.SIGKILL)


def test_main_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "main.py", "--port", str(port)], cwd=Path(__file__).parents[2],
            env=stack_env(tmp_path), capture_output=True, text=True, timeout=60,
        )
    assert r.returncode == 2
    assert f"127.0.0.1:{port}" in r.stderr and "another process holds the port" in r.stderr


def test_all_three_services_run_with_their_memory(main_proc: MainProcess) -> None:
    rows = {s["name"]: s for s in httpx.get(f"{main_proc.url}/services").json()}
    assert set(rows) == {"stt", "tts", "llm"}
    for name, row in rows.items():
        assert row["state"] == "RUNNING", (name, row)
        assert row["rss_bytes"] > 50_000_000, (name, row)
    assert httpx.get(f"{main_proc.url}/health").json()["services"] == {
        "stt": "RUNNING", "tts": "RUNNING", "llm": "RUNNING"
    }


def test_openai_sdk_chats_through_main(main_proc: MainProcess) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{main_proc.url}/v1", api_key="local")
    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    reply = client.chat.completions.create(model="local", messages=question, temperature=0, max_tokens=16)
    assert "paris" in (reply.choices[0].message.content or "").lower()
    assert reply.usage is not None and reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    pieces = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="local", messages=question, temperature=0, max_tokens=16, stream=True
        )
        if c.choices
    ]
    assert len(pieces) > 1 and "".join(pieces) == reply.choices[0].message.content
    assert [m.id for m in client.models.list().data]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="local", messages=[{"role": "wizard", "content": "hi"}])


def test_openai_sdk_speaks_through_main_and_stt_hears_it(main_proc: MainProcess) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{main_proc.url}/v1", api_key="local")
    sentence = "The train to the airport leaves from the second platform."
    wav = client.audio.speech.create(model="tts-1", voice="", input=sentence, response_format="wav").content
    assert wav[:4] == b"RIFF" and len(wav) > 20_000
    heard = client.audio.transcriptions.create(model="whisper-1", file=("reply.wav", wav, "audio/wav"))
    assert word_error_rate(sentence, heard.text) <= 0.2, heard.text
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="", input="Sure. I can help with that today.", response_format="pcm"
    ) as streamed:
        pcm = b"".join(streamed.iter_bytes())
    assert len(pcm) > 24_000 and len(pcm) % 2 == 0  # > 0.5 s of 24 kHz PCM16
    voices = httpx.get(f"{main_proc.url}/v1/audio/voices").json()
    assert voices["voices"] and voices["default_voice"]
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="no-such-voice", input="hello")
