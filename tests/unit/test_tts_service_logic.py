"""TtsService on fake engines: validation, engine/voice/language choice, responses, streaming, cancel, admission."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from pathlib import Path
from typing import Any

import pytest
import soundfile

from core.errors import ConfigError, InvalidArgument, ResourceExhausted
from services.tts.audio import CLAUSE_PAUSE_S, SENTENCE_PAUSE_S
from services.tts.engine import ModelLoadError
from tests.unit.tts_fakes import SECONDS_PER_WORD, call, make_service

TEXT = "Well, I think that, maybe, we should go now. The car is ready. Are you coming?"


def request(svc: Any, text: str = TEXT, **fields: Any) -> Any:
    return svc.ops["Synthesize"].request(text=text, **fields)


async def collect(svc: Any, req: Any) -> list[Any]:
    return [chunk async for chunk in svc.synthesize_stream(req, call("SynthesizeStream"))]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"text": ""}, "text is empty"),
        ({"text": "  \n\t "}, "text is empty"),
        ({"text": "x" * 201}, "text is 201 characters, over this service's limit of 200"),
        ({"voice": "alloy"}, r"unknown voice 'alloy'; available voices: kokoro: jf_alpha, af_heart, pf_dora; "
                             r"piper: en_US-joe-medium"),
        ({"engine": "espeak"}, "engine 'espeak' is not loaded here; available engines: kokoro, piper"),
        ({"engine": "kokoro", "voice": "en_US-joe-medium"}, "voice 'en_US-joe-medium' belongs to engine 'piper'"),
        ({"engine": "piper", "language": "pt-br"}, "does not speak 'pt-br'; it speaks en-us; for pt-br use engine "
                                                   "'kokoro'"),
        ({"language": "klingon"}, "does not speak 'klingon'"),
        ({"format": "aac"}, "format 'aac' is not supported; use one of: pcm, wav, flac, mp3, opus"),
        ({"speed": 5.0}, r"speed must be 0.25..4"),
        ({"speed": float("nan")}, r"speed must be 0.25..4"),
        ({"speed": 3.0}, r"engine 'kokoro' takes speed 0.5..2, got 3; engine 'piper' takes 3"),
        ({"sample_rate": -1}, "sample_rate must be 0"),
        ({"format": "opus", "sample_rate": 44100}, "not possible in opus"),
        ({"text": "... !!! ---"}, "has nothing to pronounce"),
    ],
)
async def test_bad_requests_are_refused_before_any_engine_work(
    tmp_path: Path, fields: dict[str, Any], reason: str
) -> None:
    svc, fakes = make_service(tmp_path, max_text_chars=200)
    try:
        req = request(svc, **{"text": "Hello there.", **fields})
        with pytest.raises(InvalidArgument, match=reason):
            await svc.synthesize(req, call())
        with pytest.raises(InvalidArgument, match=reason):
            await collect(svc, req)
        assert fakes["kokoro"].calls == [] and fakes["piper"].calls == []
        ok = await svc.synthesize(request(svc, "Still serving."), call())  # the service keeps serving
        assert ok.audio_duration_s > 0
    finally:
        svc.close()


@pytest.mark.parametrize(
    ("fields", "engine", "voice", "language"),
    [
        ({}, "kokoro", "jf_alpha", "en-us"),
        ({"voice": "pf_dora"}, "kokoro", "pf_dora", "pt-br"),  # the voice's own language
        ({"voice": "jf_alpha", "language": "PT"}, "kokoro", "jf_alpha", "pt-br"),
        ({"voice": "en_US-joe-medium"}, "piper", "en_US-joe-medium", "en-us"),  # the voice picks the engine
        ({"engine": "PIPER", "language": "en_US"}, "piper", "en_US-joe-medium", "en-us"),
    ],
)
async def test_engine_voice_and_language_choice(
    tmp_path: Path, fields: dict[str, Any], engine: str, voice: str, language: str
) -> None:
    svc, fakes = make_service(tmp_path)
    try:
        resp = await svc.synthesize(request(svc, "Hi there.", **fields), call())
    finally:
        svc.close()
    assert (resp.engine, resp.voice) == (engine, voice)
    assert fakes[engine].calls == [("Hi there.", voice, language, 1.0)]


async def test_default_engine_and_voice_come_from_config(tmp_path: Path) -> None:
    svc, _ = make_service(tmp_path, engine="piper")
    try:
        resp = await svc.synthesize(request(svc, "Hi."), call())
        assert (resp.engine, resp.sample_rate) == ("piper", 22050)
        voices = await svc.list_voices(svc.ops["ListVoices"].request(), call("ListVoices"))
        assert voices.default_voice == "en_US-joe-medium"
    finally:
        svc.close()


async def test_synthesize_joins_pieces_with_pauses_and_counts_metrics(tmp_path: Path) -> None:
    svc, fakes = make_service(tmp_path)
    try:
        resp = await svc.synthesize(request(svc, format="wav", sample_rate=16000, speed=2.0), call())
    finally:
        svc.close()
    spoken = [c[0] for c in fakes["kokoro"].calls]
    assert spoken == ["Well, I think that,", "maybe, we should go now.", "The car is ready.", "Are you coming?"]
    words = len(TEXT.split())
    expected = words * SECONDS_PER_WORD / 2.0 + CLAUSE_PAUSE_S + 2 * SENTENCE_PAUSE_S
    assert resp.audio_duration_s == pytest.approx(expected, abs=0.01)
    assert (resp.format, resp.sample_rate, resp.engine, resp.voice) == ("wav", 16000, "kokoro", "jf_alpha")
    samples, rate = soundfile.read(io.BytesIO(resp.audio))
    assert rate == 16000 and len(samples) / rate == pytest.approx(resp.audio_duration_s, abs=0.002)
    reg = svc.ctx.process.registry
    labels = {"service": "tts", "engine": "kokoro"}
    assert reg.get_sample_value("uv_tts_characters_total", labels) == len(TEXT)
    assert reg.get_sample_value("uv_tts_audio_seconds_total", labels) == pytest.approx(expected, abs=0.01)
    assert reg.get_sample_value("uv_tts_real_time_factor_count", labels) == 1
    ttfa = {**labels, "method": "Synthesize"}
    assert reg.get_sample_value("uv_tts_time_to_first_audio_seconds_count", ttfa) == 1


async def test_stream_sends_one_chunk_per_piece_in_order(tmp_path: Path) -> None:
    svc, _ = make_service(tmp_path)
    try:
        chunks = await collect(svc, request(svc))
        whole = await svc.synthesize(request(svc), call())
    finally:
        svc.close()
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert [c.final for c in chunks] == [False, False, False, True]
    assert chunks[0].text == "Well, I think that," and chunks[-1].text == "Are you coming?"
    elapsed = [c.elapsed_s for c in chunks]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert all(c.format == "pcm" and c.sample_rate == 24000 for c in chunks)
    assert all(len(c.audio) == round(c.audio_duration_s * 24000) * 2 for c in chunks)
    assert b"".join(c.audio for c in chunks) == whole.audio  # back to back, the chunks are the whole clip
    reg = svc.ctx.process.registry
    ttfa = {"service": "tts", "engine": "kokoro", "method": "SynthesizeStream"}
    assert reg.get_sample_value("uv_tts_time_to_first_audio_seconds_count", ttfa) == 1


async def test_stream_containers_are_whole_files_per_chunk(tmp_path: Path) -> None:
    svc, _ = make_service(tmp_path)
    try:
        chunks = await collect(svc, request(svc, "Hello there. Bye now.", engine="piper", format="opus"))
    finally:
        svc.close()
    assert len(chunks) == 2
    for chunk in chunks:
        samples, rate = soundfile.read(io.BytesIO(chunk.audio))
        assert rate == chunk.sample_rate == 24000  # Piper's 22.05 kHz resampled for Opus
        assert len(samples) / rate == pytest.approx(chunk.audio_duration_s, abs=0.03)


async def test_closing_the_stream_stops_further_pieces(tmp_path: Path) -> None:
    svc, fakes = make_service(tmp_path)
    engine = fakes["kokoro"]
    engine.delay_s = 0.1
    text = " ".join(f"Sentence number {n} is here." for n in range(10))
    try:
        stream = svc.synthesize_stream(request(svc, text), call("SynthesizeStream"))
        first = await anext(stream)
        await stream.aclose()
        await asyncio.sleep(0.5)  # long enough for several more pieces, had they been started
    finally:
        svc.close()
    assert first.index == 0
    assert 1 <= len(engine.calls) <= 2  # the first piece, and at most the one prefetched behind it
    pieces = svc.ctx.process.registry.get_sample_value("uv_tts_pieces_total", {"service": "tts", "engine": "kokoro"})
    assert pieces == len(engine.calls)


async def test_cancelling_the_consumer_stops_further_pieces(tmp_path: Path) -> None:
    svc, fakes = make_service(tmp_path)
    engine = fakes["kokoro"]
    engine.delay_s = 0.1
    got: list[Any] = []
    first = asyncio.Event()
    text = " ".join(f"Sentence number {n} is here." for n in range(10))

    async def consume() -> None:
        async for chunk in svc.synthesize_stream(request(svc, text), call("SynthesizeStream")):
            got.append(chunk)
            first.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first.wait(), 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)
    finally:
        svc.close()
    assert task.cancelled()
    assert len(engine.calls) <= 3


async def test_an_engine_failure_mid_stream_ends_the_stream_with_it(tmp_path: Path) -> None:
    svc, fakes = make_service(tmp_path)
    fakes["kokoro"].fail_on = "ready"
    got: list[Any] = []
    try:
        with pytest.raises(RuntimeError, match="exploded"):
            async for chunk in svc.synthesize_stream(request(svc), call("SynthesizeStream")):
                got.append(chunk)
    finally:
        svc.close()
    assert [c.index for c in got] == [0, 1]


async def test_requests_beyond_concurrency_and_queue_are_refused_at_once(tmp_path: Path) -> None:
    svc, fakes = make_service(tmp_path, max_concurrency=1, max_queue=1)
    engine = fakes["kokoro"]
    engine.gate = threading.Event()
    try:
        first = asyncio.create_task(svc.synthesize(request(svc, "One."), call()))
        second = asyncio.create_task(svc.synthesize(request(svc, "Two."), call()))
        await asyncio.to_thread(engine.started.wait, 5)
        with pytest.raises(ResourceExhausted, match=r"TTS is busy: 2 request\(s\) in progress") as info:
            await svc.synthesize(request(svc, "Three."), call())
        assert info.value.retry_after_s > 0
        engine.gate.set()
        await asyncio.gather(first, second)
        await svc.synthesize(request(svc, "Four."), call())  # admitted again once the line cleared
    finally:
        engine.gate.set()
        svc.close()


async def test_list_voices_filters_by_engine_and_language(tmp_path: Path) -> None:
    svc, _ = make_service(tmp_path)
    lv = svc.ops["ListVoices"].request
    try:
        every = await svc.list_voices(lv(), call("ListVoices"))
        piper = await svc.list_voices(lv(engine="piper"), call("ListVoices"))
        portuguese = await svc.list_voices(lv(language="pt_BR"), call("ListVoices"))
        with pytest.raises(InvalidArgument, match="engine 'x' is not loaded"):
            await svc.list_voices(lv(engine="x"), call("ListVoices"))
    finally:
        svc.close()
    assert [v.id for v in every.voices] == ["jf_alpha", "af_heart", "pf_dora", "en_US-joe-medium"]
    assert every.default_voice == "jf_alpha"
    assert [v.id for v in piper.voices] == ["en_US-joe-medium"] and piper.default_voice == "en_US-joe-medium"
    assert [v.id for v in portuguese.voices] == ["jf_alpha", "af_heart", "pf_dora"]
    assert list(every.voices[2].languages)[:2] == ["pt-br", "en-us"]


async def test_only_the_listed_engines_load(tmp_path: Path) -> None:
    svc, fakes = make_service(tmp_path, engine="piper", engines="piper")
    try:
        assert list(fakes) == ["piper"]
        with pytest.raises(InvalidArgument, match="engine 'kokoro' is not loaded here; available engines: piper"):
            await svc.synthesize(request(svc, "Hi.", engine="kokoro"), call())
        assert svc.describe().details["engines"] == "piper"
    finally:
        svc.close()


@pytest.mark.parametrize(
    ("engine", "options", "key"),
    [
        ("piper", {"engines": ["kokoro"]}, "services.tts.engine"),
        ("kokoro", {"engines": ["kokoro", "espeak"]}, "services.tts.options.engines"),
        ("kokoro", {"intra_op_threads": 0}, "services.tts.options.intra_op_threads"),
        ("kokoro", {"colour": "blue"}, "services.tts.options.colour"),
    ],
)
def test_bad_options_name_the_key(tmp_path: Path, engine: str, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        make_service(tmp_path, engine=engine, load=False, **options)


def test_a_model_that_fails_to_load_names_its_config_key(tmp_path: Path) -> None:
    svc, fakes = make_service(tmp_path, load=False)

    def broken() -> Any:
        raise ModelLoadError("Piper could not load voice /x.onnx")

    fakes["piper"].load = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(ConfigError, match=r"services.tts.options.piper_model: Piper could not load"):
            svc.load()
    finally:
        svc.close()


def test_describe_reports_engines_voices_and_rates(tmp_path: Path) -> None:
    svc, _ = make_service(tmp_path)
    try:
        d = svc.describe()
    finally:
        svc.close()
    assert d.engine == "kokoro" and d.model == "embedded:kokoro-82m-int8"
    assert d.details["kokoro.sample_rate"] == "24000" and d.details["piper.sample_rate"] == "22050"
    assert d.details["kokoro.voices"] == "jf_alpha,af_heart,pf_dora"
    assert d.details["formats"] == "pcm,wav,flac,mp3,opus"

