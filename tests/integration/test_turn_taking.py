"""Turn-taking on a real main.py with the real STT (Whisper + Silero + Smart Turn), LLM and TTS.

A `websockets` client is the microphone (20 ms frames at real time, Piper speech); with a
:class:`Speaker` it is also a phone on speaker without echo cancellation: the reply plays at real
time and comes back into the microphone 160 ms later at -20 dB. Behaviour only, no timings:

- a hesitant utterance (a 0.9 s pause mid-sentence) is one turn with semantic detection, and two
  with the VAD's fixed 600 ms silence;
- a complete question ends at the pause, by the turn model's decision;
- the reply's own echo does not interrupt it (and, with echo cancellation off, the same echo does:
  the setup is a real echo), while real speech over it does;
- a filler over the reply ("Hmmmm.", which Whisper hears as "HMMM.") pauses it, and it resumes; no turn is started;
- past admission capacity, turns are refused explicitly (an error event with retry_after_s and the
  spoken busy phrase), never lost.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.speech import convert, speech_bytes
from tests.helpers.stack import MainProcess, make_config_dir, running_main, stack_env
from tests.helpers.text import normalize, word_error_rate
from tests.helpers.voice_client import Speaker, silence
from tests.helpers.voice_client import VoiceClient as Client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

RATE = 16000
HESITANT = ("So I was wondering if", "you could book a table for four people tonight.")
COMPLETE = "What time does the museum open tomorrow?"
STORY = "Tell me a long story about a brave knight and a dragon."
FOLLOW_UP = "What is the capital of Italy?"


def speech(text: str) -> bytes:
    return convert(speech_bytes(text), RATE, 1).data


def admission(doc: dict[str, Any]) -> None:
    doc.setdefault("conversation", {}).update(max_concurrent_turns=1, admission_wait_s=0.5)


@pytest.fixture(scope="module")
def main_proc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("turn-taking")
    var: Path = tmp / "var"
    with running_main(var, stack_env(var, make_config_dir(tmp / "config", admission)), "turn_taking") as m:
        yield m


async def test_a_hesitant_utterance_is_one_turn_where_a_fixed_silence_cuts_it(main_proc: MainProcess) -> None:
    audio = silence(0.3) + speech(HESITANT[0]) + silence(0.9) + speech(HESITANT[1])
    async with Client.open(main_proc, {"sample_rate": RATE}) as c:
        assert c.events("ready")[0]["turn"]["detection"] == "semantic"
        c.speak(audio)
        done = await c.wait("turn_complete")
        await asyncio.sleep(1.0)
    ends = c.events("speech_ended")
    assert len(ends) == 1 and ends[0]["detection"] == "semantic", ends
    heard = normalize(done["user_text"])
    assert "wondering" in heard and "four people" in heard, done["user_text"]

    async with Client.open(main_proc, {"sample_rate": RATE, "turn": {"detection": "vad"}}) as c:
        c.speak(audio)
        await c.wait("speech_ended", 2)
    ends = c.events("speech_ended")
    assert [e["reason"] for e in ends] == ["silence", "silence"]  # cut mid-sentence: the A/B contrast
    assert "four people" not in normalize(c.events("transcript")[0]["text"])


async def test_a_complete_question_ends_at_the_pause_by_the_turn_model(main_proc: MainProcess) -> None:
    async with Client.open(main_proc, {"sample_rate": RATE}) as c:
        c.speak(silence(0.3) + speech(COMPLETE))
        done = await c.wait("turn_complete")
    end = c.events("speech_ended")[0]
    assert end["reason"] == "semantic" and end["turn_probability"] >= 0.5, end
    assert word_error_rate(COMPLETE, done["user_text"]) <= 0.25 and done["outcome"] == "ok"


async def story_playing(c: Client, speaker: Speaker, seconds: float) -> int:
    """Ask for a story; return once ``seconds`` of its reply have played (the index of its audio_start)."""
    c.speak(silence(0.3) + speech(STORY))
    start = c.index(await c.wait("audio_start"))
    async with asyncio.timeout(60):
        while speaker.played_bytes < seconds * RATE * 2:  # noqa: ASYNC110  (the speaker has no event to wait on)
            await asyncio.sleep(0.05)
    return start


async def test_the_replys_own_echo_does_not_interrupt_it_but_speech_over_it_does(main_proc: MainProcess) -> None:
    speaker = Speaker(gain_db=-20, delay_s=0.16)
    async with Client.open(main_proc, {"sample_rate": RATE}, echo=speaker) as c:
        start = await story_playing(c, speaker, 3.0)
        quiet = [e["type"] for e in c.events(since=start) if e["type"] in ("speech_started", "pause", "flush")]
        assert quiet == [], f"the echo alone was taken for speech: {quiet}"
        c.speak(speech(FOLLOW_UP))
        await c.wait("flush", since=start)
        first = await c.wait("turn_complete")
        second = await c.wait("turn_complete", 2)
    assert first["outcome"] == "interrupted"
    assert word_error_rate(FOLLOW_UP, second["user_text"]) <= 0.25, second


async def test_without_echo_cancellation_the_same_echo_interrupts(main_proc: MainProcess) -> None:
    speaker = Speaker(gain_db=-20, delay_s=0.16)
    config = {"sample_rate": RATE, "turn": {"echo_cancellation": False}}
    async with Client.open(main_proc, config, echo=speaker) as c:
        start = await story_playing(c, speaker, 0.0)
        await c.wait("speech_started", since=start, timeout=60)  # the bot hears itself


async def test_a_filler_sound_over_the_reply_pauses_it_and_it_resumes(main_proc: MainProcess) -> None:
    speaker = Speaker(gain_db=-60, delay_s=0.16)  # a client with echo cancellation: nothing comes back
    config = {"sample_rate": RATE, "turn": {"barge_in_min_speech_ms": 1500}}
    async with Client.open(main_proc, config, echo=speaker) as c:
        start = await story_playing(c, speaker, 1.5)
        c.speak(speech("Hmmmm."))
        paused = await c.wait("pause", since=start)
        resumed = await c.wait("resume", since=c.index(paused))
        done = await c.wait("turn_complete")
        await asyncio.sleep(2.0)
    assert paused["turn_id"] == resumed["turn_id"] == done["turn_id"]
    assert done["outcome"] == "ok" and not c.events("flush")
    assert len(c.events("turn_complete")) == 1, "the filler started a turn"


async def test_past_capacity_turns_are_refused_explicitly_never_lost(main_proc: MainProcess) -> None:
    async def one(i: int) -> dict[str, Any]:
        async with Client.open(main_proc, {"sample_rate": RATE}) as c:
            c.speak(silence(0.3) + speech(COMPLETE))
            kind = await c.wait_any(("turn_complete", "error"), timeout=180)
            if kind["type"] == "error":
                await c.wait("audio_end")  # the busy phrase
            return kind

    results = await asyncio.gather(*(one(i) for i in range(3)))
    refused = [r for r in results if r["type"] == "error"]
    answered = [r for r in results if r["type"] == "turn_complete"]
    assert len(refused) + len(answered) == 3 and refused and answered, results
    assert all(r["code"] == "UNAVAILABLE" and r["retry_after_s"] >= 1 for r in refused), refused
