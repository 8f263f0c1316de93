"""HTTP polling against a real main.py and the real services: a typed and a spoken turn each
stream their events through long-polling, ending with turn_complete; the reply audio pieces
join into speech that STT hears as the reply text; one turn at a time per session (409).
This main records turns, so the spoken turn also checks both sides' WAVs on disk."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.stack import MainProcess, make_config_dir, running_main, stack_env
from tests.helpers.text import normalize, word_error_rate

pytestmark = pytest.mark.integration
QUESTION = "What is the capital of France?"
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


@pytest.fixture(scope="module")
def main_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainProcess]:
    tmp: Path = tmp_path_factory.mktemp("polling")
    cfg = make_config_dir(tmp / "config", lambda doc: doc.setdefault("conversation", {}).update(recordings=True))
    with running_main(tmp / "var", stack_env(tmp / "var", cfg), "polling") as m:
        yield m


def poll_turn(m: MainProcess, sid: str, after: int) -> tuple[list[dict[str, Any]], int]:
    """Long-poll until turn_complete; returns the events and how many polls it took."""
    events: list[dict[str, Any]] = []
    for polls in range(1, 500):
        r = httpx.get(f"{m.url}/api/poll/{sid}/events", params={"after": after, "wait": 20}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["missed"] == 0
        events += body["events"]
        after = body["next"]
        if any(e["type"] == "turn_complete" for e in body["events"]):
            return events, polls
    raise AssertionError(f"no turn_complete after 500 polls: {[e['type'] for e in events]}")


def reply_wav(events: list[dict[str, Any]]) -> bytes:
    pieces = [e for e in events if e["type"] == "audio"]
    assert pieces and {p["format"] for p in pieces} == {"pcm_s16le"}
    rate = pieces[0]["sample_rate"]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(base64.b64decode(p["data"]) for p in pieces))
    return buf.getvalue()


def test_a_text_turn_arrives_through_long_polling(main_proc: MainProcess) -> None:
    m = main_proc
    assert httpx.post(f"{m.url}/api/sessions", json={"session_id": "poller"}, timeout=TIMEOUT).status_code == 201
    r = httpx.post(f"{m.url}/api/poll/poller/text", json={"text": QUESTION, "sample_rate": 16000}, timeout=TIMEOUT)
    assert r.status_code == 202, r.text
    start = r.json()
    turn_id = start["turn_id"]
    assert turn_id and start["events_url"].startswith("/api/poll/poller/events")
    again = httpx.post(f"{m.url}/api/poll/poller/text", json={"text": "and again"}, timeout=TIMEOUT)
    assert again.status_code == 409 and "already running" in again.json()["error"]["message"]

    events, polls = poll_turn(m, "poller", start["after"])
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "turn_complete" and events[-1]["outcome"] == "ok"
    assert {"llm_text", "audio_start", "audio", "audio_end", "latency"} <= set(kinds)
    assert kinds.index("audio_start") < kinds.index("audio") < kinds.index("audio_end")
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert {e["turn_id"] for e in events} == {turn_id}
    text = "".join(e["delta"] for e in events if e["type"] == "llm_text")
    assert "paris" in normalize(text) and events[-1]["assistant_text"] == text.strip()
    assert polls < len(events)  # a poll carries a burst of events, not one token each
    wav_bytes = reply_wav(events)
    heard = httpx.post(f"{m.url}/v1/audio/transcriptions", files={"file": ("r.wav", wav_bytes, "audio/wav")},
                       data={"language": "en"}, timeout=TIMEOUT).json()["text"]
    assert word_error_rate(text, heard) <= 0.35, (text, heard)
    stored = httpx.get(f"{m.url}/api/sessions/poller/transcript", timeout=TIMEOUT).json()
    assert stored["turns"][-1]["turn_id"] == turn_id

    caught_up = httpx.get(f"{m.url}/api/poll/poller/events", params={"after": events[-1]["seq"], "wait": 0.5},
                          timeout=TIMEOUT).json()
    assert caught_up["events"] == [] and caught_up["turn_running"] is False


def test_a_spoken_turn_through_polling(main_proc: MainProcess, speech_wav: Any) -> None:
    m = main_proc
    httpx.post(f"{m.url}/api/sessions", json={"session_id": "spoken-poller"}, timeout=TIMEOUT)
    r = httpx.post(f"{m.url}/api/poll/spoken-poller/audio",
                   files={"file": ("q.wav", speech_wav(QUESTION), "audio/wav")}, timeout=TIMEOUT)
    assert r.status_code == 202, r.text
    events, _ = poll_turn(m, "spoken-poller", r.json()["after"])
    final = next(e for e in events if e["type"] == "transcript")
    assert final["final"] is True and word_error_rate(QUESTION, final["text"]) <= 0.2
    assert events[-1]["type"] == "turn_complete" and events[-1]["outcome"] == "ok"
    assert any(e["type"] == "audio" for e in events)
    turn = httpx.get(f"{m.url}/api/sessions/spoken-poller/transcript", timeout=TIMEOUT).json()["turns"][-1]
    user, reply = Path(turn["user_audio_path"]), Path(turn["assistant_audio_path"])
    assert user.parent == m.var_dir / "data" / "recordings" / "spoken-poller" and reply.parent == user.parent
    with wave.open(str(user), "rb") as w:
        assert w.getframerate() == 16000 and w.getnframes() > 16000  # the spoken question, over a second
    with wave.open(str(reply), "rb") as w:
        assert w.getframerate() == 24000 and w.getnframes() > 0


def test_polling_refusals(main_proc: MainProcess) -> None:
    m = main_proc
    assert httpx.get(f"{m.url}/api/poll/nobody-here/events", params={"wait": 0}, timeout=TIMEOUT).status_code == 404
    httpx.post(f"{m.url}/api/sessions", json={"session_id": "strict"}, timeout=TIMEOUT)
    too_long = httpx.get(f"{m.url}/api/poll/strict/events", params={"wait": 60}, timeout=TIMEOUT)
    assert too_long.status_code == 400 and "wait" in too_long.json()["error"]["message"]
    junk = httpx.post(f"{m.url}/api/poll/strict/audio", files={"file": ("x.txt", b"plain text " * 40, "text/plain")},
                      timeout=TIMEOUT)
    assert junk.status_code == 400
    assert httpx.post(f"{m.url}/api/poll/strict/text", json={"text": " "}, timeout=TIMEOUT).status_code == 400
