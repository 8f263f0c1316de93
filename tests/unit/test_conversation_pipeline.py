"""Orchestrator text and audio turns on fakes: ordering, overlap, degradation, admission, records, metrics."""

from __future__ import annotations

import asyncio

import pytest

from core.conversation.prompt import INTERRUPTED_MARKER
from core.conversation.types import HistoryItem
from core.errors import InvalidArgument, Overloaded, ServiceUnavailable
from tests.helpers.conversation_fakes import SECONDS_PER_WORD, FakeTts, ListSink, rig

RATE = 24000
TOKENS = ["Well", ",", " the", " capital", " of", " France", " is", " Paris", ".", " It", " is", " lovely", "."]


async def test_text_turn_streams_text_then_ordered_audio_and_reports() -> None:
    r = rig()
    r.hub.llm.tokens = TOKENS
    sink = ListSink()
    record = await r.orch.text_turn(r.session, "What is the capital of France?", sink, out_rate=RATE)
    assert record.outcome == "ok" and not record.degraded and not record.interrupted
    assert record.assistant_text == "Well, the capital of France is Paris. It is lovely."
    assert sink.text() == record.assistant_text
    assert r.hub.tts.texts == ["Well, the capital of France is Paris.", "It is lovely."]
    req = r.hub.tts.requests[0]
    assert (req.format, req.sample_rate, req.engine, req.language) == ("pcm", RATE, "piper", "en")
    types = sink.types()
    assert types.index("audio_start") < types.index("<audio>") < types.index("audio_end")
    assert types[-3:] == ["audio_end", "latency", "turn_complete"]
    assert sink.events("audio_start")[0]["sample_rate"] == RATE
    first, second = (FakeTts.audio_for(t, RATE) for t in ("Well, the capital of France is Paris.", "It is lovely."))
    assert sink.audio() == first + second
    assert max(len(a) for a in sink.items if isinstance(a, bytes)) <= RATE // 10 * 2  # 100 ms frames
    marks = sink.events("latency")[0]["report"]["marks_s"]
    assert list(marks) == ["stt_final", "llm_first_token", "first_chunk_text", "tts_first_audio",
                           "first_audio_sent", "turn_complete"]
    assert sink.events("turn_complete")[0] | {"turn_id": ""} == {
        "type": "turn_complete", "turn_id": "", "outcome": "ok", "degraded": "", "interrupted": False,
        "user_text": "What is the capital of France?", "assistant_text": record.assistant_text,
    }
    assert r.sessions.records == [record] and [h.role for h in r.session.history] == ["user", "assistant"]
    assert r.session.turn_count == 1 and record.index == 0


async def test_tts_runs_while_the_llm_is_still_generating() -> None:
    r = rig()
    r.hub.llm.tokens, r.hub.llm.delay_s = TOKENS, 0.03
    sink = ListSink()
    await r.orch.text_turn(r.session, "hi", sink, out_rate=RATE)
    types = sink.types()
    last_text = len(types) - 1 - types[::-1].index("llm_text")
    assert types.index("<audio>") < last_text, types  # the first chunk was heard before the LLM finished


async def test_audio_goes_out_in_chunk_order_even_when_a_later_chunk_is_ready_first() -> None:
    r = rig()
    r.hub.llm.tokens = TOKENS
    r.hub.tts.delays = {"Paris": 0.2}  # the first chunk is slow, the second fast
    sink = ListSink()
    await r.orch.text_turn(r.session, "hi", sink, out_rate=16000)
    first = FakeTts.audio_for("Well, the capital of France is Paris.", 16000)
    assert sink.audio().startswith(first) and len(sink.audio()) > len(first)
    assert r.hub.tts.texts == ["It is lovely.", "Well, the capital of France is Paris."]  # synthesised out of order


