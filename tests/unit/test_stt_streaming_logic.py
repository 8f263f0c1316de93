"""StreamingRecognize without models: an energy VAD and a fake engine behind the real stream logic.

The energy scorer marks a 32 ms frame as speech when its RMS is above 0.01, so tone bursts are
utterances with exactly known boundaries. The real Silero model and Whisper are covered by
test_vad_model.py and the integration tier.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import InvalidArgument, ResourceExhausted
from services.runtime import CallInfo
from services.stt.audio_window import AudioWindow
from services.stt.engine import DecodeOptions, Transcript
from services.stt.service import SttService
from services.stt.streaming import MAX_FRAME_BYTES
from services.stt.vad import FRAME
from tests.helpers.fake_stt import FakeEngine, make_service
from uvpb import stt_pb2

CALL = CallInfo(method="StreamingRecognize", protocol="grpc", request_id="s1")
RATE = 16000
FRAME_20MS = 640  # bytes


class EnergyScorer:
    def __init__(self) -> None:
        self.pending = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self.pending, samples])
        n = len(audio) // FRAME
        self.pending = audio[n * FRAME :]
        frames = audio[: n * FRAME].reshape(n, FRAME)
        rms = np.sqrt((frames**2).mean(axis=1)) if n else np.zeros(0)
        return np.where(rms > 0.01, 0.95, 0.02).astype(np.float32)


class EnergyVad:
    def stream(self) -> EnergyScorer:
        return EnergyScorer()


class RecordingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.lengths: list[int] = []

    def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Transcript:
        self.lengths.append(len(samples))
        return super().transcribe(samples, options)


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), dtype=np.float32)


def pcm(*parts: np.ndarray) -> bytes:
    return (np.concatenate(parts) * 32767).astype("<i2").tobytes()


def config(**fields: Any) -> Any:
    return stt_pb2.StreamingRecognizeRequest(config={"sample_rate": 16000, **fields})


def frames(data: bytes, size: int = FRAME_20MS) -> list[Any]:
    return [stt_pb2.StreamingRecognizeRequest(audio=data[i : i + size]) for i in range(0, len(data), size)]


async def feed(messages: Iterable[Any]) -> AsyncIterator[Any]:
    for m in messages:
        yield m


def kind(r: Any) -> str:
    return str(stt_pb2.StreamingEventType.Name(r.type))


@pytest.fixture
def svc(tmp_path: Path) -> Any:
    service, _ = make_service(tmp_path, language="en", vad={"min_speech_ms": 96, "end_silence_ms": 320,
                                                            "pre_roll_ms": 160})
    engine = RecordingEngine()
    service.engine = engine
    service.vad = EnergyVad()
    yield service
    service.close()


async def run(svc: SttService, messages: Iterable[Any]) -> list[Any]:
    return [r async for r in svc.streaming_recognize(feed(messages), CALL)]


def by_utterance(events: list[Any]) -> dict[int, list[str]]:
    """Each utterance's events, pauses left out (test_stt_turn_logic.py covers them)."""
    out: dict[int, list[str]] = {}
    for e in events:
        if kind(e) not in ("SPEECH_PAUSED", "SPEECH_RESUMED"):
            out.setdefault(e.utterance, []).append(kind(e))
    return out


async def test_two_utterances_give_started_ended_final_each(svc: SttService) -> None:
    audio = pcm(silence(0.5), tone(1.0), silence(1.0), tone(0.8), silence(0.6))
    events = await run(svc, [config(), *frames(audio)])
    assert by_utterance(events) == {u: ["SPEECH_STARTED", "SPEECH_ENDED", "FINAL"] for u in (0, 1)}
    finals = [e for e in events if kind(e) == "FINAL"]
    assert [f.text for f in finals] == ["hello there"] * 2
    # boundaries on the stream clock, to the 32 ms frame
    assert finals[0].start_s == pytest.approx(0.5, abs=0.033) and finals[0].end_s == pytest.approx(1.5, abs=0.033)
    assert finals[1].start_s == pytest.approx(2.5, abs=0.033) and finals[1].end_s == pytest.approx(3.3, abs=0.033)
    assert finals[0].language == "en" and finals[0].processing_time_s >= 0
    # segments are shifted onto the stream clock: they start where the utterance's audio starts
    assert finals[0].segments[0].start_s == pytest.approx(0.5 - 0.16, abs=0.033)
    engine: Any = svc.engine
    # each final got pre-roll + speech + the pause where its speculative decode began (turn.pause_ms)
    assert engine.lengths[0] / RATE == pytest.approx(0.16 + 1.0 + 0.2, abs=0.07)
    assert len(engine.lengths) == 2  # one decode per utterance: the speculation was the final
    registry = svc.ctx.process.registry
    assert registry.get_sample_value("uv_stt_utterances_total", {"service": "stt"}) == 2
    assert registry.get_sample_value("uv_stt_vad_frames_total", {"service": "stt"}) == len(audio) // 2 // FRAME
    assert registry.get_sample_value("uv_stt_streams_active", {"service": "stt"}) == 0
    assert registry.get_sample_value("uv_stt_final_latency_seconds_count", {"service": "stt"}) == 2


