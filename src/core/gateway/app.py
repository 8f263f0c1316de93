"""FastAPI app factory for main. The lifespan owns the supervisor, the hub and the conversation layer.

Agent configs are read before the server starts (a bad file stops main like any config error).
The lifespan then opens the conversation store, builds the session manager (with its eviction
loop), admission control, the recorder and the orchestrator, and attaches them to the runtime.
Every exit path (Ctrl-C, SIGTERM, an exception in startup) runs the same cleanup, in order:
polling turns, orchestrator, sessions and store, then services and the hub.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.access import Access, AccessGuard, build_access, missing_rules
from core.access.keys import load_key_file
from core.access.policy import app_routes, is_public
from core.context import GlobalContext, ProcessContext
from core.conversation.orchestrator import Orchestrator
from core.conversation.types import AgentConfig
from core.errors import (
    HTTP_TO_CODE,
    CallError,
    ConfigError,
    PortInUse,
    SupervisorError,
    UltravoxError,
    UnknownService,
    retry_after_header,
)
from core.gateway.metrics import count_error
from core.gateway.routes import (
    access,
    cluster,
    control,
    conversation,
    demo,
    monitoring,
    openai_audio,
    openai_chat,
    openai_speech,
    polling,
    profiles,
    resilience,
    sessions,
    voice_ws,
    webrtc,
)
from core.gateway.runtime import MainRuntime
from core.gateway.schemas import ERROR_MEANING, ErrorDetail
from core.logs import RequestContext, register_secret
from core.managers.hub import CommunicationManager
from core.managers.profiles import ProfileSwitcher
from core.managers.remote import RemoteServices, ServiceResolver
from core.managers.supervisor import ServiceSupervisor
from core.sessions import (
    Admission,
    ConversationStore,
    PollRegistry,
    Recorder,
    ReplyAudioCache,
    SessionManager,
    load_agents,
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(g: GlobalContext) -> None:
    """Binding beyond loopback needs a key: the env key, or an admin key in the keys file."""
    gw = g.settings.gateway
    if is_loopback(gw.host) or os.environ.get(gw.api_key_env, ""):
        return
    keys_path = _under(Path(g.settings.config_dir), gw.auth.keys_file, Path(gw.auth.keys_file))
    if any(k.role == "admin" for k in load_key_file(keys_path)):
        return
    raise ConfigError(
        "config/services.yaml", "gateway.host",
        f"binding to {gw.host} exposes the platform beyond this machine; set {gw.api_key_env} to an API key "
        f"(clients send it as 'Authorization: Bearer <key>'), add an admin key to {keys_path} "
        "('sm keys hash'), or bind to 127.0.0.1",
    )


def _under(base: Path, configured: str, default: Path) -> Path:
    """A configured path (relative ones are taken from ``base``), or ``default`` when empty."""
    if not configured:
        return default
    p = Path(configured).expanduser()
    return p if p.is_absolute() else base / p


def agents_dir(g: GlobalContext) -> Path:
    cdir = Path(g.settings.config_dir)
    return _under(cdir, g.settings.conversation.agents_dir, cdir / "agents")


async def attach_conversation(rt: MainRuntime, agents: dict[str, AgentConfig]) -> None:
    """Open the store and build the conversation layer on ``rt`` (see the module docstring)."""
    conf, paths = rt.ctx.settings.conversation, rt.ctx.global_.paths
    store = ConversationStore(_under(paths.var, conf.store_path, paths.data / "conversations.sqlite3"))
    try:
        await store.open()
    except UltravoxError as e:
        rt.ctx.log.error("%s", e)
        raise
    rt.sessions = SessionManager(store, agents, conf, registry=rt.ctx.registry)
    rt.sessions.start()
    rt.admission = Admission(conf.max_concurrent_turns, conf.admission_wait_s, rt.ctx.registry)
    rt.recorder = Recorder(_under(paths.var, conf.recordings_dir, paths.data / "recordings"), enabled=conf.recordings)
    if not hasattr(rt, "access"):   # a runtime built without create_app (tests, tools): from its settings
        rt.access = access_for(rt.ctx)
    rt.access.attach_store(store)
    rt.replies = ReplyAudioCache(conf.reply_audio_ttl_s)
    rt.polls = PollRegistry(max_buffers=conf.max_sessions, idle_s=conf.idle_timeout_s)
    rt.orchestrator = Orchestrator(
        rt.ctx, rt.hub, rt.sessions, rt.admission, rt.recorder, conf, rt.services_by_role()
    )
    rt.ctx.log.info(
        "conversation layer ready: store %s, %d agents, max %d turns in flight",
        store.path, len(agents), conf.max_concurrent_turns,
    )


def access_for(ctx: ProcessContext) -> Access:
    """Main's keys, token issuer and rate limiter (the store is attached by attach_conversation)."""
    s = ctx.settings
    return build_access(s.gateway, config_dir=Path(s.config_dir), data_dir=ctx.global_.paths.data,
                        registry=ctx.registry)


def guard(app: FastAPI, access: Access) -> None:
    """Put ``access`` in front of every route (AccessGuard), and CORS when other origins are allowed."""
    app.state.access = access
    app.add_middleware(AccessGuard)
    if origins := access.config.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_credentials=True,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-Id", "X-Session-Id"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )


