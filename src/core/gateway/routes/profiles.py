"""Profiles: ``GET /api/profiles``, ``GET /api/profiles/{name}`` and ``POST /api/profiles/{name}/activate``.

A profile's effective config is what ``./start.sh NAME`` would run: services.yaml, the profile's
overrides and this process's env overrides (``UV_<SERVICE>_*``), validated. ``show`` also says,
per service, what differs from the active profile, so an operator sees what a switch would
restart before making it. ``activate`` switches the running main (``core.managers.profiles``); like
every route but the public ones, it needs the API key when one is configured.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core.config import ServiceConfig
from core.gateway.runtime import runtime_of
from core.gateway.schemas import error_responses
from core.managers.profiles import load_profile

router = APIRouter(responses=error_responses(400, 404))
#: Fields shown per service; env is left out (it may hold secrets' names and values).
_FIELDS = ("enabled", "extra", "engine", "model", "device", "options", "remote")


def _view(cfg: ServiceConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json", include=set(_FIELDS))


def _changes(active: dict[str, ServiceConfig], other: dict[str, ServiceConfig]) -> dict[str, dict[str, Any]]:
    """Per service, each field whose value differs: ``{"field": {"active": a, "new": b}}``."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(active) | set(other)):
        a = _view(active[name]) if name in active else {}
        b = _view(other[name]) if name in other else {}
        diff = {f: {"active": a.get(f), "new": b.get(f)} for f in _FIELDS if a.get(f) != b.get(f)}
        if diff:
            out[name] = diff
    return out


@router.get("/api/profiles")
async def list_profiles(request: Request) -> list[dict[str, Any]]:
    settings = runtime_of(request).ctx.settings
    return [
        {"name": p.name, "description": p.description, "device": p.device, "active": p.name == settings.profile.name,
         "services": sorted(p.services)}
        for p in settings.profiles.values()
    ]


@router.get("/api/profiles/{name}")
async def show_profile(name: str, request: Request) -> dict[str, Any]:
    settings = runtime_of(request).ctx.settings
    other = load_profile(settings, name)
    p = other.profile
    return {
        "name": p.name, "description": p.description, "device": p.device,
        "active": p.name == settings.profile.name, "active_profile": settings.profile.name,
        "services": {n: _view(c) for n, c in other.services.items()},
        "changes": _changes(settings.services, other.services),
    }


class ActivateBody(BaseModel):
    service: list[str] | None = Field(None, description="Only these services (default: every one).")
    mode: str = Field("blue-green", description="blue-green (no downtime) or stop-start (less memory).")


@router.post("/api/profiles/{name}/activate")
async def activate_profile(name: str, request: Request, body: ActivateBody | None = None) -> JSONResponse:
    """Switch the running main to profile ``name``: 200 with the report, 503 with it when a new
    instance failed to start (the old one keeps serving), 409 when another switch runs or memory
    is short, 400 for a switch that needs a restart."""
    body = body or ActivateBody(service=None, mode="blue-green")
    report = await runtime_of(request).profiles.activate(name, services=body.service, mode=body.mode)
    return JSONResponse(report, status_code=503 if report["outcome"] == "failed" else 200)
