"""REST conversation and session routes in-process (real routers, sessions, store, admission and
orchestrator; scripted model services): the seed's contract, uploads, limits and refusals."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import wave
from pathlib import Path

import httpx
import pytest

from core.config.models import RateLimits
from core.gateway.routes.conversation import sniff_audio
from tests.unit.sessions_app import conversation_app

CONV = "/api/orchestrator/conversation"


def wav(pcm: bytes = b"\x00\x01" * 1600, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[int, int]:
    with wave.open(io.BytesIO(data), "rb") as w:
        return w.getframerate(), w.getnframes()


def error_of(r: httpx.Response) -> str:
    body = r.json()
    assert set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["message"])


async def test_the_seeds_request_returns_text_audio_url_and_latency(tmp_path: Path) -> None:
    async with conversation_app(tmp_path) as (c, rt):
        r = await c.post(CONV, json={"session_id": "seed-1", "message": "What is the capital of France?",
                                     "voice_id": "joe"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["session_id"] == "seed-1" and body["text"] == "Paris is the capital."
        assert body["user_text"] == "What is the capital of France?" and body["outcome"] == "ok"
        assert body["latency"]["llm_first_token_s"] is not None and body["turn_id"]
        audio = await c.get(body["audio_url"])
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        rate, frames = read_wav(audio.content)
        assert rate == body["sample_rate"] == 24000 and frames / rate == pytest.approx(body["audio_duration_s"])
        assert rt.sessions.get("seed-1").voice == "joe"  # the seed's voice_id sticks to the session
        again = await c.post(CONV, json={"session_id": "seed-1", "message": "And Spain?", "voice_id": "",
                                         "audio": "none"})
        assert again.status_code == 200 and rt.sessions.get("seed-1").voice == "joe"  # "" keeps it
        tts = rt.hub.tts.requests  # type: ignore[attr-defined]
        assert tts and all(req.voice == "joe" and req.sample_rate == 24000 for req in tts)


async def test_audio_inline_none_and_a_chosen_rate(tmp_path: Path) -> None:
    async with conversation_app(tmp_path) as (c, _):
        inline = (await c.post(CONV, json={"message": "hi", "audio": "inline", "sample_rate": 16000})).json()
        assert "audio_url" not in inline
        assert read_wav(base64.b64decode(inline["audio_base64"]))[0] == 16000
        none = (await c.post(CONV, json={"message": "hi", "audio": "none"})).json()
        assert "audio_url" not in none and "audio_base64" not in none and none["text"]
        assert none["session_id"] != inline["session_id"]  # no session_id: a new session each time
        assert (await c.get("/api/audio/0123456789abcdef.wav")).status_code == 404


async def test_a_session_keeps_its_history_and_transcript(tmp_path: Path) -> None:
    async with conversation_app(tmp_path) as (c, rt):
        for msg in ("My name is Ada.", "What is my name?"):
            assert (await c.post(CONV, json={"session_id": "ada", "message": msg, "audio": "none"})).status_code == 200
        second = rt.hub.llm.requests[-1]  # type: ignore[attr-defined]
        assert "My name is Ada." in [m.content for m in second.messages]  # the LLM saw the first turn
        t = (await c.get("/api/sessions/ada/transcript")).json()
        assert [x["user_text"] for x in t["turns"]] == ["My name is Ada.", "What is my name?"]
        desc = (await c.get("/api/sessions/ada")).json()
        assert desc["turn_count"] == 2 and [h["role"] for h in desc["history"]] == ["user", "assistant"] * 2


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"message": "   "}, "message is empty"),
        ({"message": "x" * 2001}, "the limit is 2000"),
        ({"message": "hi", "session_id": "bad id!"}, "invalid session id"),
        ({"message": "hi", "audio": "mp3"}, "audio"),
        ({"voice_id": "x"}, "message"),
    ],
)
async def test_bad_requests_are_400_with_a_reason(tmp_path: Path, payload: dict[str, object], needle: str) -> None:
    async with conversation_app(tmp_path) as (c, _):
        r = await c.post(CONV, json=payload)
        assert r.status_code == 400 and needle in error_of(r)


async def test_malformed_json_unknown_agent_and_ended_session(tmp_path: Path) -> None:
    async with conversation_app(tmp_path) as (c, _):
        r = await c.post(CONV, content=b'{"message": "hi"', headers={"content-type": "application/json"})
        assert r.status_code == 400 and "JSON" in error_of(r)
        r = await c.post(CONV, json={"message": "hi", "agent": "pirate"})
        assert r.status_code == 404 and "agents: assistant, portuguese" in error_of(r)
        assert (await c.post("/api/sessions", json={"session_id": "gone"})).status_code == 201
        assert (await c.delete("/api/sessions/gone")).status_code == 200
        r = await c.post(CONV, json={"message": "hi", "session_id": "gone"})
        assert r.status_code == 400 and "has ended" in error_of(r)
        assert (await c.post(CONV, json={"message": "still fine", "audio": "none"})).status_code == 200


async def test_audio_variant_multipart_wav_and_raw_pcm(tmp_path: Path) -> None:
    async with conversation_app(tmp_path) as (c, rt):
        r = await c.post(f"{CONV}/audio", files={"file": ("q.wav", wav(), "audio/wav")},
                         data={"session_id": "up", "audio": "inline"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["session_id"] == "up" and body["user_text"] == "what is the capital of france"
        assert body["audio_base64"]
        r = await c.post(f"{CONV}/audio?session_id=up&sample_rate=16000", content=b"\x00\x01" * 8000,
                         headers={"content-type": "audio/pcm"})
        assert r.status_code == 200, r.text
        stt = rt.hub.calls  # type: ignore[attr-defined]
        assert stt.count(("stt", "Transcribe")) == 2


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"files": {"file": ("notes.txt", b"hello, this is not audio at all" * 10, "text/plain")}}, 400,
         "not a recognised audio file"),
        ({"files": {"file": ("e.wav", b"", "audio/wav")}}, 400, "empty"),
        ({"data": {"session_id": "x"}, "files": {"other": ("a.wav", wav(), "audio/wav")}}, 400, "no 'file' part"),
        ({"content": b"\x00\x01" * 100, "headers": {"content-type": "audio/pcm"}}, 400, "sample_rate"),
        ({"content": b"\x00" * 101, "headers": {"content-type": "audio/pcm"}, "params": {"sample_rate": 16000}}, 400,
         "even number of bytes"),
        ({"content": b"some text", "headers": {"content-type": "text/plain"}}, 400, "not a recognised audio file"),
        ({"content": b"\x00" * 5000, "headers": {"content-type": "audio/pcm"}, "params": {"sample_rate": 16000}}, 413,
         "the limit is 4096"),
        ({"files": {"file": ("big.wav", wav(b"\x00" * 6000), "audio/wav")}}, 413, "the limit is 4096"),
        ({"content": b"\x00\x01" * 10, "headers": {"content-type": "audio/pcm"}, "params": {"sample_rate": 7}}, 400,
         "sample_rate"),
    ],
)
async def test_bad_uploads(tmp_path: Path, kwargs: dict[str, object], status: int, needle: str) -> None:
    async with conversation_app(tmp_path, max_audio_bytes=4096) as (c, _):
        r = await c.post(f"{CONV}/audio", **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status, r.text
        assert needle in error_of(r)


async def test_a_chunked_upload_past_the_limit_is_cut_off(tmp_path: Path) -> None:
    sent = 0

    async def body() -> object:
        nonlocal sent
        for _ in range(100):
            sent += 1024
            yield b"\x00" * 1024

    async with conversation_app(tmp_path, max_audio_bytes=4096) as (c, _):
        r = await c.post(f"{CONV}/audio?sample_rate=16000", content=body(),  # type: ignore[arg-type]
                         headers={"content-type": "audio/pcm"})
        assert r.status_code == 413


@pytest.mark.parametrize("ctype", ["audio/pcm", "audio/L16", "audio/x-raw; rate=16000"])
@pytest.mark.parametrize("first", [b"\xff\xe0", b"\xff\xff", b"ID", b"Og"], ids=["FFE0", "FFFF", "ID3", "OggS"])
async def test_declared_pcm_with_a_rate_is_pcm_whatever_its_first_bytes(
    tmp_path: Path, ctype: str, first: bytes
) -> None:
    """Regression: a PCM16 body whose first sample is slightly negative (FF Ex) was sniffed as MP3."""
    body = first + (b"3\x04" if first == b"ID" else b"gS" if first == b"Og" else b"") + b"\x10\x00" * 7999
    body = body[: len(body) // 2 * 2]
    async with conversation_app(tmp_path) as (c, rt):
        r = await c.post(f"{CONV}/audio?sample_rate=16000", content=body, headers={"content-type": ctype})
        assert r.status_code == 200, r.text
        (sent,) = rt.hub.transcribed  # type: ignore[attr-defined]
        assert sent.audio.data == body and sent.audio.sample_rate == 16000


async def test_an_undeclared_body_is_still_sniffed(tmp_path: Path) -> None:
    async with conversation_app(tmp_path) as (c, rt):
        r = await c.post(f"{CONV}/audio?sample_rate=16000", content=wav(),
                         headers={"content-type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        (sent,) = rt.hub.transcribed  # type: ignore[attr-defined]
        assert sent.audio.data == wav() and sent.audio.sample_rate == 0  # a container: STT decodes it


def test_sniffing() -> None:
    assert sniff_audio(wav()) == "wav"
    assert sniff_audio(b"OggS\x00\x02") == "ogg" and sniff_audio(b"fLaC\x00") == "flac"
    assert sniff_audio(b"ID3\x04") == "mp3" and sniff_audio(b"\xff\xfb\x90") == "mp3"
    assert sniff_audio(b"\x00\x00\x00\x20ftypM4A ") == "mp4" and sniff_audio(b"\x1aE\xdf\xa3") == "webm"
    assert sniff_audio(b"hello") is None and sniff_audio(b"") is None


async def test_admission_full_is_503_with_retry_after_quickly(tmp_path: Path) -> None:
    async with conversation_app(tmp_path, max_concurrent_turns=1, admission_wait_s=0.3) as (c, rt):
        rt.hub.llm.delay_s = 0.3  # type: ignore[attr-defined]
        first = asyncio.create_task(c.post(CONV, json={"message": "long one", "audio": "none"}))
        await asyncio.wait_for(rt.hub.llm.started.wait(), 10)  # type: ignore[attr-defined]
        t0 = time.monotonic()
        r = await c.post(CONV, json={"message": "me too", "audio": "none"})
        waited = time.monotonic() - t0
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert "max_concurrent_turns = 1" in error_of(r) and r.json()["error"]["code"] == "UNAVAILABLE"
        assert waited < 2.0  # the bound: rejected within 2 s (admission_wait_s = 0.3)
        assert (await first).status_code == 200
        assert rt.admission.rejections == 1 and rt.admission.in_flight == 0


async def test_a_second_request_on_a_busy_session_is_409(tmp_path: Path) -> None:
    async with conversation_app(tmp_path) as (c, rt):
        rt.hub.llm.delay_s = 0.2  # type: ignore[attr-defined]
        first = asyncio.create_task(c.post(CONV, json={"session_id": "one", "message": "hi", "audio": "none"}))
        await asyncio.wait_for(rt.hub.llm.started.wait(), 10)  # type: ignore[attr-defined]
        r = await c.post(CONV, json={"session_id": "one", "message": "again"})
        assert r.status_code == 409 and "already running" in error_of(r)
        other = await c.post(CONV, json={"session_id": "two", "message": "hi", "audio": "none"})
        assert other.status_code == 200  # other sessions are unaffected
        assert (await first).status_code == 200


async def test_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    async with conversation_app(tmp_path, rate_limits=RateLimits(per_minute=3, per_hour=0)) as (c, _):
        codes = [(await c.get("/api/agents")).status_code for _ in range(3)]
        r = await c.get("/api/sessions")
        assert codes == [200, 200, 200] and r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1 and "3 per minute" in error_of(r)


async def test_session_routes(tmp_path: Path) -> None:
    async with conversation_app(tmp_path) as (c, _):
        r = await c.post("/api/sessions", json={"agent": "portuguese", "session_id": "pt"})
        assert r.status_code == 201 and r.json()["language"] == "pt" and r.json()["agent"] == "portuguese"
        assert (await c.post("/api/sessions", json={"session_id": "pt"})).status_code == 200
        fresh = await c.post("/api/sessions")
        assert fresh.status_code == 201 and fresh.json()["agent"] == "assistant"
        listed = (await c.get("/api/sessions")).json()["sessions"]
        assert {s["session_id"] for s in listed} == {"pt", fresh.json()["session_id"]}
        assert (await c.get("/api/sessions/nobody")).status_code == 404
        assert "unknown session 'nobody'" in error_of(await c.get("/api/sessions/nobody/transcript"))
        assert (await c.delete("/api/sessions/nobody")).status_code == 404
        assert (await c.delete("/api/sessions/pt")).json() == {"session_id": "pt", "ended": True, "purged": False}
        assert (await c.get("/api/sessions/pt")).status_code == 404
        assert (await c.get("/api/sessions/pt/transcript")).status_code == 200  # kept after the end
        stored = (await c.get("/api/sessions?stored=true")).json()["stored"]
        assert [s["session_id"] for s in stored] == [fresh.json()["session_id"]]
        assert (await c.delete(f"/api/sessions/{fresh.json()['session_id']}?purge=true")).json()["purged"] is True
        assert (await c.get(f"/api/sessions/{fresh.json()['session_id']}/transcript")).status_code == 404
        agents = (await c.get("/api/agents")).json()
        assert agents["default"] == "assistant" and [a["name"] for a in agents["agents"]] == ["assistant", "portuguese"]
        r = await c.post("/api/sessions", json={"agent": "pirate"})
        assert r.status_code == 404


async def test_a_full_house_is_503(tmp_path: Path) -> None:
    async with conversation_app(tmp_path, max_sessions=1) as (c, _):
        assert (await c.post("/api/sessions")).status_code == 201
        r = await c.post(CONV, json={"message": "hi"})
        assert r.status_code == 503 and "max_sessions" in error_of(r) and r.headers["retry-after"]
