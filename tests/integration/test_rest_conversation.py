"""REST conversation against a real main.py with the real STT, LLM and TTS services.

The seed's request returns text and playable audio that STT hears as the reply; an uploaded
spoken question is answered; transcripts export; bad input gets a clear 4xx while other
sessions keep working; a session's history survives a SIGKILL restart of main and the
conversation continues with context; a full house is a quick 503 + Retry-After; a client over
its rate gets 429 + Retry-After.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import signal
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.speech import convert
from tests.helpers.stack import MainProcess, dump_logs, make_config_dir, running_main, stack_env
from tests.helpers.text import normalize, word_error_rate

pytestmark = pytest.mark.integration
CONV = "/api/orchestrator/conversation"
QUESTION = "What is the capital of France?"
TIMEOUT = httpx.Timeout(180.0, connect=10.0)


def conversation_config(per_minute: int | None = None, **conversation: Any) -> Callable[[dict[str, Any]], None]:
    """Edit services.yaml's conversation section (and the rate limit per key and address)."""
    def edit(doc: dict[str, Any]) -> None:
        doc.setdefault("conversation", {}).update(conversation)
        if per_minute is not None:
            doc["gateway"]["auth"]["rate_limits"] = {"per_minute": per_minute, "per_hour": 0}
    return edit


@pytest.fixture(scope="module")
def main_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainProcess]:
    tmp = tmp_path_factory.mktemp("rest")
    cfg = make_config_dir(tmp / "config", conversation_config(per_minute=1000, max_audio_bytes=2_000_000))
    with running_main(tmp / "var", stack_env(tmp / "var", cfg), "rest_conversation") as m:
        yield m


