"""HTTP polling, for clients that cannot hold a socket: post a turn, then long-poll its events.

``POST /api/poll/{session_id}/text`` and ``/audio`` start a turn in the background and answer
202 at once with where to read from; ``GET /api/poll/{session_id}/events?after=<seq>&wait=<s>``
returns the session's events numbered above ``after``, waiting up to ``wait`` seconds (at most
25) for the first one. Events are the WebSocket's JSON events plus ``seq``; reply audio arrives
as ``audio`` events with base64 PCM16 (see core.sessions.polling). The session must exist
(``POST /api/sessions``); one turn runs per session at a time (409 otherwise), and when every
admission slot is busy the POST is refused at once with 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core.access import Principal, principal_of
from core.conversation.types import Session
from core.errors import CallError, Overloaded
from core.gateway.routes.conversation import AUDIO_BODY, check_text, parse_upload
from core.gateway.runtime import MainRuntime, runtime_of
from core.gateway.schemas import error_responses
from core.logs import session_id_var, turn_id_var
from core.sessions import PollBuffer, PollSink, TurnInProgress

router = APIRouter(prefix="/api/poll", tags=["polling"], responses=error_responses(400, 404, 409, 413, 503))
log = logging.getLogger("ultravox.gateway.polling")
MAX_WAIT_S = 25.0
START_STEPS = 20
"""Event-loop steps the POST waits for the orchestrator to name the turn (it does so before its first await)."""
LINGER_S = 0.05
"""After the first new event, wait this long for more, so one poll carries a burst, not one token."""


class TextTurn(BaseModel):
    text: str = Field(description="The user's words.")
    sample_rate: int | None = Field(None, ge=8000, le=48000, description="Reply audio rate (PCM16).")


def _prepare(rt: MainRuntime, session_id: str, by: Principal) -> tuple[Session, PollBuffer]:
    s = rt.sessions.get(session_id, by=by)
    session_id_var.set(s.id)
    if rt.polls.running(s.id) or s.turn_lock.locked():
        raise TurnInProgress(f"a turn is already running in session {s.id!r}; wait for its turn_complete event")
    if rt.admission.full:
        raise Overloaded(
            f"the server is busy: {rt.admission.in_flight} turn(s) in flight (max_concurrent_turns = "
            f"{rt.admission.max_turns}); retry after the Retry-After seconds",
            retry_after_s=rt.admission.retry_after_s(),
        )
    return s, rt.polls.buffer(s.id)


async def _start(rt: MainRuntime, s: Session, buf: PollBuffer, out_rate: int, run: Any) -> JSONResponse:
    """Start ``run(sink)`` in the background; failures become error + turn_complete events.

    The turn runs in its own copy of the logging context, where the orchestrator sets
    ``turn_id`` as it starts the turn: that is how the reply can name the turn at once.
    """
    after = buf.seq
    sink = PollSink(buf, out_rate)

    async def turn() -> None:
        session_id_var.set(s.id)
        try:
            await run(sink)
        except asyncio.CancelledError:
            raise
        except CallError as e:
            outcome = "rejected" if isinstance(e, Overloaded) else "failed"
            buf.push({"type": "error", "turn_id": turn_id_var.get(), "code": e.code, "message": e.message,
                      "stage": "turn",
                      **({"retry_after_s": e.retry_after_s} if isinstance(e, Overloaded) else {})})
            buf.push({"type": "turn_complete", "turn_id": turn_id_var.get(), "outcome": outcome})
        except Exception as e:  # a bug must reach the client as an event, never kill the loop silently
            log.exception("polling turn failed")
            buf.push({"type": "error", "turn_id": turn_id_var.get(), "code": "INTERNAL", "stage": "turn",
                      "message": f"the turn failed: {type(e).__name__}"})
            buf.push({"type": "turn_complete", "turn_id": turn_id_var.get(), "outcome": "failed"})

    context = contextvars.copy_context()
    context.run(turn_id_var.set, "")
    task = rt.polls.start(s.id, turn, context=context)
    for _ in range(START_STEPS):
        if context.get(turn_id_var) or task.done():
            break
        await asyncio.sleep(0)
    return JSONResponse(
        {"session_id": s.id, "turn_id": context.get(turn_id_var) or None, "after": after,
         "events_url": f"/api/poll/{s.id}/events?after={after}&wait=20"},
        status_code=202,
    )


@router.post("/{session_id}/text")
async def poll_text(session_id: str, body: TextTurn, request: Request) -> JSONResponse:
    rt = runtime_of(request)
    text = check_text(body.text, rt.sessions.config.max_text_chars, "text")
    s, buf = _prepare(rt, session_id, principal_of(request))
    out_rate = body.sample_rate or rt.sessions.config.output_sample_rate

    async def run(sink: PollSink) -> None:
        await rt.orchestrator.text_turn(s, text, sink, out_rate=out_rate)
    return await _start(rt, s, buf, out_rate, run)


@router.post("/{session_id}/audio", openapi_extra=AUDIO_BODY)
async def poll_audio(
    session_id: str, request: Request,
    sample_rate: int | None = Query(None, ge=8000, le=48000, description="Rate of a raw PCM16 body."),
    out_sample_rate: int | None = Query(None, ge=8000, le=48000, description="Reply audio rate."),
) -> JSONResponse:
    rt = runtime_of(request)
    rt.sessions.get(session_id, by=principal_of(request))  # 404 before reading a large body for nothing
    up = await parse_upload(request, rt.sessions.config.max_audio_bytes, sample_rate)
    s, buf = _prepare(rt, session_id, principal_of(request))
    out_rate = out_sample_rate or rt.sessions.config.output_sample_rate

    async def run(sink: PollSink) -> None:
        await rt.orchestrator.audio_turn(s, up.audio, sample_rate=up.sample_rate, sink=sink, out_rate=out_rate)
    return await _start(rt, s, buf, out_rate, run)


@router.get("/{session_id}/events")
async def poll_events(
    session_id: str, request: Request,
    after: int = Query(0, ge=0, description="The last seq you have seen (0 for all kept events)."),
    wait: float = Query(20.0, ge=0, le=MAX_WAIT_S, description="Seconds to wait for a first event."),
) -> dict[str, Any]:
    """``{"events": [...], "next": seq to pass as after, "missed": n dropped, "more": bool, "reset": bool}``."""
    rt = runtime_of(request)
    s = rt.sessions.get(session_id, by=principal_of(request))
    buf = rt.polls.buffer(s.id)
    out = await buf.wait_after(after, wait)
    if out["events"] and not out["more"] and rt.polls.running(s.id):
        await asyncio.sleep(LINGER_S)
        out = buf.after(after)
    return {**out, "turn_running": rt.polls.running(s.id)}
