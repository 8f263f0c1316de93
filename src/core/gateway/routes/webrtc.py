"""WebRTC signalling (docs/webrtc.md): POST /api/offer, PATCH/DELETE /api/offer/{pc_id}, GET /api/webrtc/config.

The router's lifespan (merged into the app's, inside it) builds the :class:`PeerRegistry` on
``app.state.webrtc`` once the runtime exists, and registers its ``close_all`` as a runtime
closer, so shutdown ends every call before the orchestrator goes. ``GET /api/webrtc/stats``
reports open calls and the process's task, thread and fd counts, for leak checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, Field

from core.access import principal_of
from core.errors import InvalidArgument
from core.gateway.runtime import MainRuntime, runtime_of
from core.gateway.schemas import error_responses
from core.gateway.webrtc import CANDIDATES_SCHEMA, OFFER_SCHEMA, PeerRegistry, parse_candidates, parse_offer


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    rt: MainRuntime = app.state.runtime
    peers = PeerRegistry(rt, rt.ctx.settings.gateway.webrtc)
    app.state.webrtc = peers
    rt.closers.append(peers.close_all)
    yield


router = APIRouter(lifespan=_lifespan, responses=error_responses(400))


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its JSON body itself (to say exactly what is wrong with it)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class Answer(BaseModel):
    sdp: str = Field(description="The server's SDP answer, with its ICE candidates.")
    type: str = Field(description='Always "answer".')
    pc_id: str = Field(description="This call's id: PATCH (candidates) and DELETE (hang up) /api/offer/{pc_id}.")
    session_id: str = Field(description="The conversation session the call opened or resumed.")


def peers_of(request: Request) -> PeerRegistry:
    peers: PeerRegistry = request.app.state.webrtc
    return peers


@router.get("/api/webrtc/config")
async def webrtc_config(request: Request) -> dict[str, Any]:
    """ICE servers for the browser's ``new RTCPeerConnection({iceServers})``."""
    servers = runtime_of(request).ctx.settings.gateway.webrtc.ice_servers
    return {"ice_servers": [s.model_dump(exclude_none=True) for s in servers]}


@router.post(
    "/api/offer", response_model=Answer, openapi_extra=_json_body(OFFER_SCHEMA),
    responses=error_responses(404, 503),
)
async def offer(request: Request) -> dict[str, str]:
    """An SDP offer in, the answer (with the server's candidates), ``pc_id`` and ``session_id`` out."""
    rt = runtime_of(request)
    parsed = parse_offer(await request.body(), max_text_chars=rt.ctx.settings.conversation.max_text_chars)
    peer = await peers_of(request).open(parsed, by=principal_of(request))
    sdp = str(peer.pc.localDescription.sdp)
    return {"sdp": sdp, "type": "answer", "pc_id": peer.id, "session_id": peer.session_id}


@router.patch("/api/offer/{pc_id}", status_code=204, openapi_extra=_json_body(CANDIDATES_SCHEMA),
              responses=error_responses(404))
async def add_candidates(pc_id: str, request: Request) -> Response:
    """Trickled ICE candidates of the client (an empty ``candidate`` ends them)."""
    peer = peers_of(request).get(pc_id)
    for candidate in parse_candidates(await request.body()):
        try:
            await peer.pc.addIceCandidate(candidate)
        except ValueError as e:
            raise InvalidArgument(f"candidate rejected ({e}); give the sdpMid or sdpMLineIndex of the offer") from e
    return Response(status_code=204)


@router.delete("/api/offer/{pc_id}", status_code=204, responses=error_responses(404))
async def end_call(pc_id: str, request: Request) -> Response:
    """End the call now; the session stays in the store (resume it with ``config.session_id``)."""
    await peers_of(request).end(pc_id)
    return Response(status_code=204)


@router.get("/api/webrtc/stats")
async def webrtc_stats(request: Request) -> dict[str, Any]:
    """Open calls, asyncio tasks, threads and open fds of main (what a leak check compares)."""
    return peers_of(request).stats()
