"""Control API: health, services, logs, metrics, and the hub over HTTP (/call, /proxy).

This is what the ``sm`` CLI and operators use. Errors come back as
``{"error": {"code", "message"}}`` with a 4xx/5xx status.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from core.errors import InvalidArgument, NotFound, ServiceUnavailable
from core.gateway.metrics import install_main_metrics
from core.gateway.runtime import MainRuntime, runtime_of
from core.gateway.schemas import error_responses
from core.managers.supervisor import State
from core.wire import operation

router = APIRouter()
_PROXY_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
_HOP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding", "keep-alive", "authorization"})


def install_metrics(rt: MainRuntime) -> None:
    install_main_metrics(rt.ctx, rt.supervisor, rt.remote)


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 once every enabled service is RUNNING; 503 (with who is not) before that."""
    rt = runtime_of(request)
    enabled = {c.name for c in rt.ctx.settings.enabled_services() if c.remote is None}
    statuses = [s for s in rt.supervisor.statuses() if s.name in enabled]
    services = {s.name: s.state.value for s in statuses}
    not_ready = [s.name for s in statuses if s.state != State.RUNNING]
    remote = rt.remote.statuses()
    services.update({s.name: s.state.value for s in remote})
    not_ready += [s.name for s in remote if not s.state.usable]
    ok = rt.booted and not not_ready and not rt.boot_error
    body: dict[str, Any] = {
        "status": "ok" if ok else "starting" if not rt.boot_error else "error",
        "profile": rt.ctx.settings.profile.name,
        "services": services,
    }
    if rt.boot_error:
        body["error"] = rt.boot_error
    elif not ok:
        body["waiting_for"] = not_ready or ["service preparation (venvs)"]
    down = {s.name: s.last_error for s in remote if s.last_error}
    if down:
        body["remote_errors"] = down
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/services")
async def list_services(request: Request) -> list[dict[str, Any]]:
    return runtime_of(request).service_rows()


@router.get("/services/{name}", responses=error_responses(400, 404))
async def describe_service(name: str, request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    status = rt.remote.status(name) if name in rt.remote else rt.supervisor.status(name)
    out = status.to_dict()
    cfg = rt.ctx.settings.services[name]
    out["config"] = cfg.model_dump(mode="json", exclude={"env"})
    return out


@router.post("/services/{name}/{action}", responses=error_responses(400, 404))
async def service_action(name: str, action: Literal["start", "stop", "restart"], request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    if name in rt.remote:
        if action != "restart":
            raise InvalidArgument(
                f"service {name!r} is a RunPod endpoint ({rt.remote.status(name).endpoint}); RunPod starts and "
                "stops its workers (set min/max workers on the endpoint). `sm restart` re-probes it."
            )
        return (await rt.remote.probe(name)).to_dict()
    sup = rt.supervisor
    fn = {"start": sup.start, "stop": sup.stop, "restart": sup.restart}[action]
    status = await fn(name)
    return status.to_dict()


@router.get("/services/{name}/logs", responses=error_responses(400, 404))
async def service_logs(
    name: str,
    request: Request,
    tail: int = Query(100, ge=0, le=100_000, description="Lines from the end."),
    offset: int | None = Query(None, ge=0, description="Byte offset from a previous reply; returns what follows."),
) -> dict[str, Any]:
    """Log lines of a service. ``offset`` lets ``sm logs -f`` follow without re-reading."""
    rt = runtime_of(request)
    if name in rt.remote:
        raise InvalidArgument(
            f"service {name!r} runs on RunPod ({rt.remote.status(name).endpoint}); its worker logs are in the "
            "RunPod console (endpoint > Logs), not on this machine"
        )
    sup = rt.supervisor
    path = sup.log_path(name)
    if not path.exists():
        return {"service": name, "lines": [], "offset": 0, "path": str(path)}
    size = path.stat().st_size
    if offset is None:
        return {"service": name, "lines": sup.tail_logs(name, tail), "offset": size, "path": str(path)}
    if offset > size:  # rotated since the last read
        offset = 0
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read(1024 * 1024)
    text = chunk.decode("utf-8", "replace")
    cut = text.rfind("\n") + 1
    return {
        "service": name, "lines": text[:cut].splitlines(), "offset": offset + len(text[:cut].encode()),
        "path": str(path),
    }


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(runtime_of(request).ctx.registry), media_type=CONTENT_TYPE_LATEST)


class CallBody(BaseModel):
    service: str = Field(description="Service name from services.yaml, e.g. 'stt'.")
    method: str = Field(description="Operation name, e.g. 'Transcribe', 'Echo', 'Info'.")
    payload: dict[str, Any] = Field(default_factory=dict, description="Request in proto3 JSON (bytes as base64).")
    protocol: Literal["grpc", "msgpack", "json", "runpod"] | None = Field(None, description="Force one transport.")
    deadline_s: float | None = Field(None, gt=0, le=600)


@router.post("/call", responses=error_responses(400, 404, 503))
async def call(body: CallBody, request: Request) -> dict[str, Any]:
    """Call any service operation through the hub, with proto3-JSON in and out."""
    rt = runtime_of(request)
    role = rt.hub.endpoint(body.service).role
    op = operation(role, body.method)
    req = op.request()
    try:
        json_format.ParseDict(body.payload, req)
    except json_format.ParseError as e:
        raise InvalidArgument(f"payload is not a valid {op.request.DESCRIPTOR.full_name}: {e}") from e
    resp = await rt.hub.call(
        body.service, body.method, req, protocol=body.protocol, deadline_s=body.deadline_s,
        metadata=_request_id(request),
    )
    return {
        "service": body.service, "method": body.method,
        "response": json_format.MessageToDict(resp, preserving_proto_field_name=True),
    }


def _request_id(request: Request) -> dict[str, str]:
    rid = request.headers.get("x-request-id")
    return {"x-request-id": rid} if rid else {}


async def proxy(service: str, path: str, request: Request) -> Response:
    """Forward a raw HTTP request to a service's HTTP port, adding the internal token."""
    rt = runtime_of(request)
    try:
        ep = rt.supervisor.endpoint(service)
    except KeyError as e:
        raise NotFound(f"unknown service {service!r}") from e
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    headers["x-internal-token"] = ep.token
    url = f"{ep.http_base}/{path}"
    try:
        r = await rt.proxy_client.request(
            request.method, url, params=request.query_params, headers=headers, content=await request.body()
        )
    except httpx.TransportError as e:
        raise ServiceUnavailable(
            f"service {service!r} is not reachable over HTTP at {ep.http_base} ({type(e).__name__}); "
            f"check `sm describe {service}`"
        ) from e
    passthrough = {k: v for k, v in r.headers.items() if k.lower() in {"content-type", "retry-after"}}
    return Response(r.content, status_code=r.status_code, headers=passthrough)


# One route per method, each with its own operationId (one route for all five gave them the same id,
# which OpenAPI forbids and client generators and schemathesis trip over).
for _method in _PROXY_METHODS:
    router.add_api_route(
        "/proxy/{service}/{path:path}", proxy, methods=[_method], operation_id=f"proxy_{_method.lower()}",
        responses=error_responses(404, 503),
    )
