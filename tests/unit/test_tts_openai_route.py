"""OpenAI-compatible /v1/audio/speech and /v1/audio/voices in-process, fake engines behind the real service.

Driven by the real ``openai`` SDK over httpx's ASGI transport, plus raw requests for what the SDK
would not send (bad JSON, wrong types, no token).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import soundfile
from prometheus_client import CollectorRegistry

from services.runtime import HttpKit
from services.runtime.dispatch import Dispatcher
from services.runtime.http_app import build_http_app
from services.runtime.metrics import RuntimeMetrics
from services.runtime.state import ServiceState
from services.tts.openai_routes import speech_request
from services.tts.service import TtsService
from tests.unit.tts_fakes import make_service

Client = tuple[httpx.AsyncClient, openai.AsyncOpenAI, TtsService]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    svc, _ = make_service(tmp_path)
    state = ServiceState("tts")
    state.loaded(0.1)
    registry = CollectorRegistry()
    dispatcher = Dispatcher(
        service_name="tts", service=svc, token=svc.ctx.token, state=state,
        metrics=RuntimeMetrics(registry, "tts"), version="test",
    )
    kit = HttpKit(dispatcher)
    app = build_http_app(kit, state, registry, 1 << 20, svc.http_routes(kit))
    transport = httpx.ASGITransport(app=app)
    headers = {"authorization": f"Bearer {svc.ctx.token}"}
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://s", headers=headers) as raw,
        httpx.AsyncClient(transport=transport, base_url="http://s") as sdk_http,
    ):
        sdk = openai.AsyncOpenAI(base_url="http://s/v1", api_key=svc.ctx.token, http_client=sdk_http, max_retries=0)
        yield raw, sdk, svc
    svc.close()


async def test_sdk_speech_defaults_to_mp3(client: Client) -> None:
    _, sdk, _ = client
    resp = await sdk.audio.speech.create(model="tts-1", voice="jf_alpha", input="Hello there, my friend.")
    assert resp.response.headers["content-type"] == "audio/mpeg"
    samples, rate = soundfile.read(io.BytesIO(resp.content))
    assert rate == 24000 and len(samples) > 0


@pytest.mark.parametrize(("fmt", "media"), [("wav", "audio/wav"), ("flac", "audio/flac"), ("opus", "audio/ogg")])
async def test_sdk_speech_container_formats(client: Client, fmt: str, media: str) -> None:
    _, sdk, _ = client
    resp = await sdk.audio.speech.create(
        model="piper", voice="en_US-joe-medium", input="Hello there.", response_format=fmt,  # type: ignore[arg-type]
    )
    assert resp.response.headers["content-type"] == media
    samples, rate = soundfile.read(io.BytesIO(resp.content))
    assert rate == int(resp.response.headers["x-sample-rate"]) and len(samples) > 0


async def test_sdk_pcm_is_24khz_and_streams_every_chunk(client: Client) -> None:
    _, sdk, _ = client
    text = "Well, I think that, maybe, we go now. The car is ready."
    async with sdk.audio.speech.with_streaming_response.create(
        model="tts-1", voice="en_US-joe-medium", input=text, response_format="pcm", speed=2.0,
    ) as resp:
        assert resp.headers["x-sample-rate"] == "24000"
        body = b"".join([part async for part in resp.iter_bytes()])
    pcm = np.frombuffer(body, "<i2")
    words = len(text.split())
    expected_s = words * 0.1 / 2.0 + 0.1 + 0.25  # fake engine: 0.1 s per word; a clause and a sentence pause
    assert len(pcm) / 24000 == pytest.approx(expected_s, abs=0.01)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"model": "tts-1", "input": "", "voice": "jf_alpha"}, 400, "text is empty"),
        ({"model": "tts-1", "input": "hi", "voice": "alloy"}, 400, "unknown voice 'alloy'; available voices"),
        ({"model": "tts-1", "input": "hi", "voice": "", "response_format": "aac"}, 400, "'aac' is not supported here"),
        ({"model": "tts-1", "input": "hi", "voice": "", "response_format": "ogg"}, 400, "is not one of mp3, opus"),
        ({"model": "tts-1", "input": "hi", "voice": "", "speed": 10}, 400, "speed must be 0.25..4"),
        ({"model": "tts-1", "input": "x" * 5000, "voice": ""}, 400, "over this service's limit of 4000"),
        ({"model": "tts-1", "input": "hi", "response_format": "pcm", "voice": "nope"}, 400, "unknown voice"),
    ],
)
async def test_sdk_errors_are_openai_shaped_400s(
    client: Client, body: dict[str, Any], status: int, reason: str
) -> None:
    _, sdk, _ = client
    with pytest.raises(openai.BadRequestError, match=reason) as info:
        await sdk.audio.speech.create(**body)
    assert info.value.status_code == status


async def test_raw_bad_bodies_and_missing_token(client: Client) -> None:
    raw, _, _ = client
    r = await raw.post("/v1/audio/speech", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
    r = await raw.post("/v1/audio/speech", json=["hi"])
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
    r = await raw.post("/v1/audio/speech", json={"input": 5})
    assert r.status_code == 400 and "'input' has the wrong type" in r.json()["error"]["message"]
    r = await raw.post("/v1/audio/speech", json={"voice": "jf_alpha"})
    assert r.status_code == 400 and "missing 'input'" in r.json()["error"]["message"]
    r = await raw.post("/v1/audio/speech", json={"input": "hi", "stream_format": "sse"})
    assert r.status_code == 400 and "'sse' is not supported" in r.json()["error"]["message"]
    r = await raw.post("/v1/audio/speech", json={"input": "hi"}, headers={"authorization": ""})
    assert r.status_code == 401
    r = await raw.get("/v1/audio/voices", headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401
    ok = await raw.post("/v1/audio/speech", json={"input": "Still here.", "response_format": "wav"})
    assert ok.status_code == 200 and ok.headers["content-type"] == "audio/wav"


async def test_voices_route_lists_and_filters(client: Client) -> None:
    raw, _, _ = client
    every = (await raw.get("/v1/audio/voices")).json()
    assert [v["id"] for v in every["voices"]] == ["jf_alpha", "af_heart", "pf_dora", "en_US-joe-medium"]
    assert every["default_voice"] == "jf_alpha"
    assert every["voices"][3] == {"id": "en_US-joe-medium", "engine": "piper", "languages": ["en-us"]}
    piper = (await raw.get("/v1/audio/voices", params={"language": "pt-br", "engine": "piper"})).json()
    assert piper.get("voices", []) == []
    bad = await raw.get("/v1/audio/voices", params={"engine": "nope"})
    assert bad.status_code == 400 and "not loaded" in bad.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"input": "hi"}, {"format": "mp3", "sample_rate": 0, "engine": "", "speed": 1.0}),
        ({"input": "hi", "model": "Kokoro", "response_format": "PCM"}, {"format": "pcm", "sample_rate": 24000,
                                                                         "engine": "kokoro"}),
        ({"input": "hi", "model": "tts-1-hd", "engine": "piper", "response_format": "pcm", "sample_rate": 16000},
         {"engine": "piper", "sample_rate": 16000}),
        ({"input": "hi", "speed": 1.5, "language": "pt-br", "voice": "pf_dora"},
         {"speed": 1.5, "language": "pt-br", "voice": "pf_dora"}),
    ],
)
def test_speech_body_mapping(client: Client, body: dict[str, Any], fields: dict[str, Any]) -> None:
    _, _, svc = client
    req = speech_request(body, svc.ops["Synthesize"])
    for key, value in fields.items():
        assert getattr(req, key) == value, key
