"""Monitoring routes: Prometheus http_sd targets for main and every live service.

``GET /api/monitoring/targets`` answers in Prometheus' HTTP service-discovery format, so
``http_sd_configs`` follows restarts (a port-0 service gets a new port each spawn) and profile
changes without editing prometheus.yml. One target group per scrape target:

    [{"targets": ["127.0.0.1:8080"], "labels": {"component": "main", "role": "gateway", "profile": "local-pc"}},
     {"targets": ["127.0.0.1:41234"], "labels": {"component": "stt", "role": "stt", "profile": "local-pc"}}]

Only services whose process is alive and has its HTTP port are listed (the port is the one of
the current spawn). The target label is ``component``, not ``service``: metrics already carry a
``service`` label, and a target label of the same name would overwrite it on ingestion.

Like every route but /health and /metrics, it needs the API key when main has one; Prometheus
sends it with ``http_sd_configs[].authorization`` (see docs/observability.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from core.gateway.runtime import MainRuntime, runtime_of

router = APIRouter()
_WILDCARD = frozenset({"", "0.0.0.0", "::", "[::]"})


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def main_address(request: Request, rt: MainRuntime) -> tuple[str, int]:
    """Where this request reached main: the address a scraper on the same path can use."""
    server = request.scope.get("server")
    gw = rt.ctx.settings.gateway
    if server and server[1]:
        host, port = str(server[0]), int(server[1])
        return (gw.host if host in _WILDCARD else host), port
    return gw.host, gw.port


def target_groups(rt: MainRuntime, main_host: str, main_port: int) -> list[dict[str, Any]]:
    profile = rt.ctx.settings.profile.name
    groups: list[dict[str, Any]] = [{
        "targets": [host_port(main_host, main_port)],
        "labels": {"component": "main", "role": "gateway", "profile": profile},
    }]
    for st in rt.supervisor.statuses():
        if st.pid is None or not st.http_port:
            continue
        host = main_host if st.host in _WILDCARD else st.host
        groups.append({
            "targets": [host_port(host, st.http_port)],
            "labels": {"component": st.name, "role": st.role, "profile": profile},
        })
    return groups


@router.get("/api/monitoring/targets")
async def targets(request: Request) -> list[dict[str, Any]]:
    """Prometheus http_sd target groups: main, then each service with a live HTTP port."""
    rt = runtime_of(request)
    host, port = main_address(request, rt)
    return target_groups(rt, host, port)
