"""Turn-taking in a VoiceConversation on fakes: a sound over a reply pauses it, words or a lasting speech
interrupt it, anything else resumes it; refused turns cancel their STT final and say the busy phrase;
the session's, agent's and server's settings reach the STT stream.

The real thing (real STT with Smart Turn, real echo, real replies) is tests/integration/test_turn_taking.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from core.config import TurnTaking
from core.conversation.types import AgentConfig
from core.conversation.voice import VoiceConversation
from tests.helpers.conversation_fakes import ListSink, Rig, rig
from uvpb import stt_pb2

RATE = 16000
FRAME = b"\x10\x00" * 320  # 20 ms at 16 kHz
LONG_REPLY = ["One", " two", " three", ".", " Four", " five", " six", " seven", " eight", "."] * 6  # ~3 s


async def feed_seconds(conv: object, seconds: float) -> None:
    for _ in range(round(seconds / 0.02)):
        await conv.feed(FRAME)  # type: ignore[attr-defined]
    await asyncio.sleep(0.01)


async def ask(r: Rig, sink: ListSink, text: str = "count", n: int = 0) -> None:
    r.hub.stt.push("SPEECH_STARTED", n, start_s=0.0)
    r.hub.stt.push("SPEECH_ENDED", n, start_s=0.0, end_s=0.2)
    r.hub.stt.push("FINAL", n, text=text, start_s=0.0, end_s=0.2)
    await sink.wait_for("audio_end")  # the reply is all sent; it plays for a few seconds more


@contextlib.asynccontextmanager
async def reply_playing(r: Rig, sink: ListSink) -> AsyncIterator[VoiceConversation]:
    """A voice conversation whose (long) reply to a first question is all sent and still playing."""
    r.hub.llm.tokens = LONG_REPLY
    async with r.orch.voice(r.session, sink, out_rate=RATE) as conv:
        await feed_seconds(conv, 0.2)
        await ask(r, sink)
        yield conv


def checks(r: Rig, outcome: str) -> float:
    return r.orch.ctx.registry.get_sample_value("ultravox_barge_in_checks_total", {"outcome": outcome}) or 0.0


async def test_a_cough_over_the_reply_pauses_it_and_then_it_resumes() -> None:
    r = rig()
    sink = ListSink()
    async with reply_playing(r, sink):
        r.hub.stt.push("SPEECH_STARTED", 1, start_s=1.0)
        paused = await sink.wait_for("pause")
        r.hub.stt.push("SPEECH_ENDED", 1, start_s=1.0, end_s=1.3)
        r.hub.stt.push("FINAL", 1, text="", start_s=1.0, end_s=1.3)
        resumed = await sink.wait_for("resume")
        done = await sink.wait_for("turn_complete")
        await asyncio.sleep(0.1)
    assert paused["turn_id"] == resumed["turn_id"] == done["turn_id"]
    assert done["outcome"] == "ok" and "flush" not in sink.types()
    assert len(sink.events("turn_complete")) == 1  # the cough started no turn (no "didn't catch that")
    assert checks(r, "resumed") == 1 and checks(r, "confirmed") == 0


async def test_words_over_the_reply_interrupt_it_and_become_the_next_turn() -> None:
    r = rig()
    sink = ListSink()
    async with reply_playing(r, sink):
        r.hub.stt.push("SPEECH_STARTED", 1, start_s=1.0)
        await sink.wait_for("pause")
        r.hub.llm.tokens = ["Sure", "."]
        r.hub.stt.push("SPEECH_ENDED", 1, start_s=1.0, end_s=1.3)
        r.hub.stt.push("FINAL", 1, text="Stop.", start_s=1.0, end_s=1.3)
        first = await sink.wait_for("turn_complete")
        second = await sink.wait_for("turn_complete", 2)
    assert first["outcome"] == "interrupted" and second["outcome"] == "ok" and second["user_text"] == "Stop."
    assert checks(r, "confirmed") == 1


async def test_speech_that_lasts_interrupts_before_its_transcript() -> None:
    r = rig()
    sink = ListSink()
    async with reply_playing(r, sink):
        r.hub.stt.push("SPEECH_STARTED", 1, start_s=1.0)  # and it goes on: no pause, no end
        await sink.wait_for("flush", timeout=2.0)  # barge_in_min_speech_ms (500) later
        first = await sink.wait_for("turn_complete")
    assert first["outcome"] == "interrupted"
    assert sink.types().index("pause") < sink.types().index("flush")


async def test_with_no_barge_in_rule_speech_interrupts_at_once() -> None:
    r = rig(turn=TurnTaking(barge_in_min_speech_ms=0, barge_in_min_words=0))
    sink = ListSink()
    async with reply_playing(r, sink):
        r.hub.stt.push("SPEECH_STARTED", 1, start_s=1.0)
        await sink.wait_for("flush", timeout=1.0)
    assert "pause" not in sink.types()


async def test_no_words_within_the_window_resumes_and_later_words_still_interrupt() -> None:
    r = rig(turn=TurnTaking(resume_after_ms=300))
    sink = ListSink()
    async with reply_playing(r, sink):
        r.hub.stt.push("SPEECH_STARTED", 1, start_s=1.0)
        r.hub.stt.push("SPEECH_ENDED", 1, start_s=1.0, end_s=1.3)  # ...and its transcript is slow
        await sink.wait_for("resume", timeout=2.0)
        r.hub.stt.push("FINAL", 1, text="wait a second", start_s=1.0, end_s=1.3)
        await sink.wait_for("flush")
        second = await sink.wait_for("turn_complete", 2)
    assert second["user_text"] == "wait a second"


async def test_a_refused_turn_cancels_its_final_and_says_the_busy_phrase() -> None:
    r = rig(capacity=0)  # every slot busy
    sink = ListSink()
    async with r.orch.voice(r.session, sink, out_rate=RATE) as conv:
        await feed_seconds(conv, 0.2)
        r.hub.stt.push("SPEECH_STARTED", 0, start_s=0.0)
        r.hub.stt.push("SPEECH_ENDED", 0, start_s=0.0, end_s=0.5)
        error = await sink.wait_for("error")
        await sink.wait_for("audio_end")
        await feed_seconds(conv, 0.1)  # the cancel goes out with the next frames
    assert error["code"] == "UNAVAILABLE" and error["retry_after_s"] == 2.0
    assert r.hub.stt.cancels == [0]
    assert r.hub.tts.texts == [r.session.agent.busy_phrase] and sink.audio()
    assert r.hub.llm.requests == []


async def test_turn_taking_settings_layer_server_agent_session() -> None:
    r = rig(turn=TurnTaking(pause_ms=250, threshold=0.6))
    r.session.agent = AgentConfig(
        name="a", system_prompt="x", turn=TurnTaking(max_wait_ms=2000, detection="semantic"),
    )
    sink = ListSink()
    session_turn = TurnTaking(detection="vad", speculation=False)
    async with r.orch.voice(r.session, sink, out_rate=RATE, turn=session_turn) as conv:
        await feed_seconds(conv, 0.1)
        policy = conv.policy
    turn = r.hub.stt.configs[0].turn
    assert (turn.detection, turn.pause_ms, turn.max_wait_ms, turn.no_speculation) == (
        stt_pb2.TURN_DETECTION_VAD, 250, 2000, True
    )
    assert abs(turn.threshold - 0.6) < 1e-6
    assert policy.barge_in_min_speech_ms == 500 and policy.echo_cancellation  # the built-in defaults


def test_fillers_are_not_words_however_whisper_spells_them() -> None:
    from core.conversation.voice import words

    for filler in ("HMMMM", "Hmm.", "mm-hmm", "Mhm.", "uh-huh", "Uh.", "Umm,", "erm", "Oh.", "huh?", "..."):
        assert words(filler) == 0, filler
    assert [words(t) for t in ("Stop.", "home", "mom", "um, stop", "Hmm, wait a second")] == [1, 1, 1, 1, 3]
