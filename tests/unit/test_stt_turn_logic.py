"""End of turn in StreamingRecognize, without models: pauses, speculation, the turn model's decision, cancel.

The energy VAD and the recording engine of test_stt_streaming_logic.py; a scripted turn model
answers P(complete). The real Smart Turn model is covered by tests/integration/test_turn_model.py,
and a real stream with real speech by tests/integration/test_stt_streaming.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import InvalidArgument
from services.stt.service import SttService
from tests.helpers.fake_stt import make_service
from tests.unit.test_stt_streaming_logic import (
    CALL,
    EnergyVad,
    RecordingEngine,
    config,
    feed,
    frames,
    kind,
    pcm,
    silence,
    tone,
)
from uvpb import stt_pb2

RATE = 16000


class ScriptedTurnModel:
    """P(complete) from a list, one per call (the last one repeats); records the audio it was given."""

    def __init__(self, *answers: float) -> None:
        self.answers, self.seen = list(answers), []  # type: ignore[var-annotated]

    def probability(self, audio: np.ndarray) -> float:
        self.seen.append(len(audio))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def svc(tmp_path: Path) -> Any:
    service, _ = make_service(
        tmp_path, language="en", vad={"min_speech_ms": 96, "end_silence_ms": 480, "pre_roll_ms": 160},
        turn={"pause_ms": 192, "max_wait_ms": 960},
    )
    service.engine = RecordingEngine()
    service.vad = EnergyVad()
    yield service
    service.close()


async def run(svc: SttService, messages: Iterable[Any] | AsyncIterator[Any]) -> list[Any]:
    source = feed(messages) if not hasattr(messages, "__anext__") else messages
    return [r async for r in svc.streaming_recognize(source, CALL)]  # type: ignore[arg-type]


def kinds(events: list[Any]) -> list[str]:
    return [kind(e) for e in events]


def semantic(**turn: Any) -> Any:
    return config(turn={"detection": stt_pb2.TURN_DETECTION_SEMANTIC, **turn})


async def test_vad_turns_decode_once_at_the_pause_and_that_is_the_final(svc: SttService) -> None:
    events = await run(svc, [config(), *frames(pcm(silence(0.3), tone(1.0), silence(1.0)))])
    assert kinds(events) == ["SPEECH_STARTED", "SPEECH_PAUSED", "SPEECH_ENDED", "FINAL"]
    ended, final = events[2], events[3]
    assert ended.end_reason == "silence" and ended.turn_detection == "vad" and ended.turn_probability == -1
    assert final.speculative and final.text == "hello there"
    assert len(svc.engine.lengths) == 1  # type: ignore[attr-defined]


async def test_speech_after_the_pause_throws_the_speculation_away(svc: SttService) -> None:
    audio = pcm(silence(0.3), tone(1.0), silence(0.3), tone(0.6), silence(1.0))
    events = await run(svc, [config(), *frames(audio)])
    assert kinds(events) == [
        "SPEECH_STARTED", "SPEECH_PAUSED", "SPEECH_RESUMED", "SPEECH_PAUSED", "SPEECH_ENDED", "FINAL"
    ]
    assert {e.utterance for e in events} == {0}
    lengths = svc.engine.lengths  # type: ignore[attr-defined]
    assert lengths[-1] >= int(1.9 * RATE)  # the final holds both parts (and the pause between)
    assert all(n < int(1.5 * RATE) for n in lengths[:-1])  # a speculation, if it ran, stopped at the pause


async def test_no_speculation_decodes_after_the_end_and_reports_no_pause(svc: SttService) -> None:
    events = await run(svc, [config(turn={"no_speculation": True}), *frames(pcm(tone(1.0), silence(1.0)))])
    assert kinds(events) == ["SPEECH_STARTED", "SPEECH_ENDED", "FINAL"]
    assert not events[-1].speculative


async def test_semantic_complete_ends_the_turn_at_the_pause(svc: SttService) -> None:
    model = svc.turn_model = ScriptedTurnModel(0.9)  # type: ignore[assignment]
    events = await run(svc, [semantic(), *frames(pcm(silence(0.3), tone(1.0), silence(1.5)))])
    assert kinds(events) == ["SPEECH_STARTED", "SPEECH_PAUSED", "SPEECH_ENDED", "FINAL"]
    ended = events[2]
    assert ended.end_reason == "semantic" and ended.turn_detection == "semantic"
    assert ended.turn_probability == pytest.approx(0.9)
    assert ended.end_s == pytest.approx(1.3, abs=0.04)  # where the silence began, to the 32 ms frame
    assert model.seen and model.seen[0] >= int(1.0 * RATE)
    assert events[3].speculative


async def test_semantic_incomplete_waits_up_to_max_wait(svc: SttService) -> None:
    svc.turn_model = ScriptedTurnModel(0.1)  # type: ignore[assignment]
    events = await run(svc, [semantic(), *frames(pcm(tone(1.0), silence(1.5)))])
    ended = next(e for e in events if kind(e) == "SPEECH_ENDED")
    assert ended.end_reason == "max_wait" and ended.turn_probability == pytest.approx(0.1)


async def test_an_incomplete_turn_that_goes_on_is_one_utterance(svc: SttService) -> None:
    model = svc.turn_model = ScriptedTurnModel(0.1, 0.8)  # type: ignore[assignment]
    audio = pcm(tone(1.0), silence(0.6), tone(0.8), silence(1.2))  # a hesitation shorter than max_wait
    events = await run(svc, [semantic(), *frames(audio)])
    assert [kind(e) for e in events if kind(e) in ("SPEECH_ENDED", "FINAL")] == ["SPEECH_ENDED", "FINAL"]
    assert {e.utterance for e in events} == {0}
    ended = next(e for e in events if kind(e) == "SPEECH_ENDED")
    assert ended.end_reason == "semantic" and len(model.seen) == 2


async def test_semantic_without_a_model_falls_back_to_vad(svc: SttService) -> None:
    assert svc.turn_model is None
    events = await run(svc, [semantic(), *frames(pcm(tone(1.0), silence(1.0)))])
    ended = next(e for e in events if kind(e) == "SPEECH_ENDED")
    assert ended.turn_detection == "vad" and ended.end_reason == "silence"


async def test_a_cancelled_utterance_gets_no_final_and_the_next_one_does(svc: SttService) -> None:
    engine = svc.engine
    gate = engine.gate = threading.Event()  # type: ignore[attr-defined]

    async def messages() -> AsyncIterator[Any]:
        yield config(turn={"no_speculation": True})
        for m in frames(pcm(tone(1.0), silence(1.0))):
            yield m
        await asyncio.to_thread(engine.started.wait, 10)  # type: ignore[attr-defined]  # utterance 0 decodes
        yield stt_pb2.StreamingRecognizeRequest(cancel=stt_pb2.CancelUtterance(utterance=0))
        gate.set()
        for m in frames(pcm(tone(0.8), silence(1.0))):
            yield m

    events = await run(svc, messages())
    assert [(kind(e), e.utterance) for e in events if kind(e) == "FINAL"] == [("FINAL", 1)]


async def test_cancelling_an_utterance_that_never_began_is_invalid(svc: SttService) -> None:
    bad = stt_pb2.StreamingRecognizeRequest(cancel=stt_pb2.CancelUtterance(utterance=7))
    with pytest.raises(InvalidArgument, match=r"cancel\.utterance 7 is not an utterance of this stream"):
        await run(svc, [config(), bad])


@pytest.mark.parametrize(
    ("turn", "reason"),
    [
        ({"pause_ms": 10}, r"config\.turn\.pause_ms must be 60\.\.2000"),
        ({"max_wait_ms": 20_000}, r"config\.turn\.max_wait_ms must be 200\.\.10000"),
        ({"threshold": 1.5}, r"config\.turn\.threshold must be 0\.01\.\.0\.99"),
        ({"detection": 9}, r"config\.turn\.detection must be TURN_DETECTION_VAD"),
        ({"detection": 2, "pause_ms": 900, "max_wait_ms": 800}, r"must be longer than config\.turn\.pause_ms"),
    ],
)
async def test_bad_turn_settings_are_refused_before_any_audio(
    svc: SttService, turn: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        await run(svc, [config(turn=turn)])
