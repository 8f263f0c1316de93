"""The gateway's conversation routes in-process: the real routers, sessions, store, admission and
orchestrator, with the orchestrator's scripted FakeHub in place of the model services.

``conversation_app(tmp_path, **conversation_config)`` yields ``(client, runtime)``: an httpx
client on the ASGI app and the MainRuntime the routes use.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from core.config import load_settings
from core.config.models import ConversationConfig
from core.context import GlobalContext, Paths, ProcessContext
from core.gateway.app import access_for, agents_dir, attach_conversation, guard, install_error_handlers
from core.gateway.routes import conversation, polling, sessions
from core.gateway.runtime import MainRuntime
from core.managers.remote import RemoteServices
from core.sessions import load_agents
from tests.helpers.conversation_fakes import FakeHub

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def conversation_app(tmp_path: Path, **conf: Any) -> AsyncIterator[tuple[httpx.AsyncClient, MainRuntime]]:
    base = load_settings(ROOT / "config", env={})
    rate = conf.pop("rate_limits", None)
    settings = base.model_copy(update={"conversation": ConversationConfig(**conf)})
    if rate is not None:
        gw = base.gateway
        settings = settings.model_copy(update={"gateway": gw.model_copy(update={
            "auth": gw.auth.model_copy(update={"rate_limits": rate})})})
    paths = Paths(root=ROOT, var=tmp_path / "var", cache=tmp_path / "cache", venvs=tmp_path / "venvs")
    g = GlobalContext.create(settings, paths)
    ctx = ProcessContext(global_=g, name="main")
    rt = MainRuntime(ctx=ctx, supervisor=None, hub=FakeHub(), remote=RemoteServices(ctx))  # type: ignore[arg-type]
    rt.access = access_for(ctx)
    await attach_conversation(rt, load_agents(agents_dir(g)))
    app = FastAPI()
    guard(app, rt.access)
    install_error_handlers(app)
    for r in (conversation.router, sessions.router, polling.router):
        app.include_router(r)
    app.state.runtime = rt
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
    try:
        yield client, rt
    finally:
        await client.aclose()
        await rt.close_conversation()
        await rt.proxy_client.aclose()
