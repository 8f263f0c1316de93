"""Session routes: create, list, describe, end (or purge) sessions, export transcripts, list agents.

``GET /api/sessions/{id}`` resumes a session from the store when it is not in memory (after an
idle eviction or a restart of main). Ending a session keeps its transcript; ``?purge=true``
deletes it from the store as well.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core.access import principal_of
from core.errors import NotFound
from core.gateway.runtime import runtime_of
from core.gateway.schemas import error_responses
from core.sessions import check_session_id

router = APIRouter(prefix="/api", tags=["sessions"], responses=error_responses(400, 404, 503))


class NewSession(BaseModel):
    session_id: str | None = Field(None, description="Your own id ([A-Za-z0-9_-]{1,64}); generated when absent.")
    agent: str | None = Field(None, description="Agent name (GET /api/agents); the default agent when absent.")
    voice: str | None = Field(None, description="TTS voice; the agent's voice when absent.")
    language: str | None = Field(None, description="en, pt...; the agent's language when absent.")


@router.post("/sessions")
async def create_session(request: Request, body: NewSession | None = None) -> JSONResponse:
    """201 with the new session; 200 with the existing one when ``session_id`` is already live or stored."""
    sessions, by = runtime_of(request).sessions, principal_of(request)
    body = body or NewSession.model_validate({})
    sid = by.scope(body.session_id, body.agent)[0]
    existed = sid is not None and (sid in sessions or sessions.store.session_row(check_session_id(sid)) is not None)
    s = sessions.create(agent=body.agent, session_id=body.session_id, voice=body.voice, language=body.language, by=by)
    return JSONResponse(sessions.describe(s), status_code=200 if existed else 201)


@router.get("/sessions")
async def list_sessions(
    request: Request,
    stored: bool = Query(False, description="Also list sessions kept only in the store (resumable)."),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    sessions, by = runtime_of(request).sessions, principal_of(request)
    out: dict[str, Any] = {"sessions": sessions.list(by)[:limit]}
    if stored:
        owner = None if by.sees_all_sessions or by.via == "open" else by.name
        out["stored"] = [
            {"session_id": r["id"], "agent": r["agent"], "voice": r["voice"], "language": r["language"],
             "created_at": r["created_at"], "last_active": r["last_active"], "turn_count": r["turn_count"],
             "live": r["id"] in sessions}
            for r in await sessions.store.list_sessions(limit, owner=owner)
            if by.session_id in (None, r["id"])
        ]
    return out


@router.get("/sessions/{session_id}")
async def get_session(session_id: str, request: Request) -> dict[str, Any]:
    sessions = runtime_of(request).sessions
    s = sessions.get(session_id, by=principal_of(request))
    return {**sessions.describe(s), "history": [
        {"role": h.role, "text": h.text, "interrupted": h.interrupted} for h in s.history
    ]}


@router.delete("/sessions/{session_id}")
async def end_session(
    session_id: str, request: Request,
    purge: bool = Query(False, description="Also delete the session and its turns from the store."),
) -> dict[str, Any]:
    rt, by = runtime_of(request), principal_of(request)
    rt.sessions.check_access(session_id, by)
    if purge:
        await rt.sessions.purge(session_id, by)
    else:
        rt.sessions.end(session_id, by)
    rt.polls.drop(session_id)
    return {"session_id": session_id, "ended": True, "purged": purge}


@router.get("/sessions/{session_id}/transcript")
async def transcript(session_id: str, request: Request) -> dict[str, Any]:
    """Every stored turn of the session (ended ones too), as JSON."""
    sessions, by = runtime_of(request).sessions, principal_of(request)
    out = await sessions.store.transcript(check_session_id(session_id))
    if out is None:
        by.scope(session_id, None)
        raise NotFound(f"unknown session {session_id!r}; nothing stored under that id")
    by.check_session(session_id, out["owner"], out["agent"])
    return out


@router.get("/agents")
async def agents(request: Request) -> dict[str, Any]:
    sessions = runtime_of(request).sessions
    return {
        "default": sessions.config.default_agent,
        "agents": [
            {"name": a.name, "description": a.description, "language": a.language, "voice": a.voice,
             "tts_engine": a.tts_engine, "max_tokens": a.max_tokens}
            for a in sorted(sessions.agents.values(), key=lambda a: a.name)
        ],
    }
