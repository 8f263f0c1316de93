"""The real Silero VAD v6 (from faster-whisper's package) on silence, noise and Piper speech.

faster-whisper lives in the STT service's venv, not in this one, so the model file is located
by asking that venv's Python (``$UV_STT_PYTHON``, else the venv the supervisor builds). The
DetectSpeech handler and ``POST /detect`` run here in-process with the real model and a fake
Whisper engine.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from core.config import load_settings
from core.context import Paths
from core.errors import InvalidArgument
from core.managers.supervisor import VenvBuilder
from services.runtime import CallInfo, HttpKit
from services.runtime.dispatch import Dispatcher
from services.runtime.http_app import build_http_app
from services.runtime.metrics import RuntimeMetrics
from services.runtime.state import ServiceState
from services.stt.audio import decode_wav
from services.stt.detect import speech_segments
from services.stt.service import SttService
from services.stt.vad import FRAME, SileroVad
from services.stt.vad_config import VadSettings
from tests.helpers.fake_stt import make_service
from tests.helpers.speech import Pcm, pcm_to_wav

ROOT = Path(__file__).resolve().parents[2]
FIRST = "Please call Stella and ask her to bring these things with her from the store."
SECOND = "The quick brown fox jumps over the lazy dog."
SETTINGS = VadSettings(threshold=0.5, min_speech_ms=250, end_silence_ms=600, pre_roll_ms=300)
CALL = CallInfo(method="DetectSpeech", protocol="grpc", request_id="d1")


@pytest.fixture(scope="module")
def silero_path() -> Path:
    python = os.environ.get("UV_STT_PYTHON")
    if not python:
        settings = load_settings(env={})
        venv = asyncio.run(VenvBuilder(Paths.from_env()).ensure(settings.services["stt"]))
        python = str(venv / "bin" / "python")
    code = "from services.stt.vad import locate_model; print(locate_model('', 'test'))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def vad(silero_path: Path) -> SileroVad:
    return SileroVad(silero_path)


def speech16k(speech_wav: Callable[[str], bytes], text: str) -> np.ndarray:
    return decode_wav(speech_wav(text), max_audio_s=60).samples


def gap(seconds: float) -> np.ndarray:
    return np.zeros(int(16000 * seconds), dtype=np.float32)


@pytest.fixture(scope="module")
def two_sentences(speech_wav: Callable[[str], bytes]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Speech, 1.2 s of silence, speech; with where each sentence's audio lies."""
    a, b = speech16k(speech_wav, FIRST), speech16k(speech_wav, SECOND)
    clip = np.concatenate([gap(0.5), a, gap(1.2), b, gap(0.8)])
    a_at = 0.5
    b_at = a_at + len(a) / 16000 + 1.2
    return clip, [(a_at, a_at + len(a) / 16000), (b_at, b_at + len(b) / 16000)]


def test_the_model_is_v6_with_h_and_c_state(vad: SileroVad) -> None:
    inputs = {i.name: i.shape for i in vad._session.get_inputs()}
    assert inputs["input"][-1] == 576 and inputs["h"] == [1, 1, 128] and inputs["c"] == [1, 1, 128]


def test_silence_is_not_speech_and_speech_is(vad: SileroVad, speech_wav: Callable[[str], bytes]) -> None:
    assert vad.stream().push(gap(3.0)).max() < 0.1
    probs = vad.stream().push(speech16k(speech_wav, FIRST))
    assert (probs > 0.5).mean() > 0.6


def test_chunk_sizes_do_not_change_the_scores(vad: SileroVad, two_sentences: Any) -> None:
    clip, _ = two_sentences
    whole = vad.stream().push(clip)
    stream = vad.stream()
    rng = np.random.default_rng(3)
    parts, at = [], 0
    while at < len(clip):
        n = int(rng.integers(1, 3000))
        parts.append(stream.push(clip[at : at + n]))
        at += n
    assert stream.frames == len(clip) // FRAME
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5)


