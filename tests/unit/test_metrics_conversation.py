"""Turn outcomes (rejected and failed included), conversation errors and the latency log line, on fakes."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from core.errors import InvalidArgument, Overloaded
from core.logs import session_id_var, turn_id_var
from tests.helpers.conversation_fakes import ListSink, rig

RATE = 24000


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


async def test_every_outcome_and_stage_has_a_series_before_the_first_turn() -> None:
    reg = rig().orch.ctx.registry
    for outcome in ("ok", "interrupted", "degraded", "rejected", "failed"):
        assert value(reg, "ultravox_turns_total", outcome=outcome) == 0
    for stage in ("vad", "stt", "llm_first_token", "first_chunk", "tts_first_audio", "send", "total"):
        assert value(reg, "ultravox_turn_stage_seconds_count", stage=stage) == 0
    for stage in ("stt", "llm", "tts"):
        assert value(reg, "ultravox_turn_degraded_total", stage=stage) == 0
    assert value(reg, "ultravox_errors_total", source="conversation", type="UNAVAILABLE") == 0


async def test_admission_rejections_and_bad_audio_are_rejected_turns_with_their_error_code() -> None:
    r = rig(capacity=0)
    with pytest.raises(Overloaded):
        await r.orch.text_turn(r.session, "hi", ListSink(), out_rate=RATE)
    r2 = rig()
    r2.hub.stt.fail = InvalidArgument("could not decode the audio")
    with pytest.raises(InvalidArgument):
        await r2.orch.audio_turn(r2.session, b"junk", sample_rate=None, sink=ListSink(), out_rate=RATE)
    reg, reg2 = r.orch.ctx.registry, r2.orch.ctx.registry
    assert value(reg, "ultravox_turns_total", outcome="rejected") == 1
    assert value(reg, "ultravox_errors_total", source="conversation", type="UNAVAILABLE") == 1
    assert value(reg2, "ultravox_turns_total", outcome="rejected") == 1
    assert value(reg2, "ultravox_errors_total", source="conversation", type="INVALID_ARGUMENT") == 1
    assert value(reg2, "ultravox_turns_total", outcome="ok") == 0


async def test_a_bug_in_a_turn_is_a_failed_turn() -> None:
    r = rig()

    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    r.orch.replies.reply = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await r.orch.text_turn(r.session, "hi", ListSink(), out_rate=RATE)
    reg = r.orch.ctx.registry
    assert value(reg, "ultravox_turns_total", outcome="failed") == 1
    assert value(reg, "ultravox_errors_total", source="conversation", type="INTERNAL") == 1


async def test_stage_error_events_are_counted_once_by_code() -> None:
    r = rig()
    r.hub.llm.tokens, r.hub.tts.fail_on = ["Hello", " there", "."], "Hello"
    sink = ListSink()
    record = await r.orch.text_turn(r.session, "hi", sink, out_rate=RATE)
    assert record.degraded == "tts"
    assert [e["code"] for e in sink.events("error")] == ["UNAVAILABLE"]  # the client still gets it
    reg = r.orch.ctx.registry
    assert value(reg, "ultravox_errors_total", source="conversation", type="UNAVAILABLE") == 1
    assert value(reg, "ultravox_turns_total", outcome="degraded") == 1
    assert value(reg, "ultravox_turn_degraded_total", stage="tts") == 1


async def test_the_latency_line_names_its_session_and_turn(caplog: pytest.LogCaptureFixture) -> None:
    r = rig()
    with caplog.at_level(logging.INFO):
        record = await r.orch.text_turn(r.session, "hi", ListSink(), out_rate=RATE)
    (line,) = [rec for rec in caplog.records if rec.getMessage() == "turn latency"]
    fields = vars(line)
    assert fields["turn_id"] == record.turn_id and fields["session_id"] == r.session.id
    assert fields["outcome"] == "ok" and isinstance(fields["total_s"], float)
    assert session_id_var.get() == "" and turn_id_var.get() == ""  # the turn's context did not leak