async def test_history_is_cut_to_history_turns_and_interrupted_replies_are_marked() -> None:
    r = rig()
    r.session.history = [
        HistoryItem("user", "one"), HistoryItem("assistant", "first answer"),
        HistoryItem("user", "two"), HistoryItem("assistant", "second answer"),
        HistoryItem("user", "three"), HistoryItem("assistant", "third ans", interrupted=True),
    ]
    await r.orch.text_turn(r.session, "four", ListSink(), out_rate=RATE)
    msgs = [(m.role, m.content) for m in r.hub.llm.requests[0].messages]
    assert msgs == [("system", "Be brief."), ("user", "two"), ("assistant", "second answer"), ("user", "three"),
                    ("assistant", f"third ans {INTERRUPTED_MARKER}"), ("user", "four")]
    req = r.hub.llm.requests[0]
    assert req.max_tokens == r.session.agent.max_tokens and req.temperature == pytest.approx(0.7)


@pytest.mark.parametrize("fail_after", [0, 3, 11])
async def test_llm_failure_speaks_the_fallback_phrase(fail_after: int) -> None:
    r = rig()
    r.hub.llm.tokens, r.hub.llm.fail_after = TOKENS, fail_after
    sink = ListSink()
    record = await r.orch.text_turn(r.session, "hi", sink, out_rate=RATE)
    assert record.outcome == "degraded" and record.degraded == "llm" and "TransportError" in record.error
    assert r.hub.tts.texts[-1] == "Sorry, trouble answering."
    assert sink.text().endswith("Sorry, trouble answering.") and record.assistant_text.endswith("trouble answering.")
    spoken_before = "Well, the capital of France is Paris. " if fail_after > 8 else ""
    assert record.assistant_text == spoken_before + "Sorry, trouble answering."  # the unsaid cut-off is dropped
    assert sink.audio() and sink.types()[-1] == "turn_complete"
    assert r.sessions.records == [record]
    again = await r.orch.text_turn(r.session, "hi", ListSink(), out_rate=RATE)  # the session is still usable
    assert again.outcome == "degraded"  # the fake still fails; the point is that it answers


async def test_an_empty_llm_reply_is_the_fallback() -> None:
    r = rig()
    r.hub.llm.tokens = []
    record = await r.orch.text_turn(r.session, "hi", ListSink(), out_rate=RATE)
    assert record.degraded == "llm" and record.assistant_text == "Sorry, trouble answering."


async def test_tts_failure_keeps_the_text_and_reports_an_error_event() -> None:
    r = rig()
    r.hub.llm.tokens, r.hub.tts.fail_on = TOKENS, "Paris"
    sink = ListSink()
    record = await r.orch.text_turn(r.session, "hi", sink, out_rate=RATE)
    assert record.outcome == "degraded" and record.degraded == "tts"
    assert sink.text() == "Well, the capital of France is Paris. It is lovely." == record.assistant_text
    errors = sink.events("error")
    assert len(errors) == 1 and errors[0]["stage"] == "tts" and errors[0]["code"] == "UNAVAILABLE"
    assert not sink.audio() and "audio_end" not in sink.types()
    r.hub.tts.fail_on = None
    again = await r.orch.text_turn(r.session, "hi", ListSink(), out_rate=RATE)
    assert again.outcome == "ok"


async def test_empty_text_gets_the_not_heard_phrase_without_the_llm() -> None:
    r = rig()
    sink = ListSink()
    record = await r.orch.text_turn(r.session, "   ", sink, out_rate=RATE)
    assert record.degraded == "stt" and record.assistant_text == "Sorry, I didn't catch that."
    assert not r.hub.llm.requests and sink.audio()


async def test_audio_turn_transcribes_then_answers() -> None:
    r = rig(recordings=True)
    sink = ListSink()
    pcm = b"\x00\x01" * 8000
    record = await r.orch.audio_turn(r.session, pcm, sample_rate=8000, sink=sink, out_rate=RATE)
    assert record.user_text == "what is the capital of france" and record.outcome == "ok"
    assert sink.events("transcript") == [{"type": "transcript", "text": record.user_text, "final": True}]
    assert list(record.latency["marks_s"])[:3] == ["speech_end", "turn_end_detected", "stt_final"]
    assert record.latency["voice_to_voice_s"] is not None
    (sid, tid, user_len, reply_len, rate), = r.recorder.saved
    assert (sid, tid, rate) == (r.session.id, record.turn_id, RATE)
    assert user_len == 16000 * 2 and reply_len == len(sink.audio())  # 1 s at 8 kHz -> 16 kHz
    assert record.user_audio_path.endswith(".user.wav") and record.assistant_audio_path.endswith(".assistant.wav")


