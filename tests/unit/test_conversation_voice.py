"""VoiceConversation on fakes: VAD events to turns, barge-in, push-to-talk, STT failures, the outbox."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.conversation import Outbox
from core.conversation.control import Command, TextMessage, VoiceConfig, parse_control
from core.errors import InvalidArgument, TransportError
from tests.helpers.conversation_fakes import ListSink, Rig, rig

RATE = 16000
FRAME = b"\x10\x00" * 320  # 20 ms at 16 kHz


async def feed_seconds(conv: object, seconds: float) -> None:
    for _ in range(round(seconds / 0.02)):
        await conv.feed(FRAME)  # type: ignore[attr-defined]
    await asyncio.sleep(0.01)


async def utterance(r: Rig, n: int, text: str, end_s: float) -> None:
    r.hub.stt.push("SPEECH_STARTED", n, start_s=end_s - 0.5)
    r.hub.stt.push("SPEECH_ENDED", n, start_s=end_s - 0.5, end_s=end_s)
    r.hub.stt.push("FINAL", n, text=text, start_s=end_s - 0.5, end_s=end_s)


async def test_vad_events_become_a_turn_with_voice_to_voice() -> None:
    r = rig()
    sink = ListSink()
    async with r.orch.voice(r.session, sink, out_rate=RATE, end_silence_ms=450, partials=True) as conv:
        await feed_seconds(conv, 1.0)
        cfg = r.hub.stt.configs[0]
        assert (cfg.sample_rate, cfg.language, cfg.vad.end_silence_ms, cfg.partials) == (16000, "en", 450, True)
        r.hub.stt.push("SPEECH_STARTED", 0, start_s=0.2)
        r.hub.stt.push("PARTIAL", 0, text="what is")
        r.hub.stt.push("SPEECH_ENDED", 0, start_s=0.2, end_s=0.6)
        r.hub.stt.push("FINAL", 0, text=" what is the capital ", start_s=0.2, end_s=0.6)
        done = await sink.wait_for("turn_complete")
    assert sink.types()[:4] == ["speech_started", "transcript", "speech_ended", "transcript"]
    assert [e["final"] for e in sink.events("transcript")] == [False, True]
    assert done["outcome"] == "ok" and done["user_text"] == "what is the capital"
    report = sink.events("latency")[0]["report"]
    assert list(report["marks_s"])[:4] == ["speech_end", "turn_end_detected", "stt_final", "llm_first_token"]
    assert report["voice_to_voice_s"] > 0 and report["vad_s"] >= 0
    assert sum(len(f) for f in r.hub.stt.frames) == 50 * len(FRAME)


async def test_speech_end_maps_to_the_arrival_of_that_audio() -> None:
    r = rig()
    sink = ListSink()
    async with r.orch.voice(r.session, sink, out_rate=RATE) as conv:
        t0 = time.monotonic()
        await feed_seconds(conv, 0.5)
        await asyncio.sleep(0.3)
        await feed_seconds(conv, 0.5)  # the second half arrives 0.3 s later
        await utterance(r, 0, "hello", end_s=0.9)
        await sink.wait_for("turn_complete")
    report = sink.events("latency")[0]["report"]
    assert report["vad_s"] >= 0.0  # speech end (arrival of 0.9 s of audio) is before SPEECH_ENDED came
    assert report["vad_s"] < time.monotonic() - t0


async def test_barge_in_while_generating_cancels_llm_and_tts_and_flushes() -> None:
    r = rig()
    r.hub.llm.tokens = ["Paris", " is", " the", " capital", ",", " and", " it", " is", " big", "."]
    r.hub.llm.hang_after = 6
    sink = ListSink()
    async with r.orch.voice(r.session, sink, out_rate=RATE) as conv:
        await feed_seconds(conv, 0.2)
        await utterance(r, 0, "tell me about paris", end_s=0.2)
        await sink.wait_for("audio_start")
        r.hub.stt.push("SPEECH_STARTED", 1, start_s=1.0)
        await sink.wait_for("flush")
        first = await sink.wait_for("turn_complete")
        assert first["outcome"] == "interrupted" and first["interrupted"]
        assert r.hub.llm.closed == 1  # the hanging Generate stream was closed
        r.hub.llm.hang_after = None
        r.hub.stt.push("SPEECH_ENDED", 1, start_s=1.0, end_s=1.5)
        r.hub.stt.push("FINAL", 1, text="and rome?", start_s=1.0, end_s=1.5)
        second = await sink.wait_for("turn_complete", 2)
    types = sink.types()
    flush_at = types.index("flush")
    assert "<audio>" not in types[flush_at: types.index("audio_start", flush_at)]
    assert second["outcome"] == "ok" and second["user_text"] == "and rome?"
    interrupted, _ = r.sessions.records
    assert interrupted.interrupted and interrupted.assistant_text == "Paris is the capital,"
    assert r.session.history[1].interrupted and r.session.history[1].text == "Paris is the capital,"
    msgs = [m.content for m in r.hub.llm.requests[1].messages]
    assert "Paris is the capital, [interrupted by the user]" in msgs
    assert r.orch.ctx.registry.get_sample_value("ultravox_barge_ins_total") == 1


async def test_barge_in_during_playback_keeps_only_what_was_heard() -> None:
    r = rig()
    r.hub.llm.tokens = ["One", " two", " three", ".", " Four", " five", " six", " seven", " eight", "."] * 3
    sink = ListSink()
    async with r.orch.voice(r.session, sink, out_rate=RATE) as conv:
        await feed_seconds(conv, 0.2)
        await utterance(r, 0, "count", end_s=0.2)
        await sink.wait_for("audio_end")  # all sent; about 1.2 s of playback remains on the client
        assert "turn_complete" not in sink.types()
        await asyncio.sleep(0.1)
        await conv.interrupt()
        done = await sink.wait_for("turn_complete")
    assert done["outcome"] == "interrupted"
    assert sink.types()[-2:] == ["flush", "turn_complete"]
    heard = r.sessions.records[0].assistant_text
    assert heard.startswith("One two three.") and len(heard) < len(sink.text())


async def test_playback_that_runs_out_completes_the_turn_ok() -> None:
    r = rig()
    sink = ListSink()
    async with r.orch.voice(r.session, sink, out_rate=RATE) as conv:
        await feed_seconds(conv, 0.2)
        await utterance(r, 0, "hi", end_s=0.2)
        t_end = (await sink.wait_for("audio_end"), time.monotonic())[1]
        done = await sink.wait_for("turn_complete")
    assert done["outcome"] == "ok" and time.monotonic() - t_end >= 0.1  # 4 words of 50 ms were played out


async def test_push_to_talk_ends_the_stream_and_the_next_frame_opens_another() -> None:
    r = rig()
    sink = ListSink()
    async with r.orch.voice(r.session, sink, out_rate=RATE) as conv:
        await feed_seconds(conv, 0.4)
        r.hub.stt.push("SPEECH_STARTED", 0, start_s=0.1)
        await asyncio.sleep(0.01)
        await conv.end_utterance()
        r.hub.stt.push("SPEECH_ENDED", 0, start_s=0.1, end_s=0.4)
        r.hub.stt.push("FINAL", 0, text="hi there", start_s=0.1, end_s=0.4)
        await sink.wait_for("turn_complete")
        await asyncio.wait_for(r.hub.stt.ended.wait(), 2)
        await feed_seconds(conv, 0.1)
        assert r.hub.stt.streams == 2
    assert sink.events("turn_complete")[0]["user_text"] == "hi there"


async def test_a_broken_stt_stream_mid_utterance_says_not_heard_and_recovers() -> None:
    r = rig()
    sink = ListSink()
    async with r.orch.voice(r.session, sink, out_rate=RATE) as conv:
        await feed_seconds(conv, 0.2)
        r.hub.stt.push("SPEECH_STARTED", 0, start_s=0.1)
        r.hub.stt.break_stream(TransportError("stt.StreamingRecognize over grpc broke"))
        done = await sink.wait_for("turn_complete")
        assert done["outcome"] == "degraded" and done["degraded"] == "stt"
        assert done["assistant_text"] == "Sorry, I didn't catch that."
        error = sink.events("error")[0]
        assert error["stage"] == "stt" and error["code"] == "UNAVAILABLE"
        await feed_seconds(conv, 0.1)  # within the retry backoff: dropped
        assert r.hub.stt.streams == 1 and conv.dropped_frames > 0
        await asyncio.sleep(0.6)
        await feed_seconds(conv, 0.1)
        assert r.hub.stt.streams == 2
        await utterance(r, 0, "hello again", end_s=0.1)
        second = await sink.wait_for("turn_complete", 2)
    assert second["outcome"] == "ok" and r.hub.llm.requests[0].messages[-1].content == "hello again"


async def test_typed_text_interrupts_and_overloaded_is_an_error_event() -> None:
    r = rig()
    r.hub.llm.hang_after = 2
    sink = ListSink()
    async with r.orch.voice(r.session, sink, out_rate=RATE) as conv:
        await conv.say("first")
        await asyncio.wait_for(r.hub.llm.started.wait(), 2)
        await asyncio.sleep(0.05)
        r.hub.llm.hang_after = None
        await conv.say("second")
        second = await sink.wait_for("turn_complete", 2)
        assert [rec.outcome for rec in r.sessions.records] == ["interrupted", "ok"] and second["user_text"] == "second"
        r.admission.capacity = 0
        await conv.say("third")
        error = await sink.wait_for("error")
    assert error["code"] == "UNAVAILABLE" and error["retry_after_s"] == 2.0


async def test_close_interrupts_and_records_the_turn_in_flight() -> None:
    r = rig()
    r.hub.llm.hang_after = 3
    sink = ListSink()
    conv = r.orch.voice(r.session, sink, out_rate=RATE)
    async with conv:
        await conv.say("tell me everything")
        await asyncio.wait_for(r.hub.llm.started.wait(), 2)
        await asyncio.sleep(0.05)
    assert [rec.outcome for rec in r.sessions.records] == ["interrupted"] and r.hub.llm.closed == 1
    await conv.feed(FRAME)  # after close: ignored
    assert r.hub.stt.streams == 0


async def test_outbox_drops_audio_past_its_bound_and_on_flush() -> None:
    box = Outbox(max_audio_bytes=1000, max_events=3)
    await box.send_event({"type": "audio_start"})
    for _ in range(3):
        await box.send_audio(b"\x00" * 400)
    assert box.pending_audio_bytes == 800 and box.dropped_audio_bytes == 400
    await box.send_event({"type": "flush"})
    assert box.pending_audio_bytes == 0
    items = [await box.get() for _ in range(3)]
    assert [i["type"] for i in items if isinstance(i, dict)] == ["audio_start", "error", "flush"]
    for i in range(4):
        await box.send_event({"type": "llm_text", "delta": str(i)})
    assert box.overflowed.is_set() and box.closed
    got = [await box.get() for _ in range(4)]
    assert got[-1] is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"type": "dance"}', "unknown control message type 'dance'"),
        ('{"type": "config", "sample_rate": 3}', "sample_rate"),
        ('{"type": "config", "colour": "red"}', "colour"),
        ('{"type": "text"}', "text"),
        ('{"type": "text", "text": "' + "a" * 30 + '"}', "over the 20-character limit"),
        ('{"type": "end", "now": true}', "now"),
    ],
)
def test_bad_control_messages_say_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        parse_control(raw, max_text_chars=20)


def test_good_control_messages() -> None:
    cfg = parse_control('{"type": "config", "session_id": "abc", "sample_rate": 16000}', max_text_chars=20)
    assert isinstance(cfg, VoiceConfig) and cfg.session_id == "abc" and cfg.sample_rate == 16000
    assert isinstance(parse_control('{"type": "text", "text": "hi"}', max_text_chars=20), TextMessage)
    assert isinstance(parse_control('{"type": "interrupt"}', max_text_chars=20), Command)


async def test_a_long_unanswered_stream_is_replaced_in_a_quiet_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression guard: the hub keeps a stream's requests until its first response (replay buffer)."""
    from core.conversation import voice

    monkeypatch.setattr(voice, "RECYCLE_UNANSWERED_S", 0.2)
    r = rig()
    async with r.orch.voice(r.session, ListSink(), out_rate=RATE) as conv:
        loud = b"\x00\x40" * 320
        for _ in range(20):
            await conv.feed(loud)
        await asyncio.sleep(0.01)
        assert r.hub.stt.streams == 1  # never cut while there is sound
        await conv.feed(b"\x00\x00" * 320)
        await asyncio.sleep(0.01)
        assert r.hub.stt.streams == 2
