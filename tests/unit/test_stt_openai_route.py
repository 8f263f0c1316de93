"""OpenAI-compatible /v1/audio/transcriptions in-process, with a fake engine behind the real service."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.runtime import HttpKit
from services.runtime.dispatch import Dispatcher
from services.runtime.http_app import build_http_app
from services.runtime.metrics import RuntimeMetrics
from services.runtime.state import ServiceState
from services.stt.service import SttService
from tests.helpers.fake_stt import make_service

ROUTE = "/v1/audio/transcriptions"


def wav16k(seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * int(16000 * seconds))
    return buf.getvalue()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, SttService]]:
    svc, _ = make_service(tmp_path, language="en")
    state = ServiceState("stt")
    state.loaded(0.1)
    registry = CollectorRegistry()
    dispatcher = Dispatcher(
        service_name="stt",
        service=svc,
        token=svc.ctx.token,
        state=state,
        metrics=RuntimeMetrics(registry, "stt"),
        version="test",
    )
    kit = HttpKit(dispatcher)
    app = build_http_app(kit, state, registry, 1 << 20, svc.http_routes(kit))
    headers = {"authorization": f"Bearer {svc.ctx.token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s", headers=headers) as c:
        yield c, svc
    svc.close()


async def test_json_text_and_verbose_json(client: tuple[httpx.AsyncClient, SttService]) -> None:
    c, _ = client
    files = {"file": ("a.wav", wav16k(), "audio/wav")}
    r = await c.post(ROUTE, files=files, data={"model": "whisper-1"})
    assert r.status_code == 200 and r.json() == {"text": "hello there"}
    r = await c.post(ROUTE, files=files, data={"model": "whisper-1", "response_format": "text"})
    assert r.status_code == 200 and r.text == "hello there"
    r = await c.post(ROUTE, files=files, data={"response_format": "verbose_json", "language": "pt"})
    body = r.json()
    assert body["language"] == "pt" and body["duration"] == pytest.approx(0.5)
    assert body["segments"][0]["text"] == "hello there" and body["segments"][0]["id"] == 0


@pytest.mark.parametrize(
    ("files", "data", "reason"),
    [
        (None, {"model": "whisper-1"}, "missing 'file'"),
        ({"file": ("a.wav", wav16k(), "audio/wav")}, {"response_format": "srt"}, "response_format 'srt'"),
        ({"file": ("a.wav", b"", "audio/wav")}, {}, "audio is empty"),
    ],
)
async def test_bad_uploads_are_400(
    client: tuple[httpx.AsyncClient, SttService], files: object, data: dict[str, str], reason: str
) -> None:
    c, _ = client
    r = await c.post(ROUTE, files=files, data=data) if files else await c.post(ROUTE, data=data)
    assert r.status_code == 400
    assert reason in r.json()["error"]["message"]


async def test_token_is_required(client: tuple[httpx.AsyncClient, SttService]) -> None:
    c, _ = client
    r = await c.post(ROUTE, files={"file": ("a.wav", wav16k(), "audio/wav")}, headers={"authorization": "Bearer x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"


async def test_upload_over_the_limit_is_413(client: tuple[httpx.AsyncClient, SttService]) -> None:
    c, _ = client
    r = await c.post(ROUTE, files={"file": ("a.wav", wav16k(40.0), "audio/wav")})
    assert r.status_code == 413
    assert "max_request_bytes" in r.json()["error"]["message"]