def post(m: MainProcess, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(f"{m.url}{path}", timeout=TIMEOUT, **kw)


def decode_wav(data: bytes) -> tuple[int, float]:
    with wave.open(io.BytesIO(data), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getframerate(), w.getnframes() / w.getframerate()


def transcribe(m: MainProcess, wav_bytes: bytes) -> str:
    r = post(m, "/v1/audio/transcriptions", files={"file": ("reply.wav", wav_bytes, "audio/wav")},
             data={"language": "en"})
    assert r.status_code == 200, r.text
    return str(r.json()["text"])


def error_message(r: httpx.Response) -> str:
    err = r.json()["error"]
    assert err["code"] and err["message"], r.text
    return str(err["message"])


def test_the_seeds_request_returns_text_and_playable_audio(main_proc: MainProcess) -> None:
    r = post(main_proc, CONV, json={"session_id": "seed-rest", "message": QUESTION, "voice_id": ""})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["session_id"] == "seed-rest" and body["turn_id"] and body["outcome"] == "ok"
    assert body["user_text"] == QUESTION and "paris" in normalize(body["text"])
    lat = body["latency"]
    assert lat["llm_first_token_s"] > 0 and lat["tts_first_audio_s"] > 0 and lat["total_s"] > 0
    audio = httpx.get(f"{main_proc.url}{body['audio_url']}", timeout=TIMEOUT)
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    rate, duration = decode_wav(audio.content)
    assert rate == body["sample_rate"] == 24000 and duration == pytest.approx(body["audio_duration_s"], abs=0.01)
    assert duration > 0.5
    heard = transcribe(main_proc, audio.content)
    assert word_error_rate(body["text"], heard) <= 0.35, (body["text"], heard)


def test_inline_audio_at_a_chosen_rate(main_proc: MainProcess) -> None:
    r = post(main_proc, CONV, json={"message": "Say hello to me.", "audio": "inline", "sample_rate": 16000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "audio_url" not in body and body["text"]
    wav_bytes = base64.b64decode(body["audio_base64"])
    assert decode_wav(wav_bytes)[0] == 16000
    assert word_error_rate(body["text"], transcribe(main_proc, wav_bytes)) <= 0.35


def test_a_spoken_question_uploaded_as_wav_and_as_raw_pcm(main_proc: MainProcess, speech_wav: Any) -> None:
    question = speech_wav(QUESTION)
    r = post(main_proc, f"{CONV}/audio", files={"file": ("q.wav", question, "audio/wav")},
             data={"session_id": "spoken", "audio": "none"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert word_error_rate(QUESTION, body["user_text"]) <= 0.2 and "paris" in normalize(body["text"])
    pcm = convert(question, rate=16000, channels=1).data
    r = post(main_proc, f"{CONV}/audio", params={"session_id": "spoken", "sample_rate": 16000}, content=pcm,
             headers={"content-type": "audio/pcm"})
    assert r.status_code == 200, r.text
    assert word_error_rate(QUESTION, r.json()["user_text"]) <= 0.2 and r.json()["audio_url"]


def test_transcript_export(main_proc: MainProcess) -> None:
    for msg in ("Hello there.", "What color is the sky?"):
        r = post(main_proc, CONV, json={"session_id": "export-me", "message": msg, "audio": "none"})
        assert r.status_code == 200, r.text
    t = httpx.get(f"{main_proc.url}/api/sessions/export-me/transcript", timeout=TIMEOUT).json()
    assert t["session_id"] == "export-me" and t["turn_count"] == 2
    assert [x["user_text"] for x in t["turns"]] == ["Hello there.", "What color is the sky?"]
    assert all(x["assistant_text"] and x["outcome"] == "ok" and x["latency"]["total_s"] > 0 for x in t["turns"])
    listed = httpx.get(f"{main_proc.url}/api/sessions", timeout=TIMEOUT).json()["sessions"]
    assert "export-me" in {s["session_id"] for s in listed}


def test_bad_input_gets_a_clear_4xx_and_other_sessions_keep_working(main_proc: MainProcess) -> None:
    m = main_proc
    cases: list[tuple[httpx.Response, int, str]] = [
        (httpx.get(f"{m.url}/api/sessions/no-such-session", timeout=TIMEOUT), 404, "unknown session"),
        (httpx.get(f"{m.url}/api/sessions/no-such-session/transcript", timeout=TIMEOUT), 404, "unknown session"),
        (httpx.delete(f"{m.url}/api/sessions/no-such-session", timeout=TIMEOUT), 404, "unknown session"),
        (post(m, "/api/poll/no-such-session/text", json={"text": "hi"}), 404, "unknown session"),
        (post(m, f"{CONV}/audio", files={"file": ("big.wav", b"RIFF" + b"\x00" * 2_100_000, "audio/wav")}), 413,
         "max_audio_bytes"),
        (post(m, f"{CONV}/audio", files={"file": ("notes.txt", b"definitely not audio " * 50, "text/plain")}), 400,
         "not a recognised audio file"),
        (post(m, f"{CONV}/audio", content=b"\x00" * 3201, params={"sample_rate": 16000},
              headers={"content-type": "audio/pcm"}), 400, "even number of bytes"),
        (post(m, CONV, json={"message": ""}), 400, "message is empty"),
        (post(m, CONV, json={"message": "word " * 1000}), 400, "max_text_chars"),
        (post(m, CONV, content=b'{"message": "unterminated', headers={"content-type": "application/json"}), 400,
         "JSON"),
        (post(m, CONV, json={"message": "hi", "session_id": "../../etc/passwd"}), 400, "invalid session id"),
        (post(m, CONV, json={"message": "hi", "agent": "no-such-agent"}), 404, "unknown agent"),
    ]
    for r, status, needle in cases:
        assert r.status_code == status, (r.status_code, r.text)
        assert needle in error_message(r), r.text
    # a WAV header over garbage reaches the STT service, which refuses it: still a 400, never a 500
    garbage = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x07" * 4000
    r = post(m, f"{CONV}/audio", files={"file": ("bad.wav", garbage, "audio/wav")})
    assert r.status_code == 400, r.text
    ok = post(m, CONV, json={"session_id": "after-bad-input", "message": QUESTION, "audio": "none"})
    assert ok.status_code == 200 and "paris" in normalize(ok.json()["text"])
    assert httpx.get(f"{m.url}/health", timeout=TIMEOUT).status_code == 200


def test_history_survives_a_restart_and_the_conversation_continues(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env = stack_env(var, make_config_dir(tmp_path / "config"))
    first = MainProcess(var, env).start()
    try:
        first.wait_healthy(600)
        for msg in ("My name is Ada.", "I live in a small town by the sea."):
            r = post(first, CONV, json={"session_id": "ada", "message": msg, "audio": "none"})
            assert r.status_code == 200, r.text
        before = httpx.get(f"{first.url}/api/sessions/ada/transcript", timeout=TIMEOUT).json()
    except BaseException:
        print(first.main_log())
        dump_logs(var, "restart-first")
        raise
    finally:
        first.stop(signal.SIGKILL)  # no graceful close: only what was committed survives

    with running_main(var, env, "restart-second") as second:
        after = httpx.get(f"{second.url}/api/sessions/ada/transcript", timeout=TIMEOUT).json()
        assert [t["turn_id"] for t in after["turns"]] == [t["turn_id"] for t in before["turns"]]
        assert [(t["user_text"], t["assistant_text"]) for t in after["turns"]] == [
            (t["user_text"], t["assistant_text"]) for t in before["turns"]]
        resumed = httpx.get(f"{second.url}/api/sessions/ada", timeout=TIMEOUT).json()
        assert resumed["turn_count"] == 2
        assert [h["text"] for h in resumed["history"]][:1] == ["My name is Ada."]  # the LLM's context
        r = post(second, CONV, json={"session_id": "ada", "message": "What is my name?", "audio": "none"})
        assert r.status_code == 200, r.text
        # only the earlier turn (from before the restart) says the name: the LLM saw it
        assert "ada" in normalize(r.json()["text"]).split(), r.json()["text"]
        final = httpx.get(f"{second.url}/api/sessions/ada/transcript", timeout=TIMEOUT).json()
        assert final["turn_count"] == 3 and final["turns"][2]["index"] == 2


def test_a_full_house_is_a_quick_503_and_a_fast_client_gets_429(tmp_path: Path) -> None:
    cfg = make_config_dir(tmp_path / "config", conversation_config(
        max_concurrent_turns=1, admission_wait_s=0.5, per_minute=20))
    with running_main(tmp_path / "var", stack_env(tmp_path / "var", cfg), "admission") as m, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        long_turn = pool.submit(post, m, CONV, json={
            "session_id": "storyteller", "message": "Tell me a long story about a dragon and a knight.",
            "audio": "none"})
        deadline = time.monotonic() + 60
        while "ultravox_turns_in_flight 1.0" not in httpx.get(f"{m.url}/metrics", timeout=TIMEOUT).text:
            assert time.monotonic() < deadline and not long_turn.done(), "the first turn never took its slot"
            time.sleep(0.02)
        t0 = time.monotonic()
        r = post(m, CONV, json={"session_id": "second", "message": QUESTION})
        waited = time.monotonic() - t0
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1 and "max_concurrent_turns = 1" in error_message(r)
        assert waited < 2.0, waited  # the bound: a full house answers within 2 s
        assert post(m, "/api/sessions", json={"session_id": "poller"}).status_code == 201
        busy = post(m, "/api/poll/poller/text", json={"text": QUESTION})
        assert busy.status_code == 503 and busy.headers["retry-after"]
        assert long_turn.result(timeout=180).status_code == 200
        assert "ultravox_admission_rejections_total 1.0" in httpx.get(f"{m.url}/metrics", timeout=TIMEOUT).text
        assert post(m, CONV, json={"session_id": "second", "message": QUESTION, "audio": "none"}).status_code == 200

        codes: list[int] = []
        for _ in range(40):
            r = httpx.get(f"{m.url}/api/agents", timeout=TIMEOUT)
            codes.append(r.status_code)
            if r.status_code == 429:
                break
        assert codes[-1] == 429 and set(codes[:-1]) == {200}, codes
        assert int(r.headers["retry-after"]) >= 1 and "20 per minute" in error_message(r)
        assert httpx.get(f"{m.url}/health", timeout=TIMEOUT).status_code == 200  # control routes are not limited
