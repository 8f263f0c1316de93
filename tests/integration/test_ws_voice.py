"""/ws/voice on a real main.py with the real STT, LLM and TTS services, driven by a `websockets` client.

The client behaves like a microphone: PCM16 16 kHz frames of 20 ms, paced at real time,
silence between utterances (Piper speech made by tests.helpers.speech). Covers a spoken turn
(transcript, streamed text, reply audio that Whisper hears as the reply text, the latency
report), barge-in, a kill -9 of the STT mid-utterance and of the LLM mid-reply, bad input of every kind, and resuming a
session on a new socket.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import httpx
import numpy as np
import pytest

from core.conversation.types import AgentConfig
from tests.helpers.speech import Pcm, convert, pcm_to_wav, speech_bytes
from tests.helpers.stack import MainProcess, running_main, stack_env
from tests.helpers.text import normalize, word_error_rate
from tests.helpers.voice_client import FRAME, silence
from tests.helpers.voice_client import VoiceClient as Client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

OUT_RATE = 24000
QUESTION = "What is the capital of France?"
STORY = "Tell me a story about a brave knight and a dragon."
FOLLOW_UP = "What is the capital of Italy?"
FALLBACK = AgentConfig.model_fields["fallback_phrase"].default


def speech(text: str) -> bytes:
    return convert(speech_bytes(text), 16000, 1).data


@pytest.fixture(scope="module")
def main_proc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    var = tmp_path_factory.mktemp("ws-voice")
    with running_main(var, stack_env(var), "ws_voice") as m:
        yield m


async def get(main: MainProcess, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.get(main.url + path)


async def transcribe(main: MainProcess, pcm: bytes, rate: int) -> str:
    wav = pcm_to_wav(Pcm(pcm, rate, 1))
    async with httpx.AsyncClient(timeout=120) as http:
        r = await http.post(f"{main.url}/v1/audio/transcriptions", data={"language": "en"},
                            files={"file": ("reply.wav", wav, "audio/wav")})
    assert r.status_code == 200, r.text
    return str(r.json()["text"])


async def test_a_spoken_question_gets_a_spoken_answer(main_proc: MainProcess) -> None:
    async with Client.open(main_proc, {"sample_rate": OUT_RATE}) as c:
        ready = c.events("ready")[0]
        assert ready["sample_rate"] == OUT_RATE and ready["agent"] == "assistant" and ready["session_id"]
        c.speak(silence(0.3) + speech(QUESTION))
        done = await c.wait("turn_complete")
    final = c.events("transcript")[-1]
    assert final["final"] and word_error_rate(QUESTION, final["text"]) <= 0.25, final
    assert c.events("speech_started") and c.events("speech_started")[0]["utterance"] == 0
    reply = c.text()
    assert done["outcome"] == "ok" and reply.strip() and done["assistant_text"] == reply.strip(), done
    assert c.events("audio_start")[0]["sample_rate"] == OUT_RATE
    audio = c.audio()
    assert len(audio) > OUT_RATE  # more than half a second of speech
    heard = await transcribe(main_proc, audio, OUT_RATE)
    assert word_error_rate(reply, heard) <= 0.35, (reply, heard)
    report = c.events("latency")[0]["report"]
    assert set(report["marks_s"]) == {"speech_end", "turn_end_detected", "stt_final", "llm_first_token",
                                      "first_chunk_text", "tts_first_audio", "first_audio_sent", "turn_complete"}
    assert report["voice_to_voice_s"] > 0 and report["vad_s"] > 0.3  # the 600 ms end-of-turn silence
    metrics = (await get(main_proc, "/metrics")).text
    assert "ultravox_voice_to_voice_seconds_count 1.0" in metrics
    assert 'ultravox_turns_total{outcome="ok"}' in metrics


async def test_barge_in_stops_the_reply_and_the_next_turn_answers(main_proc: MainProcess) -> None:
    async with Client.open(main_proc, {"sample_rate": OUT_RATE}) as c:
        c.speak(silence(0.3) + speech(STORY))
        start = await c.wait("audio_start")
        c.speak(speech(FOLLOW_UP))  # talk over the reply as soon as it starts
        at = c.index(start)
        barge = await c.wait("speech_started", since=at)
        pause = await c.wait("pause", since=at)  # held at once; interrupted once the speech proves itself
        flush = await c.wait("flush", since=at)
        first = await c.wait("turn_complete")
        second = await c.wait("turn_complete", 2)
    i_barge, i_pause, i_flush = c.index(barge), c.index(pause), c.index(flush)
    next_start = c.index(c.events("audio_start", since=i_flush)[0])
    after_speech = len(c.audio(i_barge, i_pause)) / 2 / OUT_RATE
    assert after_speech <= 0.3, f"{after_speech:.3f} s of reply audio after the barge-in was detected"
    assert i_barge < i_pause < i_flush
    assert c.audio(i_flush, next_start) == b"", "audio of the interrupted reply came after the flush"
    assert first["outcome"] == "interrupted" and first["interrupted"] is True
    said = normalize(c.text(0, i_flush))
    assert said.startswith(normalize(first["assistant_text"])), (first["assistant_text"], said)
    finals = [e for e in c.events("transcript") if e["final"]]
    assert word_error_rate(FOLLOW_UP, finals[-1]["text"]) <= 0.25, finals
    assert second["outcome"] == "ok" and "rome" in second["assistant_text"].lower(), second


async def test_bad_input_gets_error_events_and_the_socket_keeps_working(main_proc: MainProcess) -> None:
    async with Client.open(main_proc, mic=False) as c, Client.open(main_proc, mic=False) as other:
        cases: list[tuple[Any, str, str]] = [
            ("{not json", "INVALID_ARGUMENT", "malformed JSON"),
            ('{"type": "dance"}', "INVALID_ARGUMENT", "unknown control message type"),
            ('{"type": "config", "sample_rate": 7}', "INVALID_ARGUMENT", "sample_rate"),
            ({"type": "config", "session_id": "no-such-session"}, "NOT_FOUND", "unknown session"),
            ({"type": "config", "agent": "nobody"}, "NOT_FOUND", "unknown agent"),
            (b"\x00" * (256 * 1024 + 2), "INVALID_ARGUMENT", "over the 262144-byte limit"),
            (b"\x01\x02\x03", "INVALID_ARGUMENT", "odd length"),
            (speech_bytes(QUESTION)[:4000], "INVALID_ARGUMENT", "starts like a WAV"),
        ]
        for n, (sent, code, words) in enumerate(cases, 1):
            await (c.ws.send(sent) if isinstance(sent, bytes) else c.send_json(sent))
            error = await c.wait("error", n, timeout=30)
            assert error["code"] == code and words in error["message"], (sent if isinstance(sent, str) else "bytes",
                                                                          error)
        noise = np.random.default_rng(7).integers(-32768, 32767, 16000 * 2, dtype=np.int16).tobytes()
        for i in range(0, len(noise), FRAME):
            await c.ws.send(noise[i : i + FRAME])
        await c.ws.send(b"")  # push-to-talk end after the noise
        await asyncio.sleep(1.0)
        mark = len(c.items)
        await c.send_json({"type": "text", "text": "Say hello."})
        done = await c.wait("turn_complete", since=mark, where=lambda e: e["user_text"] == "Say hello.")
        assert done["outcome"] == "ok" and c.audio(mark), done
        await other.send_json({"type": "text", "text": "Say goodbye."})
        assert (await other.wait("turn_complete"))["outcome"] == "ok"
        assert not other.events("error")
        assert c.events("ready")[0]["session_id"] != other.events("ready")[0]["session_id"]
    assert (await get(main_proc, "/health")).json()["status"] == "ok"


async def test_a_session_resumes_on_a_new_socket(main_proc: MainProcess) -> None:
    async with Client.open(main_proc, {"sample_rate": 16000}, mic=False) as c:
        await c.send_json({"type": "text", "text": "My name is Ada."})
        await c.wait("turn_complete")
        sid = c.events("ready")[0]["session_id"]
        assert c.events("audio_start")[0]["sample_rate"] == 16000
    async with Client.open(main_proc, {"session_id": sid}, mic=False) as c:
        ready = c.events("ready")[0]
        assert ready["session_id"] == sid and ready["turns"] == 1
        await c.send_json({"type": "interrupt"})  # nothing playing: harmless
        await c.send_json({"type": "reset"})
        fresh = await c.wait("ready", 2)
        assert fresh["session_id"] != sid and fresh["turns"] == 0
        await c.send_json({"type": "end"})
        ended = await c.wait("ended")
        assert ended["session_id"] == fresh["session_id"]


async def service(main: MainProcess, name: str) -> dict[str, Any]:
    row: dict[str, Any] = (await get(main, f"/services/{name}")).json()
    return row


async def restarted(main: MainProcess, name: str, old_pid: int) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while (row := await service(main, name))["state"] != "RUNNING" or row["pid"] == old_pid:
        assert time.monotonic() < deadline, f"the supervisor did not restart {name}: {row}"
        await asyncio.sleep(0.5)
    return row


async def test_kill_9_of_the_stt_mid_utterance_says_not_heard_and_listening_resumes(main_proc: MainProcess) -> None:
    """A reopened stream that fell back to HTTP (not full duplex) once went deaf; whether a run lands on
    HTTP depends on timing, so the gRPC pin itself is checked by the unit fakes (FakeHub.stream)."""
    before = await service(main_proc, "stt")
    async with Client.open(main_proc) as c:
        c.speak(silence(0.3) + speech(STORY))
        await c.wait("speech_started")
        os.kill(before["pid"], signal.SIGKILL)
        error = await c.wait("error")
        assert error["stage"] == "stt" and error["code"] == "UNAVAILABLE", error
        lost = await c.wait("turn_complete")
        assert lost["outcome"] == "degraded" and lost["degraded"] == "stt", lost
        assert lost["assistant_text"] == AgentConfig.model_fields["not_heard_phrase"].default
        await restarted(main_proc, "stt", before["pid"])
        await asyncio.sleep(6)  # the conversation's own reopening backoff is at most 5 s
        mark = len(c.items)
        c.speak(speech(QUESTION))
        again = await c.wait("turn_complete", since=mark)
    assert again["outcome"] == "ok" and word_error_rate(QUESTION, again["user_text"]) <= 0.25, again


async def test_kill_9_of_the_llm_mid_reply_speaks_the_fallback_and_recovers(main_proc: MainProcess) -> None:
    before = await service(main_proc, "llm")
    async with Client.open(main_proc, {"sample_rate": OUT_RATE}) as c:
        await c.send_json({"type": "text", "text": "Tell me about the history of Rome in great detail."})
        await c.wait("llm_text")
        os.kill(before["pid"], signal.SIGKILL)
        done = await c.wait("turn_complete")
        assert done["outcome"] == "degraded" and done["degraded"] == "llm", done
        assert FALLBACK in c.text() and done["assistant_text"].endswith(FALLBACK)
        assert len(c.audio()) > OUT_RATE  # the fallback was spoken
        row = await restarted(main_proc, "llm", before["pid"])
        assert row["restarts"] >= before["restarts"] + 1
        mark = len(c.items)
        c.speak(silence(0.3) + speech(QUESTION))
        again = await c.wait("turn_complete", since=mark)
    assert again["outcome"] == "ok" and "paris" in again["assistant_text"].lower(), again
    assert word_error_rate(QUESTION, again["user_text"]) <= 0.25

