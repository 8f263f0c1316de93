"""GET /api/profiles and /api/profiles/{name}: what `sm profile list/show` print, from the real config/."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from core.config import load_settings
from core.context import GlobalContext, ProcessContext
from core.gateway.app import install_error_handlers
from core.gateway.routes import profiles
from core.gateway.runtime import MainRuntime
from core.managers.remote import RemoteServices

ROOT = Path(__file__).resolve().parents[2]


async def get(config_dir: Path, path: str) -> httpx.Response:
    ctx = ProcessContext(GlobalContext.create(load_settings(config_dir, env={})), "main")
    rt = MainRuntime(ctx=ctx, supervisor=None, hub=None, remote=RemoteServices(ctx))  # type: ignore[arg-type]
    app = FastAPI()
    app.include_router(profiles.router)
    install_error_handlers(app)
    app.state.runtime = rt
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get(path)
    await rt.proxy_client.aclose()
    return r


async def test_list_marks_the_active_profile() -> None:
    rows = (await get(ROOT / "config", "/api/profiles")).json()
    assert [r["name"] for r in rows] == ["local-pc", "local-fast", "gpu-machine", "runpod", "cluster"]
    assert [r["active"] for r in rows] == [True, False, False, False, False]
    assert rows[2]["device"] == "cuda" and "stt" in rows[2]["services"]


async def test_show_gives_effective_config_and_what_would_change() -> None:
    body = (await get(ROOT / "config", "/api/profiles/gpu-machine")).json()
    assert body["active_profile"] == "local-pc" and not body["active"]
    assert body["services"]["llm"]["engine"] == "vllm" and body["services"]["llm"]["extra"] == "llm-gpu"
    assert body["changes"]["llm"]["engine"] == {"active": "llama.cpp", "new": "vllm"}
    assert body["changes"]["stt"]["device"] == {"active": "cpu", "new": "cuda"}
    assert "tts" not in body["changes"] or "engine" not in body["changes"]["tts"]
    same = (await get(ROOT / "config", "/api/profiles/local-pc")).json()
    assert same["active"] and same["changes"] == {}
    fast = (await get(ROOT / "config", "/api/profiles/local-fast")).json()
    assert fast["changes"]["stt"]["model"] == {"active": "embedded:whisper-base", "new": "embedded:whisper-tiny-en"}
    assert fast["changes"]["tts"]["engine"] == {"active": "kokoro", "new": "piper"} and "llm" in fast["changes"]
    runpod = (await get(ROOT / "config", "/api/profiles/runpod")).json()
    assert runpod["services"]["tts"]["remote"]["kind"] == "runpod" and "env" not in runpod["services"]["tts"]


async def test_an_unknown_profile_is_404_with_the_known_ones() -> None:
    r = await get(ROOT / "config", "/api/profiles/nope")
    assert r.status_code == 404 and "local-pc, local-fast, gpu-machine, runpod" in r.json()["error"]["message"]