async def test_end_of_input_flushes_the_utterance_in_progress(svc: SttService) -> None:
    audio = pcm(silence(0.3), tone(1.0))
    events = await run(svc, [config(), *frames(audio)])
    assert [kind(e) for e in events] == ["SPEECH_STARTED", "SPEECH_ENDED", "FINAL"]
    assert events[1].end_s == pytest.approx(1.3, abs=0.001)


async def test_one_big_message_gives_the_same_events_as_small_frames(svc: SttService) -> None:
    audio = pcm(silence(0.5), tone(1.0), silence(1.0), tone(0.8), silence(0.6))
    small = await run(svc, [config(), *frames(audio)])
    big = await run(svc, [config(), *frames(audio, size=len(audio))])  # scored in the VAD pool
    odd = await run(svc, [config(), *frames(audio, size=2 * 777)])
    key = [(kind(e), e.utterance, round(e.start_s, 3), round(e.end_s, 3)) for e in small]
    assert sorted(key) == sorted((kind(e), e.utterance, round(e.start_s, 3), round(e.end_s, 3)) for e in big)
    assert sorted(key) == sorted((kind(e), e.utterance, round(e.start_s, 3), round(e.end_s, 3)) for e in odd)


async def test_silence_and_empty_frames_give_no_events(svc: SttService) -> None:
    msgs = [config(), stt_pb2.StreamingRecognizeRequest(audio=b""), *frames(pcm(silence(2.0)))]
    assert await run(svc, msgs) == []


async def test_random_bytes_are_just_noise(svc: SttService) -> None:
    noise = np.random.default_rng(7).bytes(16000 * 2 * 2)
    events = await run(svc, [config(), *frames(noise)])
    assert all(kind(e) in {"SPEECH_STARTED", "SPEECH_ENDED", "FINAL"} for e in events)
    assert await run(svc, [config(), *frames(pcm(tone(0.5)))])  # and the service goes on


async def test_long_speech_is_cut_at_max_utterance(tmp_path: Path) -> None:
    svc, _ = make_service(tmp_path, max_utterance_s=2, vad={"min_speech_ms": 96, "end_silence_ms": 320})
    svc.vad = EnergyVad()
    try:
        events = await run(svc, [config(), *frames(pcm(tone(5.0)))])
    finally:
        svc.close()
    finals = [e for e in events if kind(e) == "FINAL"]
    assert len(finals) == 3
    assert [round(f.end_s, 3) for f in finals[:2]] == [pytest.approx(2.0, abs=0.04), pytest.approx(4.0, abs=0.08)]


async def test_partials_when_asked_and_never_queued_behind_a_busy_engine(svc: SttService) -> None:
    audio = pcm(silence(0.2), tone(3.0), silence(0.6))
    events = await run(svc, [config(partials=True, partial_interval_ms=500), *frames(audio)])
    partials = [e for e in events if kind(e) == "PARTIAL"]
    assert partials and all(p.utterance == 0 and p.text == "hello there" for p in partials)
    assert partials[0].start_s == pytest.approx(0.2, abs=0.033) and partials[0].end_s > partials[0].start_s
    assert kind(events[-1]) == "FINAL"
    registry = svc.ctx.process.registry
    sent, skipped = (registry.get_sample_value("uv_stt_partials_total", {"service": "stt", "outcome": o}) or 0
                     for o in ("sent", "skipped"))
    assert sent == len(partials) and sent + skipped == 5  # one chance per 500 ms of speech, none in the end pause
    assert not [e for e in await run(svc, [config(), *frames(audio)]) if kind(e) == "PARTIAL"]

    engine: Any = svc.engine
    engine.gate = threading.Event()  # the engine hangs on the first partial until all audio is in
    engine.lengths.clear()
    drained = asyncio.Event()

    async def messages() -> AsyncIterator[Any]:
        async for m in feed([config(partials=True, partial_interval_ms=100), *frames(audio)]):
            yield m
        drained.set()

    stream = svc.streaming_recognize(messages(), CALL)
    assert kind(await anext(stream)) == "SPEECH_STARTED"
    await asyncio.to_thread(engine.started.wait, 10)
    await asyncio.wait_for(drained.wait(), 10)
    engine.gate.set()
    rest = [kind(e) async for e in stream if kind(e) != "SPEECH_PAUSED"]
    assert rest == ["PARTIAL", "SPEECH_ENDED", "FINAL"] or rest == ["SPEECH_ENDED", "PARTIAL", "FINAL"]
    assert len(engine.lengths) == 2  # the one partial, then the final: the skipped ones never queued
    skipped_now = registry.get_sample_value("uv_stt_partials_total", {"service": "stt", "outcome": "skipped"})
    assert skipped_now is not None and skipped_now - skipped > 10


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([], "the stream ended before its first message"),
        ([stt_pb2.StreamingRecognizeRequest(audio=b"\x00\x00")], "first message of a stream must be 'config'"),
        ([stt_pb2.StreamingRecognizeRequest()], "got an empty message"),
        ([config(sample_rate=8000)], "sample_rate must be 16000 .* got 8000"),
        ([config(sample_rate=0)], "sample_rate must be 16000 .* got 0"),
        ([config(language="xx")], "language 'xx' is not supported"),
        ([config(beam_size=99)], "beam_size must be 1..20"),
        ([config(partial_interval_ms=20)], "partial_interval_ms must be 100..60000"),
        ([config(vad={"threshold": 2.0})], r"config\.vad\.threshold must be"),
        ([config(vad={"end_silence_ms": -1})], r"config\.vad\.end_silence_ms must be 50\.\.10000"),
    ],
)
async def test_bad_first_messages_fail_before_any_event(svc: SttService, messages: list[Any], reason: str) -> None:
    stream = svc.streaming_recognize(feed(messages), CALL)
    with pytest.raises(InvalidArgument, match=reason):
        await anext(stream)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (stt_pb2.StreamingRecognizeRequest(audio=b"\x01\x02\x03"), "3 bytes, an odd number: PCM16 needs an even"),
        (stt_pb2.StreamingRecognizeRequest(audio=bytes(MAX_FRAME_BYTES + 2)), "over the 1048576-byte limit"),
        (config(), "StreamingConfig may only be the first message"),
        (stt_pb2.StreamingRecognizeRequest(), "must carry 'audio' \\(PCM16 frames\\) or 'cancel'"),
    ],
)
async def test_bad_frames_end_the_stream_after_the_events_before_them(
    svc: SttService, bad: Any, reason: str
) -> None:
    audio = pcm(silence(0.2), tone(0.6), silence(0.6))
    got: list[str] = []
    with pytest.raises(InvalidArgument, match=reason):
        async for e in svc.streaming_recognize(feed([config(), *frames(audio), bad]), CALL):
            got.append(kind(e))
    assert [k for k in got if k != "SPEECH_PAUSED"][:2] == ["SPEECH_STARTED", "SPEECH_ENDED"]
    assert svc.streams == 0
    assert await run(svc, [config(), *frames(audio)])  # the next stream works


