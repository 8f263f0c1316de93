"""Profiles: ``GET /api/profiles`` and ``GET /api/profiles/{name}`` (what ``sm profile`` reads).

A profile's effective config is what ``./start.sh NAME`` would run: services.yaml, the profile's
overrides and this process's env overrides (``UV_<SERVICE>_*``), validated. ``show`` also says,
per service, what differs from the active profile, so an operator sees what a switch would
restart before making it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from core.config import ServiceConfig, load_settings
from core.errors import ConfigError, InvalidArgument, NotFound
from core.gateway.runtime import runtime_of

router = APIRouter()
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
    if name not in settings.profiles:
        raise NotFound(f"no profile {name!r}; profiles: {', '.join(settings.profiles)} (config/profiles.yaml)")
    try:
        other = load_settings(settings.config_dir, profile=name)
    except ConfigError as e:
        raise InvalidArgument(f"profile {name!r} does not load: {e}; fix it in {settings.config_dir}") from e
    p = other.profile
    return {
        "name": p.name, "description": p.description, "device": p.device,
        "active": p.name == settings.profile.name, "active_profile": settings.profile.name,
        "services": {n: _view(c) for n, c in other.services.items()},
        "changes": _changes(settings.services, other.services),
    }