async def test_audio_turn_degrades_on_stt_failure_and_empty_transcripts() -> None:
    r = rig()
    r.hub.stt.fail = ServiceUnavailable("stt down")
    record = await r.orch.audio_turn(r.session, b"RIFF....", sample_rate=None, sink=ListSink(), out_rate=RATE)
    assert record.degraded == "stt" and "stt down" in record.error
    assert record.assistant_text == "Sorry, I didn't catch that." and not r.hub.llm.requests
    r.hub.stt.fail, r.hub.stt.text = None, ""
    record = await r.orch.audio_turn(r.session, b"RIFF....", sample_rate=None, sink=ListSink(), out_rate=RATE)
    assert record.degraded == "stt" and "empty transcript" in record.error and not r.hub.llm.requests


async def test_unreadable_audio_is_the_clients_error_not_a_turn() -> None:
    r = rig()
    r.hub.stt.fail = InvalidArgument("could not decode the audio")
    with pytest.raises(InvalidArgument):
        await r.orch.audio_turn(r.session, b"junk", sample_rate=None, sink=ListSink(), out_rate=RATE)
    assert not r.sessions.records


async def test_admission_full_raises_overloaded_and_records_nothing() -> None:
    r = rig(capacity=0)
    with pytest.raises(Overloaded):
        await r.orch.text_turn(r.session, "hi", ListSink(), out_rate=RATE)
    assert not r.sessions.records and not r.hub.llm.requests


async def test_one_turn_at_a_time_per_session() -> None:
    r = rig()
    r.hub.llm.delay_s = 0.02
    other = r.sessions.create()
    await asyncio.gather(*(r.orch.text_turn(r.session, f"q{i}", ListSink(), out_rate=RATE) for i in range(3)))
    assert r.admission.max_seen == 1
    assert [rec.index for rec in r.sessions.records] == [0, 1, 2]
    await asyncio.gather(r.orch.text_turn(r.session, "a", ListSink(), out_rate=RATE),
                         r.orch.text_turn(other, "b", ListSink(), out_rate=RATE))
    assert r.admission.max_seen == 2  # two sessions do run side by side


async def test_a_store_failure_is_reported_and_the_turn_still_completes() -> None:
    r = rig()
    r.sessions.fail_record = True
    sink = ListSink()
    record = await r.orch.text_turn(r.session, "hi", sink, out_rate=RATE)
    assert record.outcome == "ok"
    assert [e["stage"] for e in sink.events("error")] == ["store"] and sink.types()[-1] == "turn_complete"


async def test_metrics_count_turns_and_observe_stages() -> None:
    r = rig()
    await r.orch.text_turn(r.session, "hi", ListSink(), out_rate=RATE)
    r.hub.llm.fail_after = 0
    await r.orch.text_turn(r.session, "hi", ListSink(), out_rate=RATE)
    reg = r.orch.ctx.registry
    assert reg.get_sample_value("ultravox_turns_total", {"outcome": "ok"}) == 1
    assert reg.get_sample_value("ultravox_turns_total", {"outcome": "degraded"}) == 1
    assert reg.get_sample_value("ultravox_turn_degraded_total", {"stage": "llm"}) == 1
    assert reg.get_sample_value("ultravox_turn_stage_seconds_count", {"stage": "tts_first_audio"}) == 2
    assert reg.get_sample_value("ultravox_turn_stage_seconds_bucket", {"stage": "total", "le": "0.05"}) == 2
    assert reg.get_sample_value("ultravox_voice_to_voice_seconds_count") == 0  # typed turns have no speech end


async def test_reply_audio_duration_matches_words() -> None:
    r = rig()
    r.hub.llm.tokens = ["One", " two", " three", " four", "."]
    sink = ListSink()
    await r.orch.text_turn(r.session, "count", sink, out_rate=RATE)
    assert len(sink.audio()) == round(4 * SECONDS_PER_WORD * RATE) * 2
