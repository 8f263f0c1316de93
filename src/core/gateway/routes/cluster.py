"""Cluster routes: the Ray Serve deployments of the ``cluster`` profile, and scaling them.

Both go through the hub to the cluster agent (role ``cluster``, ``services/cluster``), like any
service call: ``GET /api/cluster`` is its ``Status``, ``POST /api/cluster/deployments/{name}/scale``
its ``Scale``. ``./sm list`` and ``./sm scale ROLE N`` use them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field

from core.errors import NotFound
from core.gateway.runtime import MainRuntime, runtime_of

router = APIRouter(prefix="/api/cluster", tags=["cluster"])


class ScaleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(ge=0, le=1000, description="num_replicas, or min_replicas of an autoscaling deployment.")
    max_replicas: int = Field(0, ge=0, le=1000, description="Autoscaling only: the new max (0 keeps it).")


def _agent(rt: MainRuntime) -> str:
    try:
        return rt.service_for_role("cluster")
    except NotFound as e:
        raise NotFound(
            f"profile {rt.ctx.settings.profile.name!r} runs no cluster service; the Ray Serve routes need the "
            "cluster profile (./start.sh cluster, or ./sm profile activate cluster)"
        ) from e


def _dict(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for d in out.get("deployments", []):   # proto3 JSON writes 64-bit counts as strings
        d["restarts"] = int(d.get("restarts", 0))
    return out


@router.get("")
async def cluster_status(request: Request) -> dict[str, Any]:
    """Every deployment's replicas by state (running, starting, unhealthy), target, restarts seen."""
    rt = runtime_of(request)
    return _dict(await rt.hub.call(_agent(rt), "Status", {}))


@router.post("/deployments/{deployment}/scale")
async def scale(deployment: str, body: ScaleBody, request: Request) -> dict[str, Any]:
    """Set a deployment's replicas (a role: stt, tts, llm, or its Serve application name)."""
    rt = runtime_of(request)
    resp = await rt.hub.call(_agent(rt), "Scale", {
        "deployment": deployment, "replicas": body.replicas, "max_replicas": body.max_replicas,
    }, deadline_s=600)
    return _dict(resp)
