"""FastAPI app factory for main. The lifespan owns the supervisor and the hub.

Every exit path (Ctrl-C, SIGTERM, an exception in startup) runs the same cleanup: services
are stopped gracefully and the hub's channels closed.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from core.context import GlobalContext, ProcessContext
from core.errors import CallError, ConfigError, PortInUse, SupervisorError, UnknownService, retry_after_header
from core.gateway.routes import control, openai_audio, openai_chat, openai_speech
from core.gateway.runtime import MainRuntime
from core.managers.hub import CommunicationManager
from core.managers.supervisor import ServiceSupervisor

_OPEN_PATHS = frozenset({"/health", "/metrics"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def gateway_api_key(g: GlobalContext) -> str:
    """The API key main requires; mandatory when binding anything but loopback."""
    gw = g.settings.gateway
    key = os.environ.get(gw.api_key_env, "")
    if not is_loopback(gw.host) and not key:
        raise ConfigError(
            "config/services.yaml", "gateway.host",
            f"binding to {gw.host} exposes the platform beyond this machine; set {gw.api_key_env} "
            "to an API key (clients send it as 'Authorization: Bearer <key>') or bind to 127.0.0.1",
        )
    return key


def create_app(g: GlobalContext, *, supervisor: ServiceSupervisor | None = None) -> FastAPI:
    api_key = gateway_api_key(g)
    ctx = ProcessContext(global_=g, name="main")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sup = supervisor or ServiceSupervisor(ctx)
        rt = MainRuntime(ctx=ctx, supervisor=sup, hub=CommunicationManager(ctx, sup, config=g.settings.hub))
        control.install_metrics(rt)
        app.state.runtime = rt
        await rt.boot()
        try:
            yield
        finally:
            await rt.close()

    app = FastAPI(
        title="Ultravox Pipeline",
        version="0.1.0",
        lifespan=lifespan,
        description="Gateway and control API of the Ultravox Pipeline main process.",
    )

    if api_key:
        @app.middleware("http")
        async def require_api_key(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            if request.url.path not in _OPEN_PATHS:
                auth = request.headers.get("authorization", "")
                given = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
                if not hmac.compare_digest(given.encode(), api_key.encode()):
                    return JSONResponse(
                        {"error": {"code": "UNAUTHENTICATED",
                                   "message": "missing or wrong API key; send 'Authorization: Bearer <key>'"}},
                        status_code=401,
                    )
            return await call_next(request)

    @app.exception_handler(CallError)
    async def on_call_error(_: Request, exc: CallError) -> JSONResponse:
        headers = {}
        if retry := retry_after_header(exc):
            headers["Retry-After"] = retry
        elif exc.http_status == 503:
            headers["Retry-After"] = "1"
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status, headers=headers)

    @app.exception_handler(SupervisorError)
    async def on_supervisor_error(_: Request, exc: SupervisorError) -> JSONResponse:
        status = 404 if isinstance(exc, UnknownService) else 409 if isinstance(exc, PortInUse) else 500
        code = "NOT_FOUND" if status == 404 else "FAILED_PRECONDITION" if status == 409 else "INTERNAL"
        return JSONResponse({"error": {"code": code, "message": str(exc)}}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(
            {"error": {"code": "INVALID_ARGUMENT", "message": "invalid request: " + "; ".join(parts)}},
            status_code=400,
        )

    app.include_router(control.router)
    app.include_router(openai_audio.router)
    app.include_router(openai_speech.router)
    app.include_router(openai_chat.router)
    return app