@pytest.mark.parametrize(
    ("header", "what"),
    [(b"RIFF\x24\x00\x00\x00WAVEfmt ", "a WAV"), (b"OggS\x00\x02", "an Ogg"), (b"ID3\x04\x00", "an MP3")],
)
async def test_a_file_header_as_the_first_frame_is_refused(svc: SttService, header: bytes, what: str) -> None:
    msgs = [config(), stt_pb2.StreamingRecognizeRequest(audio=header + bytes(1000 - len(header)))]
    with pytest.raises(InvalidArgument, match=f"first audio frame starts like {what} .* raw PCM16"):
        await run(svc, msgs)


async def test_max_streams_refuses_the_next_stream(tmp_path: Path) -> None:
    svc, _ = make_service(tmp_path, max_streams=1)
    svc.vad = EnergyVad()
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[Any]:
        yield config()
        await gate.wait()

    try:
        first = svc.streaming_recognize(slow(), CALL)
        task = asyncio.create_task(anext(first, None))
        await asyncio.sleep(0.05)
        with pytest.raises(ResourceExhausted, match="1 streams open, its limit"):
            await anext(svc.streaming_recognize(feed([config()]), CALL))
        gate.set()
        assert await task is None
    finally:
        svc.close()


async def test_cancel_stops_the_stream_tasks_and_frees_the_slot(svc: SttService) -> None:
    engine: Any = svc.engine
    engine.gate = threading.Event()
    audio = pcm(silence(0.2), tone(0.6), silence(0.6), tone(20.0))
    stream: Any = svc.streaming_recognize(feed([config(), *frames(audio)]), CALL)
    task = asyncio.create_task(anext(stream))
    assert kind(await task) == "SPEECH_STARTED"
    await asyncio.to_thread(engine.started.wait, 10)  # a final is being decoded
    before = {t for t in asyncio.all_tasks() if t.get_name().startswith("stt-stream")}
    assert before
    while True:  # take the events until the stream waits on the engine
        consumer = asyncio.create_task(stream.__anext__())
        done, _ = await asyncio.wait({consumer}, timeout=0.3)
        if not done:
            break
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await stream.aclose()
    await asyncio.sleep(0)
    assert all(t.done() for t in before)
    assert svc.streams == 0
    engine.gate.set()


def test_audio_window_slices_across_chunks_and_forgets_old_ones() -> None:
    w = AudioWindow()
    for i in range(5):
        w.append(np.full(100, i, dtype=np.float32))
    assert w.end == 500 and len(w) == 500
    assert w.slice(150, 260).tolist() == [1.0] * 50 + [2.0] * 60
    w.drop_before(250)
    assert w.first == 200 and w.slice(0, 210).tolist() == [2.0] * 10
    assert w.slice(600, 700).size == 0
