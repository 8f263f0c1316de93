"""Streaming STT and VAD on the real service subprocess (its venv, Whisper base, Silero v6).

Two Piper sentences joined by 1.2 s of silence, streamed as 20 ms PCM16 frames over gRPC (faster
than real time), must give exactly two SPEECH_STARTED / SPEECH_ENDED / FINAL sequences with the
right texts, directly and through the hub on each protocol; the same clip gives two segments
from DetectSpeech (gRPC, HTTP msgpack) and from ``POST /detect``. Bad streams get clear
INVALID_ARGUMENTs and the service keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import grpc
import msgpack
import numpy as np
import pytest

from core.config import load_settings
from core.context import GlobalContext, Paths, ProcessContext
from core.errors import InvalidArgument
from core.managers.endpoint import Endpoint
from core.managers.hub import CommunicationManager
from core.wire import operation
from core.wire.codec import message_to_dict
from core.wire.frames import MSGPACK_TYPE, FrameReader, frame_message
from tests.helpers.service_process import eventually
from tests.helpers.speech import Pcm, convert, pcm_to_wav
from tests.helpers.stt_process import SttProcess
from tests.helpers.text import word_error_rate
from uvpb import stt_pb2

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FIRST = "Please call Stella and ask her to bring these things with her from the store."
SECOND = "The quick brown fox jumps over the lazy dog near the river bank."
STREAM = operation("stt", "StreamingRecognize")
DETECT = operation("stt", "DetectSpeech")
FRAME = 640  # 20 ms of PCM16 at 16 kHz


@pytest.fixture(scope="module")
def stt(stt_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SttProcess]:
    with SttProcess(stt_python, tmp_path_factory.mktemp("stt-stream"), options={"language": "en"}).running() as proc:
        yield proc


def silence(seconds: float) -> bytes:
    return b"\x00\x00" * int(16000 * seconds)


@pytest.fixture(scope="module")
def spans(speech_wav: Callable[[str], bytes]) -> tuple[bytes, list[tuple[float, float]]]:
    """PCM16 16 kHz (0.5 s silence, FIRST, 1.2 s silence, SECOND, 1.0 s silence), and where each WAV lies."""
    a, b = convert(speech_wav(FIRST), 16000, 1), convert(speech_wav(SECOND), 16000, 1)
    b_at = 0.5 + a.duration_s + 1.2
    pcm = silence(0.5) + a.data + silence(1.2) + b.data + silence(1.0)
    return pcm, [(0.5, 0.5 + a.duration_s), (b_at, b_at + b.duration_s)]


@pytest.fixture(scope="module")
def two_sentences(spans: tuple[bytes, list[tuple[float, float]]]) -> bytes:
    return spans[0]


def config(**fields: Any) -> Any:
    return STREAM.request(config={"sample_rate": 16000, "language": "en", **fields})


def audio_frames(data: bytes, size: int = FRAME) -> list[Any]:
    return [STREAM.request(audio=data[i : i + size]) for i in range(0, len(data), size)]


def stream(stt: SttProcess, messages: Iterable[Any], timeout: float = 300) -> Any:
    stub = stt.channel.stream_stream(
        STREAM.grpc_path, request_serializer=STREAM.request.SerializeToString,
        response_deserializer=STREAM.response.FromString,
    )
    return stub(iter(messages), metadata=[("x-internal-token", stt.token)], timeout=timeout)


def kind(r: Any) -> str:
    return str(stt_pb2.StreamingEventType.Name(r.type))


def events_by_utterance(events: list[Any]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for e in events:
        if kind(e) not in ("PARTIAL", "SPEECH_PAUSED", "SPEECH_RESUMED"):
            out.setdefault(e.utterance, []).append(kind(e))
    return out


def assert_two_utterances(events: list[Any]) -> list[Any]:
    assert events_by_utterance(events) == {u: ["SPEECH_STARTED", "SPEECH_ENDED", "FINAL"] for u in (0, 1)}, [
        (kind(e), e.utterance, e.text) for e in events
    ]
    finals = [e for e in events if kind(e) == "FINAL"]
    for final, text in zip(finals, (FIRST, SECOND), strict=True):
        assert word_error_rate(text, final.text) <= 0.2, final.text
    return finals


def test_speech_silence_speech_gives_two_utterances_with_the_right_texts(
    stt: SttProcess, spans: tuple[bytes, list[tuple[float, float]]]
) -> None:
    two_sentences, truth = spans
    events = list(stream(stt, [config(), *audio_frames(two_sentences)]))
    finals = assert_two_utterances(events)
    for f, (start, end) in zip(finals, truth, strict=True):  # Piper pads each WAV with a little silence
        assert start <= f.start_s < start + 0.5 and end - 0.6 < f.end_s <= end + 0.1, (f.start_s, f.end_s)
    for f in finals:
        assert f.language == "en" and f.processing_time_s > 0 and f.segments
        assert f.segments[0].start_s >= f.start_s - 0.35  # segments sit on the stream clock
    ended = [e for e in events if kind(e) == "SPEECH_ENDED"]
    assert [e.end_s for e in ended] == [f.end_s for f in finals]
    assert stt.metric("uv_stt_utterances_total") >= 2
    assert stt.metric("uv_stt_vad_frames_total") >= len(two_sentences) // 2 // 512


def test_partials_appear_when_asked(stt: SttProcess, two_sentences: bytes) -> None:
    events = list(stream(stt, [config(partials=True, partial_interval_ms=500), *audio_frames(two_sentences)]))
    assert_two_utterances(events)
    partials = [e for e in events if kind(e) == "PARTIAL"]
    assert partials and all(p.text for p in partials)
    for p in partials:  # a partial comes before its utterance's FINAL
        final_at = next(i for i, e in enumerate(events) if kind(e) == "FINAL" and e.utterance == p.utterance)
        assert events.index(p) < final_at


def test_end_of_input_flushes_the_utterance_in_progress(stt: SttProcess, speech_wav: Callable[[str], bytes]) -> None:
    speech = convert(speech_wav(FIRST), 16000, 1).data
    events = list(stream(stt, [config(), *audio_frames(silence(0.3) + speech[: len(speech) * 2 // 3 // 2 * 2])]))
    assert [kind(e) for e in events] == ["SPEECH_STARTED", "SPEECH_ENDED", "FINAL"]
    assert word_error_rate("Please call Stella and ask her to bring", events[-1].text) <= 0.4, events[-1].text


def test_detect_speech_over_grpc_msgpack_and_the_detect_route(stt: SttProcess, two_sentences: bytes) -> None:
    req = DETECT.request(audio={"data": two_sentences, "encoding": "PCM_S16LE", "sample_rate": 16000})
    reply = stt.call("DetectSpeech", req)
    assert len(reply.segments) == 2 and reply.audio_duration_s == pytest.approx(len(two_sentences) / 32000)
    body = msgpack.packb(message_to_dict(req), use_bin_type=True)
    r = stt.http.post(DETECT.http_path, content=body,
                      headers={"content-type": MSGPACK_TYPE, "x-internal-token": stt.token})
    assert r.status_code == 200, r.text
    assert len(msgpack.unpackb(r.content)["segments"]) == 2
    wav = pcm_to_wav(Pcm(two_sentences, 16000, 1))
    r = stt.http.post("/detect", files={"file": ("two.wav", wav, "audio/wav")},
                      headers={"x-internal-token": stt.token})
    assert r.status_code == 200, r.text
    segs = r.json()["segments"]
    assert [(round(s["start_s"], 3), round(s["end_s"], 3)) for s in segs] == [
        (round(s.start_s, 3), round(s.end_s, 3)) for s in reply.segments
    ]
    r = stt.http.post("/detect", files={"file": ("two.wav", wav, "audio/wav")},
                      data={"end_silence_ms": "3000"}, headers={"x-internal-token": stt.token})
    assert len(r.json()["segments"]) == 1
    r = stt.http.post("/detect", files={"file": ("two.wav", wav, "audio/wav")})
    assert r.status_code == 401


def test_streaming_over_http_msgpack_frames(stt: SttProcess, two_sentences: bytes) -> None:
    messages = [config(), *audio_frames(two_sentences)]
    body = b"".join(msgpack.packb({"data": message_to_dict(m)}, use_bin_type=True) for m in messages)
    r = stt.http.post(STREAM.http_path, content=body,
                      headers={"content-type": MSGPACK_TYPE, "x-internal-token": stt.token})
    assert r.status_code == 200, r.text
    reader = FrameReader("msgpack")
    frames = reader.feed(r.content) + reader.finish()
    assert all(f.error is None for f in frames), [f.error for f in frames if f.error]
    assert_two_utterances([frame_message(STREAM.response, f, "msgpack") for f in frames])


def expect_invalid(stt: SttProcess, messages: list[Any], reason: str) -> list[Any]:
    got: list[Any] = []
    with pytest.raises(grpc.RpcError) as e:
        got.extend(stream(stt, messages, timeout=120))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert reason in (e.value.details() or ""), e.value.details()
    return got


def test_bad_streams_are_invalid_argument_and_the_service_keeps_serving(
    stt: SttProcess, two_sentences: bytes, speech_wav: Callable[[str], bytes]
) -> None:
    expect_invalid(stt, [], "the stream ended before its first message")
    expect_invalid(stt, audio_frames(silence(0.1)), "the first message of a stream must be 'config'")
    expect_invalid(stt, [config(sample_rate=44100)], "sample_rate must be 16000 (PCM16 mono at 16 kHz), got 44100")
    expect_invalid(stt, [config(vad={"threshold": 3})], "config.vad.threshold must be a speech probability")
    expect_invalid(stt, [config(), STREAM.request(audio=b"\x01\x02\x03")], "PCM16 needs an even number of bytes")
    got = expect_invalid(
        stt, [config(), *audio_frames(two_sentences[:64000]), STREAM.request(audio=b"\x00" * 641)], "odd number"
    )
    assert [kind(e) for e in got][:1] == ["SPEECH_STARTED"]  # events before the bad frame still came
    expect_invalid(stt, [config(), STREAM.request(audio=speech_wav(FIRST))], "starts like a WAV (RIFF) file")
    expect_invalid(stt, [config(), STREAM.request(audio=bytes(2 * 1024 * 1024))], "over the 1048576-byte limit")
    # random bytes are valid (if noisy) PCM16: no error, no crash
    noise = np.random.default_rng(5).bytes(16000 * 2 * 3)
    noisy = list(stream(stt, [config(), *audio_frames(noise)]))
    assert all(kind(e) in {"SPEECH_STARTED", "SPEECH_ENDED", "FINAL"} for e in noisy)
    assert_two_utterances(list(stream(stt, [config(), *audio_frames(two_sentences)])))
    assert stt.proc is not None and stt.proc.poll() is None


def test_client_cancel_ends_the_stream_and_frees_it(stt: SttProcess, two_sentences: bytes) -> None:
    def slow() -> Iterator[Any]:
        yield config()
        for m in audio_frames(two_sentences):
            yield m
            time.sleep(0.02)

    call = stream(stt, slow())
    assert kind(next(call)) == "SPEECH_STARTED"
    eventually(lambda: stt.metric("uv_stt_streams_active") == 1, 30, "one active stream")
    call.cancel()
    eventually(lambda: stt.metric("uv_stt_streams_active") == 0, 30, "the stream to close after cancel")
    assert_two_utterances(list(stream(stt, [config(), *audio_frames(two_sentences)])))


def test_info_reports_the_vad(stt: SttProcess) -> None:
    info = stt.call("Info", operation("stt", "Info").request())
    assert info.details["vad_model"].endswith("silero_vad_v6.onnx")
    assert info.details["vad_end_silence_ms"] == "600"


class StaticResolver:
    def __init__(self, stt: SttProcess) -> None:
        self.ep = Endpoint("stt", "stt", "127.0.0.1", stt.grpc_port, stt.http_port, stt.token)

    def endpoint(self, service: str) -> Endpoint:
        return self.ep


@pytest.fixture
async def hub(stt: SttProcess) -> AsyncIterator[CommunicationManager]:
    g = GlobalContext.create(load_settings(env={}), Paths.from_env())
    manager = CommunicationManager(ProcessContext(g, "main"), StaticResolver(stt))
    yield manager
    await manager.close()


@pytest.mark.parametrize("protocol", ["grpc", "msgpack", "json"])
async def test_through_the_hub_on_each_protocol(
    hub: CommunicationManager, two_sentences: bytes, protocol: str
) -> None:
    messages = [config(), *audio_frames(two_sentences, size=3200)]
    events = [e async for e in hub.stream("stt", "StreamingRecognize", messages, protocol=protocol)]
    assert_two_utterances(events)


async def test_hub_refusals_and_early_close(hub: CommunicationManager, stt: SttProcess, two_sentences: bytes) -> None:
    with pytest.raises(InvalidArgument, match="sample_rate must be 16000"):
        async for _ in hub.stream("stt", "StreamingRecognize", [config(sample_rate=8000)]):
            pass

    async def live() -> AsyncIterator[Any]:
        yield config()
        for m in audio_frames(two_sentences):
            yield m
            await asyncio.sleep(0.01)

    async with contextlib.aclosing(hub.stream("stt", "StreamingRecognize", live())) as events:
        async for e in events:
            assert kind(e) == "SPEECH_STARTED"
            break  # closing the generator cancels the remote stream
    await asyncio.to_thread(
        eventually, lambda: stt.metric("uv_stt_streams_active") == 0, 30, "the stream to close after aclose"
    )


def test_semantic_turns_end_at_the_pause_and_hesitations_wait(
    stt: SttProcess, speech_wav: Callable[[str], bytes]
) -> None:
    """The real Smart Turn model in the real service: a finished question ends at the pause (its final
    is the speculative decode); a hesitation ending in a filler waits, and what follows joins it."""
    def said(text: str) -> bytes:
        return convert(speech_wav(text), 16000, 1).data

    done = said("What time does the museum open tomorrow?")
    hesitant = said("So I was wondering if") + silence(0.9) + said("you could book a table for four.")
    semantic = {"turn": {"detection": stt_pb2.TURN_DETECTION_SEMANTIC}}
    events = list(stream(stt, [config(**semantic), *audio_frames(silence(0.3) + done + silence(2.0))]))
    ended = [e for e in events if kind(e) == "SPEECH_ENDED"]
    finals = [e for e in events if kind(e) == "FINAL"]
    assert len(ended) == 1 and ended[0].end_reason == "semantic" and ended[0].turn_probability > 0.5, ended
    assert finals[0].speculative and "museum" in finals[0].text.lower()
    events = list(stream(stt, [config(**semantic), *audio_frames(silence(0.3) + hesitant + silence(2.0))]))
    kinds = [kind(e) for e in events]
    assert kinds.count("SPEECH_ENDED") == 1 and "SPEECH_RESUMED" in kinds, [
        (kind(e), e.end_reason, round(e.turn_probability, 3), round(e.end_s, 2), e.text) for e in events
    ]
    final = next(e for e in events if kind(e) == "FINAL")
    assert "wondering" in final.text.lower() and "table" in final.text.lower(), final.text
