"""One streaming voice client, whatever carries it: control messages, sessions, audio into the conversation.

``/ws/voice`` and WebRTC (``POST /api/offer``) differ only in how bytes travel; what a client
may say and what it gets back is the same, so it lives here once. A transport hands over
PCM16 16 kHz frames (:meth:`VoiceEndpoint.audio`) and JSON text (:meth:`VoiceEndpoint.control`)
and delivers whatever lands in its :class:`EventSink`. Every failure of a message becomes an
``error`` event (:meth:`VoiceEndpoint.guard`); the transport's connection goes on.

Control messages: ``config`` (open or switch a session), ``text`` (a typed turn), ``interrupt``,
``reset`` (end the session and start a fresh one), ``end`` (end the session and the call) and,
where the transport allows it, ``commit`` (push-to-talk: the utterance ends now).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from typing import Any

from core.access.guard import check_json_text
from core.access.principal import OPEN, Principal
from core.config.models import ConversationConfig
from core.conversation.control import TYPES, Command, TextMessage, VoiceConfig, parse_control
from core.conversation.types import EventSink, Session
from core.conversation.voice import VoiceConversation
from core.errors import CallError, InvalidArgument, PermissionDenied, ServiceUnavailable
from core.gateway.runtime import MainRuntime
from core.logs import session_id_var

log = logging.getLogger("ultravox.main.voice")
COMMIT = "commit"


class VoiceEndpoint:
    """The conversation side of one voice connection (see the module docstring).

    ``out_rate`` fixes the reply rate for transports that cannot change it (a WebRTC track is
    48 kHz); otherwise the client's ``config.sample_rate`` or the configured default applies.
    """

    def __init__(
        self, rt: MainRuntime, sink: EventSink, *, out_rate: int | None = None, commit: bool = False,
        name: str = "/ws/voice", by: Principal = OPEN,
    ) -> None:
        self.rt, self.sink, self.name, self.by = rt, sink, name, by
        self.cfg: ConversationConfig = rt.ctx.settings.conversation
        self.conv: VoiceConversation | None = None
        self.voice = VoiceConfig()
        self.done = False
        """Set by ``end``: the transport should close the connection once the ``ended`` event is out."""
        self._fixed_rate = out_rate
        self._commit = commit

    @property
    def types(self) -> tuple[str, ...]:
        return (*TYPES, COMMIT) if self._commit else TYPES

    async def guard(self, work: Awaitable[object]) -> None:
        """Run one message's ``work``; a failure is an ``error`` event, never the end of the connection."""
        try:
            await work
        except CallError as e:  # bad input, unknown session or agent, too many sessions
            await self.error(e.code, e.message, retry_after_s=getattr(e, "retry_after_s", None))
        except Exception as e:  # a bug: report it, keep the connection
            log.exception("%s message failed: %s", self.name, e)
            await self.error("INTERNAL", f"the server failed on this message ({type(e).__name__}); try again")

    # ---- input ------------------------------------------------------------------------------

    async def audio(self, pcm: bytes) -> None:
        """One PCM16 16 kHz mono frame; an empty one ends the utterance (push-to-talk)."""
        conv = await self.conversation()
        if pcm:
            await conv.feed(pcm)
        else:
            await conv.end_utterance()

    async def control(self, raw: str) -> None:
        """One JSON control message (InvalidArgument saying what to send when it is wrong)."""
        if len(raw) > self.cfg.max_ws_frame_bytes:
            raise InvalidArgument(f"control message of {len(raw)} characters is over the size limit")
        check_json_text(raw, self.rt.ctx.settings.gateway.max_json_depth, "the control message")
        kind = _type_of(raw)
        if kind == COMMIT and self._commit:
            if json.loads(raw) != {"type": COMMIT}:
                raise InvalidArgument('a commit message has no other fields; send {"type": "commit"}')
            await self.audio(b"")
            return
        if kind is not None and kind not in self.types:
            raise InvalidArgument(f"unknown control message type {kind[:40]!r}; use one of {', '.join(self.types)}")
        msg = parse_control(raw, max_text_chars=self.cfg.max_text_chars)
        if isinstance(msg, VoiceConfig):
            await self.configure(msg)
        elif isinstance(msg, TextMessage):
            await (await self.conversation()).say(msg.text)
        elif isinstance(msg, Command) and msg.type == "interrupt":
            if self.conv is not None:
                await self.conv.interrupt()
        elif isinstance(msg, Command) and msg.type == "reset":
            await self.reset()
        elif isinstance(msg, Command) and msg.type == "end":
            await self.end()

    # ---- sessions -------------------------------------------------------------------------------

    async def conversation(self) -> VoiceConversation:
        """The live conversation; a default session (or the one configured last) opens on first use."""
        if self.conv is None:
            await self.configure(self.voice)
        assert self.conv is not None
        self.conv.session.touch()
        return self.conv

    async def configure(self, voice: VoiceConfig) -> None:
        """Open (or switch to) the session ``voice`` names; the old conversation, if any, ends."""
        sessions = self.rt.sessions
        if voice.session_id is None and self.by.session_id is not None:   # a token scoped to one session
            session = sessions.create(session_id=self.by.session_id, agent=voice.agent, voice=voice.voice,
                                      language=voice.language, by=self.by)
            sessions.configure(session, voice=voice.voice, language=voice.language)
        elif voice.session_id is not None:
            session = sessions.get(voice.session_id, by=self.by)
            if voice.agent is not None and voice.agent != session.agent.name:
                raise InvalidArgument(
                    f"session {session.id!r} uses agent {session.agent.name!r}; an agent is chosen only for a new "
                    "session (leave out session_id)"
                )
            sessions.configure(session, voice=voice.voice, language=voice.language)
        else:
            session = sessions.create(agent=voice.agent, voice=voice.voice, language=voice.language, by=self.by)
        await self._switch(voice, session)

    async def reset(self) -> None:
        """End the current session and start a fresh one with the same agent, voice and language."""
        if self.by.session_id is not None:
            raise PermissionDenied("this token is scoped to one session, so it cannot start another: end the "
                                   "call, or use a token without session_id")
        old = self.conv.session if self.conv is not None else None
        if self.conv is not None:
            await self.conv.close()
            self.conv = None
        if old is not None:
            self.rt.sessions.end(old.id)
        session = self.rt.sessions.create(
            agent=old.agent.name if old else None, voice=old.voice if old else None,
            language=old.language if old else None, by=self.by,
        )
        await self._switch(self.voice.model_copy(update={"session_id": None}), session)

    async def end(self) -> None:
        """End the session (it is over in the store) and ask the transport to hang up."""
        self.done = True
        if self.conv is not None:
            await self.conv.close()
            self.rt.sessions.end(self.conv.session.id)
            await self.sink.send_event({"type": "ended", "session_id": self.conv.session.id})

    async def close(self) -> None:
        """The connection is gone: the reply in progress stops, the STT stream closes, the session is kept."""
        self.done = True
        if self.conv is not None:
            await self.conv.close()

    async def error(self, code: str, message: str, *, retry_after_s: float | None = None) -> None:
        event: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if retry_after_s is not None:
            event["retry_after_s"] = retry_after_s
        await self.sink.send_event(event)

    async def _switch(self, voice: VoiceConfig, session: Session) -> None:
        if self.conv is not None:
            await self.conv.close()
        if self.done:  # closed meanwhile: a conversation opened now would have no one to close it
            self.conv = None
            raise ServiceUnavailable("the connection closed while the session was opening; connect again")
        rate = self._fixed_rate or voice.sample_rate or self.cfg.output_sample_rate
        self.voice = voice.model_copy(update={"session_id": session.id, "agent": None})
        self.conv = self.rt.orchestrator.voice(
            session, self.sink, out_rate=rate, end_silence_ms=voice.end_silence_ms, partials=voice.partials,
            turn=voice.turn,
        )
        session_id_var.set(session.id)  # this task's logs; the conversation sets it where it runs (voice.py)
        await self.sink.send_event({
            "type": "ready", "session_id": session.id, "agent": session.agent.name, "voice": session.voice,
            "language": session.language, "sample_rate": rate, "input_sample_rate": 16000,
            "turns": session.turn_count, "max_frame_bytes": self.cfg.max_ws_frame_bytes,
            "turn": self.conv.policy.model_dump(),
        })


def _type_of(raw: str) -> str | None:
    """The ``type`` of a JSON object message, or None (parse_control then says what is wrong)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    kind = doc.get("type") if isinstance(doc, dict) else None
    return kind if isinstance(kind, str) else None