def test_noise_and_extremes_are_scored_without_error(vad: SileroVad) -> None:
    rng = np.random.default_rng(1)
    noise = (rng.integers(-32768, 32767, 16000 * 2) / 32768).astype(np.float32)
    clipped = np.where(np.arange(16000) % 2, 1.0, -1.0).astype(np.float32)
    for audio in (noise, clipped, gap(0.01)):
        probs = vad.stream().push(audio)
        assert probs.shape == (len(audio) // FRAME,) and np.isfinite(probs).all()


def test_two_sentences_with_a_second_of_silence_are_two_segments(vad: SileroVad, two_sentences: Any) -> None:
    clip, truth = two_sentences
    found, frames = speech_segments(vad, clip, SETTINGS)
    assert frames == -(-len(clip) // FRAME)
    assert len(found) == 2
    for (start, end), (t_start, t_end) in zip(found, truth, strict=True):
        assert t_start - 0.05 <= start < t_start + 0.5  # Piper adds a little silence of its own
        assert t_end - 0.6 < end <= t_end + 0.1
    # a longer end-of-turn silence than the gap merges them
    merged, _ = speech_segments(vad, clip, VadSettings(0.5, 250, 2000, 300))
    assert len(merged) == 1


@pytest.fixture
def svc(tmp_path: Path, vad: SileroVad) -> Any:
    service, _ = make_service(tmp_path)
    service.vad = vad
    yield service
    service.close()


async def test_detect_speech_handler(svc: SttService, two_sentences: Any) -> None:
    clip, _ = two_sentences
    wav = pcm_to_wav(Pcm((clip * 32767).astype("<i2").tobytes(), 16000, 1))
    resp = await svc.detect_speech(svc.detect_op.request(audio={"data": wav}), CALL)
    assert len(resp.segments) == 2 and resp.audio_duration_s == pytest.approx(len(clip) / 16000)
    resp = await svc.detect_speech(svc.detect_op.request(audio={"data": wav}, vad={"end_silence_ms": 3000}), CALL)
    assert len(resp.segments) == 1
    with pytest.raises(InvalidArgument, match=r"vad\.min_speech_ms must be 1\.\.10000"):
        await svc.detect_speech(svc.detect_op.request(audio={"data": wav}, vad={"min_speech_ms": -3}), CALL)
    with pytest.raises(InvalidArgument, match="audio is empty"):
        await svc.detect_speech(svc.detect_op.request(audio={"data": b""}), CALL)
    registry = svc.ctx.process.registry
    assert (registry.get_sample_value("uv_stt_vad_frames_total", {"service": "stt"}) or 0) > 0


@pytest.fixture
async def client(svc: SttService) -> AsyncIterator[httpx.AsyncClient]:
    state = ServiceState("stt")
    state.loaded(0.1)
    registry = CollectorRegistry()
    dispatcher = Dispatcher(
        service_name="stt", service=svc, token=svc.ctx.token, state=state,
        metrics=RuntimeMetrics(registry, "stt"), version="test",
    )
    kit = HttpKit(dispatcher)
    app = build_http_app(kit, state, registry, 8 << 20, svc.http_routes(kit))
    headers = {"x-internal-token": svc.ctx.token}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s", headers=headers) as c:
        yield c


async def test_detect_route(client: httpx.AsyncClient, two_sentences: Any, speech_wav: Callable[[str], bytes]) -> None:
    clip, _ = two_sentences
    wav = pcm_to_wav(Pcm((clip * 32767).astype("<i2").tobytes(), 16000, 1))
    r = await client.post("/detect", files={"file": ("a.wav", wav, "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["segments"]) == 2 and set(body["segments"][0]) == {"start_s", "end_s"}
    assert body["audio_duration_s"] == pytest.approx(len(clip) / 16000)
    r = await client.post("/detect", files={"file": ("a.wav", wav, "audio/wav")}, data={"end_silence_ms": "3000"})
    assert len(r.json()["segments"]) == 1
    # the Piper WAV as it is: 22.05 kHz, resampled by the service
    r = await client.post("/detect", files={"file": ("b.wav", speech_wav(SECOND), "audio/wav")},
                          data={"threshold": "0.6", "min_speech_ms": "200"})
    assert r.status_code == 200 and len(r.json()["segments"]) == 1


@pytest.mark.parametrize(
    ("files", "data", "status", "reason"),
    [
        (None, {}, 400, "missing 'file'"),
        ({"file": ("a.wav", b"RIFF....WAVEjunk", "audio/wav")}, {}, 400, "WAV file has no 'fmt ' chunk"),
        # with PyAV in the venv the decoder says it could not decode; without it, that it has no decoder:
        # either way the message says what to send
        ({"file": ("a.bin", b"\x00\x01" * 10, "application/octet-stream")}, {}, 400, "send WAV, raw PCM16"),
        ({"file": ("a.wav", b"x", "audio/wav")}, {"threshold": "high"}, 400, "'threshold' must be a float"),
        ({"file": ("a.wav", b"x", "audio/wav")}, {"min_speech_ms": "9" * 12}, 400, "out of range"),
    ],
)
async def test_bad_detect_uploads_are_400(
    client: httpx.AsyncClient, files: Any, data: dict[str, str], status: int, reason: str
) -> None:
    r = await client.post("/detect", files=files, data=data)
    assert r.status_code == status and reason in r.json()["error"]["message"], r.text


async def test_detect_needs_the_token(client: httpx.AsyncClient) -> None:
    r = await client.post("/detect", files={"file": ("a.wav", b"x", "audio/wav")}, headers={"x-internal-token": ""})
    assert r.status_code == 401 and "missing internal token" in r.json()["error"]["message"]
