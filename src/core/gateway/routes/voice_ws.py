"""WebSocket ``/ws/voice``: a spoken conversation over one socket (protocol: docs/websocket.md).

In: PCM16 16 kHz mono binary frames (an empty frame ends the utterance: push-to-talk) and JSON
control messages (config, text, interrupt, reset, end). Out: JSON events and PCM16 reply
audio at the rate the client chose. One :class:`VoiceSocket` per connection: the receive loop
only parses and hands over (feeding audio never waits for the model services), and a writer
task drains the connection's bounded :class:`Outbox`. Bad input of any kind is an ``error``
event and the connection stays open; a client that stops reading entirely is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from core.conversation.audio import container_kind
from core.conversation.control import Command, TextMessage, VoiceConfig, parse_control
from core.conversation.outbox import Outbox
from core.conversation.types import Session
from core.conversation.voice import VoiceConversation
from core.errors import CallError, InvalidArgument
from core.gateway.runtime import MainRuntime
from core.logs import session_id_var

router = APIRouter()
log = logging.getLogger("ultravox.main.ws")
CONFIG_GRACE_S = 1.0
"""A client that sends nothing this long after connecting gets a default session (and ``ready``)."""


@router.websocket("/ws/voice")
async def voice_ws(ws: WebSocket) -> None:
    rt: MainRuntime = ws.app.state.runtime
    if not _authorized(ws, rt):
        await ws.close(code=1008, reason="missing or wrong API key; send 'Authorization: Bearer <key>' or ?api_key=")
        return
    await ws.accept()
    await VoiceSocket(ws, rt).serve()


def _authorized(ws: WebSocket, rt: MainRuntime) -> bool:
    if not rt.api_key_required:
        return True
    auth = ws.headers.get("authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else ws.headers.get("x-api-key", "")
    given = given or ws.query_params.get("api_key", "")
    return hmac.compare_digest(given.encode(), rt.api_key.encode())


class VoiceSocket:
    def __init__(self, ws: WebSocket, rt: MainRuntime) -> None:
        self.ws, self.rt, self.cfg = ws, rt, rt.ctx.settings.conversation
        self.outbox = Outbox()
        self.conv: VoiceConversation | None = None
        self.voice = VoiceConfig()
        self._done = False

    async def serve(self) -> None:
        writer = asyncio.create_task(self._write(), name="ws-writer")
        grace = asyncio.create_task(self._default_after_grace(), name="ws-grace")
        watchdog = asyncio.create_task(self._hang_up_on_overflow(), name="ws-watchdog")
        try:
            while not self._done:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self._handle(message)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away
        finally:
            grace.cancel()
            watchdog.cancel()
            if self.conv is not None:
                await self.conv.close()
            self.outbox.close()
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(writer, 5)
            writer.cancel()
            with contextlib.suppress(Exception):
                await self.ws.close(code=1000)

    async def _handle(self, message: Mapping[str, Any]) -> None:
        try:
            if (data := message.get("bytes")) is not None:
                await self._audio(data)
            elif (text := message.get("text")) is not None:
                await self._control(text)
        except CallError as e:  # bad input, unknown session or agent, too many sessions
            await self._error(e.code, e.message, retry_after_s=getattr(e, "retry_after_s", None))
        except Exception as e:  # a bug: report it, keep the connection
            log.exception("/ws/voice message failed: %s", e)
            await self._error("INTERNAL", f"the server failed on this message ({type(e).__name__}); try again")

    async def _audio(self, data: bytes) -> None:
        limit = self.cfg.max_ws_frame_bytes
        if len(data) > limit:
            raise InvalidArgument(
                f"audio frame of {len(data)} bytes is over the {limit}-byte limit; send PCM16 16 kHz mono in "
                "frames of 20 to 100 ms (640 to 3200 bytes)"
            )
        if len(data) % 2:
            raise InvalidArgument(
                f"audio frame of {len(data)} bytes has an odd length: PCM16 needs 2 bytes per sample; the frame "
                "was dropped"
            )
        if what := container_kind(data):
            raise InvalidArgument(
                f"this frame starts like {what}: send raw PCM16 little-endian mono samples at 16 kHz with no "
                "header (decode the file first); the frame was dropped"
            )
        conv = await self._conversation()
        if data:
            await conv.feed(data)
        else:
            await conv.end_utterance()

    async def _control(self, raw: str) -> None:
        if len(raw) > self.cfg.max_ws_frame_bytes:
            raise InvalidArgument(f"control message of {len(raw)} characters is over the size limit")
        msg = parse_control(raw, max_text_chars=self.cfg.max_text_chars)
        if isinstance(msg, VoiceConfig):
            await self._configure(msg)
        elif isinstance(msg, TextMessage):
            await (await self._conversation()).say(msg.text)
        elif isinstance(msg, Command) and msg.type == "interrupt":
            if self.conv is not None:
                await self.conv.interrupt()
        elif isinstance(msg, Command) and msg.type == "reset":
            await self._reset()
        elif isinstance(msg, Command) and msg.type == "end":
            await self._end()

    async def _conversation(self) -> VoiceConversation:
        if self.conv is None:
            await self._configure(self.voice)
        assert self.conv is not None
        self.conv.session.touch()
        return self.conv

    async def _configure(self, voice: VoiceConfig) -> None:
        """Open (or switch to) the session ``voice`` names; the old conversation, if any, ends."""
        sessions = self.rt.sessions
        if voice.session_id is not None:
            session = sessions.get(voice.session_id)
            if voice.agent is not None and voice.agent != session.agent.name:
                raise InvalidArgument(
                    f"session {session.id!r} uses agent {session.agent.name!r}; an agent is chosen only for a new "
                    "session (leave out session_id)"
                )
            sessions.configure(session, voice=voice.voice, language=voice.language)
        else:
            session = sessions.create(agent=voice.agent, voice=voice.voice, language=voice.language)
        await self._switch(voice, session)

    async def _switch(self, voice: VoiceConfig, session: Session) -> None:
        if self.conv is not None:
            await self.conv.close()
        rate = voice.sample_rate or self.cfg.output_sample_rate
        self.voice = voice.model_copy(update={"session_id": session.id, "agent": None})
        self.conv = self.rt.orchestrator.voice(
            session, self.outbox, out_rate=rate, end_silence_ms=voice.end_silence_ms, partials=voice.partials
        )
        session_id_var.set(session.id)
        await self.outbox.send_event({
            "type": "ready", "session_id": session.id, "agent": session.agent.name, "voice": session.voice,
            "language": session.language, "sample_rate": rate, "input_sample_rate": 16000,
            "turns": session.turn_count, "max_frame_bytes": self.cfg.max_ws_frame_bytes,
        })

    async def _reset(self) -> None:
        old = self.conv.session if self.conv is not None else None
        if self.conv is not None:
            await self.conv.close()
            self.conv = None
        if old is not None:
            self.rt.sessions.end(old.id)
        agent = old.agent.name if old is not None else None
        session = self.rt.sessions.create(
            agent=agent, voice=old.voice if old else None, language=old.language if old else None
        )
        await self._switch(self.voice.model_copy(update={"session_id": None}), session)

    async def _end(self) -> None:
        self._done = True
        if self.conv is not None:
            await self.conv.close()
            self.rt.sessions.end(self.conv.session.id)
            await self.outbox.send_event({"type": "ended", "session_id": self.conv.session.id})

    async def _error(self, code: str, message: str, *, retry_after_s: float | None = None) -> None:
        event: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if retry_after_s is not None:
            event["retry_after_s"] = retry_after_s
        await self.outbox.send_event(event)

    async def _default_after_grace(self) -> None:
        await asyncio.sleep(CONFIG_GRACE_S)
        if self.conv is None and not self._done:
            try:
                await self._conversation()
            except CallError as e:
                await self._error(e.code, e.message, retry_after_s=getattr(e, "retry_after_s", None))

    async def _hang_up_on_overflow(self) -> None:
        await self.outbox.overflowed.wait()
        log.warning("closing a /ws/voice client that stopped reading (%d events waiting)", self.outbox.max_events)
        with contextlib.suppress(Exception):
            await self.ws.close(code=1008, reason="client not reading; too many events waiting")

    async def _write(self) -> None:
        try:
            while (item := await self.outbox.get()) is not None:
                if isinstance(item, bytes):
                    await self.ws.send_bytes(item)
                else:
                    await self.ws.send_text(json.dumps(item, separators=(",", ":"), ensure_ascii=False))
        except Exception as e:  # the client went away mid-send
            log.debug("ws writer stopped: %s", e)
            self.outbox.close()