def install_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": {"code", "message"}}`` with its status (and Retry-After when known)."""

    @app.exception_handler(CallError)
    async def on_call_error(request: Request, exc: CallError) -> JSONResponse:
        count_error(request, exc.code)
        headers = {}
        if retry := retry_after_header(exc):
            headers["Retry-After"] = retry
        elif exc.http_status == 503:
            headers["Retry-After"] = "1"
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status, headers=headers)

    @app.exception_handler(SupervisorError)
    async def on_supervisor_error(request: Request, exc: SupervisorError) -> JSONResponse:
        status = 404 if isinstance(exc, UnknownService) else 409 if isinstance(exc, PortInUse) else 500
        code = "NOT_FOUND" if status == 404 else "FAILED_PRECONDITION" if status == 409 else "INTERNAL"
        count_error(request, code)
        return JSONResponse({"error": {"code": code, "message": str(exc)}}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own refusals (a body it cannot parse, an unknown path or method) in main's shape."""
        code = HTTP_TO_CODE.get(exc.status_code, "INVALID_ARGUMENT" if exc.status_code < 500 else "INTERNAL")
        count_error(request, code)
        detail = str(exc.detail)
        hints = {
            400: f"{detail}: the body is not valid JSON, UTF-8 or multipart; send what GET /openapi.json "
                 "documents for this route",
            404: f"no route {request.url.path[:200]!r}; GET /openapi.json lists them",
            405: f"{request.method} is not allowed on {request.url.path[:200]!r}; GET /openapi.json lists the "
                 "methods",
        }
        return JSONResponse({"error": {"code": code, "message": hints.get(exc.status_code, detail)}},
                            status_code=exc.status_code, headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        count_error(request, "INVALID_ARGUMENT")
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(
            {"error": {"code": "INVALID_ARGUMENT", "message": "invalid request: " + "; ".join(parts)}},
            status_code=400,
        )


def create_app(g: GlobalContext, *, supervisor: ServiceSupervisor | None = None) -> FastAPI:
    check_exposure(g)
    register_secret(g.internal_token)  # neither the internal token nor keys may reach a log line
    for ice in g.settings.gateway.webrtc.ice_servers:  # TURN passwords, from config or $UV_ICE_SERVERS
        register_secret(ice.credential or "")
    agents = load_agents(agents_dir(g))
    ctx = ProcessContext(global_=g, name="main")
    gate = access_for(ctx)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sup = supervisor or ServiceSupervisor(ctx)
        remote = RemoteServices(ctx)
        rt = MainRuntime(
            ctx=ctx, supervisor=sup, remote=remote,
            hub=CommunicationManager(ctx, ServiceResolver(sup, remote), config=g.settings.hub),
        )
        rt.profiles = ProfileSwitcher(ctx, sup, rt.hub)
        control.install_metrics(rt)
        app.state.runtime = rt
        try:
            rt.access = gate
            await attach_conversation(rt, agents)
            rt.ctx.log.info(
                "access: %s (%d API keys), rate limits %d/min %d/h per key and address",
                "on" if rt.access.enabled else "off: no key configured, loopback only",
                len(rt.access.keys.list()), g.settings.gateway.auth.rate_limits.per_minute,
                g.settings.gateway.auth.rate_limits.per_hour,
            )
            await rt.boot()
            yield
        finally:
            await rt.close_conversation()
            await rt.close()

    app = FastAPI(
        title="Ultravox Pipeline",
        version="0.1.0",
        lifespan=lifespan,
        description="Gateway and control API of the Ultravox Pipeline main process.",
    )

    guard(app, gate)
    app.add_middleware(RequestContext)  # outermost: every request, refused ones included, gets an id
    install_error_handlers(app)
    app.include_router(control.router)
    app.include_router(openai_audio.router)
    app.include_router(openai_speech.router)
    app.include_router(openai_chat.router)
    app.include_router(conversation.router)
    app.include_router(sessions.router)
    app.include_router(polling.router)
    app.include_router(voice_ws.router)
    app.include_router(webrtc.router)
    app.include_router(monitoring.router)
    app.include_router(profiles.router)
    app.include_router(resilience.router)
    app.include_router(access.router)
    app.include_router(cluster.router)
    app.include_router(demo.router)  # last: it serves "/" and the page's static files
    document_errors(app)
    if missing := missing_rules(route_table(app)):
        raise ConfigError("src/core/access/policy.py", "RULES",
                          f"routes without an access rule: {', '.join(missing)}; add one for each")
    return app


def route_table(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves; WebSockets as ``WS``. HEAD rides on GET."""
    return [(m, p) for m, p, _ in app_routes(app.router.routes)]


def document_errors(app: FastAPI) -> None:
    """Make the OpenAPI schema say what main answers: its validation errors are 400 with
    ``{"error": {code, message}}`` (not FastAPI's 422), and every guarded route may answer 401
    and 403 the same way (the AccessGuard)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        comps.setdefault("ErrorDetail", ErrorDetail.model_json_schema())
        comps["ErrorBody"] = {"title": "ErrorBody", "type": "object", "required": ["error"],
                              "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}}}
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        public = app.state.access.config.auth.public_paths
        for path, ops in schema.get("paths", {}).items():
            for op in ops.values():
                responses = op.setdefault("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault("400", {"description": "Bad input: the message says what was wrong.",
                                                 "content": error})
                if not is_public(path, public):
                    responses.setdefault("401", {"description": ERROR_MEANING[401], "content": error})
                    responses.setdefault("403", {"description": ERROR_MEANING[403], "content": error})
        for unused in ("HTTPValidationError", "ValidationError"):
            comps.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

